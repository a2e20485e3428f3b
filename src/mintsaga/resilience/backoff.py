"""How long to wait before the next attempt, and whether to retry at all.

Temporal's server adds no jitter to its retry intervals, so an activity that fails sets
``next_retry_delay`` itself from `retry_delay`: the service's base * 2^(attempt-1), stretched by
the service's recent success rate (`AdaptiveBackoff`, the spec's "Adaptive Backoff"), capped,
plus up to ``jitter`` of it at random; or the server's ``Retry-After``, whichever is longer.

A `RetryBudget` keeps a storm of failures from multiplying the load on a struggling provider:
retries are allowed only while they stay below a share of the requests over a short window,
plus a small floor so that a quiet service can still retry.

The numbers are the spec's ("Service-Specific Backoff Parameters"); ``BACKOFF_BY_SERVICE`` is
the one table both the saga's retry policies (workflows/policies.py) and the activities'
jittered delays (activities/pacing.py) read.

For tests only: ``set_testing(True)`` makes every delay ``delay_s`` (0 by default), like
stamina's testing switch, so suites do not sleep.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]

# A cap on the exponent: beyond it the delay is the cap anyway, and 2.0 ** n stays finite.
_MAX_EXPONENT = 64


@dataclass(frozen=True)
class Backoff:
    """One service's backoff.

    Attributes:
        base_s: the first delay (attempt 1).
        cap_s: the longest delay before jitter.
        jitter: share of the delay added at random (0.2 = up to +20 %).
    """

    base_s: float
    cap_s: float
    jitter: float

    def __post_init__(self) -> None:
        if self.base_s <= 0:
            raise ValueError("base_s must be > 0")
        if self.cap_s < self.base_s:
            raise ValueError("cap_s must be >= base_s")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be in [0, 1]")


SOLANA_BACKOFF = Backoff(2.0, 8.0, 0.20)
IPFS_BACKOFF = Backoff(1.0, 16.0, 0.10)
DB_BACKOFF = Backoff(0.5, 2.0, 0.05)

# Keyed by the `service` column of workflows/policies.py.
BACKOFF_BY_SERVICE: dict[str, Backoff] = {
    "solana": SOLANA_BACKOFF,
    "ipfs": IPFS_BACKOFF,
    "db": DB_BACKOFF,
}

_testing = False
_testing_delay_s = 0.0


def set_testing(enabled: bool, *, delay_s: float = 0.0) -> None:
    """For tests only: while enabled, `retry_delay` returns ``delay_s`` whatever it is asked."""
    global _testing, _testing_delay_s
    if delay_s < 0:
        raise ValueError("delay_s must be >= 0")
    _testing = enabled
    _testing_delay_s = delay_s


def is_testing() -> bool:
    return _testing


def retry_delay(
    backoff: Backoff,
    attempt: int,
    *,
    retry_after_s: float | None = None,
    stretch: float = 1.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before the attempt after `attempt` (the first attempt is 1).

    ``min(base * 2**(attempt-1) * stretch, cap) * (1 + U[0, jitter])``, but never shorter than
    ``retry_after_s`` (the server's Retry-After) when one is given.
    """
    if attempt < 1:
        raise ValueError("attempt starts at 1")
    if stretch <= 0:
        raise ValueError("stretch must be > 0")
    if _testing:
        return _testing_delay_s
    exponential = backoff.base_s * 2.0 ** min(attempt - 1, _MAX_EXPONENT) * stretch
    delay = min(exponential, backoff.cap_s)
    draw = rng.random() if rng is not None else random.random()
    delay += delay * backoff.jitter * draw
    if retry_after_s is not None and retry_after_s > delay:
        return float(retry_after_s)
    return delay


class AdaptiveBackoff:
    """The spec's adaptive backoff: delays stretch when the recent success rate drops.

    Keep one per service; record every attempt's outcome. ``stretch()`` is
    ``max(0.5, 2 - success_rate)`` over the last ``size`` outcomes (1.0 with none yet), i.e.
    1x when everything succeeds, up to 2x when everything fails.
    """

    def __init__(self, *, size: int = 10) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self._outcomes: deque[bool] = deque(maxlen=size)

    def record(self, success: bool) -> None:
        self._outcomes.append(success)

    @property
    def success_rate(self) -> float:
        if not self._outcomes:
            return 1.0
        return sum(self._outcomes) / len(self._outcomes)

    def stretch(self) -> float:
        return max(0.5, 2.0 - self.success_rate)

    def delay(
        self,
        backoff: Backoff,
        attempt: int,
        *,
        retry_after_s: float | None = None,
        rng: random.Random | None = None,
    ) -> float:
        """`retry_delay` with this service's current stretch."""
        return retry_delay(
            backoff, attempt, retry_after_s=retry_after_s, stretch=self.stretch(), rng=rng
        )


class RetryBudget:
    """Retries allowed only while they stay below ``ratio`` of the requests, plus a floor.

    Over the last ``window_s`` seconds a retry may go while
    ``retries < ratio * requests + min_per_s * window_s``. Call `record_request` for every
    first attempt and `record_retry` for every retry that goes (not both). The floor lets a
    quiet service retry at all; the ratio keeps a failure storm from multiplying the load.
    """

    # Beyond this many entries per window the oldest are dropped: memory stays bounded, and
    # dropping requests only makes the budget stricter.
    MAX_ENTRIES = 100_000

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        min_per_s: float = 1.0,
        window_s: float = 10.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if ratio < 0:
            raise ValueError("ratio must be >= 0")
        if min_per_s < 0:
            raise ValueError("min_per_s must be >= 0")
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.ratio = ratio
        self.min_per_s = min_per_s
        self.window_s = window_s
        self._clock = clock
        self._requests: deque[float] = deque(maxlen=self.MAX_ENTRIES)
        self._retries: deque[float] = deque(maxlen=self.MAX_ENTRIES)

    def record_request(self) -> None:
        now = self._clock()
        self._prune(now)
        self._requests.append(now)

    def record_retry(self) -> None:
        now = self._clock()
        self._prune(now)
        self._retries.append(now)

    def can_retry(self) -> bool:
        self._prune(self._clock())
        allowance = self.ratio * len(self._requests) + self.min_per_s * self.window_s
        return len(self._retries) < allowance

    def snapshot(self) -> dict[str, float]:
        self._prune(self._clock())
        return {
            "requests": len(self._requests),
            "retries": len(self._retries),
            "allowance": self.ratio * len(self._requests) + self.min_per_s * self.window_s,
        }

    def _prune(self, now: float) -> None:
        horizon = now - self.window_s
        for q in (self._requests, self._retries):
            while q and q[0] <= horizon:
                q.popleft()
