"""Endpoints that cannot serve a call, and per-call deadlines, over real sockets (issue 15).

Each endpoint is a small aiohttp JSON-RPC server on 127.0.0.1 answering what real providers
answer (solana/rpc.py cites each): HTTP 401/403/404/413, -32601 from a send-only endpoint,
-32011 from a node without transaction history. Such an answer moves the call on to the next
endpoint inside the same call, is counted (`mintsaga_rpc_endpoint_unusable_total`) and makes
the endpoint last in line for that kind of call; an answer about the request (a rejected
transaction, bad params) still ends the call at once. Status polls do not ask for the history;
the expiry decision and the already-minted check do.

The deadline tests run a real activity attempt (Temporal's `ActivityEnvironment`, the worker's
call hooks) with the worker's default settings (`Settings.from_env` with nothing Solana set):
a hung endpoint is left in time for the next one to answer inside the same attempt.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from solders.keypair import Keypair
from temporalio.testing import ActivityEnvironment

from mintsaga.activities.call_hooks import install_call_hooks
from mintsaga.activities.solana import SolanaActivities
from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.observability.metrics import sample_value
from mintsaga.resilience import guard
from mintsaga.resilience.breaker import BreakerRegistry, BreakerState
from mintsaga.settings import Settings
from mintsaga.solana.minter import SolanaMinter
from mintsaga.solana.rpc import SolanaRpc
from mintsaga.solana.rpc_pool import DEFAULT_TIMEOUT_S, MIN_CALL_TIMEOUT_S
from mintsaga.workflows import activity_models as io
from mintsaga.workflows.policies import CHECK_RPC, PREPARE_TRANSACTION
from tests.unit.solana.rpc_nodes import (
    Answer,
    Behaviour,
    Node,
    Params,
    hang,
    http,
    result,
    rpc_error,
    serving,
)
from tests.unit.solana.settings_env import settings_env

SIGNATURE = "5" * 88  # any base58 text: the nodes here do not parse it


def unusable_count(node: Node, reason: str, method: str) -> float:
    labels = {"endpoint": node.name, "reason": reason, "method": method}
    return sample_value("mintsaga_rpc_endpoint_unusable_total", labels) or 0.0


def default_settings(tmp_path: Path) -> Settings:
    """The worker's defaults: nothing Solana-specific set, only what `from_env` requires."""
    return Settings.from_env(settings_env(tmp_path))


# -- one endpoint cannot serve the call: the next one does -----------------------------------

UNUSABLE = [
    pytest.param(http(401, "Unauthorized"), "unauthorized", "SolanaUnauthorized", id="401"),
    pytest.param(http(403, "Forbidden"), "forbidden", "SolanaUnauthorized", id="403"),
    pytest.param(http(404, "Not Found"), "not_found", "SolanaEndpointNotFound", id="404"),
    pytest.param(http(413, "Content Too Large"), "too_large", "SolanaRequestTooLarge", id="413"),
    pytest.param(
        rpc_error(-32601, "Method not found"),
        "method_not_found",
        "SolanaMethodNotFound",
        id="32601",
    ),
    pytest.param(
        rpc_error(-32011, "Transaction history is not available from this node"),
        "no_history",
        "TransactionHistoryNotAvailable",
        id="32011",
    ),
]


@pytest.mark.parametrize(("behaviour", "reason", "code"), UNUSABLE)
async def test_an_endpoint_that_cannot_serve_the_call_hands_it_to_the_next(
    behaviour: Behaviour, reason: str, code: str
) -> None:
    async with serving(behaviour, result(42), result(43)) as ns:
        before = unusable_count(ns[0], reason, "getSlot")
        async with SolanaRpc(ns.urls) as rpc:
            assert await rpc.call("getSlot", [{"commitment": "confirmed"}], parse=int) == 42
            # Counted against that endpoint, for that method.
            assert unusable_count(ns[0], reason, "getSlot") == before + 1
            # Asked last for that kind of call now: the next call starts at the second.
            assert await rpc.call("getSlot", [{"commitment": "confirmed"}], parse=int) == 42
            assert ns[0].methods == ["getSlot"] and ns[1].methods == ["getSlot", "getSlot"]
            # And when it is the only one left, the call says what it answered.
            with pytest.raises(ServiceError) as raised:
                await rpc.call("getSlot", only=[0])
    error = raised.value
    assert (error.kind, error.code, error.unusable) == (ErrorKind.NEEDS_OPERATOR, code, reason)
    assert not error.retryable and error.endpoint == ns[0].name
    assert ns[2].seen == []


