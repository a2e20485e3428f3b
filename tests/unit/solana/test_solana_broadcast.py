"""Sending one signed transaction to every endpoint at once (``SolanaMinter.broadcast``), and
what the send step makes of it, without a network.

The endpoints are solana-py ``AsyncClient``s over ``httpx2.MockTransport``s, so every failure
arrives wrapped as it does from a real node. The rules under test (``Broadcast``'s docstring):
the same bytes go to every endpoint whose circuit is closed, at once; one that took them makes
the send "sent"; otherwise one that never answered makes it "indeterminate" (the saga goes on
to the confirmation wait); only when every endpoint answered without taking them does it fail,
with the first answer no retry can change.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction
from temporalio.testing import ActivityEnvironment

from mintsaga.activities.solana import SolanaActivities
from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.resilience.breaker import BreakerRegistry, Override
from mintsaga.solana.minter import SEND_GRACE_S, Broadcast, SolanaMinter
from mintsaga.solana.rpc import SolanaRpc
from mintsaga.workflows import activity_models as io

Handler = Callable[[httpx2.Request], Awaitable[httpx2.Response]]
URLS = ("http://a.test", "http://b.test", "http://c.test")


def signed_tx() -> tuple[str, str, Keypair]:
    payer = Keypair()
    ix = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=payer.pubkey(), lamports=1))
    tx = VersionedTransaction(
        MessageV0.try_compile(payer.pubkey(), [ix], [], Hash.default()), [payer]
    )
    return base64.b64encode(bytes(tx)).decode(), str(tx.signatures[0]), payer


def answer(
    result: Any = None, *, error: dict[str, Any] | None = None, after_s: float = 0.0
) -> Handler:
    """A node answering ``result`` (or the JSON-RPC ``error``) after ``after_s``."""

    async def handle(request: httpx2.Request) -> httpx2.Response:
        await asyncio.sleep(after_s)
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": json.loads(request.content)["id"]}
        body.update({"error": error} if error is not None else {"result": result})
        return httpx2.Response(200, json=body)

    return handle


def rejected(err: Any, message: str) -> Handler:
    """A preflight failure (-32002) as Agave sends it."""
    data = {"err": err, "logs": [], "accounts": None, "unitsConsumed": 0}
    return answer(
        error={"code": -32002, "message": f"Transaction simulation failed: {message}", "data": data}
    )


def already_processed() -> Handler:
    return rejected("AlreadyProcessed", "This transaction has already been processed")


def dropped() -> Handler:
    """The node took the request, then the connection closed before any answer."""

    async def handle(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.RemoteProtocolError("Server disconnected without sending a response.")

    return handle


def status(code: int) -> Handler:
    async def handle(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(code, text="busy")

    return handle


def hangs() -> Handler:
    async def handle(request: httpx2.Request) -> httpx2.Response:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")

    return handle


class Nodes:
    """Three mock endpoints; each request's endpoint and sendTransaction payload recorded."""

    def __init__(self, *handlers: Handler, timeout: float = 5) -> None:
        self.sent: list[tuple[str, str]] = []  # (endpoint, tx base64)
        self.breakers = BreakerRegistry()
        self.rpc = SolanaRpc(list(URLS[: len(handlers)]), timeout=timeout, breakers=self.breakers)
        for endpoint, url, handler in zip(self.rpc._endpoints, URLS, handlers, strict=False):
            endpoint.client._provider.session = httpx2.AsyncClient(
                transport=httpx2.MockTransport(self._recording(url, handler))
            )

    def _recording(self, url: str, handler: Handler) -> Handler:
        async def handle(request: httpx2.Request) -> httpx2.Response:
            body = json.loads(request.content)
            if body["method"] == "sendTransaction":
                self.sent.append((url, body["params"][0]))
            return await handler(request)

        return handle

    @property
    def asked(self) -> list[str]:
        return [url for url, _ in self.sent]

    def minter(self, payer: Keypair) -> SolanaMinter:
        return SolanaMinter(self.rpc, payer, os.urandom(32))


