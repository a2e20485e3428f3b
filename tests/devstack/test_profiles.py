"""Provider profiles and the JSON-RPC fault kinds, without a running stack: the rules.

The same behaviour over real HTTP, on the test stack, is in test_solana_profiles.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from devstack.__main__ import _config, main
from devstack.config import SOLANA_ENDPOINTS, StackConfig
from devstack.faults import FaultRegistry, FaultSpecError
from devstack.profiles import (
    FREE_PLAN_REQUESTS_PER_SECOND,
    FREE_PLAN_SENDS_PER_SECOND,
    ProfileError,
    SlidingWindow,
    SolanaProfiles,
    parse_profile_spec,
)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_free_plan_numbers_are_helius_documented_ones() -> None:
    # helius.dev/docs/billing/rate-limits: Free, 10 requests/s; sendTransaction 1/sec.
    assert (FREE_PLAN_REQUESTS_PER_SECOND, FREE_PLAN_SENDS_PER_SECOND) == (10, 1)


def test_profile_spec_names_endpoints_and_profiles() -> None:
    spec = " solana-1=rate-limited, solana-3=no-history,"
    assert parse_profile_spec(spec, SOLANA_ENDPOINTS) == {
        "solana-1": "rate-limited",
        "solana-3": "no-history",
    }
    assert parse_profile_spec("", SOLANA_ENDPOINTS) == {}
    with pytest.raises(ProfileError, match="solana-9"):
        parse_profile_spec("solana-9=default", SOLANA_ENDPOINTS)
    with pytest.raises(ProfileError, match="free-tier"):
        parse_profile_spec("solana-1=free-tier", SOLANA_ENDPOINTS)
    with pytest.raises(ProfileError, match="<endpoint>=<profile>"):
        parse_profile_spec("rate-limited", SOLANA_ENDPOINTS)


def test_the_environment_sets_profiles_and_a_bad_one_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DEVSTACK_SOLANA_PROFILES", "solana-2=send-only")
    config = StackConfig.create(tmp_path)
    assert config.solana_profiles == {"solana-2": "send-only"}
    assert config.funding_endpoint == "solana-1"
    explicit = StackConfig.create(tmp_path, solana_profiles={"solana-1": "expired-key"})
    assert explicit.solana_profiles == {"solana-1": "expired-key"}
    assert explicit.funding_endpoint == "solana-2"  # `up` funds the wallet through a reader

    monkeypatch.setenv("DEVSTACK_SOLANA_PROFILES", "solana-1=nope")
    assert main(["--state-dir", str(tmp_path), "env"]) == 2
    assert "nope" in capsys.readouterr().err


def test_up_saves_the_profiles_given_and_later_ups_keep_them(tmp_path: Path) -> None:
    def args(**given: object) -> argparse.Namespace:
        return argparse.Namespace(command="up", state_dir=tmp_path, **given)

    config = _config(args(solana_profiles="solana-1=rate-limited,solana-3=send-only"))
    assert config.solana_profiles == {"solana-1": "rate-limited", "solana-3": "send-only"}
    config.save()  # what `up` leaves in stack.json (the stack is not running)
    assert _config(args()).solana_profiles == config.solana_profiles
    assert _config(args(solana_profiles="")).solana_profiles == {}


def test_up_refuses_profiles_that_leave_no_endpoint_to_read_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = "solana-1=send-only,solana-2=expired-key,solana-3=disabled"
    assert main(["--state-dir", str(tmp_path), "up", "--solana-profiles", spec]) == 2
    assert "no endpoint that serves reads" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing was started
    assert main(["--state-dir", str(tmp_path), "up", "--solana-profiles", "solana-1=x"]) == 2
    assert "--solana-profiles" in capsys.readouterr().err


def test_sliding_window_admits_the_limit_in_any_second() -> None:
    clock = FakeClock()
    window = SlidingWindow(10, clock)
    for _ in range(10):
        assert window.wait_for(1) == 0
        window.admit(1)
    assert window.wait_for(1) == pytest.approx(1.0)
    clock.now += 0.5
    assert window.wait_for(1) == pytest.approx(0.5)
    clock.now += 0.5
    assert window.wait_for(10) == 0
    assert window.wait_for(11) == float("inf")


def test_rate_limited_gate_counts_calls_sends_and_refusals() -> None:
    clock = FakeClock()
    wall = FakeClock(1_800_000_000.0)
    profiles = SolanaProfiles(
        ["solana-1"], {"solana-1": "rate-limited"}, clock=clock, wall_clock=wall
    )
    statuses = [profiles.gate("solana-1", ["getSlot"], 1) for _ in range(12)]
    assert [s is None for s in statuses] == [True] * 10 + [False] * 2
    refused = statuses[-1]
    assert refused is not None and refused.status == 429
    assert refused.headers["Retry-After"] == "1"

    clock.now += 1.0
    wall.now += 1.0
    assert profiles.gate("solana-1", ["sendTransaction"], 2) is None
    second = profiles.gate("solana-1", ["sendTransaction"], 3)
    assert second is not None and second.status == 429  # 1 send a second
    assert profiles.gate("solana-1", ["getSlot"], 4) is None  # reads still have room
    batch = profiles.gate("solana-1", ["getSlot"] * 9, 5)
    assert batch is not None and batch.status == 429  # 9 calls do not fit in the 8 left

    counters = profiles.get("solana-1").counters.describe()
    assert counters["accepted"] == 12 and counters["refused"] == 2 + 1 + 9
    assert counters["send_accepted"] == 1 and counters["send_refused"] == 1
    assert counters["accepted_per_second"] == {"1800000000": 10, "1800000001": 2}
    assert counters["send_accepted_per_second"] == {"1800000001": 1}

    profiles.set("solana-1", "rate-limited", requests_per_second=50, send_per_second=5)
    fresh = profiles.get("solana-1")
    assert (fresh.requests_per_second, fresh.send_per_second, fresh.counters.accepted) == (50, 5, 0)
    with pytest.raises(ProfileError, match="requests_per_second"):
        profiles.set("solana-1", "rate-limited", requests_per_second=0)
    with pytest.raises(ProfileError, match="only for rate-limited"):
        profiles.set("solana-1", "default", requests_per_second=5)
    with pytest.raises(ProfileError, match="unknown profile"):
        profiles.set("solana-1", "premium")


def test_node_refusals_per_profile() -> None:
    profiles = SolanaProfiles(SOLANA_ENDPOINTS, {"solana-1": "no-history", "solana-2": "send-only"})
    search = [["sig"], {"searchTransactionHistory": True}]
    assert profiles.refusal("solana-1", "getSignatureStatuses", search) == (
        -32011,
        "Transaction history is not available from this node",
    )
    assert profiles.refusal("solana-1", "getSignatureStatuses", [["sig"]]) is None
    assert profiles.refusal("solana-1", "getTransaction", ["sig"])[0] == -32011  # type: ignore[index]
    assert profiles.refusal("solana-1", "getSlot", []) is None
    for method in ("getSlot", "getHealth", "getLatestBlockhash", "getSignatureStatuses"):
        assert profiles.refusal("solana-2", method, []) == (-32601, "Method not found")
    assert profiles.refusal("solana-2", "sendTransaction", ["tx"]) is None
    assert profiles.refusal("solana-3", "getSignatureStatuses", search) is None


async def test_json_rpc_fault_kinds_are_checked_and_only_for_json_rpc_targets() -> None:
    registry = FaultRegistry({"solana-1", "pinata"}, json_rpc_targets={"solana-1"})
    fault = await registry.add(
        {"target": "solana-1", "kind": "rpc_error", "code": -32005, "message": "Node is unhealthy"}
    )
    assert fault.rpc_error() == {"code": -32005, "message": "Node is unhealthy"}
    assert "data" not in fault.describe()
    with_data = await registry.add(
        {"target": "solana-1", "kind": "rpc_error", "code": -1, "message": "m", "data": {"a": 1}}
    )
    assert with_data.rpc_error()["data"] == {"a": 1}
    with pytest.raises(FaultSpecError, match="JSON-RPC endpoints"):
        await registry.add({"target": "pinata", "kind": "rpc_error", "code": 1, "message": "m"})
    with pytest.raises(FaultSpecError, match="code"):
        await registry.add({"target": "solana-1", "kind": "rpc_error", "message": "m"})
    with pytest.raises(FaultSpecError, match="code"):
        await registry.add(
            {"target": "solana-1", "kind": "rpc_error", "code": True, "message": "m"}
        )
    with pytest.raises(FaultSpecError, match="message"):
        await registry.add({"target": "solana-1", "kind": "rpc_error", "code": -32005})
    with pytest.raises(FaultSpecError, match="slots"):
        await registry.add({"target": "solana-1", "kind": "behind"})
    with pytest.raises(FaultSpecError, match="JSON-RPC endpoints"):
        await registry.add({"target": "pinata", "kind": "drop_transaction"})
    behind = await registry.add({"target": "solana-1", "kind": "behind", "slots": 40})
    assert behind.describe()["slots"] == 40


async def test_call_level_faults_are_left_to_the_rpc_methods() -> None:
    registry = FaultRegistry({"solana-1"}, json_rpc_targets={"solana-1"})
    await registry.add({"target": "solana-1", "kind": "behind", "slots": 5})
    await registry.add({"target": "solana-1", "kind": "drop_transaction"})
    assert registry.pick("solana-1", "getSlot", skip_kinds=("behind", "drop_transaction")) is None
    picked = registry.pick("solana-1", "sendTransaction", only_kinds=("drop_transaction",))
    assert picked is not None and picked.kind == "drop_transaction"
