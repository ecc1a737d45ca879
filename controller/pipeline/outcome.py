"""What a sync reports: per-environment results that keep their error, and progress events
whose step is typed (the controller's phases come from these, never from log text)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from controller.adapters.redact import redact
from controller.core.errors import Failure, Policy
from controller.core.plan import PlanItem

Outcome = Literal[
    "built", "copied", "up-to-date", "held", "failed", "refused", "build", "copy"
]  # fmt: skip
"""`build` and `copy` are what a dry run would do; `refused`: the spec cannot be read as
written; `held`: these inputs failed to build before and are not built again until they change;
`failed`: not done now, and its `Failure` says what happens next."""
DONE: tuple[Outcome, ...] = ("built", "copied", "up-to-date")


class Step(StrEnum):
    """envship's own steps, as progress events name them."""

    PULL = "pull"
    REUSE = "reuse"
    BUILD = "build"
    PUSH = "push"
    PUSHED = "pushed"
    COPY = "copy"
    TAG = "tag"
    PUBLISH = "publish"
    DELETE = "delete"
    FAILED = "failed"


BUILDING = frozenset({Step.PULL, Step.REUSE, Step.BUILD, Step.PUSH})
"""Steps that mean an environment's build has started."""


@dataclass
class Result:
    item: PlanItem
    outcome: Outcome
    digest: str | None = None
    failure: Failure | None = None
    log: list[str] = field(default_factory=list)
    seconds: float = 0.0
    asset: str | None = None
    """The Azure ML environment version its image is registered as, when publishing."""

    @property
    def error(self) -> str | None:
        """What people are told about the failure (redacted), if any."""
        return self.failure.message if self.failure is not None else None

    @property
    def policy(self) -> Policy | None:
        """What happens next after a failure; None when nothing failed."""
        return self.failure.policy if self.failure is not None else None


def failure(error: BaseException, step: str, message: str | None = None) -> Failure:
    """A redacted `Failure` of `error` (its own words unless `message` is given)."""
    return Failure(redact(message if message is not None else str(error)), error, step)


class Reporter:
    """Where progress goes: `line` with a `step` is one of envship's own steps, without one it
    is the engine's output. The CLI prints both; the controller logs them and sets phases."""

    def __init__(self, emit: Callable[[str], None] | None = None) -> None:
        self._emit = emit or (lambda line: None)
        self._lock = threading.Lock()

    def line(self, env: str, text: str, step: Step | None = None) -> None:
        with self._lock:
            self._emit(redact(f"[{env}] {text}"))

    def note(self, text: str) -> None:
        with self._lock:
            self._emit(redact(text))


__all__ = ["BUILDING", "DONE", "Outcome", "Reporter", "Result", "Step", "failure"]
