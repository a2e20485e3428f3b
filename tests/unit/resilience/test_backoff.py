"""Backoff delays (the spec's numbers), Retry-After, adaptive stretch, the retry budget and the
testing switch; property tests for the delay bounds and the budget."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mintsaga.resilience import backoff as backoff_module
from mintsaga.resilience.backoff import (
    DB_BACKOFF,
    IPFS_BACKOFF,
    SOLANA_BACKOFF,
    AdaptiveBackoff,
    Backoff,
    RetryBudget,
    retry_delay,
    set_testing,
)


class FixedRandom(random.Random):
    """A `random.Random` whose draws are all `value`."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


class FakeClock:
    def __init__(self, now: float = 500.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def _not_testing() -> Iterator[None]:
    set_testing(False)
    yield
    set_testing(False)


SPEC = [
    (SOLANA_BACKOFF, [2.0, 4.0, 8.0, 8.0]),
    (IPFS_BACKOFF, [1.0, 2.0, 4.0, 8.0, 16.0, 16.0]),
    (DB_BACKOFF, [0.5, 1.0, 2.0, 2.0]),
]


def test_service_numbers_are_the_specs() -> None:
    numbers = {
        name: (b.base_s, b.cap_s, b.jitter)
        for name, b in [("solana", SOLANA_BACKOFF), ("ipfs", IPFS_BACKOFF), ("db", DB_BACKOFF)]
    }
    assert numbers == {
        "solana": (2.0, 8.0, 0.20),
        "ipfs": (1.0, 16.0, 0.10),
        "db": (0.5, 2.0, 0.05),
    }


@pytest.mark.parametrize(("backoff", "expected"), SPEC)
def test_spec_delays_without_jitter(backoff: Backoff, expected: list[float]) -> None:
    got = [retry_delay(backoff, a, rng=FixedRandom(0.0)) for a in range(1, len(expected) + 1)]
    assert got == expected


@pytest.mark.parametrize(("backoff", "expected"), SPEC)
def test_spec_delays_with_full_jitter(backoff: Backoff, expected: list[float]) -> None:
    got = [retry_delay(backoff, a, rng=FixedRandom(1.0)) for a in range(1, len(expected) + 1)]
    assert got == pytest.approx([d * (1 + backoff.jitter) for d in expected])


@pytest.mark.parametrize(("backoff", "expected"), SPEC)
def test_spec_delays_jitter_stays_in_bounds(backoff: Backoff, expected: list[float]) -> None:
    rng = random.Random(1234)
    for attempt, nominal in enumerate(expected, start=1):
        draws = [retry_delay(backoff, attempt, rng=rng) for _ in range(500)]
        assert all(nominal <= d <= nominal * (1 + backoff.jitter) for d in draws)
        # jitter actually spreads the delays (the thundering-herd point)
        assert max(draws) - min(draws) > nominal * backoff.jitter * 0.5


def test_default_rng_is_used_when_none_given() -> None:
    delays = {retry_delay(SOLANA_BACKOFF, 1) for _ in range(50)}
    assert len(delays) > 1
    assert all(2.0 <= d <= 2.4 for d in delays)


def test_retry_after_longer_wins() -> None:
    assert retry_delay(SOLANA_BACKOFF, 1, retry_after_s=30.0, rng=FixedRandom(1.0)) == 30.0
    # a Retry-After beyond the cap still wins: the server said so
    assert retry_delay(DB_BACKOFF, 9, retry_after_s=5.0, rng=FixedRandom(0.0)) == 5.0


def test_retry_after_shorter_loses() -> None:
    assert retry_delay(IPFS_BACKOFF, 3, retry_after_s=1.0, rng=FixedRandom(0.0)) == 4.0
    assert retry_delay(IPFS_BACKOFF, 3, retry_after_s=0.0, rng=FixedRandom(0.0)) == 4.0


def test_stretch_scales_before_the_cap() -> None:
    assert retry_delay(SOLANA_BACKOFF, 1, stretch=1.5, rng=FixedRandom(0.0)) == 3.0
    assert retry_delay(SOLANA_BACKOFF, 2, stretch=0.5, rng=FixedRandom(0.0)) == 2.0
    assert retry_delay(SOLANA_BACKOFF, 3, stretch=2.0, rng=FixedRandom(0.0)) == 8.0  # capped
    # jitter is on top of the stretched, capped delay
    assert retry_delay(SOLANA_BACKOFF, 1, stretch=2.0, rng=FixedRandom(1.0)) == pytest.approx(4.8)


def test_huge_attempt_numbers_stay_at_the_cap() -> None:
    assert retry_delay(IPFS_BACKOFF, 10_000, rng=FixedRandom(0.0)) == 16.0


@pytest.mark.parametrize(
    ("attempt", "stretch"),
    [(0, 1.0), (-1, 1.0), (1, 0.0), (1, -1.0)],
)
def test_retry_delay_rejects_nonsense(attempt: int, stretch: float) -> None:
    with pytest.raises(ValueError):
        retry_delay(SOLANA_BACKOFF, attempt, stretch=stretch)


@pytest.mark.parametrize(
    ("base", "cap", "jitter"), [(0.0, 1.0, 0.1), (2.0, 1.0, 0.1), (1.0, 2.0, -0.1), (1, 2, 1.5)]
)
def test_backoff_rejects_nonsense(base: float, cap: float, jitter: float) -> None:
    with pytest.raises(ValueError):
        Backoff(base, cap, jitter)


def test_testing_switch_removes_the_wait() -> None:
    set_testing(True)
    assert backoff_module.is_testing()
    assert retry_delay(IPFS_BACKOFF, 5, retry_after_s=60.0) == 0.0
    set_testing(True, delay_s=0.01)
    assert retry_delay(SOLANA_BACKOFF, 1) == 0.01
    set_testing(False)
    assert not backoff_module.is_testing()
    assert retry_delay(SOLANA_BACKOFF, 1, rng=FixedRandom(0.0)) == 2.0
    with pytest.raises(ValueError):
        set_testing(True, delay_s=-1.0)


# ---- adaptive backoff -----------------------------------------------------------------------


def test_adaptive_stretch_follows_the_recent_success_rate() -> None:
    adaptive = AdaptiveBackoff()
    assert adaptive.stretch() == 1.0  # nothing seen yet: the spec starts at a 100 % rate
    for _ in range(7):
        adaptive.record(True)
    for _ in range(3):
        adaptive.record(False)
    assert adaptive.success_rate == pytest.approx(0.7)
    assert adaptive.stretch() == pytest.approx(1.3)
    for _ in range(10):
        adaptive.record(False)
    assert adaptive.stretch() == 2.0


def test_adaptive_remembers_only_the_last_size_outcomes() -> None:
    adaptive = AdaptiveBackoff(size=4)
    for _ in range(100):
        adaptive.record(False)
    for _ in range(3):
        adaptive.record(True)
    assert adaptive.success_rate == pytest.approx(0.75)
    adaptive.record(True)
    assert adaptive.stretch() == 1.0


def test_adaptive_delay_stretches_the_service_delay() -> None:
    adaptive = AdaptiveBackoff()
    for _ in range(10):
        adaptive.record(False)
    assert adaptive.delay(SOLANA_BACKOFF, 1, rng=FixedRandom(0.0)) == 4.0
    assert adaptive.delay(SOLANA_BACKOFF, 3, rng=FixedRandom(0.0)) == 8.0  # still capped
    assert adaptive.delay(SOLANA_BACKOFF, 1, retry_after_s=9.0, rng=FixedRandom(0.0)) == 9.0
    with pytest.raises(ValueError):
        AdaptiveBackoff(size=0)


# ---- retry budget ---------------------------------------------------------------------------


def test_budget_floor_lets_a_quiet_service_retry() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_s=1.0, window_s=10.0, clock=clock)
    granted = 0
    for _ in range(50):
        if budget.can_retry():
            budget.record_retry()
            granted += 1
    assert granted == 10  # 1 per second over 10 s, no requests at all


