"""The Solana error classification table and the pool's failover, without a network.

Failures are produced the way they reach the product: solana-py's ``AsyncClient`` talking to
an ``httpx2.MockTransport`` that answers (or fails) like the devstack and real nodes do, so
the exceptions carry solana-py's real wrapping (``SolanaRpcException`` around ``httpx2``
errors, ``SolanaJsonRpcError`` for JSON-RPC errors). The JSON bodies are the devstack's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

import httpx2
import pytest
from solana.rpc.core import RPCException
from solders.keypair import Keypair
from solders.rpc.errors import NodeUnhealthyMessage, SendTransactionPreflightFailureMessage
from solders.rpc.responses import GetSlotResp

from mintsaga.errors import ErrorKind, ServiceError, redact_url
from mintsaga.solana.minter import SolanaMinter
from mintsaga.solana.rpc import SolanaRpc
from mintsaga.solana.rpc_errors import classify_error, parse_retry_after

Handler = Callable[[httpx2.Request], httpx2.Response]
PAYER = "BsQ2ieLx5V1ZhiyyohAKgXUWKYeRKQn6ic5pWmNqSXzu"
SECRET_URL = "https://user:hunter2@rpc.example.com/v2/AbCdEfGhIjKlMnOpQrSt1234?api-key=SECRETKEY"


def rpc_error(code: int, message: str, data: Any = None, status: int = 200) -> Handler:
    def handle(request: httpx2.Request) -> httpx2.Response:
        error: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        body = {"jsonrpc": "2.0", "error": error, "id": json.loads(request.content)["id"]}
        return httpx2.Response(status, json=body)

    return handle


def rpc_result(result: Any) -> Handler:
    def handle(request: httpx2.Request) -> httpx2.Response:
        body = {"jsonrpc": "2.0", "result": result, "id": json.loads(request.content)["id"]}
        return httpx2.Response(200, json=body)

    return handle


def http_status(status: int, headers: dict[str, str] | None = None) -> Handler:
    def handle(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, headers=headers, text="busy")

    return handle


def raising(exc_type: type[Exception]) -> Handler:
    def handle(request: httpx2.Request) -> httpx2.Response:
        raise exc_type("simulated", request=request)  # type: ignore[call-arg]

    return handle


def preflight(err: Any, message: str, logs: list[str] | None = None) -> Handler:
    """A -32002 answer shaped as the devstack (and Agave) send it."""
    data = {
        "err": err,
        "logs": logs or [],
        "accounts": None,
        "unitsConsumed": 0,
        "returnData": None,
        "innerInstructions": None,
    }
    return rpc_error(-32002, f"Transaction simulation failed: {message}", data)


class Recorder:
    """Mock endpoints: each URL gets a handler; every request is recorded in order."""

    def __init__(self, handlers: dict[str, Handler]) -> None:
        self.handlers = handlers
        self.calls: list[str] = []

    def pool(self, timeout: float = 5) -> SolanaRpc:
        rpc = SolanaRpc(list(self.handlers), timeout=timeout)
        for endpoint, (url, handler) in zip(rpc._endpoints, self.handlers.items(), strict=True):
            endpoint.client._provider.session = httpx2.AsyncClient(
                transport=httpx2.MockTransport(self._recording(url, handler))
            )
        return rpc

    def _recording(self, url: str, handler: Handler) -> Handler:
        def handle(request: httpx2.Request) -> httpx2.Response:
            self.calls.append(url)
            return handler(request)

        return handle


async def failure(handler: Handler, method: str = "sendTransaction") -> ServiceError:
    """The ServiceError one endpoint answering with ``handler`` produces."""
    async with Recorder({"http://node-a:8899": handler}).pool() as rpc:
        with pytest.raises(ServiceError) as raised:
            await rpc.call(method, ["x"], fee_payer=PAYER)
    return raised.value


# -- the table -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("handler", "kind", "code"),
    [
        (raising(httpx2.ConnectError), ErrorKind.TRANSIENT, "SolanaUnreachable"),
        (raising(httpx2.ReadTimeout), ErrorKind.TRANSIENT, "SolanaTimeout"),
        (raising(httpx2.ConnectTimeout), ErrorKind.TRANSIENT, "SolanaTimeout"),
        (raising(httpx2.RemoteProtocolError), ErrorKind.TRANSIENT, "SolanaConnectionLost"),
        (raising(httpx2.ReadError), ErrorKind.TRANSIENT, "SolanaConnectionLost"),
        (http_status(500), ErrorKind.TRANSIENT, "SolanaUnavailable"),
        (rpc_error(-32603, "Internal error", status=500), ErrorKind.TRANSIENT, "SolanaUnavailable"),
        (http_status(502), ErrorKind.TRANSIENT, "SolanaUnavailable"),
        (http_status(503), ErrorKind.TRANSIENT, "SolanaUnavailable"),
        (http_status(401), ErrorKind.NEEDS_OPERATOR, "SolanaUnauthorized"),
        (http_status(403), ErrorKind.NEEDS_OPERATOR, "SolanaUnauthorized"),
        (http_status(404), ErrorKind.NEEDS_OPERATOR, "SolanaEndpointNotFound"),
        (http_status(413), ErrorKind.NEEDS_OPERATOR, "SolanaRequestTooLarge"),
        (http_status(400), ErrorKind.PERMANENT, "SolanaRejected"),
        (
            rpc_error(-32005, "Node is behind by 42 slots", {"numSlotsBehind": 42}),
            ErrorKind.TRANSIENT,
            "NodeBehind",
        ),
        (rpc_error(-32005, "Node is unhealthy", {}), ErrorKind.TRANSIENT, "NodeBehind"),
        (
            rpc_error(-32016, "Minimum context slot has not been reached", {"contextSlot": 5}),
            ErrorKind.TRANSIENT,
            "NodeNotReady",
        ),
        (rpc_error(-32603, "Internal error"), ErrorKind.TRANSIENT, "SolanaInternalError"),
        (
            rpc_error(429, "Too many requests for a specific RPC call"),
            ErrorKind.RATE_LIMITED,
            "SolanaRateLimited",
        ),
        (rpc_error(-32602, "Invalid params: x"), ErrorKind.PERMANENT, "SolanaInvalidRequest"),
        (rpc_error(-32601, "Method not found"), ErrorKind.NEEDS_OPERATOR, "SolanaMethodNotFound"),
        (
            rpc_error(-32011, "Transaction history is not available from this node"),
            ErrorKind.NEEDS_OPERATOR,
            "TransactionHistoryNotAvailable",
        ),
        (
            rpc_error(-32003, "Transaction signature verification failure"),
            ErrorKind.PERMANENT,
            "SignatureVerificationFailed",
        ),
        (
            preflight("BlockhashNotFound", "Blockhash not found"),
            ErrorKind.TRANSIENT,
            "BlockhashNotFound",
        ),
        (
            preflight("AlreadyProcessed", "This transaction has already been processed"),
            ErrorKind.PERMANENT,
            "AlreadyProcessed",
        ),
        (
            preflight(
                {"InstructionError": [0, {"Custom": 0}]},
                "Error processing Instruction 0: custom program error: 0x0",
                ["Create Account: account Address { address: X } already in use"],
            ),
            ErrorKind.PERMANENT,
            "TransactionRejected",
        ),
        (
            preflight(
                {"InsufficientFundsForRent": {"account_index": 2}},
                "Transaction results in an account (2) with insufficient funds for rent",
            ),
            ErrorKind.PERMANENT,
            "TransactionRejected",
        ),
        (preflight("AccountInUse", "Account in use"), ErrorKind.TRANSIENT, "AccountInUse"),
        (
            lambda request: httpx2.Response(200, text="<html>gateway</html>"),
            ErrorKind.TRANSIENT,
            "SolanaInvalidResponse",
        ),
    ],
)
async def test_classification_table(handler: Handler, kind: ErrorKind, code: str) -> None:
    error = await failure(handler)
    assert (error.kind, error.code) == (kind, code), str(error)
    assert error.service == "solana"
    assert error.endpoint == "http://node-a:8899"


@pytest.mark.parametrize(
    "handler",
    [
        preflight(
            "AccountNotFound",
            "Attempt to debit an account but found no record of a prior credit.",
        ),
        preflight("InsufficientFundsForFee", "Insufficient funds for fee"),
        preflight(
            {"InstructionError": [0, {"Custom": 1}]},
            "Error processing Instruction 0: custom program error: 0x1",
            [
                "Program 11111111111111111111111111111111 invoke [1]",
                "Transfer: insufficient lamports 990000, need 3125040",
                "Program 11111111111111111111111111111111 failed: custom program error: 0x1",
            ],
        ),
        preflight(
            {"InsufficientFundsForRent": {"account_index": 0}},
            "Transaction results in an account (0) with insufficient funds for rent",
        ),
    ],
    ids=["no-account", "fee", "insufficient-lamports", "rent-of-payer"],
)
async def test_underfunded_system_wallet_needs_an_operator(handler: Handler) -> None:
    error = await failure(handler)
    assert error.kind is ErrorKind.NEEDS_OPERATOR
    assert error.code == "SystemWalletUnderfunded"
    assert PAYER in error.message
    assert not error.retryable


async def test_429_carries_retry_after_seconds() -> None:
    error = await failure(http_status(429, {"Retry-After": "7"}))
    assert error.kind is ErrorKind.RATE_LIMITED and error.code == "SolanaRateLimited"
    assert error.retry_after == 7.0


async def test_429_with_an_http_date_retry_after() -> None:
    error = await failure(http_status(429, {"Retry-After": formatdate(time.time() + 30)}))
    assert error.kind is ErrorKind.RATE_LIMITED
    assert error.retry_after is not None and 25 <= error.retry_after <= 31


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("1") == 1.0
    assert parse_retry_after("garbage") is None
    assert parse_retry_after(formatdate(1000.0, usegmt=True), now=990.0) == 10.0
    assert parse_retry_after(formatdate(1000.0, usegmt=True), now=2000.0) == 0.0


# -- typed solana-py errors (RPCException around solders objects) ----------------------------


def _preflight_message(err_json: str, message: str) -> SendTransactionPreflightFailureMessage:
    return SendTransactionPreflightFailureMessage.from_json(
        json.dumps({"message": message, "data": {"err": json.loads(err_json), "logs": []}})
    )


@pytest.mark.parametrize(
    ("obj", "kind", "code"),
    [
        (
            _preflight_message(
                '"BlockhashNotFound"', "Transaction simulation failed: Blockhash not found"
            ),
            ErrorKind.TRANSIENT,
            "BlockhashNotFound",
        ),
        (
            _preflight_message(
                '"AlreadyProcessed"',
                "Transaction simulation failed: This transaction has already been processed",
            ),
            ErrorKind.PERMANENT,
            "AlreadyProcessed",
        ),
        (
            _preflight_message(
                '"InsufficientFundsForFee"',
                "Transaction simulation failed: Insufficient funds for fee",
            ),
            ErrorKind.NEEDS_OPERATOR,
            "SystemWalletUnderfunded",
        ),
        (
            NodeUnhealthyMessage.from_json(
                '{"message":"Node is behind by 3 slots","data":{"numSlotsBehind":3}}'
            ),
            ErrorKind.TRANSIENT,
            "NodeBehind",
        ),
        (
            GetSlotResp.from_json('{"jsonrpc":"2.0","id":1,"error":{"code":429,"message":"x"}}'),
            ErrorKind.RATE_LIMITED,
            "SolanaRateLimited",
        ),
    ],
)
def test_typed_rpc_exceptions_classify_the_same(obj: Any, kind: ErrorKind, code: str) -> None:
    error = classify_error(RPCException(obj), endpoint="http://n", fee_payer=PAYER)
    assert (error.kind, error.code) == (kind, code)


def test_asyncio_timeout_is_transient() -> None:
    error = classify_error(TimeoutError(), endpoint="http://n", method="getSlot")
    assert (error.kind, error.code) == (ErrorKind.TRANSIENT, "SolanaTimeout")


# -- secrets in URLs -------------------------------------------------------------------------


def test_redact_url() -> None:
    assert redact_url(SECRET_URL) == "https://rpc.example.com/v2/***"
    assert redact_url("http://127.0.0.1:8899") == "http://127.0.0.1:8899"
    assert redact_url("https://api.devnet.solana.com/") == "https://api.devnet.solana.com/"
    assert (
        redact_url("https://x.quiknode.pro/0123456789abcdef0123/") == "https://x.quiknode.pro/***/"
    )


@pytest.mark.parametrize(
    "handler",
    [http_status(429, {"Retry-After": "1"}), http_status(503), raising(httpx2.ConnectError)],
)
async def test_errors_never_carry_the_endpoints_credentials(handler: Handler) -> None:
    async with Recorder({SECRET_URL: handler}).pool() as rpc:
        with pytest.raises(ServiceError) as raised:
            await rpc.call("getSlot")
    error = raised.value
    assert error.endpoint == "https://rpc.example.com/v2/***"
    chain: BaseException | None = error
    while chain is not None:  # what a traceback or Temporal's failure converter would show
        for secret in ("SECRETKEY", "hunter2", "AbCdEfGhIjKlMnOpQrSt1234"):
            assert secret not in str(chain)
        chain = chain.__cause__ or (None if chain.__suppress_context__ else chain.__context__)
    assert "SECRETKEY" not in repr(rpc)


# -- failover within one call ----------------------------------------------------------------


async def test_retryable_failure_moves_to_the_next_endpoint_once_each() -> None:
    recorder = Recorder(
        {
            "http://a": raising(httpx2.ConnectError),
            "http://b": http_status(429, {"Retry-After": "1"}),
            "http://c": rpc_result(77),
        }
    )
    async with recorder.pool() as rpc:
        assert await rpc.call("getSlot") == 77
    assert recorder.calls == ["http://a", "http://b", "http://c"]


async def test_when_every_endpoint_fails_the_last_error_is_raised() -> None:
    recorder = Recorder(
        {
            "http://a": raising(httpx2.ConnectError),
            "http://b": rpc_error(-32005, "Node is behind by 9 slots", {"numSlotsBehind": 9}),
            "http://c": http_status(429, {"Retry-After": "3"}),
        }
    )
    async with recorder.pool() as rpc:
        with pytest.raises(ServiceError) as raised:
            await rpc.call("getSlot")
    assert recorder.calls == ["http://a", "http://b", "http://c"]
    assert raised.value.code == "SolanaRateLimited" and raised.value.retry_after == 3.0
    assert raised.value.endpoint == "http://c"


async def test_non_retryable_failure_stops_the_call() -> None:
    recorder = Recorder(
        {
            "http://a": preflight(
                "AccountNotFound",
                "Attempt to debit an account but found no record of a prior credit.",
            ),
            "http://b": rpc_result("sig"),
        }
    )
    async with recorder.pool() as rpc:
        with pytest.raises(ServiceError) as raised:
            await rpc.call("sendTransaction", ["x"], fee_payer=PAYER)
    assert raised.value.code == "SystemWalletUnderfunded"
    assert recorder.calls == ["http://a"]


async def test_an_answer_of_the_wrong_shape_fails_over() -> None:
    recorder = Recorder({"http://a": rpc_result("not a number"), "http://b": rpc_result(5)})
    async with recorder.pool() as rpc:
        assert await rpc.call("getSlot", parse=int) == 5
    assert recorder.calls == ["http://a", "http://b"]


async def test_only_restricts_the_endpoints() -> None:
    recorder = Recorder({"http://a": rpc_result(1), "http://b": rpc_result(2)})
    async with recorder.pool() as rpc:
        assert await rpc.call("getSlot", only=[1]) == 2
        with pytest.raises(IndexError):
            await rpc.call("getSlot", only=[2])
    assert recorder.calls == ["http://b"]


async def test_a_hung_endpoint_is_cut_off_by_the_timeout() -> None:
    async def hang(request: httpx2.Request) -> httpx2.Response:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")

    rpc = SolanaRpc(["http://a", "http://b"], timeout=0.3)
    rpc._endpoints[0].client._provider.session = httpx2.AsyncClient(
        transport=httpx2.MockTransport(hang)
    )
    rpc._endpoints[1].client._provider.session = httpx2.AsyncClient(
        transport=httpx2.MockTransport(rpc_result(9))
    )
    started = time.monotonic()
    async with rpc:
        assert await rpc.call("getSlot") == 9
    assert time.monotonic() - started < 2


# -- the minter's send over the pool ---------------------------------------------------------


def _signed_tx() -> tuple[str, str, Keypair, bytes]:
    """A signed transaction (base64) from a throwaway minter's prepare, built offline."""
    from solders.hash import Hash
    from solders.message import MessageV0
    from solders.system_program import TransferParams, transfer
    from solders.transaction import VersionedTransaction

    payer = Keypair()
    ix = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=payer.pubkey(), lamports=1))
    tx = VersionedTransaction(
        MessageV0.try_compile(payer.pubkey(), [ix], [], Hash.default()), [payer]
    )
    return base64.b64encode(bytes(tx)).decode(), str(tx.signatures[0]), payer, os.urandom(32)


