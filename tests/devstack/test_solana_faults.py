"""Failover-relevant faults on the RPC endpoints, as solana-py's AsyncClient sees them.

Each fault is one the resilience layer must classify: a refused connection (endpoint down),
a 429 with Retry-After, a 5xx, a timeout on a hung endpoint, and the lost answer to a
sendTransaction that did land. Clients retry nothing themselves here (max_transport_retries=0).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import httpx2
import pytest
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.models import TxOpts
from solders.keypair import Keypair
from solders.message import Message
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from devstack.config import StackConfig

pytestmark = pytest.mark.integration


def add_fault(stack: StackConfig, **spec: object) -> str:
    response = httpx.post(stack.url("admin") + "/faults", json=spec, timeout=10)
    response.raise_for_status()
    return str(response.json()["id"])


def cause(exc: BaseException) -> BaseException:
    """The transport error solana-py wrapped."""
    assert isinstance(exc, SolanaRpcException)
    assert exc.__cause__ is not None
    return exc.__cause__


@pytest.fixture
async def clients(stack: StackConfig) -> AsyncIterator[tuple[AsyncClient, AsyncClient]]:
    primary = AsyncClient(stack.url("solana-1"), Confirmed, timeout=2, max_transport_retries=0)
    backup = AsyncClient(stack.url("solana-2"), Confirmed, timeout=2, max_transport_retries=0)
    async with primary, backup:
        yield primary, backup


async def test_down_endpoint_refuses_while_the_backup_answers(
    stack: StackConfig, clients: tuple[AsyncClient, AsyncClient]
) -> None:
    primary, backup = clients
    add_fault(stack, target="solana-1", kind="down")
    with pytest.raises(SolanaRpcException) as refused:
        await primary.get_slot()
    assert isinstance(cause(refused.value), httpx2.ConnectError)
    assert (await backup.get_slot()).value > 0


async def test_rate_limited_endpoint_answers_429_with_retry_after(
    stack: StackConfig, clients: tuple[AsyncClient, AsyncClient]
) -> None:
    primary, _ = clients
    add_fault(stack, target="solana-1", kind="status", status=429, match="getLatestBlockhash")
    assert (await primary.get_slot()).value > 0  # other methods are untouched
    with pytest.raises(SolanaRpcException) as limited:
        await primary.get_latest_blockhash()
    error = cause(limited.value)
    assert isinstance(error, httpx2.HTTPStatusError)
    assert error.response.status_code == 429
    assert error.response.headers["Retry-After"] == "1"


async def test_server_error_is_a_5xx(
    stack: StackConfig, clients: tuple[AsyncClient, AsyncClient]
) -> None:
    primary, _ = clients
    add_fault(stack, target="solana-1", kind="status", status=503)
    with pytest.raises(SolanaRpcException) as failed:
        await primary.get_slot()
    error = cause(failed.value)
    assert isinstance(error, httpx2.HTTPStatusError) and error.response.status_code == 503


async def test_hung_endpoint_times_out(
    stack: StackConfig, clients: tuple[AsyncClient, AsyncClient]
) -> None:
    primary, _ = clients
    add_fault(stack, target="solana-1", kind="hang", delay_ms=10_000)
    started = time.monotonic()
    with pytest.raises(SolanaRpcException) as hung:
        await primary.get_slot()
    assert isinstance(cause(hung.value), httpx2.ReadTimeout)
    assert 1.5 < time.monotonic() - started < 5


async def test_latency_slows_answers_without_failing_them(
    stack: StackConfig, clients: tuple[AsyncClient, AsyncClient]
) -> None:
    primary, _ = clients
    add_fault(stack, target="solana-1", kind="latency", delay_ms=400)
    started = time.monotonic()
    assert (await primary.get_slot()).value > 0
    assert time.monotonic() - started >= 0.4


async def test_lost_send_answer_still_lands_the_transaction(
    stack: StackConfig, clients: tuple[AsyncClient, AsyncClient]
) -> None:
    primary, backup = clients
    payer, receiver = Keypair(), Keypair()
    airdrop = await backup.request_airdrop(payer.pubkey(), 10**9)
    await backup.confirm_transaction(airdrop.value, Confirmed)
    blockhash = (await backup.get_latest_blockhash()).value.blockhash
    tx = Transaction(
        [payer],
        Message(
            [
                transfer(
                    TransferParams(
                        from_pubkey=payer.pubkey(), to_pubkey=receiver.pubkey(), lamports=10_000_000
                    )
                )
            ],
            payer.pubkey(),
        ),
        blockhash,
    )
    add_fault(stack, target="solana-1", kind="drop_response", match="sendTransaction")
    with pytest.raises(SolanaRpcException) as lost:
        await primary.send_raw_transaction(bytes(tx), TxOpts(preflight_commitment=Confirmed))
    assert isinstance(cause(lost.value), httpx2.RemoteProtocolError)

    # The client never got the signature, but the chain has the transaction.
    statuses = await backup.get_signature_statuses([tx.signatures[0]])
    status = statuses.value[0]
    assert status is not None and status.err is None
    assert (await backup.get_balance(receiver.pubkey())).value == 10_000_000