def test_budget_ratio_bounds_retries_under_load() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_s=0.0, window_s=10.0, clock=clock)
    for _ in range(100):
        budget.record_request()
    granted = 0
    for _ in range(100):  # a storm: every request wants a retry
        if budget.can_retry():
            budget.record_retry()
            granted += 1
    assert granted == 20
    budget.record_request()
    budget.record_request()
    budget.record_request()
    budget.record_request()
    budget.record_request()  # 105 requests: one more retry
    assert budget.can_retry()
    budget.record_retry()
    assert not budget.can_retry()
    assert budget.snapshot() == {"requests": 105, "retries": 21, "allowance": 21.0}


def test_budget_recovers_once_the_window_passes() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_s=1.0, window_s=10.0, clock=clock)
    while budget.can_retry():
        budget.record_retry()
    clock.advance(9.9)
    assert not budget.can_retry()
    clock.advance(0.1)  # the retries leave the window
    assert budget.can_retry()


@pytest.mark.parametrize("kwargs", [{"ratio": -0.1}, {"min_per_s": -1.0}, {"window_s": 0.0}])
def test_budget_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryBudget(**kwargs)


# ---- properties -----------------------------------------------------------------------------

backoffs = st.builds(
    lambda base, factor, jitter: Backoff(base, base * factor, jitter),
    st.floats(0.01, 10.0),
    st.floats(1.0, 64.0),
    st.floats(0.0, 1.0),
)