# -- where the bytes go ----------------------------------------------------------------------


async def test_the_same_bytes_go_to_every_endpoint_at_once() -> None:
    tx, signature, payer = signed_tx()
    nodes = Nodes(*(answer(signature, after_s=0.3) for _ in URLS))
    began = time.monotonic()
    async with nodes.rpc:
        sent = await nodes.minter(payer).broadcast(tx)
    assert time.monotonic() - began < 0.8  # three answers of 0.3 s each, together
    assert (sent.outcome, sent.accepted) == ("sent", URLS)
    assert nodes.sent == [(url, tx) for url in URLS]  # the same signed bytes, one signature


async def test_a_primary_that_accepts_does_not_keep_the_backups_from_the_bytes() -> None:
    """A primary that answers the signature and drops the transaction cannot starve it."""
    tx, signature, payer = signed_tx()
    nodes = Nodes(answer(signature), answer(signature, after_s=0.2), answer(signature))
    async with nodes.rpc:
        assert await nodes.minter(payer).send(tx) == signature
    assert sorted(nodes.asked) == sorted(URLS)


async def test_an_operators_preferred_endpoint_is_asked_first_and_the_others_too() -> None:
    tx, signature, payer = signed_tx()
    nodes = Nodes(*(answer(signature) for _ in URLS))
    async with nodes.rpc:
        sent = await nodes.minter(payer).broadcast(tx, prefer=URLS[2])
    assert nodes.asked == [URLS[2], URLS[0], URLS[1]]
    assert sent.accepted == (URLS[2], URLS[0], URLS[1])


async def test_open_circuits_are_skipped_and_a_forced_open_preferred_one_too() -> None:
    tx, signature, payer = signed_tx()
    nodes = Nodes(*(answer(signature) for _ in URLS))
    nodes.rpc.breaker(0)  # registered, then forced open by an operator
    nodes.breakers.set_override(URLS[0], Override.FORCE_OPEN)
    async with nodes.rpc:
        sent = await nodes.minter(payer).broadcast(tx, prefer=URLS[0])
    assert URLS[0] not in nodes.asked
    assert sent.outcome == "sent" and sent.accepted == URLS[1:]
    assert [e.code for e in sent.refused] == ["SolanaCircuitOpen"]


async def test_every_circuit_open_fails_retryably_without_a_request() -> None:
    tx, signature, payer = signed_tx()
    nodes = Nodes(*(answer(signature) for _ in URLS))
    for index, url in enumerate(URLS):
        nodes.rpc.breaker(index)
        nodes.breakers.set_override(url, Override.FORCE_OPEN)
    async with nodes.rpc:
        with pytest.raises(ServiceError) as raised:
            await nodes.minter(payer).send(tx)
    assert nodes.sent == []
    assert raised.value.code == "SolanaCircuitOpen" and raised.value.retryable


# -- lost answers ----------------------------------------------------------------------------


async def test_no_answer_anywhere_is_indeterminate_not_failed() -> None:
    tx, _signature, payer = signed_tx()
    nodes = Nodes(dropped(), dropped(), dropped())
    async with nodes.rpc:
        minter = nodes.minter(payer)
        sent = await minter.broadcast(tx)
        assert (sent.outcome, sent.unanswered, sent.refused) == ("indeterminate", URLS, ())
        assert sent.detail()["send"] == "indeterminate"
        with pytest.raises(ServiceError) as raised:
            await minter.send(tx)  # a caller that needs "sent" gets a retryable error
    assert raised.value.code == "SendIndeterminate" and raised.value.kind is ErrorKind.TRANSIENT