@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param(rpc_error(-32602, "Invalid params: bad signature"), id="32602"),
        pytest.param(rpc_error(-32003, "Transaction signature verification failure"), id="32003"),
        pytest.param(
            rpc_error(
                -32002,
                "Transaction simulation failed: Error processing Instruction 0",
                {"err": {"InstructionError": [0, {"Custom": 0}]}, "logs": []},
            ),
            id="rejected",
        ),
        pytest.param(http(400, "Bad Request"), id="400"),
    ],
)
async def test_an_answer_about_the_request_still_ends_the_call(behaviour: Behaviour) -> None:
    async with serving(behaviour, result("sig")) as ns, SolanaRpc(ns.urls) as rpc:
        with pytest.raises(ServiceError) as raised:
            await rpc.call("sendTransaction", ["AAAA", {"encoding": "base64"}])
    assert raised.value.kind is ErrorKind.PERMANENT and raised.value.unusable is None
    assert ns[1].seen == []  # another endpoint would answer the same


async def test_when_no_endpoint_can_serve_it_an_operator_is_needed() -> None:
    async with (
        serving(http(401), rpc_error(-32601, "Method not found"), http(404)) as ns,
        SolanaRpc(ns.urls) as rpc,
    ):
        with pytest.raises(ServiceError) as raised:
            await rpc.call("getBlockHeight")
    assert raised.value.kind is ErrorKind.NEEDS_OPERATOR
    assert raised.value.code == "SolanaEndpointNotFound"  # the last one asked
    assert [len(node.seen) for node in ns.nodes] == [1, 1, 1]


async def test_a_retryable_failure_elsewhere_outranks_them() -> None:
    """Some endpoint failed for now: a later attempt may find it back, so it is retried."""
    async with serving(http(401), http(503), http(403)) as ns, SolanaRpc(ns.urls) as rpc:
        with pytest.raises(ServiceError) as raised:
            await rpc.call("getBlockHeight")
    assert raised.value.code == "SolanaUnavailable" and raised.value.retryable


async def test_a_refused_key_counts_against_the_breaker_a_missing_method_does_not() -> None:
    """An endpoint that serves nothing (401) opens its breaker after 3 refusals, as a down one
    would; a send-only endpoint (-32601 to reads) keeps a closed breaker, so it still gets the
    sends it can serve."""
    async with (
        serving(http(401), rpc_error(-32601, "Method not found"), result(7)) as ns,
        SolanaRpc(ns.urls, breakers=BreakerRegistry()) as rpc,
    ):
        for _ in range(3):
            for index in (0, 1):
                with pytest.raises(ServiceError):
                    await rpc.call("getSlot", only=[index])
        assert rpc.breaker(0).state is BreakerState.OPEN
        assert rpc.breaker(1).state is BreakerState.CLOSED
        # Whole endpoint: last for every kind of call; a missing method: for that method only.
        assert rpc.cannot_serve(0, "sendTransaction") and rpc.cannot_serve(0, "getSlot")
        assert rpc.cannot_serve(1, "getSlot") and not rpc.cannot_serve(1, "sendTransaction")
        assert await rpc.call("getSlot", parse=int) == 7


# -- status polling without history search -------------------------------------------------


def no_history_node(method: str, params: Params) -> Answer | None:
    """A node without transaction history: its status cache only (Agave's
    get_signature_statuses refuses searchTransactionHistory with -32011)."""
    config = params[-1] if len(params) > 1 and isinstance(params[-1], dict) else {}
    if config.get("searchTransactionHistory"):
        return rpc_error(-32011, "Transaction history is not available from this node")(
            method, params
        )
    status = {"slot": 5, "confirmations": 1, "err": None, "confirmationStatus": "confirmed"}
    return result({"context": {"slot": 9}, "value": [status]})(method, params)


async def test_polls_read_the_status_cache_and_the_expiry_look_finds_a_node_with_history() -> None:
    archive_status = {
        "slot": 5,
        "confirmations": None,
        "err": None,
        "confirmationStatus": "finalized",
    }
    archive = result({"context": {"slot": 9}, "value": [archive_status]})
    async with serving(no_history_node, archive) as ns:
        before = unusable_count(ns[0], "no_history", "getSignatureStatuses+history")
        async with SolanaRpc(ns.urls) as rpc:
            minter = SolanaMinter(rpc, Keypair(), bytes(32))
            polled = await minter.signature_status(SIGNATURE)
            assert polled.found and polled.confirmation_status == "confirmed"
            assert ns[0].seen == [("getSignatureStatuses", [[SIGNATURE]])]  # no history asked
            # The expiry decision's last look (and the already-minted check) search the history:
            # the node without it hands the call on to the next.
            looked = await minter.signature_status(SIGNATURE, history=True)
            assert looked.confirmation_status == "finalized"
            assert ns[1].seen == [
                ("getSignatureStatuses", [[SIGNATURE], {"searchTransactionHistory": True}])
            ]
            # Polls still go to it first: only history searches skip it.
            await minter.signature_status(SIGNATURE)
            assert len(ns[0].seen) == 3 and len(ns[1].seen) == 1
        after = unusable_count(ns[0], "no_history", "getSignatureStatuses+history")
    assert after == before + 1


