"""Pinata's per-account request limits by plan, adjustable while the stack runs.

Pinata's documented limits (https://docs.pinata.cloud/account-management/limits, "API Limits":
"API rate limits on both the Files API and IPFS API are currently determined by plan type"):
Free 60 requests per minute, Picnic 250, Fiesta 500; and, on every plan, "Endpoints under
api.pinata.cloud/data/ have a rate limit of 30 requests per minute". The older page
(docs.pinata.cloud/docs/limits) gave one figure for every account, 180 a minute: the ``legacy``
plan here.

Two buckets, each a sliding 60 s window of accepted requests: ``/data/*`` (testAuthentication,
pinList, ...) and everything else. The docs say the ``/data/`` routes have their own limit
and are silent on whether those requests also count against the plan's: here they count only in
their own bucket. Once a bucket's window holds its limit, further requests to it get 429 with
``Retry-After`` = seconds until the oldest one leaves. Rejected requests are not counted in the
window, so a client that backs off as told gets through.

The counters (the admin API's ``GET /stats`` and ``GET /pinata/plan``): requests per route,
429s answered per bucket, and ``testAuthentication`` calls.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_S = 60.0
DATA_PREFIX = "/data/"
GENERAL = "general"  # the bucket names in counters and 429 answers
DATA = "data"
BUCKETS = (GENERAL, DATA)
TEST_AUTHENTICATION = "/data/testAuthentication"


@dataclass(frozen=True)
class PinataPlan:
    """One plan's limits, requests a minute (0: no limit)."""

    name: str
    requests_per_minute: int
    data_requests_per_minute: int

    def describe(self) -> dict[str, object]:
        return {
            "plan": self.name,
            "requests_per_minute": self.requests_per_minute,
            "data_requests_per_minute": self.data_requests_per_minute,
        }


# Pinata's documented /data/* limit, the same on every plan (module docstring).
DATA_REQUESTS_PER_MINUTE = 30
PLANS: dict[str, PinataPlan] = {
    plan.name: plan
    for plan in (
        PinataPlan("free", 60, DATA_REQUESTS_PER_MINUTE),
        PinataPlan("picnic", 250, DATA_REQUESTS_PER_MINUTE),
        PinataPlan("fiesta", 500, DATA_REQUESTS_PER_MINUTE),
        PinataPlan("legacy", 180, DATA_REQUESTS_PER_MINUTE),  # the older single figure
        PinataPlan("unlimited", 0, 0),  # not Pinata's: benchmarks that measure the engine
    )
}
# The devstack's default: a paid plan (Picnic), so a test suite's traffic fits as it would on
# a paid account; `devstack up --pinata-plan free` for the free plan.
DEFAULT_PLAN = "picnic"


class PlanError(ValueError):
    """An unknown plan name or a bad limit."""


def plan_named(name: str) -> PinataPlan:
    try:
        return PLANS[name.strip().lower()]
    except KeyError:
        raise PlanError(f"{name!r}: unknown Pinata plan; known: {', '.join(PLANS)}") from None


class _Window:
    """A sliding minute of accepted requests."""

    def __init__(self, limit: int, clock: Callable[[], float]) -> None:
        self.limit = int(limit)
        self._clock = clock
        self._accepted: deque[float] = deque()

    def held(self) -> int:
        self._expire(self._clock())
        return len(self._accepted)

    def try_acquire(self) -> float | None:
        now = self._clock()
        self._expire(now)
        if self.limit <= 0 or len(self._accepted) < self.limit:
            self._accepted.append(now)
            return None
        # The window may hold more than the limit after the limit was lowered: wait until
        # enough of the oldest requests have left for one more to fit.
        excess = len(self._accepted) - self.limit
        return max(0.0, self._accepted[excess] + WINDOW_S - now)

    def reset_at(self) -> float:
        """Monotonic time the oldest request leaves the window (now when it is empty)."""
        now = self._clock()
        self._expire(now)
        return self._accepted[0] + WINDOW_S if self._accepted else now

    def _expire(self, now: float) -> None:
        while self._accepted and self._accepted[0] <= now - WINDOW_S:
            self._accepted.popleft()


def bucket_of(path: str) -> str:
    return DATA if path.startswith(DATA_PREFIX) else GENERAL


@dataclass(frozen=True)
class Refusal:
    """A request a bucket refused: which, its limit, and how long to wait."""

    bucket: str
    limit: int
    wait_s: float
    reset_epoch_s: int  # X-RateLimit-Reset: when the window frees a place, Unix seconds


