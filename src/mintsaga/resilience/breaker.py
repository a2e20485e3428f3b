"""A circuit breaker per endpoint: failure-rate window, volume gate, bounded half-open probes.

The semantics are resilience4j's and Polly v8's, with the spec's numbers ("Circuit Breaker
Pattern")::

    CLOSED ──(failure rate >= 50 % over window_s with >= min_calls calls,
              or N consecutive retriable failures [within consecutive_window_s])──▶ OPEN
    OPEN ──(open_s elapsed, applied when next looked at)──▶ HALF_OPEN
    HALF_OPEN ──(half_open_successes successes in a row)──▶ CLOSED     (a recovery)
    HALF_OPEN ──(any retriable failure, or no probe for half_open_idle_s)──▶ OPEN  (a reopen)

Only retriable failures count: a permanent error (a bad request) says nothing about the endpoint,
so ``record_failure(retriable=False)`` only hands back a half-open probe permit.

Overrides (set at run time by an operator) mask the state machine, which stays frozen while one
is set and resumes where it was when it is cleared:

- ``FORCE_OPEN``: nothing is allowed; the state reads OPEN and ``retry_at()`` is None.
- ``FORCE_CLOSED``: everything is allowed; the state reads CLOSED; outcomes feed the metrics only.
- ``DISABLED``: everything is allowed; the state reads whatever it was; metrics only.

Nothing here awaits, sleeps or starts a thread: every method runs to completion on the event
loop, so the state cannot change half-way through a call. Time comes from an injectable clock
(``time.monotonic`` by default) and time-based transitions are applied lazily, whenever the
breaker is looked at (``state``, ``allow()``, ``retry_at()``, ``snapshot()``, recording).

Counters: ``trips`` counts CLOSED → OPEN, ``recoveries`` HALF_OPEN → CLOSED, ``reopens``
HALF_OPEN → OPEN, ``transitions`` every change of the state as read (overrides included). So
``trips - recoveries`` is 1 exactly while an outage episode lasts (OPEN or HALF_OPEN), else 0.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

logger = logging.getLogger("mintsaga.breaker")

Clock = Callable[[], float]
TransitionHook = Callable[[str, "BreakerState", "BreakerState", str], None]

# At most this many outcomes are kept in the sliding window, however busy the endpoint: the
# rate is then computed over the newest ones (memory stays bounded under any load).
MAX_WINDOW_CALLS = 4096


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Override(enum.StrEnum):
    NONE = "none"
    FORCE_OPEN = "force_open"
    FORCE_CLOSED = "force_closed"
    DISABLED = "disabled"  # metrics only, always allows


@dataclass(frozen=True)
class BreakerConfig:
    """How one kind of endpoint trips and recovers. All durations are in seconds."""

    open_s: float  # OPEN duration before HALF_OPEN (Solana 60, IPFS 30, DB 10)
    consecutive_failures: int | None  # trip on N retriable failures in a row (None: rate only)
    consecutive_window_s: float | None = None  # the N failures must fall within this span
    window_s: float = 60.0  # sliding window for the failure rate
    min_calls: int = 10  # volume threshold before the rate can trip
    failure_rate: float = 0.5  # trip at >= this share of failures
    half_open_max_calls: int = 5  # at most this many probes outstanding in HALF_OPEN
    half_open_successes: int = 3  # this many successes in a row close it
    half_open_idle_s: float = 60.0  # no probe for this long in HALF_OPEN reopens it

    def __post_init__(self) -> None:
        if self.open_s <= 0:
            raise ValueError("open_s must be > 0")
        if self.consecutive_failures is not None and self.consecutive_failures < 1:
            raise ValueError("consecutive_failures must be >= 1 or None")
        if self.consecutive_window_s is not None and self.consecutive_window_s <= 0:
            raise ValueError("consecutive_window_s must be > 0 or None")
        if self.window_s <= 0:
            raise ValueError("window_s must be > 0")
        if self.min_calls < 1:
            raise ValueError("min_calls must be >= 1")
        if not 0 < self.failure_rate <= 1:
            raise ValueError("failure_rate must be in (0, 1]")
        if self.half_open_max_calls < 1:
            raise ValueError("half_open_max_calls must be >= 1")
        if self.half_open_successes < 1:
            raise ValueError("half_open_successes must be >= 1")
        if self.half_open_idle_s <= 0:
            raise ValueError("half_open_idle_s must be > 0")


# The spec's "Service-Specific Circuit Breakers"; the rate rule (50 % of >= 10 calls in 60 s)
# and the half-open rules are the defaults above.
SOLANA_BREAKER = BreakerConfig(open_s=60.0, consecutive_failures=3)
IPFS_BREAKER = BreakerConfig(open_s=30.0, consecutive_failures=5, consecutive_window_s=120.0)
DB_BREAKER = BreakerConfig(open_s=10.0, consecutive_failures=3)


class BreakerOpenError(Exception):
    """A call refused by an open breaker.

    Attributes:
        name: the breaker's (endpoint's) name.
        retry_at: the clock time at which it may be tried again (``math.inf`` when forced open).
    """

    def __init__(self, name: str, retry_at: float) -> None:
        when = "until the override is cleared" if math.isinf(retry_at) else f"until {retry_at:.3f}"
        super().__init__(f"circuit breaker {name!r} is open {when}")
        self.name = name
        self.retry_at = retry_at


class CircuitBreaker:
    """One endpoint's breaker. See the module docstring for the rules.

    Args:
        name: the endpoint's name (a URL without credentials, or a label).
        config: its thresholds.
        clock: seconds from any fixed point, never going backwards.
        on_transition: called as ``(name, old, new, reason)`` after every state change; an
            exception it raises is logged and swallowed, so metrics cannot break calls.
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        *,
        clock: Clock = time.monotonic,
        on_transition: TransitionHook | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self._on_transition = on_transition
        self._state = BreakerState.CLOSED  # the state machine's own state, under any override
        self._override = Override.NONE
        # sliding window of (time, ok, latency_s); only successes and retriable failures
        self._window: deque[tuple[float, bool, float | None]] = deque(maxlen=MAX_WINDOW_CALLS)
        self._streak: deque[float] = deque(maxlen=config.consecutive_failures or 1)
        self._open_until = 0.0
        self._half_open_in_flight = 0
        self._half_open_successes = 0
        self._half_open_activity = 0.0  # last probe admitted or answered in HALF_OPEN
        self.trips = 0
        self.recoveries = 0
        self.reopens = 0
        self.transitions = 0
        self.rejected = 0  # calls refused by allow()
        self.ignored_failures = 0  # non-retriable failures

    # ---- reading ---------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        self._advance(self._clock())
        return self._effective()

    @property
    def override(self) -> Override:
        return self._override

    def retry_at(self) -> float | None:
        """When OPEN (not forced): the clock time it turns HALF_OPEN; otherwise None."""
        self._advance(self._clock())
        if self._effective() is BreakerState.OPEN and self._override is Override.NONE:
            return self._open_until
        return None

    def success_rate(self) -> float | None:
        """The share of successes over the current window (None: no call in it): how bad an
        open endpoint is, for a pool that must pick among open ones."""
        now = self._clock()
        self._advance(now)
        self._prune(now)
        if not self._window:
            return None
        return sum(1 for _, ok, _ in self._window if ok) / len(self._window)

    def snapshot(self) -> dict[str, object]:
        """Metrics for dashboards and the operator commands, over the current window."""
        now = self._clock()
        self._advance(now)
        self._prune(now)
        calls = len(self._window)
        failures = sum(1 for _, ok, _ in self._window if not ok)
        latencies = sorted(lat for _, ok, lat in self._window if ok and lat is not None)
        return {
            "name": self.name,
            "state": str(self._effective()),
            "override": str(self._override),
            "calls": calls,
            "failures": failures,
            "success_rate": (calls - failures) / calls if calls else None,
            "consecutive_failures": len(self._streak),
            "half_open_in_flight": self._half_open_in_flight,
            "retry_at": self.retry_at(),
            "trips": self.trips,
            "recoveries": self.recoveries,
            "reopens": self.reopens,
            "transitions": self.transitions,
            "rejected": self.rejected,
            "ignored_failures": self.ignored_failures,
            "latency": {
                "count": len(latencies),
                "mean_s": sum(latencies) / len(latencies) if latencies else None,
                "p95_s": _nearest_rank(latencies, 0.95),
            },
        }

    # ---- calling ---------------------------------------------------------------------------

    def allow(self) -> bool:
        """May a call go now? In HALF_OPEN a True answer takes one of the probe permits."""
        now = self._clock()
        self._advance(now)
        if self._override is Override.FORCE_OPEN:
            allowed = False
        elif self._override is not Override.NONE or self._state is BreakerState.CLOSED:
            allowed = True
        elif self._state is BreakerState.OPEN:
            allowed = False
        elif self._half_open_in_flight < self.config.half_open_max_calls:
            self._half_open_in_flight += 1
            self._half_open_activity = now
            allowed = True
        else:
            allowed = False
        if not allowed:
            self.rejected += 1
        return allowed

    def check(self) -> None:
        """``allow()``, raising `BreakerOpenError` instead of answering False."""
        if not self.allow():
            at = self.retry_at()
            raise BreakerOpenError(self.name, math.inf if at is None else at)

    def record_success(self, latency_s: float | None = None) -> None:
        now = self._clock()
        self._advance(now)
        self._window.append((now, True, latency_s))
        self._prune(now)
        if self._release_permit(now):
            return
        self._streak.clear()
        if self._state is BreakerState.HALF_OPEN:
            self._half_open_successes += 1
            if self._half_open_successes >= self.config.half_open_successes:
                self._window.clear()
                self._set_state(BreakerState.CLOSED, "probes succeeded", now)

    def record_failure(self, *, retriable: bool = True, streak: bool = True) -> None:
        """A call failed. ``retriable=False``: the endpoint answered, the request was at fault.
        ``streak=False``: it counts toward the failure rate, not the consecutive-failures rule
        (the database's "3 connection failures": a query cut off on an open connection is
        not one)."""
        now = self._clock()
        self._advance(now)
        if not retriable:
            self.ignored_failures += 1
            self._release_permit(now)
            return
        self._window.append((now, False, None))
        self._prune(now)
        if self._release_permit(now):
            return
        if self._state is BreakerState.HALF_OPEN:
            self._open(now, "probe failed")
        elif self._state is BreakerState.CLOSED:
            if streak:
                self._streak.append(now)
            reason = self._trip_reason(now)
            if reason is not None:
                self._open(now, reason)

    # ---- overrides -------------------------------------------------------------------------

    def reset(self, reason: str = "reset") -> None:
        """Close the breaker now and forget its window: the spec's manual reset, once the
        endpoint is known to be well again. An open episode ends as a recovery."""
        now = self._clock()
        self._window.clear()
        self._streak.clear()
        self._half_open_in_flight = 0
        self._half_open_successes = 0
        if self._state is BreakerState.OPEN:
            self.recoveries += 1  # _set_state counts only HALF_OPEN -> CLOSED as one
        self._set_state(BreakerState.CLOSED, reason, now)

    def set_override(self, override: Override) -> None:
        override = Override(override)
        now = self._clock()
        self._advance(now)
        if override is self._override:
            return
        old = self._effective()
        previous = self._override
        self._override = override
        if override is Override.NONE and self._state is BreakerState.HALF_OPEN:
            self._half_open_activity = now  # the frozen time does not count as idle
        logger.info(
            "breaker %s: override %s -> %s",
            self.name,
            previous,
            override,
            extra={"breaker": self.name, "override": str(override)},
        )
        new = self._effective()
        if new is not old:
            self._notify(old, new, f"override {override}")
        self._advance(now)  # a cleared override lets the timers catch up

    # ---- internals -------------------------------------------------------------------------

    def _effective(self) -> BreakerState:
        if self._override is Override.FORCE_OPEN:
            return BreakerState.OPEN
        if self._override is Override.FORCE_CLOSED:
            return BreakerState.CLOSED
        return self._state

    def _advance(self, now: float) -> None:
        """Apply the time-based transitions that are due (none while an override is set)."""
        if self._override is not Override.NONE:
            return
        if self._state is BreakerState.OPEN and now >= self._open_until:
            self._state_half_open(now)
        if (
            self._state is BreakerState.HALF_OPEN
            and now - self._half_open_activity >= self.config.half_open_idle_s
        ):
            self._open(now, f"no probe for {self.config.half_open_idle_s:g} s")

    def _release_permit(self, now: float) -> bool:
        """Hand back a half-open probe permit; True if the state machine must not move."""
        if self._state is BreakerState.HALF_OPEN:
            if self._half_open_in_flight > 0:
                self._half_open_in_flight -= 1
            self._half_open_activity = now
        return self._override is not Override.NONE

    def _trip_reason(self, now: float) -> str | None:
        cfg = self.config
        n = cfg.consecutive_failures
        if n is not None and len(self._streak) >= n:
            span = self._streak[-1] - self._streak[0]
            if cfg.consecutive_window_s is None or span <= cfg.consecutive_window_s:
                return f"{n} consecutive failures"
        calls = len(self._window)
        if calls >= cfg.min_calls:
            failures = sum(1 for _, ok, _ in self._window if not ok)
            if failures >= cfg.failure_rate * calls:
                return f"{failures}/{calls} calls failed in {cfg.window_s:g} s"
        return None

    def _prune(self, now: float) -> None:
        horizon = now - self.config.window_s
        window = self._window
        while window and window[0][0] <= horizon:
            window.popleft()

    def _open(self, now: float, reason: str) -> None:
        self._open_until = now + self.config.open_s
        self._half_open_in_flight = 0
        self._half_open_successes = 0
        self._streak.clear()
        self._set_state(BreakerState.OPEN, reason, now)

    def _state_half_open(self, now: float) -> None:
        self._half_open_in_flight = 0
        self._half_open_successes = 0
        self._half_open_activity = now
        self._set_state(BreakerState.HALF_OPEN, f"open for {self.config.open_s:g} s", now)

    def _set_state(self, new: BreakerState, reason: str, now: float) -> None:
        old = self._state
        if new is old:
            return
        self._state = new
        if old is BreakerState.CLOSED and new is BreakerState.OPEN:
            self.trips += 1
        elif old is BreakerState.HALF_OPEN and new is BreakerState.OPEN:
            self.reopens += 1
        elif old is BreakerState.HALF_OPEN and new is BreakerState.CLOSED:
            self.recoveries += 1
        self._notify(old, new, reason)

    def _notify(self, old: BreakerState, new: BreakerState, reason: str) -> None:
        self.transitions += 1
        logger.log(
            logging.WARNING if new is BreakerState.OPEN else logging.INFO,
            "breaker %s: %s -> %s (%s)",
            self.name,
            old,
            new,
            reason,
            extra={"breaker": self.name, "old": str(old), "new": str(new), "reason": reason},
        )
        if self._on_transition is not None:
            try:
                self._on_transition(self.name, old, new, reason)
            except Exception:
                logger.exception("breaker %s: on_transition hook failed", self.name)

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self._state}, override={self._override})"


