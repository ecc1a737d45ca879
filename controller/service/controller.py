"""The controller: reconcile the registry with git, one reconcile at a time, for ever.

Triggers (the periodic and resync schedules, webhooks, the manual trigger, due retries) only
*request* a reconcile (`request_reconcile` returns a ticket). One worker thread runs them one at
a time; every request made while one runs is served by the single next one, so a flood of
webhooks is one reconcile. `wait_for(ticket)` returns the outcome of the reconcile that served it.

One reconcile:

1. fetch the tracked ref (`GitSource.fetch`); if git cannot be reached the last known status is
   kept and marked stale;
2. if the revision is the one reconciled last, no full resync is due and no retry is due: done,
   without reading a file or asking a registry anything;
3. discover the environments on the git tree (no checkout);
4. set aside environments that need nothing: refused specs (Stalled until their files change),
   failed ones waiting out their backoff (unless their files changed), and Ready ones whose
   files did not change (unless a full resync re-checks them);
5. sync the rest (`Sync.run`: resolve bases, check the registry, build, push, copy) and record
   each outcome on the status board: Ready, or Failed with exponential backoff. When the
   registry cannot be reached at all, the last known status is kept and marked stale.

A full resync (slower schedule) runs step 5 for every environment with fresh registry clients,
so a deleted tag or a moved base image is noticed.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from controller.adapters.builder import DockerBuilder
from controller.adapters.gitsource import (
    Revision,
    public_text,
    unchanged,
)
from controller.adapters.gittree import GitTree, folder_ids
from controller.adapters.redact import redact
from controller.adapters.registries import RegistryPool
from controller.core.backoff import Backoff
from controller.core.discovery import DiscoveryCache, DiscoveryOptions, Places, discover
from controller.core.gc import TagInfo
from controller.core.hashing import content_hash
from controller.core.model import Environment
from controller.core.tree import SourceTree
from controller.pipeline.sync import Reporter, Result, Sync, SyncOptions, Target
from controller.service.metrics import Metrics
from controller.service.status import EnvStatus, Phase, StatusBoard, utc_iso

log = logging.getLogger("envship.controller")

OUTCOMES_KEPT = 256
"""Outcomes of past reconciles kept for `wait_for`."""
REGISTRY_OUTAGE = "registry check failed"
"""How `Sync.plan` words a registry that did not answer (see `controller.pipeline.sync`)."""
BUILD_WORDS = ("building ", "pulling ", "pushing ", "reusing ")
"""Reporter lines that mean an environment's build has started."""
STEP_WORDS = (*BUILD_WORDS, "pushed ", "failed: ", "copied ", "tagged ", "not tagged ")
"""Reporter lines of envship's own steps (the others are the engine's output)."""
LOG_TAIL = 20

Key = tuple[str, ...]
"""What an environment's status depends on in the source: equal keys, same files."""


class Source(Protocol):
    """Where specs come from (`GitSource`)."""

    def fetch(self) -> Revision: ...

    def tree(self, revision: Revision) -> SourceTree: ...


class Runner(Protocol):
    """Syncs environments with the registry (`SyncRunner`)."""

    def run(
        self, envs: Sequence[Environment], *, revision: str, fresh: bool, reporter: Reporter
    ) -> list[Result]: ...

    def close(self) -> None: ...


class Election(Protocol):
    """Leader election (`controller.adapters.lease.LeaderElector`): with one, the controller
    reconciles only while it leads. `is_leader` and `leader_address` only read attributes."""

    def is_leader(self) -> bool: ...

    def leader_address(self) -> str | None:
        """Where the replica that leads (another one) serves HTTP; None if not known."""
        ...

    def describe(self) -> dict[str, Any]: ...


