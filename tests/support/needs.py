"""What a test needs from the machine, and what happens when it is missing.

`scripts/test` installs everything the whole suite needs and sets ENVSHIP_TEST_STRICT=1 (CI
sets CI=true): then a missing service is a failure, never a skip. A developer running pytest
directly, or `scripts/test --fast`, gets a skip that says what is missing and how to get it.
"""

from __future__ import annotations

import os

import pytest

STRICT = os.environ.get("ENVSHIP_TEST_STRICT") == "1" or os.environ.get("CI") == "true"
HOW = "scripts/test installs it"


def need(condition: bool, what: str) -> None:
    """Fail (strict) or skip (otherwise) unless `condition`; `what` names what is missing."""
    if condition:
        return
    if STRICT:
        pytest.fail(f"{what} ({HOW}; this run must not skip it)", pytrace=False)
    pytest.skip(f"{what} ({HOW})")
