"""Errors that say what to do next.

`SpecError` means a human must change the spec (retrying will not help); the message names
the file and the problem and never carries secret values.
"""

from __future__ import annotations


class SpecError(Exception):
    """An environment spec is invalid: fix the file, then envship retries by itself."""

    action = "fix the spec"

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)
