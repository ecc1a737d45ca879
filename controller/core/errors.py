"""Errors that say what happens next.

Every error envship raises about an environment or its surroundings belongs to one of three
kinds, and its kind is its policy (after Flux's Stalled/Waiting and kopf's permanent and
temporary errors):

- `FixSpec`: the spec cannot be built as written. Retrying changes nothing: the environment is
  held until its inputs (files, or a base image's digest) change, or someone asks for a
  reconcile by hand.
- `RetryLater`: something outside the spec failed (an engine, a registry, git): retried with
  backoff, by itself.
- `Misconfigured`: envship's own configuration, or a secret it names, is wrong: the operator
  must act; retried with backoff so a fixed secret is picked up without a restart.

Messages name the file or the service and the problem, never a secret value.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Policy(StrEnum):
    """What happens after an error (the value is what status and JSON output show)."""

    FIX_SPEC = "fix the spec"
    RETRY_LATER = "retry later"
    MISCONFIGURED = "operator must act"

    @property
    def retried(self) -> bool:
        """Whether envship tries again by itself (with backoff)."""
        return self is not Policy.FIX_SPEC


class EnvshipError(Exception):
    """An error whose class says what happens next (`policy`)."""

    policy: Policy = Policy.RETRY_LATER


class FixSpec(EnvshipError):
    """The spec cannot be built as written: held until it (or its base) changes."""

    policy = Policy.FIX_SPEC


class RetryLater(EnvshipError):
    """A service envship depends on failed: retried with backoff."""

    policy = Policy.RETRY_LATER


class Misconfigured(EnvshipError):
    """envship's configuration or a secret it names is wrong: the operator must act."""

    policy = Policy.MISCONFIGURED


def policy_of(error: BaseException) -> Policy:
    """The policy of any error: envship's own say it; anything else is unforeseen, so it is
    retried (and reported as an internal error)."""
    return error.policy if isinstance(error, EnvshipError) else Policy.RETRY_LATER


@dataclass(frozen=True, slots=True)
class Failure:
    """Why one environment was not done: the error itself (its class is the policy), what
    people are told (redacted, may add context to the error's own words) and the step."""

    message: str
    error: BaseException
    step: str = ""
    """The pipeline step that failed (`resolve`, `check`, `build`, `push`, `copy`, `tag`...)."""

    @property
    def policy(self) -> Policy:
        return policy_of(self.error)

    def __str__(self) -> str:
        return self.message


class SpecError(FixSpec):
    """An environment spec is invalid: the message names the file and the problem."""

    def __init__(self, path: str, problem: str, *, env_name: str | None = None) -> None:
        self.path = path
        self.problem = problem
        self.env_name = env_name
        """The environment's own name, when it could be read before the problem was found."""
        super().__init__(f"{path}: {problem}" if path else problem)

    def __reduce__(self) -> tuple[object, ...]:
        # The constructor takes (path, problem), not the message, so pickling needs help
        # (parallel discovery sends errors between processes).
        return (_rebuild, (type(self), self.path, self.problem, self.env_name))


def _rebuild(cls: type[SpecError], path: str, problem: str, env_name: str | None) -> SpecError:
    return cls(path, problem, env_name=env_name)