class SyncRunner:
    """One `Sync` per reconcile. Registry clients (and what they learnt) are kept between
    reconciles; `fresh=True` (a full resync) starts from new ones, so nothing cached is trusted."""

    def __init__(
        self,
        target: Target,
        pool_factory: Callable[[], RegistryPool],
        options: SyncOptions,
        builder_factory: Callable[[], DockerBuilder] = DockerBuilder,
    ) -> None:
        self.target = target
        self.pool_factory = pool_factory
        self.options = options
        self._builder_factory = builder_factory
        self._builder: DockerBuilder | None = None
        self._pool: RegistryPool | None = None
        self.registry_requests = 0
        """Requests the last run made to the target registry."""

    def _shared_builder(self) -> DockerBuilder:
        if self._builder is None:
            self._builder = self._builder_factory()
        return self._builder

    def run(
        self, envs: Sequence[Environment], *, revision: str, fresh: bool, reporter: Reporter
    ) -> list[Result]:
        if fresh or self._pool is None:
            if self._pool is not None:
                self._pool.close()
            self._pool = self.pool_factory()
        options = replace(self.options, revision=revision)
        sync = Sync(self.target, self._pool, options, reporter, self._shared_builder)
        before = sync.registry.requests_made
        try:
            return sync.run(envs)
        finally:
            self.registry_requests = sync.registry.requests_made - before
            sync.close()

    def collect_garbage(
        self, envs: Sequence[Environment], *, grace: float, dry_run: bool, reporter: Reporter
    ) -> list[TagInfo]:
        """Hash tags no environment at the head has any more (see `controller.core.gc`);
        deleted unless `dry_run`. Uses fresh registry clients: nothing cached is trusted."""
        pool = self.pool_factory()
        sync = Sync(self.target, pool, self.options, reporter, self._shared_builder)
        try:
            found = sync.garbage(envs, grace)
            if not dry_run:
                for error in sync.delete(found):
                    log.warning("gc: %s", error)
            return found
        finally:
            sync.close()
            pool.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


@dataclass(frozen=True)
class GcPolicy:
    """Delete hash tags whose hash left git, `grace` seconds after their image was built."""

    grace: float
    dry_run: bool = True


@dataclass
class _Retry:
    attempts: int
    at: float
    """`clock()` time of the next attempt."""
    key: Key


class _BoardReporter(Reporter):
    """Build progress: logged (JSON, per environment) and turning the environment Building."""

    def __init__(self, controller: Controller, context: dict[str, Any]) -> None:
        super().__init__()
        self.controller = controller
        self.context = context
        self.started: set[str] = set()

    def line(self, env: str, text: str) -> None:
        # envship's own steps at info; the engine's build and push output at debug (the tail of
        # a failed build is logged with its failure)
        level = logging.INFO if text.startswith(STEP_WORDS) else logging.DEBUG
        log.log(level, redact(text), extra={**self.context, "env": env})
        if env not in self.started and text.startswith(BUILD_WORDS):
            self.started.add(env)
            with contextlib.suppress(KeyError):  # not on the board: nothing to show
                self.controller.board.update(env, phase=Phase.BUILDING, last_error=None)

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


