"""The budget for Pinata's ``/data/*`` routes (testAuthentication, pinList), one per worker.

Pinata limits the ``/data/`` routes to 30 requests a minute on every plan, apart from the
plan's own limit (https://docs.pinata.cloud/account-management/limits). The uploads and unpins
are paced fleet-wide by the Pinata task queue's rate (`settings.pinata_activities_per_second`);
the ``/data/*`` calls are not activities of that queue, so this budget paces them: at most
``per_minute`` of them leave this process in any sliding minute, and a 429 from a ``/data/``
route holds the budget for its ``Retry-After``.

Per worker, and why that is safe: no mint calls a ``/data/`` route on the happy path
(``check_ipfs`` trusts a fresh answer of Pinata instead of asking: activities/ipfs.py). What
remains is one call when a worker starts, the health schedule's ``testAuthentication`` (one
schedule for the whole fleet, so one call per period whichever worker runs it), a pre-mint
check on a worker that has heard nothing from Pinata for a minute (at most one a minute per
worker, shared by the checks in flight), and pin-list reads of scheduled jobs (one schedule
each, fleet-wide). So the fleet's total stays far under the account's 30 whatever the budget of
one worker; this budget keeps one process's burst (a page-by-page read, a storm of pre-mint
checks after a lull) inside it, and a 429 caused elsewhere is waited out, not repeated.

Pure logic with an injectable clock, plus ``acquire()`` that sleeps for room.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from mintsaga.errors import ErrorKind, ServiceError

WINDOW_S = 60.0
DATA_PREFIX = "/data/"
# Room opens this much after the call it replaces has left the window: Pinata counts arrivals,
# and the earlier call may have arrived later after it left than the next one will.
JITTER_S = 0.25
# Outside an activity (a worker's start, a tool) a call may wait this long for room.
OUTSIDE_ATTEMPT_WAIT_S = 60.0
DEFAULT_PER_MINUTE = 30  # Pinata's documented /data/* limit


class DataBudget:
    """At most ``per_minute`` ``/data/*`` requests in any sliding minute from this process."""

    def __init__(
        self, per_minute: int = DEFAULT_PER_MINUTE, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if per_minute < 1:
            raise ValueError("a /data/* budget needs at least 1 request a minute")
        self.per_minute = per_minute
        self._clock = clock
        self._sent: deque[float] = deque()
        self._held_until = 0.0
        self.waits = 0  # calls that waited for room (for tests and logs)

    def set_limit(self, per_minute: int) -> None:
        if per_minute < 1:
            raise ValueError("a /data/* budget needs at least 1 request a minute")
        self.per_minute = per_minute

    def wait_s(self) -> float:
        """Seconds until one more request fits (0: now)."""
        now = self._clock()
        while self._sent and self._sent[0] <= now - WINDOW_S:
            self._sent.popleft()
        held = max(0.0, self._held_until - now)
        if len(self._sent) < self.per_minute:
            return held
        oldest = self._sent[len(self._sent) - self.per_minute]
        return max(held, oldest + WINDOW_S + JITTER_S - now)

    def take(self) -> None:
        """Count one request sent now (call only when ``wait_s()`` is 0)."""
        self._sent.append(self._clock())

    def hold(self, seconds: float) -> None:
        """Pinata answered 429: send nothing more for ``seconds`` (its Retry-After)."""
        self._held_until = max(self._held_until, self._clock() + max(seconds, 1.0))

    async def acquire(self, max_wait_s: float, *, endpoint: str | None = None) -> None:
        """Wait for room and take it; a ``PinataDataBudget`` error (rate_limited, with the wait
        as its retry_after) when the room is further away than ``max_wait_s``."""
        waited = False
        while (wait := self.wait_s()) > 0:
            if wait > max_wait_s:
                raise ServiceError(
                    f"Pinata's /data/ budget ({self.per_minute} requests a minute for this"
                    f" worker, PINATA_DATA_REQUESTS_PER_MINUTE) has room in {wait:.1f} s, later"
                    " than this call may wait",
                    service="pinata",
                    kind=ErrorKind.RATE_LIMITED,
                    code="PinataDataBudget",
                    endpoint=endpoint,
                    retry_after=wait,
                )
            if not waited:
                self.waits += 1
                waited = True
            await asyncio.sleep(wait)
            max_wait_s -= wait
        self.take()


_shared: dict[str, DataBudget] = {}


def shared_budget(api_url: str) -> DataBudget:
    """This process's budget for the Pinata account at ``api_url`` (every client of it shares
    one: the worker's, the health probes', a tool's)."""
    key = api_url.rstrip("/")
    budget = _shared.get(key)
    if budget is None:
        budget = _shared[key] = DataBudget()
    return budget


def is_data_route(path: str) -> bool:
    return path.startswith(DATA_PREFIX)
