"""Pinata's per-account request rate limit, adjustable while the stack runs.

A sliding 60 s window of accepted requests: once ``requests_per_minute`` of them fall inside
it, further requests get 429 with ``Retry-After`` = seconds until the oldest one leaves.
Rejected requests are not counted in the window, so a client that backs off as told gets
through; ``rejected`` counts them (the admin API's ``GET /stats``).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

WINDOW_S = 60.0


class PinataLimits:
    """The live limit; ``set(n)`` changes it at run time (``n <= 0`` means unlimited)."""

    def __init__(
        self, requests_per_minute: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rpm = requests_per_minute
        self._clock = clock
        self._accepted: deque[float] = deque()
        self.rejected = 0  # 429s answered since the stack started

    @property
    def requests_per_minute(self) -> int:
        return self._rpm

    def set(self, requests_per_minute: int) -> int:
        """Change the limit; returns the previous one. The window's history is kept."""
        previous, self._rpm = self._rpm, int(requests_per_minute)
        return previous

    def describe(self) -> dict[str, int]:
        self._expire(self._clock())
        return {"requests_per_minute": self._rpm, "requests_in_window": len(self._accepted)}

    def try_acquire(self) -> float | None:
        """Admit one request (returns None) or say how many seconds to wait."""
        now = self._clock()
        self._expire(now)
        if self._rpm <= 0 or len(self._accepted) < self._rpm:
            self._accepted.append(now)
            return None
        # The window may hold more than the limit after set() lowered it: wait until enough
        # of the oldest requests have left for one more to fit.
        self.rejected += 1
        excess = len(self._accepted) - self._rpm
        return max(0.0, self._accepted[excess] + WINDOW_S - now)

    def _expire(self, now: float) -> None:
        while self._accepted and self._accepted[0] <= now - WINDOW_S:
            self._accepted.popleft()


def retry_after_header(wait_s: float) -> str:
    """Whole seconds, at least 1 (HTTP allows only integers)."""
    return str(max(1, math.ceil(wait_s)))
