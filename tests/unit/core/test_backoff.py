from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from controller.core.backoff import Backoff


def test_doubles_from_one_second_to_fifteen_minutes():
    backoff = Backoff()
    assert [backoff.delay(n, 0.5) for n in range(0, 6)] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert backoff.delay(11, 0.5) == 900.0
    assert backoff.delay(10_000, 0.5) == 900.0


@given(st.integers(1, 200), st.floats(0, 0.999999))
def test_jitter_stays_within_ten_percent(failures: int, spread: float):
    backoff = Backoff()
    plain = backoff.delay(failures, 0.5)
    assert 0.9 * plain <= backoff.delay(failures, spread) <= 1.1 * plain