def _nearest_rank(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


class BreakerRegistry:
    """One breaker per endpoint name, created on first use, sharing a clock and a hook."""

    def __init__(
        self, *, clock: Clock = time.monotonic, on_transition: TransitionHook | None = None
    ) -> None:
        self._clock = clock
        self._on_transition = on_transition
        self._breakers: dict[str, CircuitBreaker] = {}
        self._pending: dict[str, Override] = {}

    def get(self, name: str, config: BreakerConfig) -> CircuitBreaker:
        """The breaker for `name`; `config` is used only when it is created."""
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = CircuitBreaker(
                name, config, clock=self._clock, on_transition=self._on_transition
            )
            pending = self._pending.pop(name, None)
            if pending is not None:
                breaker.set_override(pending)
            self._breakers[name] = breaker
        return breaker

    def find(self, name: str) -> CircuitBreaker | None:
        return self._breakers.get(name)

    def all(self) -> list[CircuitBreaker]:
        return list(self._breakers.values())

    def set_override(self, name: str, override: Override) -> None:
        """Override `name`'s breaker now, or as soon as it is created."""
        override = Override(override)
        breaker = self._breakers.get(name)
        if breaker is not None:
            breaker.set_override(override)
        elif override is Override.NONE:
            self._pending.pop(name, None)
        else:
            self._pending[name] = override

    def reset_all(self, reason: str = "reset") -> None:
        for breaker in self.all():
            breaker.reset(reason)

    def soonest_retry_at(self, names: Iterable[str]) -> float | None:
        """The earliest ``retry_at()`` among the named breakers that are OPEN (not forced).

        None when none of them has one: they are unknown, closed, half-open or forced open.
        The caller decides what "every endpoint is open" means; this only answers "until when".
        """
        times: list[float] = []
        for name in names:
            breaker = self._breakers.get(name)
            at = breaker.retry_at() if breaker is not None else None
            if at is not None:
                times.append(at)
        return min(times) if times else None
