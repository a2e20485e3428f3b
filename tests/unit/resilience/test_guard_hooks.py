"""The guard is plain Python: without hooks it neither waits nor observes; with them, it asks
them (the worker installs Temporal's deadline and heartbeat, and the observability hooks)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.resilience import guard
from mintsaga.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker, Override


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def bare() -> Iterator[None]:
    """No hooks installed for the test (the suite's conftest installs the worker's)."""
    replaced = guard.install(guard.GuardHooks())
    yield
    guard.install(replaced)


def opened(clock: Clock) -> CircuitBreaker:
    breaker = CircuitBreaker(
        "http://solana-1", BreakerConfig(open_s=5.0, consecutive_failures=1), clock=clock
    )
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    return breaker


async def test_without_hooks_a_refused_call_fails_at_once(bare: None) -> None:
    clock = Clock()

    async def call() -> str:
        raise AssertionError("an open breaker lets nothing through")

    with pytest.raises(ServiceError) as refused:
        await guard.through(opened(clock), "solana", call, clock=clock)
    assert refused.value.code == "SolanaCircuitOpen"
    assert refused.value.retry_after == pytest.approx(5.0)


async def test_hooks_give_the_deadline_the_keep_alive_and_the_observations() -> None:
    clock = Clock()
    seen: list[tuple[object, ...]] = []
    beats: list[float] = []

    @contextlib.contextmanager
    def observe(service: str, endpoint: str | None, operation: str | None) -> Iterator[None]:
        seen.append(("call", service, endpoint, operation))
        yield

    hooks = guard.GuardHooks(
        time_left=lambda: 60.0,
        keep_alive=lambda: beats.append(clock.now),
        observe_call=observe,
        observe_breaker=lambda name, state: seen.append(("breaker", name, state)),
        observe_http=lambda *answer: seen.append(("http", *answer)),
    )
    replaced = guard.install(hooks)
    try:
        breaker = CircuitBreaker(
            "http://solana-1", BreakerConfig(open_s=0.05, consecutive_failures=1)
        )
        breaker.record_failure()

        async def call() -> str:
            return "slot 42"

        # Refused at first: queued within the attempt's time (60 s), kept alive, then let in.
        assert await guard.through(breaker, "solana", call, operation="getSlot") == "slot 42"
        assert beats, "a queued call keeps its attempt alive"
        assert ("call", "solana", "http://solana-1", "getSlot") in seen
        assert ("breaker", "http://solana-1", BreakerState.HALF_OPEN) in seen
        guard.record_http(None, 503, 0.2, service="pinata", endpoint="http://pinata")
        assert seen[-1] == ("http", "pinata", "http://pinata", 503, 0.2, None)
    finally:
        guard.install(replaced)


async def test_an_answer_about_the_request_does_not_count_against_the_endpoint(
    bare: None,
) -> None:
    clock = Clock()
    breaker = CircuitBreaker(
        "http://solana-1", BreakerConfig(open_s=60.0, consecutive_failures=1), clock=clock
    )

    async def rejected() -> None:
        raise ServiceError(
            "the transaction's blockhash expired",
            service="solana",
            kind=ErrorKind.TRANSIENT,
            code="BlockhashNotFound",
            endpoint_healthy=True,
        )

    async def down() -> None:
        raise ServiceError(
            "connection refused", service="solana", kind=ErrorKind.TRANSIENT, code="Unreachable"
        )

    with pytest.raises(ServiceError):
        await guard.through(breaker, "solana", rejected, clock=clock)
    assert breaker.state is BreakerState.CLOSED  # a healthy node said it: a success
    with pytest.raises(ServiceError):
        await guard.through(breaker, "solana", down, clock=clock)
    assert breaker.state is BreakerState.OPEN


def test_a_caller_that_reports_no_outcome_takes_no_half_open_probe() -> None:
    """The pin repair checks only an operator's force-open: taking a half-open probe permit it
    never gives back would leave the mints' calls refused until the breaker reopens."""
    clock = Clock()
    breaker = opened(clock)
    guard.refuse_if_forced_open(breaker, "pinata")  # open by itself: not an operator's refusal
    assert breaker.rejected == 0
    clock.now += breaker.config.open_s
    assert breaker.state is BreakerState.HALF_OPEN
    for _ in range(breaker.config.half_open_max_calls + 1):
        guard.refuse_if_forced_open(breaker, "pinata")
    assert breaker.snapshot()["half_open_in_flight"] == 0
    assert breaker.allow()  # the mints' probe still goes
    breaker.set_override(Override.FORCE_OPEN)
    with pytest.raises(ServiceError) as refused:
        guard.refuse_if_forced_open(breaker, "pinata")
    assert refused.value.code == "PinataCircuitOpen"
