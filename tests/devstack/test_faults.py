"""The fault registry's rules: which request a fault hits, and when a port must close."""

from __future__ import annotations

import asyncio

import pytest

from devstack.faults import FaultRegistry, FaultSpecError

TARGETS = {"solana-1", "pinata", "postgres"}


async def test_unknown_target_and_kind_are_named_in_the_error() -> None:
    registry = FaultRegistry(TARGETS)
    with pytest.raises(FaultSpecError, match="target"):
        await registry.add({"target": "nope", "kind": "error"})
    with pytest.raises(FaultSpecError, match="kind"):
        await registry.add({"target": "pinata", "kind": "explode"})
    with pytest.raises(FaultSpecError, match="rate"):
        await registry.add({"target": "pinata", "kind": "error", "rate": 1.5})
    with pytest.raises(FaultSpecError, match="delay_ms"):
        await registry.add({"target": "pinata", "kind": "latency"})
    assert registry.list() == []


async def test_match_limits_a_fault_to_one_method_or_path_prefix() -> None:
    registry = FaultRegistry(TARGETS)
    await registry.add({"target": "solana-1", "kind": "error", "match": "sendTransaction"})
    await registry.add({"target": "pinata", "kind": "status", "status": 429, "match": "/pinning"})
    assert registry.pick("solana-1", "getSlot") is None
    assert registry.pick("solana-1", "sendTransaction") is not None
    assert registry.pick("pinata", "/data/testAuthentication") is None
    fault = registry.pick("pinata", "/pinning/pinFileToIPFS")
    assert fault is not None and fault.status == 429
    assert registry.pick("postgres") is None
    assert registry.injected == {"solana-1:error": 1, "pinata:status": 1}


async def test_rate_is_a_seeded_probability() -> None:
    registry = FaultRegistry(TARGETS)
    await registry.add({"target": "pinata", "kind": "error", "rate": 0.3, "seed": 7})
    fired = sum(registry.pick("pinata", "/x") is not None for _ in range(2000))
    assert 500 < fired < 700  # 30 % of 2000, within a wide margin

    again = FaultRegistry(TARGETS)
    await again.add({"target": "pinata", "kind": "error", "rate": 0.3, "seed": 7})
    assert sum(again.pick("pinata", "/x") is not None for _ in range(2000)) == fired


async def test_down_notifies_once_per_target_and_comes_back_when_the_last_goes() -> None:
    registry = FaultRegistry(TARGETS)
    events: list[tuple[str, bool]] = []

    async def listener(target: str, down: bool) -> None:
        events.append((target, down))

    registry.on_down_change(listener)
    first = await registry.add({"target": "solana-1", "kind": "down"})
    second = await registry.add({"target": "solana-1", "kind": "down"})
    assert registry.is_down("solana-1")
    await registry.remove(first.id)
    assert registry.is_down("solana-1")
    await registry.remove(second.id)
    await registry.add({"target": "pinata", "kind": "down"})
    assert await registry.clear() == 1
    assert events == [("solana-1", True), ("solana-1", False), ("pinata", True), ("pinata", False)]


async def test_removing_an_unknown_fault_reports_false() -> None:
    registry = FaultRegistry(TARGETS)
    assert await registry.remove("42") is False


async def test_a_fault_with_a_duration_removes_itself_and_brings_the_port_back() -> None:
    registry = FaultRegistry(TARGETS)
    events: list[tuple[str, bool]] = []

    async def listener(target: str, down: bool) -> None:
        events.append((target, down))

    registry.on_down_change(listener)
    await registry.add({"target": "postgres", "kind": "down", "duration_ms": 50})
    assert registry.is_down("postgres")
    await asyncio.sleep(0.2)
    assert not registry.is_down("postgres")
    assert registry.list() == []
    assert events == [("postgres", True), ("postgres", False)]
    with pytest.raises(FaultSpecError, match="duration_ms"):
        await registry.add({"target": "postgres", "kind": "down", "duration_ms": 0})
