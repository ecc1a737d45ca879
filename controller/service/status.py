"""The controller's status: what each environment looks like now, as the HTTP surface shows it.

Pure data and a little logic, no I/O. The controller writes a `StatusBoard` as it reconciles;
`GET /status` and `envship status` read `StatusBoard.snapshot()`, a JSON-able dict:

    {"revision": "main@sha1:<sha>", "last_reconcile": "<UTC ISO time>" | null,
     "in_sync": bool, "stale": bool, "stale_reason": str | null,
     "phases": {"Ready": n, "Building": n, "Failed": n, "Stalled": n, "Pending": n},
     "environments": [EnvStatus.to_dict(), ...]}   (sorted by name)

An environment's `last_transition` moves only when its phase changes. When git or the registry
cannot be reached, `mark_stale(reason)` keeps the last known status and flags it stale; the next
completed reconcile (`reconciled`) clears the flag.

Every string that leaves the board passes through `controller.adapters.redact.redact`, at
snapshot time, so a secret registered after a status was written is still masked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from controller.adapters.redact import redact


class Phase(StrEnum):
    READY = "Ready"
    """The image for the environment's current hash is in the registry."""
    BUILDING = "Building"
    """A build, push or copy is running."""
    FAILED = "Failed"
    """The last attempt failed for a reason that may pass (retried with backoff)."""
    STALLED = "Stalled"
    """The spec cannot be built as it is; retried only when its content changes."""
    PENDING = "Pending"
    """Known, not yet reconciled (or waiting for its turn)."""