async def test_send_after_a_lost_answer_takes_already_processed_as_sent() -> None:
    tx_base64, signature, payer, seed = _signed_tx()
    recorder = Recorder(
        {
            "http://a": raising(httpx2.RemoteProtocolError),
            "http://b": preflight(
                "AlreadyProcessed", "This transaction has already been processed"
            ),
            "http://c": rpc_result("unused"),
        }
    )
    async with recorder.pool() as rpc:
        minter = SolanaMinter(rpc, payer, seed)
        assert await minter.send(tx_base64) == signature
    assert recorder.calls == ["http://a", "http://b", "http://c"]  # every one, at once


async def test_send_rejects_an_answer_naming_another_signature() -> None:
    tx_base64, signature, payer, seed = _signed_tx()
    recorder = Recorder({"http://a": rpc_result("1111"), "http://b": rpc_result(signature)})
    async with recorder.pool() as rpc:
        assert await SolanaMinter(rpc, payer, seed).send(tx_base64) == signature
    assert recorder.calls == ["http://a", "http://b"]


def test_minter_repr_holds_no_key_material() -> None:
    _, _, payer, seed = _signed_tx()
    minter = SolanaMinter(SolanaRpc([SECRET_URL]), payer, seed)
    text = repr(minter)
    assert str(payer.pubkey()) in text
    assert seed.hex() not in text and bytes(payer)[:32].hex() not in text
    assert str(list(bytes(payer)[:4]))[1:-1] not in text
    assert "SECRETKEY" not in text


def test_a_preferred_endpoint_goes_first_and_an_unknown_one_is_refused() -> None:
    from mintsaga.solana.minter import SolanaMinter
    from mintsaga.solana.rpc import SolanaRpc

    rpc = SolanaRpc(["http://a.test:1", "http://b.test:2", "http://c.test:3"])
    minter = SolanaMinter(rpc, Keypair(), b"s" * 32)
    assert minter._preferred_first(None) is None
    assert minter._preferred_first("http://c.test:3") == [2, 0, 1]
    with pytest.raises(ServiceError) as unknown:
        minter._preferred_first("http://d.test:4")
    assert unknown.value.code == "UnknownEndpoint" and not unknown.value.retryable
