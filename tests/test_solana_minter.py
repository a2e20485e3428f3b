"""SolanaMinter and SolanaRpc against the devstack's three RPC endpoints over one ledger.

Each test mints (or tries to) with a fresh system wallet and a fresh mint_id, so tests do not
depend on each other; faults are cleared after each test by conftest's autouse fixture.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from solders.keypair import Keypair

from clients.errors import ErrorKind, ServiceError
from clients.solana_minter import SignedMint, SolanaMinter
from clients.solana_rpc import SolanaRpc
from devstack.config import StackConfig

pytestmark = pytest.mark.integration

LAMPORTS_PER_SOL = 1_000_000_000
ENDPOINTS = ("solana-1", "solana-2", "solana-3")
NAME, SYMBOL = "Saga #42", "SAGA"
URI = "ipfs://bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"


# -- helpers ---------------------------------------------------------------------------------


def admin(stack: StackConfig, method: str, path: str, body: Any = None) -> Any:
    response = httpx.request(method, stack.url("admin") + path, json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def add_fault(stack: StackConfig, **spec: Any) -> str:
    return str(admin(stack, "POST", "/faults", spec)["id"])


def fault_hits(stack: StackConfig, fault_id: str) -> int:
    return next(f["hits"] for f in admin(stack, "GET", "/faults") if f["id"] == fault_id)


@pytest.fixture
async def rpc(stack: StackConfig) -> AsyncIterator[SolanaRpc]:
    async with SolanaRpc([stack.url(name) for name in ENDPOINTS], timeout=2) as pool:
        yield pool


async def wait_confirmed(minter: SolanaMinter, signature: str) -> Any:
    """Poll (test-side only: the product leaves waiting to the activity) for 10 s at most."""
    async with asyncio.timeout(10):
        while True:
            status = await minter.signature_status(signature)
            if status.found and status.confirmation_status in ("confirmed", "finalized"):
                return status
            await asyncio.sleep(0.1)


async def funded_minter(rpc: SolanaRpc, lamports: int = LAMPORTS_PER_SOL) -> SolanaMinter:
    minter = SolanaMinter(rpc, Keypair(), os.urandom(32))
    if lamports:
        signature = await rpc.call("requestAirdrop", [minter.payer, lamports])
        await wait_confirmed(minter, signature)
        assert await minter.balance(minter.payer) == lamports
    return minter


async def prepare(minter: SolanaMinter, mint_id: str, owner: str, **kw: Any) -> SignedMint:
    return await minter.prepare(mint_id, owner=owner, name=NAME, symbol=SYMBOL, uri=URI, **kw)


def fresh_owner() -> str:
    return str(Keypair().pubkey())


def fresh_mint_id() -> str:
    return f"mint-{uuid.uuid4()}"


async def assert_one_nft(
    minter: SolanaMinter, mint_address: str, owner: str, endpoint_index: int | None = None
) -> None:
    state = await minter.nft_state(mint_address, owner, endpoint_index=endpoint_index)
    assert state is not None
    assert (state.supply, state.decimals, state.mint_authority) == (1, 0, None)
    assert state.owner_balance == 1
    assert state.is_fixed_supply_nft


# -- the happy path --------------------------------------------------------------------------


async def test_prepare_send_confirm_and_read_back(rpc: SolanaRpc) -> None:
    minter = await funded_minter(rpc)
    mint_id, owner = fresh_mint_id(), fresh_owner()
    signed = await prepare(minter, mint_id, owner, priority_fee_micro_lamports=1_000)
    assert signed.mint_address == minter.mint_address(mint_id)
    assert signed.last_valid_block_height > await minter.block_height()
    assert await minter.is_blockhash_valid(signed.blockhash)
    # prepare writes nothing
    assert await minter.nft_state(signed.mint_address, owner) is None
    assert not (await minter.signature_status(signed.signature)).found

    assert await minter.send(signed.tx_base64) == signed.signature
    status = await wait_confirmed(minter, signed.signature)
    assert status.err is None and status.slot is not None

    for index in range(len(ENDPOINTS)):  # every node sees the same NFT
        state = await minter.nft_state(signed.mint_address, owner, endpoint_index=index)
        assert state is not None
        assert state.supply == 1
        assert state.decimals == 0
        assert state.mint_authority is None
        assert state.freeze_authority is None
        assert (state.name, state.symbol, state.uri) == (NAME, SYMBOL, URI)
        assert state.update_authority == minter.payer
        assert state.metadata_address == signed.mint_address
        assert state.owner_balance == 1
        assert state.is_initialized

    # The owner's balance is read for the owner asked about, not anyone holding the mint.
    other = await minter.nft_state(signed.mint_address, fresh_owner())
    assert other is not None and other.owner_balance == 0


async def test_cluster_reads(rpc: SolanaRpc) -> None:
    minter = await funded_minter(rpc, 0)
    await minter.health()
    slot, height = await minter.slot(), await minter.block_height()
    assert slot >= height > 0
    assert await minter.balance(fresh_owner()) == 0


# -- idempotency -----------------------------------------------------------------------------


async def test_same_mint_id_targets_one_address_and_resending_is_harmless(
    stack: StackConfig, rpc: SolanaRpc
) -> None:
    minter = await funded_minter(rpc)
    mint_id, owner = fresh_mint_id(), fresh_owner()
    first = await prepare(minter, mint_id, owner)
    admin(stack, "POST", "/solana/warp", {"slots": 2})  # a new blockhash for the second signing
    second = await prepare(minter, mint_id, owner)
    assert first.mint_address == second.mint_address == minter.mint_address(mint_id)
    assert first.signature != second.signature

    assert await minter.send(first.tx_base64) == first.signature
    await wait_confirmed(minter, first.signature)
    balance = await minter.balance(minter.payer)

    # The same bytes again, on every endpoint: "already processed" counts as sent.
    assert await minter.send(first.tx_base64) == first.signature
    # The other signing of the same mint_id cannot create a second NFT at that address.
    with pytest.raises(ServiceError) as raised:
        await minter.send(second.tx_base64)
    assert raised.value.kind is ErrorKind.PERMANENT
    assert raised.value.code == "TransactionRejected"

    await assert_one_nft(minter, first.mint_address, owner)
    assert await minter.balance(minter.payer) == balance  # nothing more was charged
    assert not (await minter.signature_status(second.signature)).found


# -- failover --------------------------------------------------------------------------------


async def test_first_endpoint_down_every_call_goes_through_the_next(
    stack: StackConfig, rpc: SolanaRpc
) -> None:
    minter = await funded_minter(rpc)
    add_fault(stack, target="solana-1", kind="down")
    only_first = SolanaRpc([stack.url("solana-1")], timeout=2)
    async with only_first:
        with pytest.raises(ServiceError) as raised:
            await only_first.call("getSlot")
    assert raised.value.code == "SolanaUnreachable" and raised.value.kind is ErrorKind.TRANSIENT

    await minter.health()
    assert await minter.slot() > 0
    mint_id, owner = fresh_mint_id(), fresh_owner()
    signed = await prepare(minter, mint_id, owner)
    assert await minter.send(signed.tx_base64) == signed.signature
    await wait_confirmed(minter, signed.signature)
    await assert_one_nft(minter, signed.mint_address, owner)


async def test_rate_limited_first_endpoint_fails_over_or_reports_retry_after(
    stack: StackConfig, rpc: SolanaRpc
) -> None:
    minter = await funded_minter(rpc, 0)
    fault = add_fault(stack, target="solana-1", kind="status", status=429)
    assert await minter.block_height() > 0
    assert fault_hits(stack, fault) == 1

    async with SolanaRpc([stack.url("solana-1")], timeout=2) as only_first:
        alone = SolanaMinter(only_first, Keypair(), os.urandom(32))
        with pytest.raises(ServiceError) as raised:
            await alone.block_height()
    assert raised.value.kind is ErrorKind.RATE_LIMITED
    assert raised.value.code == "SolanaRateLimited"
    assert raised.value.retry_after == 1.0
    assert raised.value.endpoint == stack.url("solana-1").split("?")[0]


async def test_lost_send_answer_moves_on_and_lands_once(stack: StackConfig, rpc: SolanaRpc) -> None:
    minter = await funded_minter(rpc)
    mint_id, owner = fresh_mint_id(), fresh_owner()
    signed = await prepare(minter, mint_id, owner)
    fault = add_fault(stack, target="solana-1", kind="drop_response", match="sendTransaction")

    # solana-1 takes the transaction but never answers; solana-2 gets the same bytes and
    # answers with the signature or "already processed" -- both mean sent.
    assert await minter.send(signed.tx_base64) == signed.signature
    assert fault_hits(stack, fault) == 1

    status = await wait_confirmed(minter, signed.signature)
    assert status.err is None
    await assert_one_nft(minter, signed.mint_address, owner)


# -- operator-level failures -----------------------------------------------------------------


@pytest.mark.parametrize("lamports", [0, 1_000_000], ids=["no-account", "too-few-lamports"])
async def test_underfunded_system_wallet_needs_an_operator(rpc: SolanaRpc, lamports: int) -> None:
    minter = await funded_minter(rpc, lamports)
    signed = await prepare(minter, fresh_mint_id(), fresh_owner())
    with pytest.raises(ServiceError) as raised:
        await minter.send(signed.tx_base64)
    error = raised.value
    assert error.kind is ErrorKind.NEEDS_OPERATOR
    assert error.code == "SystemWalletUnderfunded"
    assert minter.payer in error.message
    assert not (await minter.signature_status(signed.signature)).found


# -- the blockhash window --------------------------------------------------------------------


async def test_expired_blockhash(stack: StackConfig, rpc: SolanaRpc) -> None:
    minter = await funded_minter(rpc)
    mint_id, owner = fresh_mint_id(), fresh_owner()
    signed = await prepare(minter, mint_id, owner)
    assert await minter.is_blockhash_valid(signed.blockhash)

    admin(stack, "POST", "/solana/warp", {"slots": 151})

    assert await minter.block_height() > signed.last_valid_block_height
    assert not await minter.is_blockhash_valid(signed.blockhash)
    with pytest.raises(ServiceError) as raised:
        await minter.send(signed.tx_base64)
    assert raised.value.code == "BlockhashNotFound"
    assert raised.value.kind is ErrorKind.TRANSIENT
    assert not (await minter.signature_status(signed.signature)).found
    assert await minter.nft_state(signed.mint_address, owner) is None

    # Expired and unknown: now re-signing is safe, and it targets the same mint.
    again = await prepare(minter, mint_id, owner)
    assert again.mint_address == signed.mint_address
    assert await minter.send(again.tx_base64) == again.signature
    await wait_confirmed(minter, again.signature)
    await assert_one_nft(minter, again.mint_address, owner)