async def test_with_no_endpoint_keeping_history_the_status_cache_decides() -> None:
    async with serving(no_history_node, no_history_node) as ns, SolanaRpc(ns.urls) as rpc:
        minter = SolanaMinter(rpc, Keypair(), bytes(32))
        looked = await minter.signature_status(SIGNATURE, history=True)
    assert looked.found and looked.confirmation_status == "confirmed"
    history = [[SIGNATURE], {"searchTransactionHistory": True}]
    assert ns[0].seen == [
        ("getSignatureStatuses", history),
        ("getSignatureStatuses", [[SIGNATURE]]),
    ]
    assert ns[1].seen == [("getSignatureStatuses", history)]


async def test_a_refused_key_everywhere_is_not_hidden_by_that_fallback() -> None:
    async with serving(http(401), http(401)) as ns, SolanaRpc(ns.urls) as rpc:
        minter = SolanaMinter(rpc, Keypair(), bytes(32))
        with pytest.raises(ServiceError) as raised:
            await minter.signature_status(SIGNATURE, history=True)
    assert raised.value.code == "SolanaUnauthorized"
    assert raised.value.kind is ErrorKind.NEEDS_OPERATOR


# -- per-call deadlines from the attempt's time left ------------------------------------------


@pytest.fixture
def worker_hooks() -> Iterator[None]:
    """The worker's resilience hooks (attempt deadline, heartbeat, spans and metrics)."""
    previous = guard.installed()
    install_call_hooks()
    yield
    guard.install(previous)


def attempt_of(step_name: str, timeout: Any) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info,
        activity_type=step_name,
        start_to_close_timeout=timeout,
        started_time=datetime.now(UTC),
    )
    return env


def test_the_defaults_are_in_the_low_seconds(tmp_path: Path) -> None:
    settings = default_settings(tmp_path)
    assert settings.solana_timeout_s == DEFAULT_TIMEOUT_S == 5.0
    rpc = SolanaRpc(["http://a.test", "http://b.test", "http://c.test"])
    assert rpc.call_timeout(3) == DEFAULT_TIMEOUT_S  # outside an attempt: the cap


async def test_the_share_of_the_attempt_left_bounds_each_endpoint(
    tmp_path: Path, worker_hooks: None
) -> None:
    settings = default_settings(tmp_path)
    rpc = SolanaRpc(
        ["http://a.test", "http://b.test", "http://c.test"], timeout=settings.solana_timeout_s
    )
    check = attempt_of(CHECK_RPC.name, CHECK_RPC.timeout)
    # check_rpc: 10 s, less the 1 s margin, for three endpoints.
    assert check.run(rpc.call_timeout, 3) == pytest.approx(3.0, abs=0.05)
    assert check.run(rpc.call_timeout, 1) == pytest.approx(5.0)  # the cap
    prepare = attempt_of(PREPARE_TRANSACTION.name, PREPARE_TRANSACTION.timeout)
    assert prepare.run(rpc.call_timeout, 3) == pytest.approx(5.0)
    # An attempt nearly over still gives an endpoint a chance.
    late = attempt_of(CHECK_RPC.name, CHECK_RPC.timeout)
    late.info = dataclasses.replace(
        late.info, started_time=datetime.fromtimestamp(time.time() - 9.9, UTC)
    )
    assert late.run(rpc.call_timeout, 2) == MIN_CALL_TIMEOUT_S
    await rpc.close()


async def test_a_hung_primary_is_left_in_time_for_the_next_inside_check_rpc(
    tmp_path: Path, worker_hooks: None
) -> None:
    settings = default_settings(tmp_path)
    async with serving(hang, result("ok"), result("ok")) as ns:
        rpc = SolanaRpc(ns.urls, timeout=settings.solana_timeout_s, breakers=BreakerRegistry())
        activities = SolanaActivities(
            minter=SolanaMinter(rpc, Keypair(), bytes(32)),
            store=None,  # type: ignore[arg-type]  # check_rpc reads no row
            spend_limit_lamports=0,
        )
        started = time.monotonic()
        out = await attempt_of(CHECK_RPC.name, CHECK_RPC.timeout).run(
            activities.check_rpc, io.MintRef(mint_id="m")
        )
        took = time.monotonic() - started
        await rpc.close()
    assert out.attempt == 1
    # 10 s attempt, 1 s margin, three endpoints: 3 s for the hung one, then the next answers.
    assert 2.8 <= took < 4.5, took
    assert ns[0].methods == ["getHealth"] and ns[1].methods == ["getHealth"]
    assert ns[2].seen == []


