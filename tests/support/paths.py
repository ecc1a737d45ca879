"""Where things are: the repository, the test suite, and the cases the tests walk.

Every test and helper takes its paths from here, so moving a test file never changes them.
"""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
"""The test suite: tests/."""
ROOT = TESTS.parent
"""The repository: pyproject.toml, controller/, specs/, helm/, deploy/, scripts/."""
CASES = TESTS / "cases"
"""Data the tests walk: bad_inputs/, corpus/, golden/, chart/."""
