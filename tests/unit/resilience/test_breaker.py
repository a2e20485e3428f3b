"""The circuit breaker's state machine, driven by a fake clock: one test per rule, then
property tests (hypothesis) that no sequence of calls, outcomes, clock steps and overrides
breaks its invariants."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mintsaga.resilience.breaker import (
    DB_BREAKER,
    IPFS_BREAKER,
    MAX_WINDOW_CALLS,
    SOLANA_BREAKER,
    BreakerConfig,
    BreakerOpenError,
    BreakerRegistry,
    BreakerState,
    CircuitBreaker,
    Override,
)

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN

# The rate rule alone (no consecutive rule), so the rate tests cannot pass by the other rule.
RATE_ONLY = BreakerConfig(open_s=30.0, consecutive_failures=None)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Recorder:
    calls: list[tuple[str, BreakerState, BreakerState, str]] = field(default_factory=list)

    def __call__(self, name: str, old: BreakerState, new: BreakerState, reason: str) -> None:
        self.calls.append((name, old, new, reason))


def make(
    config: BreakerConfig = SOLANA_BREAKER, *, now: float = 1000.0
) -> tuple[CircuitBreaker, FakeClock, Recorder]:
    clock, hook = FakeClock(now), Recorder()
    return CircuitBreaker("rpc-a", config, clock=clock, on_transition=hook), clock, hook


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.config.consecutive_failures or 1):
        breaker.record_failure()
    assert breaker.state is OPEN


def to_half_open(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(breaker.config.open_s)
    assert breaker.state is HALF_OPEN


# ---- the spec's numbers -------------------------------------------------------------------


def test_service_configs_are_the_specs() -> None:
    assert (SOLANA_BREAKER.open_s, SOLANA_BREAKER.consecutive_failures) == (60.0, 3)
    assert SOLANA_BREAKER.consecutive_window_s is None
    assert (IPFS_BREAKER.open_s, IPFS_BREAKER.consecutive_failures) == (30.0, 5)
    assert IPFS_BREAKER.consecutive_window_s == 120.0
    assert (DB_BREAKER.open_s, DB_BREAKER.consecutive_failures) == (10.0, 3)
    for cfg in (SOLANA_BREAKER, IPFS_BREAKER, DB_BREAKER):
        assert (cfg.window_s, cfg.min_calls, cfg.failure_rate) == (60.0, 10, 0.5)
        assert (cfg.half_open_max_calls, cfg.half_open_successes) == (5, 3)
        assert cfg.half_open_idle_s == 60.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"open_s": 0},
        {"consecutive_failures": 0},
        {"consecutive_window_s": 0},
        {"window_s": 0},
        {"min_calls": 0},
        {"failure_rate": 0},
        {"failure_rate": 1.5},
        {"half_open_max_calls": 0},
        {"half_open_successes": 0},
        {"half_open_idle_s": 0},
    ],
)
def test_config_rejects_nonsense(kwargs: dict[str, float]) -> None:
    base: dict[str, float | None] = {"open_s": 10.0, "consecutive_failures": 3}
    with pytest.raises(ValueError):
        BreakerConfig(**(base | kwargs))  # type: ignore[arg-type]


# ---- CLOSED -> OPEN -------------------------------------------------------------------------


def test_starts_closed_and_allows() -> None:
    breaker, _, hook = make()
    assert breaker.state is CLOSED
    assert breaker.allow()
    assert breaker.retry_at() is None
    assert hook.calls == []


def test_failure_rate_at_threshold_with_min_calls_trips() -> None:
    breaker, _, _ = make(RATE_ONLY)
    for _ in range(5):  # alternating, so no streak: 50 % of 10 calls
        breaker.record_success()
        breaker.record_failure()
    assert breaker.state is OPEN
    assert breaker.trips == 1


def test_failure_rate_below_threshold_does_not_trip() -> None:
    breaker, _, _ = make(RATE_ONLY)
    for _ in range(4):
        breaker.record_success()
        breaker.record_failure()
    breaker.record_success()
    breaker.record_success()  # 4 of 10 failed
    assert breaker.state is CLOSED
    for _ in range(6):  # 5 of 12 ... 10 of 22: always below 50 %
        breaker.record_success()
        breaker.record_failure()
        assert breaker.state is CLOSED
    breaker.record_failure()  # 11 of 23
    assert breaker.state is CLOSED
    breaker.record_failure()  # 12 of 24 is 50 %
    assert breaker.state is OPEN


def test_fewer_than_min_calls_never_trip_on_rate() -> None:
    breaker, _, _ = make(RATE_ONLY)
    for _ in range(9):
        breaker.record_failure()
    assert breaker.state is CLOSED  # 100 % failures, but only 9 calls
    breaker.record_failure()
    assert breaker.state is OPEN


def test_rate_window_is_time_based() -> None:
    breaker, clock, _ = make(RATE_ONLY)
    for _ in range(9):
        breaker.record_failure()
    clock.advance(60.0)  # the 9 fall out of the 60 s window
    breaker.record_failure()
    assert breaker.state is CLOSED
    assert breaker.snapshot()["calls"] == 1


def test_consecutive_failures_trip() -> None:
    breaker, _, hook = make(SOLANA_BREAKER)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is CLOSED
    breaker.record_failure()
    assert breaker.state is OPEN
    assert hook.calls == [("rpc-a", CLOSED, OPEN, "3 consecutive failures")]


def test_failures_on_an_open_connection_count_toward_the_rate_not_the_streak() -> None:
    """The database's "3 connection failures": queries cut off on an open connection (the
    call reached the database) never trip it by streak; half of the calls failing still does."""
    breaker, _, hook = make(DB_BREAKER)
    for _ in range(9):
        breaker.record_failure(streak=False)
    assert breaker.state is CLOSED  # 9 in a row, but fewer calls than the volume threshold
    breaker.record_failure(streak=False)
    assert breaker.state is OPEN
    assert hook.calls[-1][3] == "10/10 calls failed in 60 s"
    mixed, _, _ = make(DB_BREAKER)
    mixed.record_failure()
    mixed.record_failure()
    mixed.record_failure(streak=False)  # neither extends nor breaks the streak
    assert mixed.state is CLOSED
    mixed.record_failure()
    assert mixed.state is OPEN


def test_a_success_breaks_the_streak() -> None:
    breaker, _, _ = make(DB_BREAKER)
    for _ in range(3):
        breaker.record_failure()
        breaker.record_failure()
        breaker.record_success()
    assert breaker.state is CLOSED


def test_consecutive_failures_must_fall_within_their_window() -> None:
    breaker, clock, _ = make(IPFS_BREAKER)
    for _ in range(7):  # 40 s apart: any 5 in a row span 160 s > 120 s
        breaker.record_failure()
        clock.advance(40.0)
    assert breaker.state is CLOSED
    breaker.record_success()
    for _ in range(4):  # 25 s apart: 5 in a row span 100 s
        breaker.record_failure()
        clock.advance(25.0)
    assert breaker.state is CLOSED
    breaker.record_failure()
    assert breaker.state is OPEN


def test_non_retriable_failures_are_ignored() -> None:
    breaker, _, hook = make(SOLANA_BREAKER)
    for _ in range(50):
        breaker.record_failure(retriable=False)
    assert breaker.state is CLOSED
    snap = breaker.snapshot()
    assert (snap["calls"], snap["failures"], snap["ignored_failures"]) == (0, 0, 50)
    # neither do they break a streak of real failures
    breaker.record_failure()
    breaker.record_failure(retriable=False)
    breaker.record_failure()
    breaker.record_failure(retriable=False)
    breaker.record_failure()
    assert breaker.state is OPEN
    assert [c[2] for c in hook.calls] == [OPEN]


# ---- OPEN -----------------------------------------------------------------------------------


def test_open_refuses_and_says_when() -> None:
    breaker, clock, _ = make(SOLANA_BREAKER)
    trip(breaker)
    assert not breaker.allow()
    assert breaker.retry_at() == clock.now + 60.0
    with pytest.raises(BreakerOpenError) as excinfo:
        breaker.check()
    assert (excinfo.value.name, excinfo.value.retry_at) == ("rpc-a", clock.now + 60.0)
    assert breaker.snapshot()["rejected"] == 2


def test_open_turns_half_open_after_open_s() -> None:
    breaker, clock, hook = make(DB_BREAKER)
    trip(breaker)
    clock.advance(9.999)
    assert breaker.state is OPEN
    clock.advance(0.001)
    assert breaker.state is HALF_OPEN
    assert breaker.retry_at() is None
    assert hook.calls[-1][1:3] == (OPEN, HALF_OPEN)


def test_late_results_while_open_change_nothing() -> None:
    breaker, _, _ = make(SOLANA_BREAKER)
    trip(breaker)
    until = breaker.retry_at()
    for _ in range(5):
        breaker.record_success()
        breaker.record_failure()
    assert breaker.state is OPEN
    assert breaker.retry_at() == until
    assert breaker.trips == 1


# ---- HALF_OPEN ------------------------------------------------------------------------------


def test_half_open_admits_at_most_max_probes() -> None:
    breaker, clock, _ = make(SOLANA_BREAKER)
    to_half_open(breaker, clock)
    assert [breaker.allow() for _ in range(7)] == [True] * 5 + [False] * 2
    assert breaker.snapshot()["half_open_in_flight"] == 5
    breaker.record_success()  # one probe came back: one more may go
    assert breaker.allow()
    assert not breaker.allow()


def test_half_open_closes_after_consecutive_successes() -> None:
    breaker, clock, hook = make(SOLANA_BREAKER)
    to_half_open(breaker, clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_success(0.1)
    assert breaker.state is HALF_OPEN
    assert breaker.allow()
    breaker.record_success(0.1)
    assert breaker.state is CLOSED
    assert (breaker.trips, breaker.recoveries, breaker.reopens) == (1, 1, 0)
    assert breaker.snapshot()["calls"] == 0  # the window starts afresh
    assert hook.calls[-1] == ("rpc-a", HALF_OPEN, CLOSED, "probes succeeded")


def test_half_open_failure_reopens() -> None:
    breaker, clock, hook = make(SOLANA_BREAKER)
    to_half_open(breaker, clock)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is OPEN
    assert breaker.retry_at() == clock.now + 60.0
    assert (breaker.trips, breaker.recoveries, breaker.reopens) == (1, 0, 1)
    assert hook.calls[-1] == ("rpc-a", HALF_OPEN, OPEN, "probe failed")
    # the next half-open period needs the full number of successes again
    clock.advance(60.0)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_success()
    assert breaker.state is HALF_OPEN


def test_half_open_non_retriable_failure_releases_a_permit_only() -> None:
    breaker, clock, _ = make(SOLANA_BREAKER)
    to_half_open(breaker, clock)
    for _ in range(5):
        assert breaker.allow()
    assert not breaker.allow()
    breaker.record_failure(retriable=False)
    assert breaker.state is HALF_OPEN
    assert breaker.allow()


def test_half_open_idle_reopens() -> None:
    breaker, clock, hook = make(SOLANA_BREAKER)
    to_half_open(breaker, clock)
    clock.advance(59.0)
    assert breaker.state is HALF_OPEN
    clock.advance(1.0)
    assert breaker.state is OPEN
    assert hook.calls[-1][1:3] == (HALF_OPEN, OPEN)
    assert breaker.reopens == 1


def test_half_open_idle_counts_from_the_last_probe() -> None:
    breaker, clock, _ = make(SOLANA_BREAKER)
    to_half_open(breaker, clock)
    clock.advance(50.0)
    assert breaker.allow()
    clock.advance(50.0)  # 100 s in HALF_OPEN, 50 s since the probe
    assert breaker.state is HALF_OPEN
    breaker.record_success()
    clock.advance(59.0)
    assert breaker.state is HALF_OPEN
    clock.advance(1.0)
    assert breaker.state is OPEN


# ---- transitions: hook, log, counters -------------------------------------------------------


def test_every_transition_is_reported_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mintsaga.breaker")
    breaker, clock, hook = make(SOLANA_BREAKER)
    to_half_open(breaker, clock)
    for _ in range(3):
        breaker.allow()
        breaker.record_success()
    assert [(old, new) for _, old, new, _ in hook.calls] == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
    ]
    assert breaker.transitions == 3
    lines = [r for r in caplog.records if r.name == "mintsaga.breaker"]
    assert len(lines) == 3
    assert lines[0].levelno == logging.WARNING
    assert "rpc-a" in lines[0].getMessage() and "open" in lines[0].getMessage()
    assert lines[0].breaker == "rpc-a"  # type: ignore[attr-defined]


def test_a_failing_hook_does_not_break_the_breaker(caplog: pytest.LogCaptureFixture) -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("metrics down")

    clock = FakeClock()
    breaker = CircuitBreaker("rpc-a", SOLANA_BREAKER, clock=clock, on_transition=boom)
    trip(breaker)
    assert not breaker.allow()
    assert any("hook failed" in r.getMessage() for r in caplog.records)


# ---- overrides ------------------------------------------------------------------------------


def test_force_open_refuses_everything_without_a_retry_time() -> None:
    breaker, clock, hook = make(SOLANA_BREAKER)
    breaker.set_override(Override.FORCE_OPEN)
    assert breaker.override is Override.FORCE_OPEN
    assert breaker.state is OPEN
    assert not breaker.allow()
    assert breaker.retry_at() is None
    with pytest.raises(BreakerOpenError):
        breaker.check()
    clock.advance(3600.0)
    assert breaker.state is OPEN
    assert hook.calls == [("rpc-a", CLOSED, OPEN, "override force_open")]
    assert breaker.trips == 0  # an operator's decision is not a trip
    breaker.set_override(Override.NONE)
    assert breaker.state is CLOSED
    assert breaker.allow()


def test_force_closed_allows_and_records_but_never_trips() -> None:
    breaker, clock, _ = make(SOLANA_BREAKER)
    trip(breaker)
    breaker.set_override(Override.FORCE_CLOSED)
    assert breaker.state is CLOSED
    assert breaker.retry_at() is None
    for _ in range(20):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is CLOSED
    assert breaker.trips == 1
    assert breaker.snapshot()["failures"] == 23
    # cleared: the state machine resumes where it was (OPEN, its timer having run on)
    clock.advance(60.0)
    breaker.set_override(Override.NONE)
    assert breaker.state is HALF_OPEN


def test_disabled_is_metrics_only() -> None:
    breaker, clock, hook = make(SOLANA_BREAKER)
    breaker.set_override(Override.DISABLED)
    for _ in range(30):
        assert breaker.allow()
        breaker.record_failure()
        clock.advance(1.0)
    breaker.record_success(0.25)
    assert breaker.state is CLOSED
    assert (breaker.trips, breaker.transitions) == (0, 0)
    assert hook.calls == []
    snap = breaker.snapshot()
    assert (snap["calls"], snap["failures"], snap["override"]) == (31, 30, "disabled")


def test_disabled_keeps_an_open_breaker_open_but_allows() -> None:
    breaker, clock, _ = make(SOLANA_BREAKER)
    trip(breaker)
    breaker.set_override(Override.DISABLED)
    clock.advance(600.0)
    assert breaker.state is OPEN  # frozen: no state changes while disabled
    assert breaker.allow()
    assert breaker.retry_at() is None


def test_clearing_an_override_does_not_count_frozen_time_as_idle() -> None:
    breaker, clock, _ = make(SOLANA_BREAKER)
    to_half_open(breaker, clock)
    breaker.set_override(Override.DISABLED)
    clock.advance(600.0)
    breaker.set_override(Override.NONE)
    assert breaker.state is HALF_OPEN


# ---- snapshot and memory --------------------------------------------------------------------


def test_snapshot_reports_the_window() -> None:
    breaker, clock, _ = make(RATE_ONLY)
    for i in range(1, 21):
        breaker.record_success(i / 100)
    breaker.record_failure()
    breaker.record_failure(retriable=False)
    snap = breaker.snapshot()
    assert snap["name"] == "rpc-a"
    assert snap["state"] == "closed" and snap["override"] == "none"
    assert (snap["calls"], snap["failures"]) == (21, 1)
    assert snap["success_rate"] == pytest.approx(20 / 21)
    latency = snap["latency"]
    assert isinstance(latency, dict)
    assert latency["count"] == 20
    assert latency["mean_s"] == pytest.approx(0.105)
    assert latency["p95_s"] == pytest.approx(0.19)
    assert (snap["trips"], snap["recoveries"], snap["transitions"]) == (0, 0, 0)
    clock.advance(60.0)
    snap = breaker.snapshot()
    assert (snap["calls"], snap["success_rate"]) == (0, None)
    assert snap["latency"] == {"count": 0, "mean_s": None, "p95_s": None}


def test_window_memory_is_bounded() -> None:
    breaker, _, _ = make(RATE_ONLY)
    for _ in range(MAX_WINDOW_CALLS * 3):
        breaker.record_success(0.01)
    assert breaker.snapshot()["calls"] == MAX_WINDOW_CALLS


# ---- registry -------------------------------------------------------------------------------


def test_registry_one_breaker_per_name() -> None:
    clock, hook = FakeClock(), Recorder()
    registry = BreakerRegistry(clock=clock, on_transition=hook)
    a = registry.get("a", SOLANA_BREAKER)
    assert registry.get("a", IPFS_BREAKER) is a  # the first config wins
    assert a.config is SOLANA_BREAKER
    assert registry.find("a") is a
    assert registry.find("b") is None
    b = registry.get("b", DB_BREAKER)
    assert registry.all() == [a, b]
    trip(b)
    assert hook.calls == [("b", CLOSED, OPEN, "3 consecutive failures")]
    assert b.retry_at() == clock.now + 10.0  # the registry's clock


def test_registry_pending_override_applies_on_creation() -> None:
    registry = BreakerRegistry(clock=FakeClock())
    registry.set_override("later", Override.FORCE_OPEN)
    registry.set_override("cleared", Override.FORCE_OPEN)
    registry.set_override("cleared", Override.NONE)
    assert registry.find("later") is None
    later = registry.get("later", SOLANA_BREAKER)
    assert later.override is Override.FORCE_OPEN
    assert not later.allow()
    assert registry.get("cleared", SOLANA_BREAKER).override is Override.NONE
    registry.set_override("later", Override.FORCE_CLOSED)
    assert later.allow()


def test_registry_soonest_retry_at() -> None:
    clock = FakeClock()
    registry = BreakerRegistry(clock=clock)
    a = registry.get("a", SOLANA_BREAKER)
    b = registry.get("b", DB_BREAKER)
    registry.get("c", SOLANA_BREAKER)
    assert registry.soonest_retry_at(["a", "b", "c", "unknown"]) is None
    trip(a)
    clock.advance(5.0)
    trip(b)
    assert registry.soonest_retry_at(["a", "b"]) == clock.now + 10.0
    assert registry.soonest_retry_at(["a", "c"]) == clock.now - 5.0 + 60.0
    registry.set_override("b", Override.FORCE_OPEN)
    assert registry.soonest_retry_at(["b"]) is None
    assert registry.soonest_retry_at([]) is None


# ---- properties -----------------------------------------------------------------------------

SMALL = BreakerConfig(
    open_s=5.0,
    consecutive_failures=None,
    window_s=10.0,
    min_calls=4,
    failure_rate=0.5,
    half_open_max_calls=2,
    half_open_successes=2,
    half_open_idle_s=7.0,
)
TIGHT = BreakerConfig(
    open_s=3.0,
    consecutive_failures=2,
    consecutive_window_s=4.0,
    window_s=6.0,
    min_calls=3,
    failure_rate=0.6,
    half_open_max_calls=3,
    half_open_successes=1,
    half_open_idle_s=2.0,
)

steps = st.sampled_from([1.0, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0]) | st.floats(0.0, 130.0)
op = st.one_of(
    st.tuples(st.just("allow")),
    st.tuples(st.just("burst")),
    st.tuples(st.just("burst")),
    st.tuples(st.just("success"), st.none() | st.floats(0.0, 5.0)),
    st.tuples(st.just("success"), st.none()),
    st.tuples(st.just("failure"), st.booleans()),
    st.tuples(st.just("failure"), st.just(True)),
    st.tuples(st.just("failures"), st.integers(1, 6)),
    st.tuples(st.just("failures"), st.integers(1, 6)),
    st.tuples(st.just("advance"), steps),
    st.tuples(st.just("advance"), steps),
    # overrides mask the state machine: set them rarely, and clear them as often as not
    st.tuples(st.just("override"), st.sampled_from([Override.NONE] * 3 + list(Override)[1:])),
)
ops = st.lists(op, min_size=10, max_size=80)
configs = st.sampled_from([SOLANA_BREAKER, IPFS_BREAKER, DB_BREAKER, SMALL, TIGHT])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, operations=ops)
def test_no_sequence_breaks_the_invariants(
    config: BreakerConfig, operations: list[tuple[object, ...]]
) -> None:
    breaker, clock, hook = make(config)
    outcomes: list[tuple[float, bool]] = []  # every success / retriable failure recorded
    # Retriable failures since the last success, counted as the breaker counts them: while an
    # override is set, outcomes feed only the metrics and leave the state machine's run as is.
    streak = 0
    n = config.consecutive_failures

    def calls_in_window() -> int:
        # an upper bound: the breaker keeps (now - window_s, now] and maybe fewer
        return sum(1 for t, _ in outcomes if t >= clock.now - config.window_s)

    for op in operations:
        kind = op[0]
        state_before = breaker.state
        trips_before, reopens_before = breaker.trips, breaker.reopens
        override = breaker.override
        if kind == "allow":
            allowed = breaker.allow()
            if override is Override.FORCE_OPEN:
                assert not allowed
            elif override in (Override.FORCE_CLOSED, Override.DISABLED):
                assert allowed
            elif state_before is OPEN:
                assert not allowed
            elif state_before is CLOSED:
                assert allowed
        elif kind == "burst":
            granted = sum(breaker.allow() for _ in range(config.half_open_max_calls + 2))
            if state_before is HALF_OPEN and override is Override.NONE:
                event("burst in half-open")
                assert granted <= config.half_open_max_calls
        elif kind == "success":
            breaker.record_success(op[1])  # type: ignore[arg-type]
            outcomes.append((clock.now, True))
            if override is Override.NONE:
                streak = 0
        elif kind == "failure":
            retriable = bool(op[1])
            breaker.record_failure(retriable=retriable)
            if retriable:
                outcomes.append((clock.now, False))
                streak += override is Override.NONE
            else:  # a permanent error never moves the state machine
                assert breaker.state is state_before
                assert (breaker.trips, breaker.reopens) == (trips_before, reopens_before)
        elif kind == "failures":
            for _ in range(int(op[1])):  # type: ignore[call-overload]
                breaker.record_failure()
                outcomes.append((clock.now, False))
                streak += override is Override.NONE
        elif kind == "advance":
            clock.advance(float(op[1]))  # type: ignore[arg-type]
        else:
            breaker.set_override(op[1])  # type: ignore[arg-type]
            assert breaker.override is op[1]

        if breaker.trips > trips_before:
            # a trip needs the volume for the rate rule or the streak for the consecutive rule
            assert calls_in_window() >= config.min_calls or (n is not None and streak >= n)
            assert override is Override.NONE

        state = breaker.state
        assert state in (CLOSED, OPEN, HALF_OPEN)
        snap = breaker.snapshot()
        assert snap["state"] == state
        assert 0 <= snap["half_open_in_flight"] <= config.half_open_max_calls  # type: ignore[operator]
        assert snap["calls"] <= MAX_WINDOW_CALLS  # type: ignore[operator]
        episode = breaker.trips - breaker.recoveries
        assert episode in (0, 1)
        assert breaker.transitions == len(hook.calls)
        if breaker.override is Override.NONE:
            assert (episode == 1) == (state in (OPEN, HALF_OPEN))
            assert (breaker.retry_at() is not None) == (state is OPEN)
            if state is OPEN:
                assert breaker.retry_at() > clock.now  # type: ignore[operator]
        else:
            assert breaker.retry_at() is None
            if breaker.override is Override.FORCE_OPEN:
                assert state is OPEN
            elif breaker.override is Override.FORCE_CLOSED:
                assert state is CLOSED


@settings(max_examples=200, deadline=None)
@given(
    config=configs,
    retriable=st.lists(st.booleans(), max_size=60),
    steps=st.lists(st.floats(0.0, 30.0), max_size=60),
)
def test_only_retriable_failures_can_trip(
    config: BreakerConfig, retriable: list[bool], steps: list[float]
) -> None:
    breaker, clock, _ = make(config)
    for i, flag in enumerate(retriable):
        if not flag:
            breaker.record_failure(retriable=False)
        else:
            breaker.record_success()
        if i < len(steps):
            clock.advance(steps[i])
    assert breaker.state is CLOSED
    assert breaker.trips == 0


@settings(max_examples=200, deadline=None)
@given(
    config=configs,
    events=st.lists(st.tuples(st.booleans(), st.floats(0.0, 200.0)), max_size=60),
)
def test_a_closed_breaker_without_volume_or_streak_never_trips(
    config: BreakerConfig, events: list[tuple[bool, float]]
) -> None:
    # Never more than min_calls - 1 calls, never N failures in a row: it must stay CLOSED.
    breaker, clock, _ = make(config)
    n = config.consecutive_failures or 10**9
    budget = config.min_calls - 1
    streak = 0
    for ok, step in events[:budget]:
        if not ok and streak + 1 >= n:
            ok = True
        streak = 0 if ok else streak + 1
        if ok:
            breaker.record_success()
        else:
            breaker.record_failure()
        clock.advance(step)
        assert breaker.state is CLOSED
    assert breaker.trips == 0


def test_reset_closes_an_open_breaker_as_a_recovery_and_forgets_its_window() -> None:
    breaker, _, _ = make(SOLANA_BREAKER)
    trip(breaker)
    assert breaker.trips == 1
    breaker.reset("endpoint verified")
    assert breaker.state is CLOSED and breaker.recoveries == 1
    assert breaker.allow() and breaker.snapshot()["calls"] == 0
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is CLOSED  # the old failures no longer count toward the run
