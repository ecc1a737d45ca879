"""One reconcile, as ordered named steps (after Flux's list of reconcile functions):

    fetch -> skip_if_unchanged -> discover -> select -> sync -> record -> collect_garbage

Each step takes and returns a small typed value; a step that ends the reconcile early raises
`Stop` with its `Outcome`. What happens to an environment after a failure is its error's
policy (`controller.core.errors`):

- fix the spec: Stalled, and held: not synced again until its inputs change (its files, or a
  base image's digest, which changes its hash), a full resync finds them changed, or someone
  asks for a reconcile by hand;
- retry later / operator must act: Failed, retried with exponential backoff;
- a registry that did not answer for any environment (every check failed): the last known
  status is kept, marked stale, and the whole reconcile is retried with backoff.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from controller.adapters.gitsource import Revision, public_text, unchanged
from controller.adapters.gittree import GitTree, folder_ids
from controller.adapters.redact import redact
from controller.core.backoff import Backoff
from controller.core.discovery import DiscoveryCache, DiscoveryOptions, Places, discover
from controller.core.errors import Policy
from controller.core.gc import TagInfo
from controller.core.hashing import content_hash
from controller.core.model import Environment
from controller.core.tree import SourceTree
from controller.pipeline.outcome import BUILDING, DONE, Reporter, Result, Step
from controller.pipeline.planning import CHECK
from controller.service.metrics import Metrics
from controller.service.status import EnvStatus, Phase, StatusBoard, utc_iso

log = logging.getLogger("envship.controller")

LOG_TAIL = 20
Key = tuple[str, ...]
"""What an environment's status depends on in the source: equal keys, same files."""
ReconcileResult = Literal["unchanged", "success", "failed", "stale", "error"]


class Source(Protocol):
    """Where specs come from (`GitSource`)."""

    def fetch(self) -> Revision: ...

    def tree(self, revision: Revision) -> SourceTree: ...


class Runner(Protocol):
    """Syncs environments with the registry (`controller.pipeline.runner.SyncRunner`)."""

    def run(
        self,
        envs: Sequence[Environment],
        *,
        revision: str,
        fresh: bool,
        reporter: Reporter,
        held: frozenset[str] = frozenset(),
    ) -> list[Result]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class GcPolicy:
    """Delete hash tags whose hash left git, `grace` seconds after their image was built."""

    grace: float
    dry_run: bool = True


@dataclass
class Outcome:
    """What one reconcile did (the HTTP trigger and the logs show it)."""

    result: ReconcileResult
    revision: str | None = None
    error: str | None = None
    environments: int | None = None
    synced: int | None = None
    actions: dict[str, int] | None = None
    skipped: dict[str, int] | None = None

    def as_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"result": self.result, "revision": self.revision}
        if self.result in ("stale", "error"):
            shown["error"] = self.error
        elif self.result != "unchanged":
            shown.update(
                environments=self.environments,
                synced=self.synced,
                actions=self.actions,
                skipped=self.skipped,
                error=self.error,
            )
        return shown


class Stop(Exception):
    """A step ended the reconcile early, with this outcome."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.result)
        self.outcome = outcome


@dataclass(frozen=True)
class Run:
    """One reconcile's request: its number (log context), a full resync or not, by hand or not."""

    number: int
    full: bool
    manual: bool
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Found:
    revision: Revision
    tree: SourceTree
    envs: list[Environment]
    keys: dict[str, Key]


@dataclass(frozen=True)
class Selection:
    todo: list[Environment]
    skipped: dict[str, int]


@dataclass
class _Retry:
    attempts: int
    at: float
    """`clock()` time of the next attempt."""
    key: Key


@dataclass(frozen=True)
class _Held:
    key: Key
    hash: str | None
    error: str