def utc_iso(when: datetime | None = None) -> str:
    """A UTC time as ISO 8601 with a `Z`, to the second: `2025-01-31T12:00:00Z`."""
    moment = (when or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class EnvStatus:
    name: str
    path: str
    kind: str
    phase: Phase = Phase.PENDING
    hash: str | None = None
    image: str | None = None
    """The image reference with its tag (`registry/prefix/name:<hash>`)."""
    digest: str | None = None
    """The manifest digest in the registry (`sha256:...`), when known."""
    revision: str | None = None
    """The source revision this status reflects (`main@sha1:<sha>`)."""
    last_error: str | None = None
    last_transition: str | None = None
    """UTC ISO time of the last phase change; set by the board."""
    build_seconds: float | None = None
    azureml: str | None = None
    """The Azure ML environment version its image is registered as (publish.azureml)."""
    attempts: int = 0
    """Failed attempts since the last success (drives the backoff)."""
    next_retry: str | None = None
    """UTC ISO time of the next attempt after a failure, or None."""
    next: str | None = None
    """After a failure, what happens next: `fix the spec` (held until the inputs change),
    `retry later` (backoff) or `operator must act` (configuration or a secret)."""
    stale: bool = False

    def to_dict(self, *, stale: bool = False) -> dict[str, Any]:
        """JSON-able, every string redacted; `stale` ORs in the board's own flag."""
        reference = f"{self.image}@{self.digest}" if self.image and self.digest else None
        return {
            "name": _text(self.name),
            "path": _text(self.path),
            "kind": _text(self.kind),
            "phase": str(self.phase),
            "hash": _text(self.hash),
            "image": _text(self.image),
            "digest": _text(self.digest),
            "reference": _text(reference),
            "revision": _text(self.revision),
            "last_error": _text(self.last_error),
            "last_transition": _text(self.last_transition),
            "build_seconds": self.build_seconds,
            "azureml": _text(self.azureml),
            "attempts": self.attempts,
            "next_retry": _text(self.next_retry),
            "next": self.next,
            "stale": self.stale or stale,
        }


FIELDS = frozenset(f.name for f in fields(EnvStatus))


def _text(value: str | None) -> str | None:
    return None if value is None else redact(value)


class StatusBoard:
    """Every environment's status, safe to write from worker threads and read from the server."""

    def __init__(self, *, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._envs: dict[str, EnvStatus] = {}
        self._revisions: dict[str, str | None] = {}
        """Each environment's revision, kept apart from its status so that moving thousands of
        unchanged environments to a new revision is one dict update, not a copy of each."""
        self._revision: str | None = None
        self._last_reconcile: str | None = None
        self._stale_reason: str | None = None

    def _now(self) -> str:
        return utc_iso(self._clock())

    def _store(self, old: EnvStatus | None, new: EnvStatus) -> EnvStatus:
        # caller holds the lock
        if old is None or old.phase != new.phase or old.last_transition is None:
            new = replace(new, last_transition=self._now())
        else:
            new = replace(new, last_transition=old.last_transition)
        self._envs[new.name] = new
        self._revisions[new.name] = new.revision
        return new

    def _current(self, name: str) -> EnvStatus | None:
        # caller holds the lock
        env = self._envs.get(name)
        if env is not None and env.revision != self._revisions.get(name):
            env = replace(env, revision=self._revisions.get(name))
            self._envs[name] = env
        return env

    def set(self, status: EnvStatus) -> EnvStatus:
        """Record an environment's whole status. Its transition time is stamped now when it is
        new or its phase changed, and kept otherwise."""
        status = replace(status, phase=Phase(status.phase))
        with self._lock:
            return self._store(self._envs.get(status.name), status)

    def update(self, name: str, **changes: Any) -> EnvStatus:
        """Change some fields of a known environment (KeyError if unknown, TypeError for a field
        that does not exist). `last_transition` is the board's and cannot be set."""
        unknown = set(changes) - FIELDS | ({"name", "last_transition"} & set(changes))
        if unknown:
            raise TypeError(f"cannot update {', '.join(sorted(unknown))}")
        if "phase" in changes:
            changes["phase"] = Phase(changes["phase"])
        with self._lock:
            old = self._current(name)
            if old is None:
                raise KeyError(name)
            return self._store(old, replace(old, **changes))

    def advance(self, names: Iterable[str], revision: str) -> None:
        """Known environments `names` are unchanged at `revision`: only their revision moves."""
        with self._lock:
            self._revisions.update((name, revision) for name in names if name in self._envs)

    def get(self, name: str) -> EnvStatus | None:
        with self._lock:
            return self._current(name)

    def peek(self, name: str) -> EnvStatus | None:
        """`get` without the revision brought up to date (its `revision` may be an older one):
        what a reconcile needs to look at thousands of environments cheaply."""
        with self._lock:
            return self._envs.get(name)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._envs)

    def remove(self, name: str) -> None:
        with self._lock:
            self._envs.pop(name, None)
            self._revisions.pop(name, None)

    def retain(self, names: Iterable[str]) -> list[str]:
        """Forget every environment not in `names` (gone from the source); returns those."""
        keep = set(names)
        with self._lock:
            gone = sorted(n for n in self._envs if n not in keep)
            for name in gone:
                del self._envs[name]
                del self._revisions[name]
        return gone

    def reconciled(self, revision: str | None, *, when: datetime | None = None) -> None:
        """A reconcile completed at `revision`: record it and clear the stale flag."""
        with self._lock:
            self._revision = revision
            self._last_reconcile = utc_iso(when or self._clock())
            self._stale_reason = None

    def mark_stale(self, reason: str) -> None:
        """Git or the registry could not be reached: keep what is known, flag it as stale."""
        with self._lock:
            self._stale_reason = reason or "stale"

    @property
    def stale(self) -> bool:
        with self._lock:
            return self._stale_reason is not None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            for name in list(self._envs):
                self._current(name)
            envs = sorted(self._envs.values(), key=lambda e: e.name)
            revision, last_reconcile = self._revision, self._last_reconcile
            stale_reason = self._stale_reason
        stale = stale_reason is not None
        phases = dict.fromkeys((str(p) for p in Phase), 0)
        for env in envs:
            phases[str(env.phase)] += 1
        in_sync = (
            last_reconcile is not None
            and not stale
            and all(e.phase is Phase.READY and not e.stale for e in envs)
        )
        return {
            "revision": _text(revision),
            "last_reconcile": last_reconcile,
            "in_sync": in_sync,
            "stale": stale,
            "stale_reason": _text(stale_reason),
            "phases": phases,
            "environments": [env.to_dict(stale=stale) for env in envs],
        }