async def test_every_endpoint_hung_fails_inside_the_attempt(
    tmp_path: Path, worker_hooks: None
) -> None:
    """Each gets its share of what is left, so the attempt fails (and reports a classified,
    retryable error) before its start-to-close timeout would cut it off unexplained."""
    settings = default_settings(tmp_path)
    async with serving(hang, hang, hang) as ns:
        rpc = SolanaRpc(ns.urls, timeout=settings.solana_timeout_s)
        env = attempt_of(CHECK_RPC.name, CHECK_RPC.timeout)
        started = time.monotonic()
        with pytest.raises(ServiceError) as raised:
            await env.run(rpc.call, "getHealth")
        took = time.monotonic() - started
        await rpc.close()
    assert raised.value.code == "SolanaTimeout" and raised.value.retryable
    assert "getHealth: no answer within" in raised.value.message
    assert took < CHECK_RPC.timeout.total_seconds() - 0.5, took
    assert [len(node.seen) for node in ns.nodes] == [1, 1, 1]
    # Each waited its share, (10 s - 1 s margin) / 3 = 3.0 s, measured between the calls'
    # arrivals (the last one's share, in the message, is that less the overhead so far).
    first, second, third = (node.arrived[0] for node in ns.nodes)
    assert 2.95 <= second - first <= 3.3 and 2.95 <= third - second <= 3.3


async def test_failing_over_heartbeats_between_endpoints(
    tmp_path: Path, worker_hooks: None
) -> None:
    """A call inside a heartbeating step (the confirmation wait) beats before each next
    endpoint, so hung endpoints cannot outlast its heartbeat timeout."""
    settings = default_settings(tmp_path)
    beats: list[float] = []
    async with serving(hang, result(12)) as ns:
        rpc = SolanaRpc(ns.urls, timeout=settings.solana_timeout_s)
        env = attempt_of(PREPARE_TRANSACTION.name, PREPARE_TRANSACTION.timeout)
        env.on_heartbeat = lambda *details: beats.append(time.monotonic())
        started = time.monotonic()
        assert await env.run(rpc.call, "getBlockHeight", None, parse=int) == 12
        await rpc.close()
    assert len(beats) == 1 and beats[0] - started == pytest.approx(DEFAULT_TIMEOUT_S, abs=0.5)


# -- the health probe names them ---------------------------------------------------------------


def full_node(slot: int, *, history: bool = True) -> Behaviour:
    def behave(method: str, params: Params) -> Answer | None:
        if method == "getHealth":
            return 200, {"result": "ok"}
        if method == "getSlot":
            return 200, {"result": slot}
        if method == "getSignatureStatuses":
            if not history and params[-1].get("searchTransactionHistory"):
                return 200, {"error": {"code": -32011, "message": "Transaction history is not"}}
            return 200, {"result": {"context": {"slot": slot}, "value": [None]}}
        return 200, {"error": {"code": -32601, "message": "Method not found"}}

    return behave


async def test_the_health_probe_reports_them_as_needing_an_operator(tmp_path: Path) -> None:
    from mintsaga.activities.health import NEEDS_OPERATOR, HealthActivities

    settings = default_settings(tmp_path)
    async with serving(
        http(401, "Unauthorized"),
        full_node(1000, history=False),
        rpc_error(-32601, "Method not found"),  # send-only
        full_node(1001),
    ) as ns:
        probes = HealthActivities(
            solana_urls=lambda: ns.urls,
            solana_timeout_s=settings.solana_timeout_s,
            store=None,  # type: ignore[arg-type]  # only the Solana probe runs here
            database="",
            pinata=None,  # type: ignore[arg-type]
            uploader=None,  # type: ignore[arg-type]
            gateways=[],
            http=None,  # type: ignore[arg-type]
        )
        env = attempt_of("health_solana", PREPARE_TRANSACTION.timeout)
        out = await env.run(probes.health_solana)
    rows = {row.target: row for row in out.rows}
    refused, no_history, send_only, healthy = (rows[node.name] for node in ns.nodes)
    assert not refused.ok and refused.detail.startswith(f"{NEEDS_OPERATOR} SolanaUnauthorized")
    assert not send_only.ok and send_only.detail.startswith(
        f"{NEEDS_OPERATOR} SolanaMethodNotFound"
    )
    # Serves reads (its slot is reported), but not the history search mints need.
    assert not no_history.ok
    assert no_history.detail.startswith(f"{NEEDS_OPERATOR} TransactionHistoryNotAvailable")
    assert "slot 1000, 1 behind the highest" in no_history.detail
    assert healthy.ok and healthy.detail == "slot 1001, 0 behind the highest"
    assert unusable_count(ns[1], "no_history", "getSignatureStatuses+history") == 1
