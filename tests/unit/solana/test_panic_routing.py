"""Panic routing (issue 15): automatic breakers skip a failing endpoint, never stall the pool.

With 20 % of calls failing at every endpoint, the spec's "3 consecutive failures, open 60 s"
opens each endpoint within seconds; before panic routing every call was then refused by our
own breakers although each endpoint still answered 80 % of the time. Envoy's panic threshold:
while fewer than half of the endpoints are healthy (breaker closed), the open ones are asked
too, after the healthy ones, the least bad first; an operator's force-open is always kept.
While at least half are healthy, an open endpoint is skipped as before, unless every healthy
one failed the call (the last resort).

Endpoints are small JSON-RPC servers on 127.0.0.1 (tests/unit/solana/rpc_nodes.py).
"""

from __future__ import annotations

import pytest

from mintsaga.errors import ServiceError
from mintsaga.observability.metrics import sample_value
from mintsaga.resilience.breaker import SOLANA_BREAKER, BreakerRegistry, BreakerState, Override
from mintsaga.solana.rpc import SolanaRpc
from tests.unit.solana.rpc_nodes import http, result, serving


def panic_calls(endpoint: str) -> float:
    return sample_value("mintsaga_rpc_panic_calls_total", {"endpoint": endpoint}) or 0.0


def trip(breakers: BreakerRegistry, name: str, *, failures: int = 3, successes: int = 0) -> None:
    """Open `name`'s breaker by the spec's rule, after `successes` good calls in its window."""
    breaker = breakers.get(name, SOLANA_BREAKER)
    for _ in range(successes):
        breaker.record_success()
    for _ in range(failures):
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


async def test_every_circuit_open_by_itself_the_call_still_reaches_an_endpoint() -> None:
    async with serving(result(7), result(8), result(9)) as nodes:
        breakers = BreakerRegistry()
        for node in nodes.nodes:
            trip(breakers, node.name)
        before = panic_calls(nodes[0].name)
        async with SolanaRpc(nodes.urls, breakers=breakers) as rpc:
            assert rpc.panicking()
            assert await rpc.call("getSlot") == 7
        assert nodes[0].methods == ["getSlot"]
        assert panic_calls(nodes[0].name) == before + 1


async def test_the_least_bad_open_endpoint_is_asked_first() -> None:
    async with serving(result(7), result(8), result(9)) as nodes:
        breakers = BreakerRegistry()
        trip(breakers, nodes[0].name)  # 0 % success
        trip(breakers, nodes[1].name, successes=6)  # 6 of 9
        trip(breakers, nodes[2].name, successes=2)  # 2 of 5
        async with SolanaRpc(nodes.urls, breakers=breakers) as rpc:
            assert await rpc.call("getSlot") == 8
        assert (nodes[0].methods, nodes[1].methods, nodes[2].methods) == ([], ["getSlot"], [])


async def test_healthy_endpoints_are_asked_before_open_ones_while_panicking() -> None:
    """One healthy of three is fewer than half: panic, but the healthy one goes first, and
    an open one is asked only when it fails."""
    async with serving(result(7), http(503), result(9)) as nodes:
        breakers = BreakerRegistry()
        trip(breakers, nodes[0].name)
        trip(breakers, nodes[2].name)
        async with SolanaRpc(nodes.urls, breakers=breakers) as rpc:
            assert rpc.panicking()
            assert await rpc.call("getSlot") == 7  # node 1 failed, then the open node 0
        assert nodes[1].methods == ["getSlot"]
        assert nodes[0].methods == ["getSlot"]
        assert nodes[2].methods == []  # the first open one answered


async def test_no_panic_while_half_the_endpoints_are_healthy() -> None:
    """Two healthy of three: the open endpoint is skipped while a healthy one answers."""
    async with serving(result(7), http(503), result(9)) as nodes:
        breakers = BreakerRegistry()
        trip(breakers, nodes[0].name)
        async with SolanaRpc(nodes.urls, breakers=breakers) as rpc:
            assert not rpc.panicking()
            assert await rpc.call("getSlot") == 9
        assert nodes[0].methods == []


async def test_an_open_endpoint_is_the_last_resort_when_every_healthy_one_failed() -> None:
    """Two healthy of three both fail this call: rather than fail it, the open one is asked
    (with 20 % of calls failing everywhere, two failures in a row are 4 % of calls)."""
    async with serving(result(7), http(503), http(503)) as nodes:
        breakers = BreakerRegistry()
        trip(breakers, nodes[0].name)
        before = panic_calls(nodes[0].name)
        async with SolanaRpc(nodes.urls, breakers=breakers) as rpc:
            assert not rpc.panicking()
            assert await rpc.call("getSlot") == 7
        assert (nodes[1].methods, nodes[2].methods, nodes[0].methods) == (["getSlot"],) * 3
        assert panic_calls(nodes[0].name) == before + 1


async def test_an_operators_force_open_is_respected_in_panic() -> None:
    async with serving(result(7), result(8)) as nodes:
        breakers = BreakerRegistry()
        breakers.set_override(nodes[0].name, Override.FORCE_OPEN)
        trip(breakers, nodes[1].name)
        async with SolanaRpc(nodes.urls, breakers=breakers) as rpc:
            assert rpc.panicking()
            assert await rpc.call("getSlot") == 8
            breakers.set_override(nodes[1].name, Override.FORCE_OPEN)
            with pytest.raises(ServiceError) as refused:
                await rpc.call("getSlot")
        assert refused.value.code == "SolanaCircuitOpen"
        assert nodes[0].methods == []


async def test_a_call_for_one_endpoint_asks_it_in_panic() -> None:
    """A broadcast asks each endpoint on its own (`only=[i]`): in panic an open one still
    gets the transaction."""
    async with serving(result(7), result(8)) as nodes:
        breakers = BreakerRegistry()
        trip(breakers, nodes[0].name)
        trip(breakers, nodes[1].name)
        async with SolanaRpc(nodes.urls, breakers=breakers) as rpc:
            assert await rpc.call("getSlot", only=[1]) == 8
        assert nodes[0].methods == []
