"""Endpoint tiers and slot-lag routing (issue 15), over real sockets.

The spec's endpoint strategy ends in an "Emergency Local Node (Last resort)": the pool's
emergency tier (SOLANA_EMERGENCY_ENDPOINTS) is asked only by a call that may use every normal
endpoint, once every normal one is open, forced open, cannot serve the call or failed it.
Emergency endpoints have indices after the normal ones and stay out of ``endpoints``,
``urls`` and ``rotated``, so broadcasts and second opinions never reach them by themselves.

"An endpoint whose slot lags the best by more than a set number of slots is skipped"
(SOLANA_MAX_SLOT_LAG, default 150): each ``highest_slot_index`` round (prepare asks one per
blockhash fetch) records every endpoint's lag; a lagging one is asked after the others.

Endpoints are small JSON-RPC servers on 127.0.0.1 (tests/unit/solana/rpc_nodes.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mintsaga.errors import ServiceError
from mintsaga.observability.metrics import sample_value
from mintsaga.resilience.breaker import SOLANA_BREAKER, BreakerRegistry, BreakerState, Override
from mintsaga.setting_readers import SettingsError
from mintsaga.settings import DEFAULT_MAX_SLOT_LAG, Settings
from mintsaga.solana import rpc_pool as rpc_module
from mintsaga.solana.rpc import SolanaRpc
from tests.unit.solana.rpc_nodes import Answer, Behaviour, Params, http, result, serving
from tests.unit.solana.settings_env import settings_env


def emergency_calls(endpoint: str) -> float:
    return sample_value("mintsaga_rpc_emergency_calls_total", {"endpoint": endpoint}) or 0.0


def trip(breakers: BreakerRegistry, name: str) -> None:
    breaker = breakers.get(name, SOLANA_BREAKER)
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


def at_slot(slot: int, answer: Any = "ok") -> Behaviour:
    """A node whose `getSlot` answers ``slot`` and every other method ``answer``."""

    def behave(method: str, params: Params) -> Answer:
        return (200, {"result": slot if method == "getSlot" else answer})

    return behave


# -- the emergency tier ----------------------------------------------------------------------


async def test_the_emergency_endpoint_is_not_asked_while_a_normal_one_answers() -> None:
    async with serving(http(503), result(8), result(99)) as nodes:
        async with SolanaRpc(nodes.urls[:2], emergency=nodes.urls[2:]) as rpc:
            assert await rpc.call_answered("getBalance") == (1, 8)
            assert rpc.endpoints == [nodes[0].name, nodes[1].name]
            assert rpc.urls == nodes.urls[:2]
            assert rpc.emergency_endpoints == [nodes[2].name]
            assert rpc.rotated(1) == [1, 0]
        assert nodes[2].methods == []


async def test_every_normal_endpoint_failing_the_call_enters_the_emergency_tier() -> None:
    async with serving(http(503), http(500), result(99)) as nodes:
        before = emergency_calls(nodes[2].name)
        async with SolanaRpc(nodes.urls[:2], emergency=nodes.urls[2:]) as rpc:
            index, answer = await rpc.call_answered("getBalance")
            assert (index, answer) == (2, 99)
            assert rpc.emergency_indices == [2]
            assert rpc.name(index) == nodes[2].name
        assert (nodes[0].methods, nodes[1].methods, nodes[2].methods) == (["getBalance"],) * 3
        assert emergency_calls(nodes[2].name) == before + 1


async def test_normal_endpoints_forced_open_by_an_operator_send_calls_to_the_emergency_tier() -> (
    None
):
    """An operator's force-open of every normal endpoint is the tier's plainest use: the call
    neither waits for a half-open circuit nor fails."""
    async with serving(result(7), result(8), result(99)) as nodes:
        breakers = BreakerRegistry()
        for node in nodes.nodes[:2]:
            breakers.set_override(node.name, Override.FORCE_OPEN)
        async with SolanaRpc(nodes.urls[:2], emergency=nodes.urls[2:], breakers=breakers) as rpc:
            assert await rpc.call("getBalance") == 99
        assert (nodes[0].methods, nodes[1].methods) == ([], [])


async def test_open_normal_endpoints_are_asked_in_panic_before_the_emergency_tier() -> None:
    async with serving(http(503), result(8), result(99)) as nodes:
        breakers = BreakerRegistry()
        trip(breakers, nodes[0].name)
        trip(breakers, nodes[1].name)
        async with SolanaRpc(nodes.urls[:2], emergency=nodes.urls[2:], breakers=breakers) as rpc:
            assert rpc.panicking()
            assert await rpc.call("getBalance") == 8
        assert nodes[2].methods == []


async def test_normal_endpoints_that_cannot_serve_the_call_enter_the_emergency_tier() -> None:
    async with (
        serving(http(401), http(401), result(99)) as nodes,
        SolanaRpc(nodes.urls[:2], emergency=nodes.urls[2:]) as rpc,
    ):
        assert await rpc.call("getBalance") == 99


async def test_a_call_restricted_to_some_endpoints_never_enters_the_tier() -> None:
    """A broadcast's or a per-endpoint question's `only=[i]` fails at once; a call over
    every normal endpoint (prepare's rotated order) may enter it."""
    async with (
        serving(http(503), http(503), result(99)) as nodes,
        SolanaRpc(nodes.urls[:2], emergency=nodes.urls[2:]) as rpc,
    ):
        with pytest.raises(ServiceError) as failed:
            await rpc.call("sendTransaction", only=[1])
        assert failed.value.code == "SolanaUnavailable"
        assert nodes[2].methods == []
        assert await rpc.call("getBalance", only=rpc.rotated(1)) == 99
        # An emergency index named on purpose (the node that answered, read again).
        assert await rpc.call("getBalance", only=[2]) == 99


async def test_an_operators_force_open_of_the_emergency_endpoint_is_respected() -> None:
    async with serving(http(503), result(99)) as nodes:
        breakers = BreakerRegistry()
        breakers.set_override(nodes[1].name, Override.FORCE_OPEN)
        async with SolanaRpc(nodes.urls[:1], emergency=nodes.urls[1:], breakers=breakers) as rpc:
            with pytest.raises(ServiceError) as failed:
                await rpc.call("getBalance")
        assert failed.value.code == "SolanaUnavailable"
        assert nodes[1].methods == []


async def test_an_emergency_endpoint_open_by_itself_is_still_the_last_resort() -> None:
    async with serving(http(503), result(99)) as nodes:
        breakers = BreakerRegistry()
        trip(breakers, nodes[1].name)
        async with SolanaRpc(nodes.urls[:1], emergency=nodes.urls[1:], breakers=breakers) as rpc:
            assert await rpc.call("getBalance") == 99


async def test_the_emergency_tier_survives_a_runtime_endpoint_switch() -> None:
    async with serving(http(503), http(503), result(99)) as nodes:
        async with SolanaRpc(nodes.urls[:1], emergency=nodes.urls[2:]) as rpc:
            await rpc.set_endpoints(nodes.urls[1:2])
            assert rpc.urls == nodes.urls[1:2]
            assert rpc.emergency_endpoints == [nodes[2].name]
            assert await rpc.call_answered("getBalance") == (1, 99)
        assert nodes[0].methods == []
        assert nodes[1].methods == ["getBalance"]


async def test_an_endpoint_cannot_be_normal_and_emergency() -> None:
    with pytest.raises(ValueError, match="both a normal and an emergency"):
        SolanaRpc(["http://127.0.0.1:1"], emergency=["http://127.0.0.1:1/"])


# -- slot lag ----------------------------------------------------------------------------------


async def test_an_endpoint_lagging_the_best_by_too_many_slots_is_asked_last() -> None:
    async with serving(at_slot(1_000, 7), at_slot(1_200, 8), at_slot(1_190, 9)) as nodes:
        async with SolanaRpc(nodes.urls) as rpc:
            assert await rpc.highest_slot_index() == 1
            assert (rpc.slot_lag(0), rpc.slot_lag(1), rpc.slot_lag(2)) == (200, 0, 10)
            assert rpc.lagging(0) and not rpc.lagging(2)
            assert await rpc.call("getBalance") == 8
            assert await rpc.call("getBalance", only=rpc.rotated(0)) == 8  # prepare's order
            nodes[1].behave = http(503)
            assert await rpc.call("getBalance") == 9  # node 2, 10 behind, before node 0
        assert nodes[0].methods == ["getSlot"]


async def test_a_lagging_endpoint_still_answers_when_the_others_fail() -> None:
    async with serving(at_slot(1_000, 7), at_slot(1_200, 8)) as nodes:
        async with SolanaRpc(nodes.urls) as rpc:
            await rpc.highest_slot_index()
            nodes[1].behave = http(503)
            assert await rpc.call("getBalance") == 7
        assert nodes[1].methods == ["getSlot", "getBalance"]


async def test_a_lag_within_the_limit_keeps_the_priority_order() -> None:
    lag = DEFAULT_MAX_SLOT_LAG
    async with (
        serving(at_slot(1_000, 7), at_slot(1_000 + lag, 8)) as nodes,
        SolanaRpc(nodes.urls) as rpc,
    ):
        await rpc.highest_slot_index()
        assert rpc.slot_lag(0) == lag and not rpc.lagging(0)
        assert await rpc.call("getBalance") == 7


async def test_the_limit_is_a_setting_and_none_turns_lag_routing_off() -> None:
    async with serving(at_slot(1_000, 7), at_slot(1_020, 8)) as nodes:
        async with SolanaRpc(nodes.urls, max_slot_lag=10) as rpc:
            await rpc.highest_slot_index()
            assert await rpc.call("getBalance") == 8
        async with SolanaRpc(nodes.urls, max_slot_lag=None) as rpc:
            await rpc.highest_slot_index()
            assert await rpc.call("getBalance") == 7


async def test_a_measurement_grows_stale_and_a_caught_up_endpoint_is_first_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rpc_module, "SLOT_LAG_FRESH_S", 0.2)
    async with serving(at_slot(1_000, 7), at_slot(1_200, 8)) as nodes, SolanaRpc(nodes.urls) as rpc:
        await rpc.highest_slot_index()
        assert await rpc.call("getBalance") == 8
        await asyncio.sleep(0.3)
        assert rpc.slot_lag(0) is None
        assert await rpc.call("getBalance") == 7
        nodes[0].behave = at_slot(1_200, 7)
        await rpc.highest_slot_index()
        assert rpc.slot_lag(0) == 0
        assert await rpc.call("getBalance") == 7


