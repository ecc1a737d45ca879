"""The controller: reconcile the registry with git, one reconcile at a time, for ever.

Triggers (the periodic and resync schedules, webhooks, the manual trigger, due retries) only
*request* a reconcile (`request_reconcile` returns a ticket). One worker thread runs them one at
a time; every request made while one runs is served by the single next one, so a flood of
webhooks is one reconcile. `wait_for(ticket)` returns the outcome of the reconcile that served it.

The schedules are the worker's own: while it waits for requests it also waits for the next
deadline (periodic, full resync, the next retry), so one loop and one clock decide when
anything runs. What one reconcile does is `controller.service.reconcile`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from controller.adapters.redact import redact
from controller.core.backoff import Backoff
from controller.core.discovery import DiscoveryOptions
from controller.service.metrics import Metrics
from controller.service.reconcile import GcPolicy, Outcome, Reconciler, Run, Runner, Source
from controller.service.status import StatusBoard

log = logging.getLogger("envship.controller")

OUTCOMES_KEPT = 256
"""Outcomes of past reconciles kept for `wait_for`."""
MANUAL = "manual"
"""The reason of a reconcile asked for by hand: it releases held environments."""


class Election(Protocol):
    """Leader election (`controller.adapters.lease.LeaderElector`): with one, the controller
    reconciles only while it leads. `is_leader` and `leader_address` only read attributes."""

    def is_leader(self) -> bool: ...

    def leader_address(self) -> str | None:
        """Where the replica that leads (another one) serves HTTP; None if not known."""
        ...

    def describe(self) -> dict[str, Any]: ...


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
        self.source = source
        self.runner = runner
        self.board = board or StatusBoard(clock=now)
        self.metrics = metrics or Metrics()
        self.backoff = backoff or Backoff()
        self.reconcile_interval = reconcile_interval
        self.resync_interval = resync_interval
        self.jitter = jitter
        self._spread = spread
        self.reconciler = Reconciler(
            source,
            runner,
            discovery,
            board=self.board,
            metrics=self.metrics,
            backoff=self.backoff,
            clock=clock,
            now=now or (lambda: datetime.now(UTC)),
            spread=spread,
            gc=gc,
        )
        self._secret_check = secret_check
        self._secret_problems: dict[str, str] = {}
        """Secret reference -> why it cannot be read (checked at start and every reconcile)."""
        self._engine_problem: str | None = None
        """Why builds cannot run (the engine or the builder's tooling), checked likewise."""
        # requests and outcomes (guarded by _cond)
        self._cond = threading.Condition()
        self._requested = 0
        self._served = 0
        self._reasons: dict[str, int] = {}
        """Why the next reconcile was asked for: reason -> requests (bounded by the reasons)."""
        self._full = False
        self._outcomes: deque[tuple[int, int, dict[str, Any]]] = deque(maxlen=OUTCOMES_KEPT)
        self._stopping = False
        self._finished = False
        self._reconciled_once = False
        self._reconciles = 0
        self._outages = 0
        """Reconciles in a row that git or the registry cut short (their own backoff)."""
        self._due: dict[str, float] = {}
        """Schedule -> `time.monotonic()` deadline: `periodic`, `resync`, `retry`."""
        self._scheduled = False
        self._worker: threading.Thread | None = None

    # -- ControllerPort ---------------------------------------------------------------------

    def request_reconcile(self, reason: str, *, full: bool = False) -> int:
        """Ask for a reconcile (`full`: a resync); returns its ticket. Never blocks on one."""
        with self._cond:
            if self._stopping:
                raise RuntimeError("the controller is stopping")
            if not self.leading():
                raise RuntimeError("not the leader")
            return self._request(reason, full)

    def _request(self, reason: str, full: bool) -> int:
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
        snapshot["engine"] = {"usable": self._engine_problem is None, "error": self._engine_problem}
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

    def check_engine(self) -> None:
        """Ask the runner whether builds can run; say what is missing once, and when it is back.
        Not a readiness condition: webhooks are still taken, and builds fail (retried) until
        the engine answers."""
        check = getattr(self.runner, "check_engine", None)
        if check is None:
            return
        problem = check()
        if problem is not None and problem != self._engine_problem:
            log.warning("builds cannot run: %s", problem)
        elif problem is None and self._engine_problem is not None:
            log.info("the build engine answers again")
        self._engine_problem = problem

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
        """Start the worker, request the first reconcile and (with `schedule`) the periodic
        and resync schedules."""
        if schedule:
            now = time.monotonic()
            self._due["periodic"] = now + self._interval(self.reconcile_interval)
            self._due["resync"] = now + self._interval(self.resync_interval)
        self._scheduled = schedule
        self._worker = threading.Thread(target=self._work, name="envship-reconcile", daemon=True)
        self._worker.start()
        self.request_reconcile("startup")
        return self

    def stop(self, grace: float) -> bool:
        """Stop the triggers, let a running reconcile finish within `grace` seconds. True when
        nothing is left running."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        worker = self._worker
        if worker is not None:
            worker.join(max(0.0, grace))
            if worker.is_alive():
                log.warning(
                    "a reconcile is still running after the %.0f s grace period; its builds "
                    "are stopped (ACR Tasks runs cancelled)",
                    grace,
                )
                self.runner.close()
                return False
        with self._cond:
            self._finished = True
            self._cond.notify_all()
        self.runner.close()
        return True

    # -- the worker -------------------------------------------------------------------------

    def _interval(self, seconds: float) -> float:
        """`seconds`, moved by up to ±`jitter` of itself (replicas and repositories spread)."""
        return max(0.0, seconds + seconds * self.jitter * (2 * self._spread() - 1))

    def _fire_due(self) -> float | None:
        """Request a reconcile for each schedule whose deadline passed (under `_cond`); the
        seconds until the next deadline, None without any."""
        now = time.monotonic()
        for name, at in sorted(self._due.items()):
            if at > now:
                continue
            if name == "periodic":
                self._due[name] = now + self._interval(self.reconcile_interval)
            elif name == "resync":
                self._due[name] = now + self._interval(self.resync_interval)
            else:
                del self._due[name]
            self._request(name, name == "resync")
        return min(self._due.values()) - now if self._due else None

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and self._requested <= self._served:
                    wait = self._fire_due()
                    if self._requested <= self._served:
                        self._cond.wait(wait)
                if self._stopping:
                    break
                first, last = self._served + 1, self._requested
                reasons, self._reasons = self._reasons, {}
                full, self._full = self._full, False
                self._reconciles += 1
                number = self._reconciles
            outcome = self._guarded(number, reasons, full)
            outcome["tickets"] = [first, last]
            with self._cond:
                self._served = last
                self._outcomes.append((first, last, outcome))
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
        run = Run(number, full, MANUAL in reasons, {"reconcileID": number})
        log.info(
            "reconcile started (%s%s)",
            ", ".join(sorted(reasons)),
            ", full resync" * full,
            extra=run.context,
        )
        self.check_secrets()
        self.check_engine()
        try:
            outcome = self.reconciler.reconcile(run)
        except Exception as exc:
            log.exception("reconcile failed", extra=run.context)
            self.reconciler.stale(f"internal error: {type(exc).__name__}")
            outcome = Outcome("error", None, redact(f"{type(exc).__name__}: {exc}"))
        seconds = time.monotonic() - started
        shown = outcome.as_dict()
        shown.update(reconcile=number, reasons=reasons, full=full, seconds=round(seconds, 3))
        self._outages = self._outages + 1 if outcome.result in ("stale", "error") else 0
        self._schedule_retry()
        self.metrics.observe_reconcile(seconds, outcome.result)
        log.info(
            "reconcile ended: %s in %.2f s",
            outcome.result,
            seconds,
            extra={**run.context, "error": outcome.error},
        )
        return shown

    def _schedule_retry(self) -> None:
        """A reconcile when the next backoff ends (the periodic one may be much later): after
        an outage, the controller's own; else the earliest of the failed environments'."""
        if not self._scheduled:
            return
        if self._outages:
            wait: float | None = self.backoff.delay(self._outages, self._spread())
        else:
            wait = self.reconciler.next_retry()
        with self._cond:
            if wait is None:
                self._due.pop("retry", None)
            else:
                self._due["retry"] = time.monotonic() + wait + 0.01
            self._cond.notify_all()


__all__ = ["MANUAL", "Controller", "Election", "GcPolicy"]