async def test_an_endpoint_silent_past_the_broadcasts_time_counts_as_unanswered() -> None:
    """A read timeout: the node may have the transaction."""
    tx, _signature, payer = signed_tx()
    nodes = Nodes(hangs(), hangs(), status(503))
    began = time.monotonic()
    async with nodes.rpc:
        sent = await nodes.minter(payer).broadcast(tx, within_s=0.3)
    assert time.monotonic() - began < 1.5
    assert sent.outcome == "indeterminate" and sent.unanswered == URLS[:2]
    assert [e.code for e in sent.refused] == ["SolanaUnavailable"]


async def test_once_one_endpoint_took_the_bytes_a_hung_one_gets_only_the_grace() -> None:
    tx, signature, payer = signed_tx()
    nodes = Nodes(hangs(), answer(signature), answer(signature))
    began = time.monotonic()
    async with nodes.rpc:
        sent = await nodes.minter(payer).broadcast(tx)
    assert time.monotonic() - began < SEND_GRACE_S + 1.0
    assert sent.outcome == "sent" and sent.unanswered == (URLS[0],)


async def test_already_processed_counts_as_sent() -> None:
    tx, _signature, payer = signed_tx()
    nodes = Nodes(already_processed(), dropped(), status(503))
    async with nodes.rpc:
        sent = await nodes.minter(payer).broadcast(tx)
    assert sent.outcome == "sent" and sent.accepted == (URLS[0],)


# -- when the endpoints disagree -------------------------------------------------------------


async def test_one_acceptance_wins_over_another_nodes_rejection() -> None:
    tx, signature, payer = signed_tx()
    nodes = Nodes(rejected({"InstructionError": [0, {"Custom": 1}]}, "custom"), answer(signature))
    async with nodes.rpc:
        sent = await nodes.minter(payer).broadcast(tx)
    assert sent.outcome == "sent" and sent.accepted == (URLS[1],)
    assert [e.code for e in sent.refused] == ["TransactionRejected"]


async def test_a_lost_answer_outranks_another_nodes_rejection() -> None:
    """One node's preflight may be wrong (it is behind); the one that never answered may have
    the transaction: the confirmation wait reads the chain."""
    tx, _signature, payer = signed_tx()
    nodes = Nodes(rejected("InsufficientFundsForFee", "insufficient funds for fee"), dropped())
    async with nodes.rpc:
        sent = await nodes.minter(payer).broadcast(tx)
    assert sent.outcome == "indeterminate"
    assert [e.code for e in sent.refused] == ["SystemWalletUnderfunded"]


async def test_every_node_refusing_fails_with_the_answer_no_retry_changes() -> None:
    tx, _signature, payer = signed_tx()
    nodes = Nodes(
        status(503), rejected({"InstructionError": [0, {"Custom": 1}]}, "custom"), status(429)
    )
    async with nodes.rpc:
        with pytest.raises(ServiceError) as raised:
            await nodes.minter(payer).send(tx)
    assert raised.value.code == "TransactionRejected" and not raised.value.retryable


async def test_every_node_refusing_for_now_fails_retryably() -> None:
    tx, _signature, payer = signed_tx()
    nodes = Nodes(status(503), status(502), rejected("BlockhashNotFound", "Blockhash not found"))
    async with nodes.rpc:
        with pytest.raises(ServiceError) as raised:
            await nodes.minter(payer).send(tx)
    assert raised.value.retryable
    assert raised.value.code == "BlockhashNotFound"  # the last, as the sequential pool did