async def test_no_request_is_added_per_call() -> None:
    """The lag comes from the rounds prepare asks anyway: a call is one request."""
    async with serving(at_slot(1_000, 7), at_slot(1_200, 8)) as nodes:
        async with SolanaRpc(nodes.urls) as rpc:
            for _ in range(3):
                await rpc.call("getBalance")
        assert (nodes[0].methods, nodes[1].methods) == (["getBalance"] * 3, [])


# -- the settings ------------------------------------------------------------------------------


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Two normal endpoints, the second with a key in its URL."""
    endpoints = "http://127.0.0.1:8899,https://rpc.example/?api-key=a"
    return settings_env(tmp_path, **{"SOLANA_RPC_ENDPOINTS": endpoints, **extra})


def test_the_settings_default_to_no_emergency_tier_and_a_150_slot_limit(tmp_path: Path) -> None:
    settings = Settings.from_env(_env(tmp_path))
    assert settings.solana_emergency_endpoints == ()
    assert settings.solana_max_slot_lag == DEFAULT_MAX_SLOT_LAG == 150


def test_the_settings_read_the_tier_and_the_limit(tmp_path: Path) -> None:
    settings = Settings.from_env(
        _env(
            tmp_path,
            SOLANA_EMERGENCY_ENDPOINTS=" http://10.0.0.5:8899/ , http://10.0.0.6:8899",
            SOLANA_MAX_SLOT_LAG="300",
        )
    )
    assert settings.solana_emergency_endpoints == ("http://10.0.0.5:8899", "http://10.0.0.6:8899")
    assert settings.solana_max_slot_lag == 300
    off = Settings.from_env(_env(tmp_path, SOLANA_MAX_SLOT_LAG="0"))
    assert off.solana_max_slot_lag is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("https://rpc.example/?api-key=b", "also in SOLANA_RPC_ENDPOINTS"),
        ("http://10.0.0.5:8899,http://10.0.0.5:8899", "listed twice"),
        ("ftp://10.0.0.5", "SOLANA_EMERGENCY_ENDPOINTS"),
    ],
)
def test_an_emergency_endpoint_must_be_told_apart(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as refused:
        Settings.from_env(_env(tmp_path, SOLANA_EMERGENCY_ENDPOINTS=value))
    assert "api-key=b" not in str(refused.value)


def test_a_negative_slot_lag_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="SOLANA_MAX_SLOT_LAG"):
        Settings.from_env(_env(tmp_path, SOLANA_MAX_SLOT_LAG="-1"))
