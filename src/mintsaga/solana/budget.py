"""A request budget per Solana endpoint, shared by every mint of a worker (issue 15).

Hosted RPC plans limit requests per second, and ``sendTransaction`` separately and lower
(Helius, https://www.helius.dev/docs/billing/rate-limits: Free 10 requests/s and 1 send/s,
Developer 50 and 5, ...; QuickNode's plans likewise in requests per second). Past the limit the
provider answers HTTP 429. Without a budget, a few dozen mints polling and rebroadcasting at
once make a 429 storm; with one, the worker's calls wait for room instead.

Each endpoint has two windows: its requests (every call) and its sends (``sendTransaction``,
which also counts as a request). A window admits at most ``limit`` calls in any sliding
second, the way the providers count ("per second"; a limit under 1 a second admits one call per
``1/limit`` seconds). The limit is the endpoint's configured plan (``SOLANA_RPC_REQUESTS_PER_S``
and ``SOLANA_RPC_SENDS_PER_S``; none: unlimited), adjusted by AIMD (TCP's congestion rule):

- a 429 halves it (from the rate actually sent in the last second when no limit was set) and
  holds the window for the answer's ``Retry-After`` (1 s when it gives none);
- each second without a 429 adds ``INCREASE_PER_S`` back, up to the configured plan (none
  configured: until twice the rate the endpoint refused, then unlimited again).

Pure logic with an injectable clock: no sleeping here (``SolanaRpc`` waits for ``wait_for()``).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]

WINDOW_S = 1.0
MIN_RATE = 0.5  # however many 429s, a call every 2 s still goes out
INCREASE_PER_S = 1.0  # the additive increase, per second without a 429
DEFAULT_HOLD_S = 1.0  # a 429 without Retry-After holds the window this long
# A call's room opens this much after the span since the call it replaces: the provider counts
# arrivals, and the earlier call may have arrived later after it left than this one will.
JITTER_S = 0.05
SEND_METHOD = "sendTransaction"


class RateWindow:
    """At most ``limit`` admissions in any sliding second (None: no limit), with AIMD."""

    def __init__(self, limit: float | None, *, clock: Clock = time.monotonic) -> None:
        if limit is not None and limit <= 0:
            raise ValueError("a rate limit must be > 0 (None: no limit)")
        self.configured = limit
        self.limit = limit  # the current one (AIMD); None: no limit
        self._clock = clock
        self._admitted: deque[float] = deque()
        self._held_until = 0.0
        self._last_increase = 0.0
        self._refused_at_rate: float | None = None  # unconfigured: the rate a 429 came at

    def _span(self) -> tuple[float, int]:
        """The sliding span and how many calls fit in it, for the current limit."""
        assert self.limit is not None
        if self.limit >= 1:
            return WINDOW_S, math.floor(self.limit)
        return 1.0 / self.limit, 1

    def _expire(self, now: float) -> None:
        slowest = min(MIN_RATE, self.configured or MIN_RATE)  # the longest span a limit needs
        horizon = now - max(WINDOW_S, 1.0 / slowest) - JITTER_S
        while self._admitted and self._admitted[0] <= horizon:
            self._admitted.popleft()

    def wait_for(self) -> float:
        """Seconds until one more call fits (0: now)."""
        now = self._clock()
        self._expire(now)
        hold = max(0.0, self._held_until - now)
        if self.limit is None:
            return hold
        span, fits = self._span()
        span += JITTER_S
        recent = [t for t in self._admitted if t > now - span]
        if len(recent) < fits:
            return hold
        return max(hold, recent[len(recent) - fits] + span - now)

    def take(self) -> None:
        now = self._clock()
        self._expire(now)  # also when nobody asks wait_for (an unlimited window)
        self._admitted.append(now)

    def sent_last_second(self) -> int:
        now = self._clock()
        return sum(1 for t in self._admitted if t > now - WINDOW_S)

    def throttled(self, retry_after: float | None) -> None:
        """The endpoint answered 429: halve the limit and hold for ``retry_after``."""
        now = self._clock()
        current = self.limit if self.limit is not None else float(max(1, self.sent_last_second()))
        if self.configured is None and self._refused_at_rate is None:
            self._refused_at_rate = current
        floor = MIN_RATE if self.configured is None else min(MIN_RATE, self.configured)
        self.limit = max(floor, current / 2)
        hold = DEFAULT_HOLD_S if retry_after is None else min(retry_after, 60.0)
        self._held_until = max(self._held_until, now + hold)
        self._last_increase = now

    def succeeded(self) -> None:
        """An answer that was not a 429: grow the limit back, one step per second."""
        if self.limit is None:
            return
        now = self._clock()
        steps = math.floor((now - self._last_increase) / WINDOW_S)
        if steps <= 0:
            return
        self._last_increase = now
        grown = self.limit + steps * INCREASE_PER_S
        if self.configured is not None:
            self.limit = min(self.configured, grown)
        elif self._refused_at_rate is not None and grown >= 2 * self._refused_at_rate:
            self.limit, self._refused_at_rate = None, None
        else:
            self.limit = grown


@dataclass
class EndpointBudget:
    """One endpoint's request and send windows."""

    requests: RateWindow
    sends: RateWindow

    @classmethod
    def of(
        cls,
        requests_per_s: float | None,
        sends_per_s: float | None,
        *,
        clock: Clock = time.monotonic,
    ) -> EndpointBudget:
        return cls(RateWindow(requests_per_s, clock=clock), RateWindow(sends_per_s, clock=clock))

    def windows(self, method: str) -> tuple[RateWindow, ...]:
        return (self.requests, self.sends) if method == SEND_METHOD else (self.requests,)

    def wait_for(self, method: str) -> float:
        """Seconds until a ``method`` call fits both windows it counts in (0: now)."""
        return max(window.wait_for() for window in self.windows(method))

    def take(self, method: str) -> None:
        for window in self.windows(method):
            window.take()

    def throttled(self, method: str, retry_after: float | None) -> None:
        """A 429 to ``method``: a send's counts against the send window (the lower plan
        limit), any other against the requests window."""
        (self.sends if method == SEND_METHOD else self.requests).throttled(retry_after)

    def succeeded(self, method: str) -> None:
        for window in self.windows(method):
            window.succeeded()

    @property
    def limited(self) -> bool:
        """Whether either window is below its configured plan (AIMD after 429s)."""
        return any(w.limit != w.configured for w in (self.requests, self.sends))
