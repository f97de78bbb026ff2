"""The one backoff value type: a child's restart delays and a state delivery's retry delays.

``delay(n) = initial_seconds * multiplier**(n-1)``, capped at ``max_seconds``.
"""

from __future__ import annotations

import dataclasses
import random

__all__ = ["Backoff"]


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Delay before automatic restart n (1-based) since the last stable run."""

    initial_seconds: float = 0.5
    max_seconds: float = 30.0
    multiplier: float = 2.0
    reset_after_seconds: float = 60.0

    def delay(self, n: int) -> float:
        """The delay before the n-th consecutive restart."""
        exponent = max(n - 1, 0)
        # Cap the exponent so a long flapping history cannot overflow a float.
        return min(self.max_seconds, self.initial_seconds * self.multiplier ** min(exponent, 64))

    def jittered(self, n: int, spread: float = 0.2) -> float:
        """``delay(n)`` spread uniformly by ±``spread`` (0.2: ±20 %), so retries of many callers do not align."""
        return self.delay(n) * random.uniform(1.0 - spread, 1.0 + spread)