class Controller:
    """Implements `controller.http.app.ControllerPort`. `start()` it, `stop(grace)` it."""

    election: Election | None = None
    """With leader election: `start()` it once leading; while it does not lead, triggers are
    refused (the HTTP surface relays them to `leader_address()`) and `/status` shows the
    leader."""

    def __init__(
        self,
        source: Source,
        runner: Runner,
        discovery: DiscoveryOptions,
        *,
        board: StatusBoard | None = None,
        metrics: Metrics | None = None,
        backoff: Backoff | None = None,
        reconcile_interval: float = 60.0,
        resync_interval: float = 3600.0,
        jitter: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] | None = None,
        spread: Callable[[], float] = random.random,
        gc: GcPolicy | None = None,
        secret_check: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self.gc = gc
        self._secret_check = secret_check
        self._secret_problems: dict[str, str] = {}
        """Secret reference -> why it cannot be read (checked at start and every reconcile)."""
        self.parsed = DiscoveryCache()
        """Parsed specs by git object id: a new revision reads only what changed."""
        self.places = Places()
        """What each v2 document gave when it last parsed: one that breaks keeps its place."""
        self._keys: dict[str, tuple[Environment, Key]] = {}
        self.source = source
        self.runner = runner
        self.discovery = discovery
        self.board = board or StatusBoard(clock=now)
        self.metrics = metrics or Metrics()
        self.backoff = backoff or Backoff()
        self.reconcile_interval = reconcile_interval
        self.resync_interval = resync_interval
        self.jitter = jitter
        self._clock = clock
        self._now = now or (lambda: datetime.now(UTC))
        self._spread = spread
        # requests and outcomes (guarded by _cond)
        self._cond = threading.Condition()
        self._requested = 0
        self._served = 0
        self._reasons: dict[str, int] = {}
        """Why the next reconcile was asked for: reason -> requests (bounded by the reasons)."""
        self._full = False
        self._outcomes: deque[tuple[int, int, dict[str, Any]]] = deque(maxlen=OUTCOMES_KEPT)
        self._running = False
        self._stopping = False
        self._finished = False
        self._reconciled_once = False
        self._reconciles = 0
        # reconcile state (the worker's alone)
        self._revision: Revision | None = None
        self._complete = False
        """The last reconcile got through (not stale): an unchanged revision needs nothing."""
        self._retries: dict[str, _Retry] = {}
        self._stalled: dict[str, Key] = {}
        self._ready: dict[str, Key] = {}
        self._outages = 0
        """Reconciles in a row that git or the registry cut short (their own backoff)."""
        self._worker: threading.Thread | None = None
        self._scheduler: Any = None

    # -- ControllerPort ---------------------------------------------------------------------

    def request_reconcile(self, reason: str, *, full: bool = False) -> int:
        """Ask for a reconcile (`full`: a resync); returns its ticket. Never blocks on one."""
        with self._cond:
            if self._stopping:
                raise RuntimeError("the controller is stopping")
            if not self.leading():
                raise RuntimeError("not the leader")
            self._requested += 1
            self._reasons[reason] = self._reasons.get(reason, 0) + 1
            self._full = self._full or full
            self._cond.notify_all()
            return self._requested

    def wait_for(self, ticket: int, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while True:
                if ticket <= self._served:
                    return self._outcome_of(ticket)
                if ticket > self._requested or self._finished:
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def status(self) -> dict[str, Any]:
        snapshot = self.board.snapshot()
        snapshot["secrets"] = [
            {"reference": ref, "error": why} for ref, why in sorted(self._secret_problems.items())
        ]
        if self.election is not None:
            snapshot["leader_election"] = self.election.describe()
        return snapshot

    def ready(self) -> bool:
        return self._reconciled_once and self.leading()

    def not_ready_reason(self) -> str | None:
        """Why this replica cannot do its job though it reconciled: a secret reference that
        cannot be read (named, with why; never a value). None when it can."""
        problems = self._secret_problems
        if not problems:
            return None
        ref, why = next(iter(sorted(problems.items())))
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"secret {ref} cannot be read: {why.removeprefix(ref + ': ')}{more}"

    def check_secrets(self) -> None:
        """Try every secret reference; say each that cannot be read, once, and when it can."""
        if self._secret_check is None:
            return
        try:
            problems = self._secret_check()
        except Exception as exc:  # the check must never stop the controller
            log.warning("secret references could not be checked: %s", type(exc).__name__)
            return
        for ref, why in problems.items():
            if self._secret_problems.get(ref) != why:
                log.warning("secret reference cannot be read: %s", why, extra={"secret": ref})
        for ref in self._secret_problems.keys() - problems.keys():
            log.info("secret reference can be read again", extra={"secret": ref})
        self._secret_problems = problems

    def leading(self) -> bool:
        """True without leader election; with it, while this replica holds the lease."""
        return self.election is None or self.election.is_leader()

    def leader_address(self) -> str | None:
        """With leader election, on a replica that does not lead: where the leader serves HTTP
        (from its Lease), if it publishes that. None otherwise (never this replica's own)."""
        if self.election is None or self.election.is_leader():
            return None
        return self.election.leader_address()

    def stopping(self) -> bool:
        return self._stopping

    # -- life -------------------------------------------------------------------------------

    def start(self, *, schedule: bool = True) -> Controller:
        """Start the worker, request the first reconcile and (with `schedule`) the triggers."""
        self._worker = threading.Thread(target=self._work, name="envship-reconcile", daemon=True)
        self._worker.start()
        if schedule:
            self._start_scheduler()
        self.request_reconcile("startup")
        return self

    def _start_scheduler(self) -> None:
        from apscheduler.schedulers.background import (  # type: ignore[import-untyped]  # noqa: PLC0415
            BackgroundScheduler,
        )

        scheduler = BackgroundScheduler(timezone=UTC, job_defaults={"coalesce": True})
        scheduler.add_job(
            self._trigger,
            "interval",
            args=["periodic", False],
            seconds=self.reconcile_interval,
            jitter=self.reconcile_interval * self.jitter or None,
            id="reconcile",
            max_instances=1,
        )
        scheduler.add_job(
            self._trigger,
            "interval",
            args=["resync", True],
            seconds=self.resync_interval,
            jitter=self.resync_interval * self.jitter or None,
            id="resync",
            max_instances=1,
        )
        scheduler.start()
        self._scheduler = scheduler

    def _trigger(self, reason: str, full: bool) -> None:
        with contextlib.suppress(RuntimeError):  # stopping
            self.request_reconcile(reason, full=full)

    def _schedule_retry(self) -> None:
        """A reconcile when the next backoff ends (the periodic one may be much later): after
        an outage, the controller's own; else the earliest of the failed environments'."""
        if self._outages:
            wait = self.backoff.delay(self._outages, self._spread())
        elif self._retries:
            wait = max(0.0, min(r.at for r in self._retries.values()) - self._clock())
        else:
            return
        scheduler = self._scheduler
        if scheduler is None:
            return
        try:
            scheduler.add_job(
                self._trigger,
                "date",
                args=["retry", False],
                run_date=datetime.now(UTC) + timedelta(seconds=wait + 0.01),
                id="retry",
                replace_existing=True,
            )
        except Exception as exc:  # the scheduler is shutting down
            log.debug("retry not scheduled: %s", exc)

    def stop(self, grace: float) -> bool:
        """Stop the triggers, let a running reconcile finish within `grace` seconds. True when
        nothing is left running."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._scheduler is not None:
            try:
                self._scheduler.shutdown(wait=False)
            except Exception as exc:
                log.debug("scheduler shutdown: %s", exc)
        worker = self._worker
        if worker is not None:
            worker.join(max(0.0, grace))
            if worker.is_alive():
                log.warning("a reconcile is still running after the %.0f s grace period", grace)
                return False
        with self._cond:
            self._finished = True
            self._cond.notify_all()
        self.runner.close()
        return True

    # -- the worker -------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and self._requested <= self._served:
                    self._cond.wait()
                if self._stopping:
                    break
                first, last = self._served + 1, self._requested
                reasons, self._reasons = self._reasons, {}
                full, self._full = self._full, False
                self._running = True
                self._reconciles += 1
                number = self._reconciles
            outcome = self._guarded(number, reasons, full)
            outcome["tickets"] = [first, last]
            with self._cond:
                self._served = last
                self._outcomes.append((first, last, outcome))
                self._running = False
                self._reconciled_once = True
                self._cond.notify_all()
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def _outcome_of(self, ticket: int) -> dict[str, Any]:
        for first, last, outcome in self._outcomes:
            if first <= ticket <= last:
                return outcome
        return {"result": "unknown", "error": "the outcome of this ticket is no longer kept"}

    def _guarded(self, number: int, reasons: dict[str, int], full: bool) -> dict[str, Any]:
        started = time.monotonic()
        context: dict[str, Any] = {"reconcileID": number}
        log.info(
            "reconcile started (%s%s)",
            ", ".join(sorted(reasons)),
            ", full resync" * full,
            extra=context,
        )
        try:
            outcome = self._reconcile(context, full)
        except Exception as exc:
            log.exception("reconcile failed", extra=context)
            self.board.mark_stale(f"internal error: {type(exc).__name__}")
            self._complete = False
            outcome = {"result": "error", "error": redact(f"{type(exc).__name__}: {exc}")}
        seconds = time.monotonic() - started
        outcome.update(reconcile=number, reasons=reasons, full=full, seconds=round(seconds, 3))
        self._outages = self._outages + 1 if outcome["result"] in ("stale", "error") else 0
        self._schedule_retry()
        self.metrics.observe_reconcile(seconds, outcome["result"])
        log.info(
            "reconcile ended: %s in %.2f s",
            outcome["result"],
            seconds,
            extra={**context, "error": outcome.get("error")},
        )
        return outcome

    def _reconcile(self, context: dict[str, Any], full: bool) -> dict[str, Any]:
        self.check_secrets()
        fetches = getattr(self.source, "fetches", None)
        try:
            revision = self.source.fetch()
        except Exception as exc:
            self.metrics.git_request("fetch")
            return self._stale(public_text(f"git: {exc}"))
        if fetches is None or getattr(self.source, "fetches", None) != fetches:
            self.metrics.git_request("fetch")
        label = revision.label
        context["revision"] = label
        now = self._clock()
        due = any(r.at <= now for r in self._retries.values())
        if self._complete and unchanged(self._revision, revision) and not full and not due:
            self.board.reconciled(label)
            return {"result": "unchanged", "revision": label}

        tree = self.source.tree(revision)
        try:
            envs = discover(tree, self.discovery, cache=self.parsed, places=self.places)
        except ValueError as exc:  # the root is not in this revision, or envship.yaml is wrong
            return self._stale(redact(f"specs: {exc}"), label)
        log.debug(
            "%d environments; %d read and %d YAML files parsed, the rest unchanged",
            len(envs),
            self.parsed.read,
            self.parsed.parsed,
            extra=context,
        )
        keys = self._change_keys(tree, envs)
        for gone in self.board.retain(keys):
            self.metrics.remove_environment(gone)
        for state in (self._retries, self._stalled, self._ready):
            for name in [n for n in state if n not in keys]:
                del state[name]
        todo, skipped = self._select(envs, keys, label, now, full, context)

        results: list[Result] = []
        if todo:
            reporter = _BoardReporter(self, context)
            try:
                results = self.runner.run(
                    todo, revision=revision.commit, fresh=full, reporter=reporter
                )
            finally:
                requests = getattr(self.runner, "registry_requests", 0)
                if requests:
                    self.metrics.registry_requests.labels(kind="target").inc(requests)
            outage = _registry_outage(results, retrying=set(self._retries))
            if outage is not None:
                for result in results:  # no hot loop for those already backing off
                    self._postpone(result.item.env.status_key)
                return self._stale(redact(f"registry: {outage}"), label)
            for result in results:
                self._record(result, keys.get(result.item.env.status_key, ()), label, context)

        self._revision = revision
        self._complete = True
        self.board.reconciled(label)
        actions: dict[str, int] = {}
        for result in results:
            actions[result.outcome] = actions.get(result.outcome, 0) + 1
        failed = actions.get("failed", 0)
        if full and not failed and not any(env.error for env in envs):
            self._collect_garbage(envs, context)
        return {
            "result": "failed" if failed else "success",
            "revision": label,
            "environments": len(envs),
            "synced": len(todo),
            "actions": actions,
            "skipped": skipped,
            "error": f"{failed} environment(s) failed" if failed else None,
        }

    def _collect_garbage(self, envs: Sequence[Environment], context: dict[str, Any]) -> None:
        """On a full resync that saw every environment: remove tags whose hash left git.

        Off unless configured; with `dry_run` it only logs what it would delete. Never after a
        reconcile with refused or failed environments: their live hashes are not all known.
        """
        collect = getattr(self.runner, "collect_garbage", None)
        if self.gc is None or collect is None:
            return
        try:
            found = collect(
                envs,
                grace=self.gc.grace,
                dry_run=self.gc.dry_run,
                reporter=_BoardReporter(self, context),
            )
        except Exception as exc:
            log.warning("gc skipped: %s", redact(str(exc)), extra=context)
            return
        verb = "would delete" if self.gc.dry_run else "deleted"
        for info in found:
            log.info("gc: %s %s:%s", verb, info.repository, info.tag, extra=context)

    def _stale(self, reason: str, revision: str | None = None) -> dict[str, Any]:
        """Git or the registry could not be reached: keep the last status, flagged stale; the
        next reconcile does everything again."""
        self.board.mark_stale(reason)
        self._complete = False
        return {"result": "stale", "revision": revision, "error": reason}

    def _change_keys(self, tree: SourceTree, envs: Sequence[Environment]) -> dict[str, Key]:
        """Each environment's `change_key`. An environment the discovery cache handed back as
        the very same object has unchanged inputs, so its key from last time still holds."""
        keys: dict[str, Key] = {}
        kept: dict[str, tuple[Environment, Key]] = {}
        known = self._keys
        for env in envs:
            name = env.status_key
            previous = known.get(name)
            key = previous[1] if previous is not None and previous[0] is env else None
            keys[name] = key = key if key is not None else change_key(tree, env)
            kept[name] = (env, key)
        self._keys = kept
        return keys

    def _select(
        self,
        envs: Sequence[Environment],
        keys: dict[str, Key],
        label: str,
        now: float,
        full: bool,
        context: dict[str, Any],
    ) -> tuple[list[Environment], dict[str, int]]:
        """The environments to sync; the others are recorded at `label` as they are."""
        todo: list[Environment] = []
        skipped = {"stalled": 0, "waiting": 0, "unchanged": 0}
        unchanged: list[str] = []
        for env in envs:
            name = env.status_key
            key = keys[name]
            current = self.board.peek(name)
            if current is None:
                current = self.board.set(EnvStatus(name, env.path, env.kind))
            elif (current.path, current.kind) != (env.path, env.kind):
                current = self.board.update(name, path=env.path, kind=env.kind)
            if env.error is not None:
                skipped["stalled"] += 1
                self._stall(env, key, label, context)
                continue
            self._stalled.pop(name, None)
            retry = self._retries.get(name)
            if retry is not None and retry.key == key and retry.at > now:
                skipped["waiting"] += 1
                unchanged.append(name)
                continue
            if not full and current.phase is Phase.READY and self._ready.get(name) == key:
                skipped["unchanged"] += 1
                unchanged.append(name)
                continue
            todo.append(env)
        self.board.advance(unchanged, label)
        return todo, skipped

    def _stall(self, env: Environment, key: Key, label: str, context: dict[str, Any]) -> None:
        self._retries.pop(env.status_key, None)
        self._ready.pop(env.status_key, None)
        if self._stalled.get(env.status_key) != key:
            log.warning(
                "refused spec: not built until it changes",
                extra={**context, "env": env.status_key, "error": str(env.error)},
            )
        self._stalled[env.status_key] = key
        self.board.update(
            env.status_key,
            phase=Phase.STALLED,
            last_error=str(env.error),
            revision=label,
            hash=None,
            attempts=0,
            next_retry=None,
        )

    def _postpone(self, name: str) -> None:
        """An environment already backing off met a registry outage: its next attempt waits one
        step longer, and its status (the last known one) is left as it is."""
        previous = self._retries.get(name)
        if previous is None:
            return
        attempts = previous.attempts + 1
        at = self._clock() + self.backoff.delay(attempts, self._spread())
        self._retries[name] = _Retry(attempts, at, previous.key)

    def _record(self, result: Result, key: Key, label: str, context: dict[str, Any]) -> None:
        item = result.item
        name = item.env.status_key
        extra = {**context, "env": name}
        if result.outcome in ("built", "copied"):
            self.metrics.observe_build(result.outcome, result.seconds)
        elif result.outcome == "failed":
            self.metrics.observe_build("failed", result.seconds or None)
        if result.outcome in ("built", "copied", "up-to-date"):
            self._retries.pop(name, None)
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
            }
            if result.outcome != "up-to-date":
                changes["build_seconds"] = round(result.seconds, 3)
                log.info("%s %s@%s", result.outcome, item.image, result.digest, extra=extra)
            self.board.update(name, **changes)
            return
        if result.outcome != "failed":  # a dry run's build/copy: nothing was done
            self.board.update(name, phase=Phase.PENDING, hash=item.hash, revision=label)
            return
        self._ready.pop(name, None)
        previous = self._retries.get(name)
        attempts = (previous.attempts if previous is not None else 0) + 1
        delay = self.backoff.delay(attempts, self._spread())
        self._retries[name] = _Retry(attempts, self._clock() + delay, key)
        error = result.error or "failed"
        tail = "".join(f"\n  {line}" for line in result.log[-LOG_TAIL:])
        log.warning(
            "failed (attempt %d), retrying in %.0f s%s",
            attempts,
            delay,
            f"; last output:{tail}" if tail else "",
            extra={**extra, "error": error},
        )
        self.board.update(
            name,
            phase=Phase.FAILED,
            hash=item.hash,
            revision=label,
            last_error=error,
            attempts=attempts,
            next_retry=utc_iso(self._now() + timedelta(seconds=delay)),
        )


def _registry_outage(results: Sequence[Result], retrying: set[str]) -> str | None:
    """The registry did not answer for any environment: its error, else None.

    Environments already backing off are no evidence: when only they were synced, their
    failures are theirs (recorded, with their own backoff), not an outage that would retry them
    on every tick.
    """
    errors = [r.error or "" if r.outcome == "failed" else "" for r in results]
    fresh = [r for r in results if r.item.env.status_key not in retrying]
    if fresh and all(REGISTRY_OUTAGE in error for error in errors):
        return errors[0].split(": ", 1)[-1]
    return None


__all__ = [
    "Controller",
    "Election",
    "GcPolicy",
    "Runner",
    "Source",
    "SyncRunner",
    "change_key",
]
