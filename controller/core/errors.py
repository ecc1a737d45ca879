"""Errors that say what to do next.

`SpecError` means a human must change the spec (retrying will not help); the message names
the file and the problem and never carries secret values.
"""

from __future__ import annotations


class SpecError(Exception):
    """An environment spec is invalid: fix the file, then envship retries by itself."""

    action = "fix the spec"

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