@settings(max_examples=500, deadline=None)
@given(
    backoff=backoffs,
    attempt=st.integers(1, 200),
    stretch=st.floats(0.5, 2.0),
    retry_after=st.none() | st.floats(0.0, 300.0),
    draw=st.floats(0.0, 1.0, exclude_max=True),
)
def test_delay_bounds(
    backoff: Backoff, attempt: int, stretch: float, retry_after: float | None, draw: float
) -> None:
    delay = retry_delay(
        backoff, attempt, retry_after_s=retry_after, stretch=stretch, rng=FixedRandom(draw)
    )
    nominal = min(backoff.base_s * 2.0 ** min(attempt - 1, 64) * stretch, backoff.cap_s)
    floor = max(nominal, retry_after or 0.0)
    ceiling = max(nominal * (1 + backoff.jitter), retry_after or 0.0)
    assert math.isfinite(delay)
    assert floor * (1 - 1e-12) <= delay <= ceiling * (1 + 1e-12)
    assert delay <= max(backoff.cap_s * (1 + backoff.jitter), retry_after or 0.0) * (1 + 1e-12)


@settings(max_examples=300, deadline=None)
@given(backoff=backoffs, stretch=st.floats(0.5, 2.0), draw=st.floats(0.0, 1.0))
def test_delay_never_shrinks_as_attempts_grow(
    backoff: Backoff, stretch: float, draw: float
) -> None:
    delays = [retry_delay(backoff, a, stretch=stretch, rng=FixedRandom(draw)) for a in range(1, 40)]
    assert delays == sorted(delays)


@settings(max_examples=200, deadline=None)
@given(outcomes=st.lists(st.booleans(), max_size=40), size=st.integers(1, 20))
def test_adaptive_stretch_is_between_1_and_2(outcomes: list[bool], size: int) -> None:
    adaptive = AdaptiveBackoff(size=size)
    for ok in outcomes:
        adaptive.record(ok)
        assert 1.0 <= adaptive.stretch() <= 2.0
    recent = outcomes[-size:]
    expected = 2.0 - (sum(recent) / len(recent) if recent else 1.0)
    assert adaptive.stretch() == pytest.approx(expected)


@settings(max_examples=300, deadline=None)
@given(
    ratio=st.floats(0.0, 1.0),
    min_per_s=st.floats(0.0, 3.0),
    window_s=st.floats(1.0, 20.0),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("request"), st.just(0.0)),
            st.tuples(st.just("retry"), st.just(0.0)),
            st.tuples(st.just("advance"), st.floats(0.0, 5.0)),
        ),
        max_size=150,
    ),
)
def test_budget_grants_exactly_while_under_the_allowance(
    ratio: float, min_per_s: float, window_s: float, ops: list[tuple[str, float]]
) -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=ratio, min_per_s=min_per_s, window_s=window_s, clock=clock)
    requests: list[float] = []
    retries: list[float] = []
    for kind, value in ops:
        if kind == "request":
            budget.record_request()
            requests.append(clock.now)
        elif kind == "retry":
            # over the window ending now: grant while retries < ratio * requests + floor
            recent_retries = sum(1 for t in retries if t > clock.now - window_s)
            recent_requests = sum(1 for t in requests if t > clock.now - window_s)
            allowance = ratio * recent_requests + min_per_s * window_s
            granted = budget.can_retry()
            assert granted == (recent_retries < allowance)
            if granted:  # a retry only goes when the budget says so
                budget.record_retry()
                retries.append(clock.now)
        else:
            clock.advance(value)