class _BoardReporter(Reporter):
    """Build progress: logged (JSON, per environment); a build step turns it Building."""

    def __init__(self, board: StatusBoard, context: dict[str, Any]) -> None:
        super().__init__()
        self.board = board
        self.context = context
        self.started: set[str] = set()

    def line(self, env: str, text: str, step: Step | None = None) -> None:
        # envship's own steps at info; the engine's build and push output at debug (the tail of
        # a failed build is logged with its failure)
        level = logging.INFO if step is not None else logging.DEBUG
        extra = {**self.context, "env": env}
        if step is not None:
            extra["step"] = str(step)
        log.log(level, redact(text), extra=extra)
        if step in BUILDING and env not in self.started:
            self.started.add(env)
            with contextlib.suppress(KeyError):  # not on the board: nothing to show
                self.board.update(env, phase=Phase.BUILDING, last_error=None)

    def note(self, text: str) -> None:
        log.info(redact(text), extra=self.context)


def change_key(tree: SourceTree, env: Environment) -> Key:
    """What an environment's outcome depends on in the source: the object ids of its folder and
    files in a git tree (equal ids, equal bytes), or its hash input elsewhere; and its error."""
    error = str(env.error) if env.error is not None else ""
    if isinstance(tree, GitTree):
        paths = sorted({env.path, *env.files})
        ids = folder_ids(tree, paths)
        return (error, *(f"{path}={ids.get(path, '-')}" for path in paths))
    return (error, content_hash(env.build) if env.build is not None else "")