class PinataLimits:
    """The live limits; ``set_plan(name)`` or ``set(n)`` change them at run time."""

    def __init__(
        self,
        requests_per_minute: int | None = None,
        *,
        plan: str | PinataPlan = DEFAULT_PLAN,
        data_requests_per_minute: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        chosen = plan if isinstance(plan, PinataPlan) else plan_named(plan)
        self._clock = clock
        self._wall = wall_clock
        self.plan_name = chosen.name
        self._windows = {
            GENERAL: _Window(chosen.requests_per_minute, clock),
            DATA: _Window(chosen.data_requests_per_minute, clock),
        }
        if requests_per_minute is not None:
            self._windows[GENERAL].limit = int(requests_per_minute)
        if data_requests_per_minute is not None:
            self._windows[DATA].limit = int(data_requests_per_minute)
        self.requests_by_route: Counter[str] = Counter()  # accepted or not, by "METHOD /path"
        self.rejected_by_bucket: Counter[str] = Counter({bucket: 0 for bucket in BUCKETS})
        self.test_authentication_calls = 0

    # -- the plan ------------------------------------------------------------------------

    @property
    def requests_per_minute(self) -> int:
        return self._windows[GENERAL].limit

    @property
    def data_requests_per_minute(self) -> int:
        return self._windows[DATA].limit

    @property
    def rejected(self) -> int:
        """429s answered since the stack started, every bucket."""
        return sum(self.rejected_by_bucket.values())

    def set(self, requests_per_minute: int) -> int:
        """Change the general limit (``n <= 0``: none); returns the previous one. The windows'
        history is kept. The plan's name becomes ``custom`` unless it still matches."""
        previous = self._windows[GENERAL].limit
        self._windows[GENERAL].limit = int(requests_per_minute)
        self._rename()
        return previous

    def set_data(self, data_requests_per_minute: int) -> int:
        previous = self._windows[DATA].limit
        self._windows[DATA].limit = int(data_requests_per_minute)
        self._rename()
        return previous

    def set_plan(self, name: str) -> PinataPlan:
        """Switch to a named plan's limits (``PlanError`` for an unknown one)."""
        plan = plan_named(name)
        self._windows[GENERAL].limit = plan.requests_per_minute
        self._windows[DATA].limit = plan.data_requests_per_minute
        self.plan_name = plan.name
        return plan

    def _rename(self) -> None:
        limits = (self.requests_per_minute, self.data_requests_per_minute)
        for plan in PLANS.values():
            if (plan.requests_per_minute, plan.data_requests_per_minute) == limits:
                self.plan_name = plan.name
                return
        self.plan_name = "custom"

    # -- admission -----------------------------------------------------------------------

    def admit(self, method: str, path: str) -> Refusal | None:
        """Count one request and admit it (None) or say why not."""
        self.requests_by_route[f"{method.upper()} {_route(path)}"] += 1
        if path == TEST_AUTHENTICATION:
            self.test_authentication_calls += 1
        bucket = bucket_of(path)
        window = self._windows[bucket]
        wait = window.try_acquire()
        if wait is None:
            return None
        self.rejected_by_bucket[bucket] += 1
        reset = self._wall() + (window.reset_at() - self._clock())
        return Refusal(bucket, window.limit, wait, math.ceil(reset))

    def try_acquire(self) -> float | None:
        """Admit one request on the general bucket (None) or say how many seconds to wait (the
        form the unit tests and older callers use; uncounted by route)."""
        wait = self._windows[GENERAL].try_acquire()
        if wait is not None:
            self.rejected_by_bucket[GENERAL] += 1
        return wait

    # -- reports -------------------------------------------------------------------------

    def describe(self) -> dict[str, int]:
        """The general bucket's sliding minute now (``GET /stats``' ``pinata_window``)."""
        return {
            "requests_per_minute": self.requests_per_minute,
            "requests_in_window": self._windows[GENERAL].held(),
        }

    def snapshot(self) -> dict[str, object]:
        """The plan, each bucket's window and the counters (``GET /pinata/plan``)."""
        return {
            "plan": self.plan_name,
            "requests_per_minute": self.requests_per_minute,
            "data_requests_per_minute": self.data_requests_per_minute,
            "buckets": {
                bucket: {
                    "limit": self._windows[bucket].limit,
                    "requests_in_window": self._windows[bucket].held(),
                    "rejected": self.rejected_by_bucket[bucket],
                }
                for bucket in BUCKETS
            },
            "requests_by_route": dict(sorted(self.requests_by_route.items())),
            "rate_limited": dict(self.rejected_by_bucket),
            "test_authentication_calls": self.test_authentication_calls,
        }


def _route(path: str) -> str:
    """A route without its CID: ``/pinning/unpin/{cid}``, so counters stay few."""
    if path.startswith("/pinning/unpin/"):
        return "/pinning/unpin/{cid}"
    return path


def retry_after_header(wait_s: float) -> str:
    """Whole seconds, at least 1 (HTTP allows only integers)."""
    return str(max(1, math.ceil(wait_s)))