def test_the_rules_as_a_table() -> None:
    def error(code: str, kind: ErrorKind = ErrorKind.TRANSIENT) -> ServiceError:
        return ServiceError(code, service="solana", kind=kind, code=code, endpoint=f"e-{code}")

    rejected_tx = error("TransactionRejected", ErrorKind.PERMANENT)
    key_refused = error("SolanaUnauthorized", ErrorKind.NEEDS_OPERATOR)
    key_refused.unusable = "unauthorized"  # the endpoint's own failure, not the transaction's
    cases: list[tuple[list[ServiceError | None], str, str | None]] = [
        ([None, rejected_tx, error("SolanaTimeout")], "sent", None),
        ([error("SolanaConnectionLost"), rejected_tx], "indeterminate", "SendIndeterminate"),
        ([error("SolanaUnavailable"), rejected_tx], "failed", "TransactionRejected"),
        ([error("SolanaUnavailable"), error("SolanaRateLimited")], "failed", "SolanaRateLimited"),
        ([error("SolanaUnavailable"), error("SolanaCircuitOpen")], "failed", "SolanaUnavailable"),
        ([error("SolanaCircuitOpen"), error("SolanaCircuitOpen")], "failed", "SolanaCircuitOpen"),
        ([key_refused, error("SolanaUnavailable")], "failed", "SolanaUnavailable"),
        ([key_refused, error("SolanaCircuitOpen")], "failed", "SolanaCircuitOpen"),
        ([key_refused, rejected_tx], "failed", "TransactionRejected"),
        ([key_refused, key_refused], "failed", "SolanaUnauthorized"),
        ([key_refused, None], "sent", None),
    ]
    for answers, outcome, raised in cases:
        sent = Broadcast.of("sig", [(f"n{i}", a) for i, a in enumerate(answers)])
        assert sent.outcome == outcome, answers
        if raised is None:
            with pytest.raises(ValueError):
                sent.failure()
        else:
            assert sent.failure().code == raised
    assert Broadcast.of("sig", [("a", error("SolanaCircuitOpen"))]).none_asked
    budget = error("SolanaBudgetExhausted")
    assert Broadcast.of("sig", [("a", error("SolanaCircuitOpen")), ("b", budget)]).none_asked
    assert not Broadcast.of("sig", [("a", error("SolanaUnavailable")), ("b", budget)]).none_asked


# -- the send step ---------------------------------------------------------------------------


@dataclasses.dataclass
class StoreStub:
    stages: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    async def set_stage(self, mint_id: str, stage: Any, **kw: Any) -> None:
        self.stages.append({"mint_id": mint_id, "stage": str(stage), **kw})


def send_step_environment() -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info,
        activity_type="send_transaction",
        start_to_close_timeout=timedelta(seconds=30),
        started_time=datetime.now(UTC),
    )
    return env


async def test_the_send_step_returns_on_lost_answers_and_records_them() -> None:
    tx, signature, payer = signed_tx()
    nodes = Nodes(dropped(), dropped(), dropped())
    store = StoreStub()
    activities = SolanaActivities(
        minter=nodes.minter(payer),
        store=store,  # type: ignore[arg-type]
        spend_limit_lamports=0,
    )
    arg = io.SendIn(mint_id="m-1", signature=signature, tx_base64=tx)
    async with nodes.rpc:
        out = await send_step_environment().run(activities.send_transaction, arg)
    assert out.attempt == 1
    (recorded,) = store.stages
    assert recorded["stage"] == "BLOCKCHAIN_SUBMITTED" and recorded["signature"] == signature
    assert recorded["detail"]["send"] == "indeterminate"
    assert recorded["detail"]["unanswered"] == list(URLS)


async def test_the_send_step_fails_only_when_every_endpoint_refused() -> None:
    from temporalio.exceptions import ApplicationError

    tx, signature, payer = signed_tx()
    nodes = Nodes(rejected({"InstructionError": [0, {"Custom": 1}]}, "custom"), status(503))
    store = StoreStub()
    activities = SolanaActivities(
        minter=nodes.minter(payer),
        store=store,  # type: ignore[arg-type]
        spend_limit_lamports=0,
    )
    arg = io.SendIn(mint_id="m-2", signature=signature, tx_base64=tx)
    async with nodes.rpc:
        with pytest.raises(ApplicationError) as raised:
            await send_step_environment().run(activities.send_transaction, arg)
    assert raised.value.type == "TransactionRejected" and raised.value.non_retryable
    assert store.stages == []
