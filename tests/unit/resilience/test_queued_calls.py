"""A call every circuit refuses is queued, not failed (resilience.guard.wait_for_half_open).

The spec's fallback for the database's breaker is "queue operations for later processing": a
refusal by our own breaker is no try against the service, so inside an activity attempt with the
time, the call waits (heartbeating) for the soonest half-open time and tries again instead of
spending one of the step's attempts. Without the time, or forced open by an operator, it fails
at once as before. Pure logic: a breaker and Temporal's ActivityEnvironment, no server.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from mintsaga.errors import ServiceError, redact_url
from mintsaga.resilience.breaker import (
    BreakerConfig,
    BreakerRegistry,
    BreakerState,
    CircuitBreaker,
    Override,
)
from mintsaga.resilience.guard import through, wait_for_half_open
from mintsaga.solana.rpc import SolanaRpc

FAST = BreakerConfig(open_s=0.4, consecutive_failures=1)


def opened(config: BreakerConfig = FAST) -> CircuitBreaker:
    breaker = CircuitBreaker("postgresql://db/mintsaga", config)
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    return breaker


def environment(timeout_s: float) -> tuple[ActivityEnvironment, list[Any]]:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info,
        start_to_close_timeout=timedelta(seconds=timeout_s),
        started_time=datetime.now(UTC),
    )
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    return env, beats


async def test_an_open_circuit_is_waited_out_inside_the_attempt() -> None:
    breaker = opened()
    reopens = breaker.retry_at()
    assert reopens is not None
    env, beats = environment(timeout_s=10)
    began = time.monotonic()
    assert await env.run(wait_for_half_open, [breaker]) is True
    assert time.monotonic() >= reopens  # not before the half-open time
    assert time.monotonic() - began < 2.0
    assert beats  # heartbeats while waiting
    assert breaker.allow()  # half-open now: the caller's probe goes through


async def test_a_wait_longer_than_the_attempt_fails_at_once() -> None:
    breaker = opened(BreakerConfig(open_s=30.0, consecutive_failures=1))
    env, _ = environment(timeout_s=10)
    began = time.monotonic()
    assert await env.run(wait_for_half_open, [breaker]) is False
    assert time.monotonic() - began < 1.0  # not the 30 s


async def test_forced_open_and_outside_an_activity_are_not_queued() -> None:
    forced = CircuitBreaker("db", FAST)
    forced.set_override(Override.FORCE_OPEN)
    env, _ = environment(timeout_s=10)
    assert await env.run(wait_for_half_open, [forced]) is False
    assert await wait_for_half_open([opened()]) is False  # no activity: nothing to wait within


async def test_through_queues_a_refused_call_and_runs_it_once_admitted() -> None:
    breaker = opened()
    env, _ = environment(timeout_s=10)
    calls = []

    async def call() -> str:
        calls.append(time.monotonic())
        return "row"

    assert await env.run(through, breaker, "db", call) == "row"
    assert len(calls) == 1


async def test_through_without_the_time_raises_the_open_circuit_error() -> None:
    breaker = opened(BreakerConfig(open_s=30.0, consecutive_failures=1))
    env, _ = environment(timeout_s=10)

    async def call() -> str:
        raise AssertionError("an open circuit must not be called")

    with pytest.raises(ServiceError) as caught:
        await env.run(through, breaker, "db", call)
    assert caught.value.code == "DbCircuitOpen"
    assert caught.value.retry_after is not None and 29 < caught.value.retry_after <= 30


async def test_a_solana_pool_never_queues_a_call_restricted_to_some_endpoints() -> None:
    """`highest_slot_index` asks each endpoint on its own (`only=[i]`): a refused one must
    answer "no" at once, or every prepare waits out that endpoint's open minute (the
    benchmark's failover run found it). With every circuit forced open by an operator, a call
    free to use any endpoint is refused at once too: there is no half-open time to wait for.
    (Circuits that opened by themselves are asked anyway: panic routing,
    tests/unit/solana/test_panic_routing.py.)"""
    urls = ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"]  # discard port: nothing answers
    breakers = BreakerRegistry()
    for url in urls:
        breakers.set_override(redact_url(url), Override.FORCE_OPEN)
    env, _ = environment(timeout_s=10)
    async with SolanaRpc(urls, timeout=1, breakers=breakers) as rpc:
        began = time.monotonic()
        with pytest.raises(ServiceError) as restricted:
            await env.run(rpc.call, "getSlot", None, only=[0])
        assert restricted.value.code == "SolanaCircuitOpen"
        with pytest.raises(ServiceError) as forced:
            await env.run(rpc.call, "getSlot")
        assert forced.value.code == "SolanaCircuitOpen"
        assert time.monotonic() - began < 0.5
