"""Fixed, epoch-aligned counting windows, shared by the limiters kept in Redis
(accounts' sign-up and log-in limits, the gateway's requests per minute).

A window is one counter key that expires by itself: one round trip per check
and nothing to clean up. Every replica computes the same window from its own
clock; keys outlive their window a little because those clocks differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# How long a counter outlives its window (replicas' clocks differ by less).
KEY_MARGIN_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Limit:
    count: int
    window_seconds: int

    def __post_init__(self) -> None:
        if self.count < 1 or self.window_seconds < 1:
            raise ValueError("a limit needs a count and a window of at least 1")


def window_of(now: float, limit: Limit) -> tuple[int, int]:
    """(the window `now` falls in, whole seconds until it ends, at least 1)."""
    index = int(now // limit.window_seconds)
    ends = (index + 1) * limit.window_seconds
    return index, max(1, math.ceil(ends - now))


def millis_left(now: float, window_seconds: int) -> int:
    """Milliseconds from `now` until its window ends (at least 1)."""
    ends = (int(now // window_seconds) + 1) * window_seconds
    return max(1, math.ceil((ends - now) * 1000))
