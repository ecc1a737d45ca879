"""When to retry an environment that failed: exponential backoff with jitter. Pure.

About 1 s, 2 s, 4 s ... up to 15 min (Flux: 750 ms to 15 min), each delay spread by +/- 10 %
so that many environments failing together do not retry together. A success resets it; an
invalid spec (`Stalled`) is not retried at all until its content changes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 1.0
    maximum: float = 900.0
    factor: float = 2.0
    jitter: float = 0.1

    def delay(self, failures: int, spread: float) -> float:
        """Seconds to wait after the `failures`-th failure in a row; `spread` is in [0, 1)."""
        if failures <= 0:
            return 0.0
        exponent = min(failures - 1, 64)  # far past the maximum already; no float overflow
        base = min(self.maximum, self.initial * self.factor**exponent)
        return max(0.0, base * (1 + self.jitter * (2 * spread - 1)))