class Reconciler:
    """The steps of a reconcile and what they remember between reconciles (the worker's
    alone: one reconcile runs at a time)."""

    def __init__(
        self,
        source: Source,
        runner: Runner,
        discovery: DiscoveryOptions,
        *,
        board: StatusBoard,
        metrics: Metrics,
        backoff: Backoff,
        clock: Callable[[], float],
        now: Callable[[], datetime],
        spread: Callable[[], float],
        gc: GcPolicy | None,
    ) -> None:
        self.source = source
        self.runner = runner
        self.discovery = discovery
        self.board = board
        self.metrics = metrics
        self.backoff = backoff
        self.clock = clock
        self.now = now
        self.spread = spread
        self.gc = gc
        self.parsed = DiscoveryCache()
        """Parsed specs by git object id: a new revision reads only what changed."""
        self.places = Places()
        """What each v2 document gave when it last parsed: one that breaks keeps its place."""
        self._keys: dict[str, tuple[Environment, Key]] = {}
        self._revision: Revision | None = None
        self._complete = False
        """The last reconcile got through (not stale): an unchanged revision needs nothing."""
        self._retries: dict[str, _Retry] = {}
        self._stalled: dict[str, Key] = {}
        self._held: dict[str, _Held] = {}
        self._ready: dict[str, Key] = {}

    def reconcile(self, run: Run) -> Outcome:
        """The steps, in order."""
        try:
            revision = self.fetch(run)
            self.skip_if_unchanged(run, revision)
            found = self.discover(run, revision)
            chosen = self.select(run, found)
            results = self.sync(run, found, chosen)
            self.record(run, found, results)
            self.collect_garbage(run, found, results)
            return self.summary(found, chosen, results)
        except Stop as stop:
            return stop.outcome

    def next_retry(self) -> float | None:
        """Seconds until the earliest environment's backoff ends, if any is backing off."""
        if not self._retries:
            return None
        return max(0.0, min(r.at for r in self._retries.values()) - self.clock())

    def stale(self, reason: str, revision: str | None = None) -> Outcome:
        """Git or the registry could not be reached: keep the last status, flagged stale; the
        next reconcile does everything again."""
        self.board.mark_stale(reason)
        self._complete = False
        return Outcome("stale", revision, reason)

    # -- the steps ---------------------------------------------------------------------------

    def fetch(self, run: Run) -> Revision:
        """The tracked ref's revision; git unreachable: stale."""
        fetches = getattr(self.source, "fetches", None)  # a source that counts real fetches
        received = getattr(self.source, "received_objects", 0)
        try:
            revision = self.source.fetch()
        except Exception as exc:
            self.metrics.git_request("fetch")
            raise Stop(self.stale(public_text(f"git: {exc}"))) from None
        if fetches is None or getattr(self.source, "fetches", None) != fetches:
            self.metrics.git_request("fetch")
        more = getattr(self.source, "received_objects", 0) - received
        if more > 0:
            self.metrics.git_received_objects.inc(more)
        run.context["revision"] = revision.label
        return revision

    def skip_if_unchanged(self, run: Run, revision: Revision) -> None:
        """The revision reconciled last, no resync, no retry due and nothing held that a manual
        reconcile would release: nothing to read or ask."""
        due = any(r.at <= self.clock() for r in self._retries.values())
        due = due or (run.manual and bool(self._held))
        if self._complete and unchanged(self._revision, revision) and not run.full and not due:
            self.board.reconciled(revision.label)
            raise Stop(Outcome("unchanged", revision.label))

    def discover(self, run: Run, revision: Revision) -> Found:
        """The environments on the git tree (no checkout), each with its change key; the board
        and the memory forget the ones that left."""
        tree = self.source.tree(revision)
        try:
            envs = discover(tree, self.discovery, cache=self.parsed, places=self.places)
        except ValueError as exc:  # the root is not in this revision, or envship.yaml is wrong
            raise Stop(self.stale(redact(f"specs: {exc}"), revision.label)) from None
        log.debug(
            "%d environments; %d read and %d YAML files parsed, the rest unchanged",
            len(envs),
            self.parsed.read,
            self.parsed.parsed,
            extra=run.context,
        )
        keys = self._change_keys(tree, envs)
        for gone in self.board.retain(keys):
            self.metrics.remove_environment(gone)
        for state in (self._retries, self._stalled, self._ready, self._held):
            for name in [n for n in state if n not in keys]:
                del state[name]
        return Found(revision, tree, envs, keys)

    def select(self, run: Run, found: Found) -> Selection:
        """The environments to sync; the others are recorded at this revision as they are:
        refused specs, held builds (unless a resync or a manual reconcile), environments
        waiting out their backoff, and Ready ones whose inputs did not change."""
        if run.manual:
            self._held.clear()
        label = found.revision.label
        now = self.clock()
        todo: list[Environment] = []
        skipped = {"stalled": 0, "held": 0, "waiting": 0, "unchanged": 0}
        unchanged_names: list[str] = []
        for env in found.envs:
            name = env.status_key
            key = found.keys[name]
            current = self.board.peek(name)
            if current is None:
                current = self.board.set(EnvStatus(name, env.path, env.kind))
            elif (current.path, current.kind) != (env.path, env.kind):
                current = self.board.update(name, path=env.path, kind=env.kind)
            if env.error is not None:
                skipped["stalled"] += 1
                self._stall(env.status_key, key, str(env.error), label, run.context)
                continue
            self._stalled.pop(name, None)
            held = self._held.get(name)
            if held is not None and held.key != key:
                del self._held[name]
            elif held is not None and not run.full:
                skipped["held"] += 1
                unchanged_names.append(name)
                continue
            retry = self._retries.get(name)
            if retry is not None and retry.key == key and retry.at > now:
                skipped["waiting"] += 1
                unchanged_names.append(name)
                continue
            if not run.full and current.phase is Phase.READY and self._ready.get(name) == key:
                skipped["unchanged"] += 1
                unchanged_names.append(name)
                continue
            todo.append(env)
        self.board.advance(unchanged_names, label)
        return Selection(todo, skipped)

    def sync(self, run: Run, found: Found, chosen: Selection) -> list[Result]:
        """`Runner.run` for the chosen environments; held hashes are not built again. A
        registry that answered none of them: stale, the whole reconcile retried."""
        if not chosen.todo:
            return []
        held = frozenset(h.hash for h in self._held.values() if h.hash)
        reporter = _BoardReporter(self.board, run.context)
        try:
            results = self.runner.run(
                chosen.todo,
                revision=found.revision.commit,
                fresh=run.full,
                reporter=reporter,
                held=held,
            )
        finally:
            requests = getattr(self.runner, "registry_requests", 0)
            if requests:
                self.metrics.registry_requests.labels(kind="target").inc(requests)
        outage = registry_outage(results, retrying=set(self._retries))
        if outage is not None:
            for result in results:  # no hot loop for those already backing off
                self._postpone(result.item.env.status_key)
            raise Stop(self.stale(redact(f"registry: {outage}"), found.revision.label))
        return results

    def record(self, run: Run, found: Found, results: Sequence[Result]) -> None:
        """Each outcome on the board, and what it means for the next reconcile."""
        label = found.revision.label
        for result in results:
            self._record(result, found.keys.get(result.item.env.status_key, ()), label, run)
        self._revision = found.revision
        self._complete = True
        self.board.reconciled(label)

    def collect_garbage(self, run: Run, found: Found, results: Sequence[Result]) -> None:
        """On a full resync that saw every environment: remove tags whose hash left git.

        Off unless configured; with `dry_run` it only logs what it would delete. Never after a
        reconcile with refused or failed environments: their live hashes are not all known.
        """
        collect = getattr(self.runner, "collect_garbage", None)
        failed = any(r.outcome in ("failed", "held", "refused") for r in results)
        if not run.full or self.gc is None or collect is None or failed:
            return
        if any(env.error for env in found.envs):
            return
        try:
            removed: list[TagInfo] = collect(
                found.envs,
                grace=self.gc.grace,
                dry_run=self.gc.dry_run,
                reporter=_BoardReporter(self.board, run.context),
            )
        except Exception as exc:
            log.warning("gc skipped: %s", redact(str(exc)), extra=run.context)
            return
        verb = "would delete" if self.gc.dry_run else "deleted"
        for info in removed:
            log.info("gc: %s %s:%s", verb, info.repository, info.tag, extra=run.context)

    def summary(self, found: Found, chosen: Selection, results: Sequence[Result]) -> Outcome:
        actions: dict[str, int] = {}
        for result in results:
            actions[result.outcome] = actions.get(result.outcome, 0) + 1
        failed = actions.get("failed", 0)
        return Outcome(
            "failed" if failed else "success",
            found.revision.label,
            f"{failed} environment(s) failed" if failed else None,
            environments=len(found.envs),
            synced=len(chosen.todo),
            actions=actions,
            skipped=chosen.skipped,
        )

    # -- memory ------------------------------------------------------------------------------

    def _change_keys(self, tree: SourceTree, envs: Sequence[Environment]) -> dict[str, Key]:
        """Each environment's `change_key`. An environment the discovery cache handed back as
        the very same object has unchanged inputs, so its key from last time still holds."""
        keys: dict[str, Key] = {}
        kept: dict[str, tuple[Environment, Key]] = {}
        for env in envs:
            name = env.status_key
            previous = self._keys.get(name)
            key = previous[1] if previous is not None and previous[0] is env else None
            keys[name] = key = key if key is not None else change_key(tree, env)
            kept[name] = (env, key)
        self._keys = kept
        return keys

    def _stall(self, name: str, key: Key, error: str, label: str, context: dict[str, Any]) -> None:
        self._retries.pop(name, None)
        self._ready.pop(name, None)
        if self._stalled.get(name) != key:
            log.warning(
                "refused spec: not built until it changes",
                extra={**context, "env": name, "error": error},
            )
        self._stalled[name] = key
        self.board.update(
            name,
            phase=Phase.STALLED,
            last_error=error,
            revision=label,
            hash=None,
            attempts=0,
            next_retry=None,
            next=str(Policy.FIX_SPEC),
        )

    def _postpone(self, name: str) -> None:
        """An environment already backing off met a registry outage: its next attempt waits one
        step longer, and its status (the last known one) is left as it is."""
        previous = self._retries.get(name)
        if previous is None:
            return
        attempts = previous.attempts + 1
        at = self.clock() + self.backoff.delay(attempts, self.spread())
        self._retries[name] = _Retry(attempts, at, previous.key)

    def _record(self, result: Result, key: Key, label: str, run: Run) -> None:
        item = result.item
        name = item.env.status_key
        extra = {**run.context, "env": name}
        if result.outcome in ("built", "copied"):
            self.metrics.observe_build(result.outcome, result.seconds, name)
        elif result.outcome == "failed":
            self.metrics.observe_build("failed", result.seconds or None, name)
        if result.outcome in DONE:
            self._retries.pop(name, None)
            self._held.pop(name, None)
            self._ready[name] = key
            changes: dict[str, Any] = {
                "phase": Phase.READY,
                "hash": item.hash,
                "image": item.image,
                "digest": result.digest,
                "revision": label,
                "last_error": None,
                "attempts": 0,
                "next_retry": None,
                "next": None,
            }
            if result.asset is not None:
                changes["azureml"] = result.asset
            if result.outcome != "up-to-date":
                changes["build_seconds"] = round(result.seconds, 3)
                log.info("%s %s@%s", result.outcome, item.image, result.digest, extra=extra)
            self.board.update(name, **changes)
            return
        if result.outcome == "held":  # the same inputs failed before: still held
            previous = self._held.get(name)
            if previous is not None:
                self._held[name] = _Held(key, previous.hash, previous.error)
            self.board.update(name, phase=Phase.STALLED, revision=label)
            return
        if result.outcome not in ("failed", "refused"):  # a dry run's build/copy: nothing done
            self.board.update(name, phase=Phase.PENDING, hash=item.hash, revision=label)
            return
        self._ready.pop(name, None)
        error = result.error or "failed"
        tail = "".join(f"\n  {line}" for line in result.log[-LOG_TAIL:])
        output = f"; last output:{tail}" if tail else ""
        policy = result.policy or Policy.FIX_SPEC
        if not policy.retried:
            self._retries.pop(name, None)
            self._held[name] = _Held(key, item.hash, error)
            log.warning(
                "failed for the spec's own reasons: held until its inputs change%s",
                output,
                extra={**extra, "error": error},
            )
            self.board.update(
                name,
                phase=Phase.STALLED,
                hash=item.hash,
                revision=label,
                last_error=error,
                attempts=0,
                next_retry=None,
                next=str(policy),
            )
            return
        previous_retry = self._retries.get(name)
        attempts = (previous_retry.attempts if previous_retry is not None else 0) + 1
        delay = self.backoff.delay(attempts, self.spread())
        self._retries[name] = _Retry(attempts, self.clock() + delay, key)
        log.warning(
            "failed (attempt %d), retrying in %.0f s%s",
            attempts,
            delay,
            output,
            extra={**extra, "error": error},
        )
        self.board.update(
            name,
            phase=Phase.FAILED,
            hash=item.hash,
            revision=label,
            last_error=error,
            attempts=attempts,
            next_retry=utc_iso(self.now() + timedelta(seconds=delay)),
            next=str(policy),
        )


def registry_outage(results: Sequence[Result], retrying: set[str]) -> str | None:
    """The registry did not answer for any environment: its error, else None.

    Environments already backing off are no evidence: when only they were synced, their
    failures are theirs (recorded, with their own backoff), not an outage that would retry them
    on every tick.
    """
    fresh = [r for r in results if r.item.env.status_key not in retrying]
    checks = [r.failure for r in results if r.failure is not None and r.failure.step == CHECK]
    if fresh and len(checks) == len(results):
        return str(checks[0].error)
    return None


__all__ = [
    "Found",
    "GcPolicy",
    "Outcome",
    "Reconciler",
    "Run",
    "Runner",
    "Selection",
    "Source",
    "Stop",
    "change_key",
    "registry_outage",
]
