"""SolanaMinter and SolanaRpc against the devstack's three RPC endpoints over one ledger.

Each test mints (or tries to) with a fresh system wallet and a fresh mint_id, so tests do not
depend on each other; faults are cleared after each test by conftest's autouse fixture.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from devstack.config import StackConfig
from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.solana.fees import FALLBACK_COMPUTE_UNIT_LIMIT
from mintsaga.solana.minter import SolanaMinter
from mintsaga.solana.prepare import SignedMint
from mintsaga.solana.rpc import SolanaRpc

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


async def funded_minter(
    rpc: SolanaRpc,
    lamports: int = LAMPORTS_PER_SOL,
    *,
    payer: Keypair | None = None,
    **options: Any,
) -> SolanaMinter:
    minter = SolanaMinter(rpc, payer or Keypair(), os.urandom(32), **options)
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
    minter: SolanaMinter, mint_address: str, owner: str, start_at: int | None = None
) -> None:
    state = await minter.nft_state(mint_address, owner, start_at=start_at)
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
        state = await minter.nft_state(signed.mint_address, owner, start_at=index)
        assert state is not None
        assert state.supply == 1
        assert state.decimals == 0
        assert state.mint_authority is None
        assert state.freeze_authority is None
        assert (state.name, state.symbol, state.uri) == (NAME, SYMBOL, URI)
        assert state.update_authority is None  # no MINT_UPDATE_AUTHORITY given: immutable
        assert state.member is None and state.group is None
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
    """prepare's simulation finds it before anything is signed, as sending would."""
    minter = await funded_minter(rpc, lamports)
    mint_id = fresh_mint_id()
    with pytest.raises(ServiceError) as raised:
        await prepare(minter, mint_id, fresh_owner())
    error = raised.value
    assert error.kind is ErrorKind.NEEDS_OPERATOR
    assert error.code == "SystemWalletUnderfunded"
    assert minter.payer in error.message
    assert await minter.nft_state(minter.mint_address(mint_id), fresh_owner()) is None


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


# -- priority fee and compute-unit limit -----------------------------------------------------

COMPUTE_BUDGET = "ComputeBudget111111111111111111111111111111"
BASE_FEE = 5000 * 2  # two signatures: the system wallet and the mint


def compute_budget_of(signed: SignedMint) -> list[tuple[int, str, int]]:
    """(instruction index, "limit" | "price", value) of each ComputeBudget instruction."""
    tx = VersionedTransaction.from_bytes(base64.b64decode(signed.tx_base64))
    keys = tx.message.account_keys
    found = []
    for index, ix in enumerate(tx.message.instructions):
        if str(keys[ix.program_id_index]) != COMPUTE_BUDGET:
            continue
        data = bytes(ix.data)
        if data[0] == 2:
            found.append((index, "limit", struct.unpack_from("<I", data, 1)[0]))
        elif data[0] == 3:
            found.append((index, "price", struct.unpack_from("<Q", data, 1)[0]))
        else:
            found.append((index, f"other {data[0]}", 0))
    return found


async def landed_meta(rpc: SolanaRpc, signature: str) -> dict[str, Any]:
    tx = await rpc.call(
        "getTransaction",
        [
            signature,
            {"encoding": "json", "commitment": "confirmed", "maxSupportedTransactionVersion": 0},
        ],
    )
    return tx["meta"]


def priority_lamports(price: int, limit: int) -> int:
    return -(-price * limit // 1_000_000)


async def land_priced_transfers(
    stack: StackConfig, minter: SolanaMinter, payer: Keypair, prices: list[int]
) -> None:
    """One transfer from ``payer`` per price, each alone in its own slot."""
    sink = Keypair().pubkey()
    for price in prices:
        admin(stack, "POST", "/solana/warp", {"slots": 1})  # not beside the airdrop, or another
        blockhash = await minter.rpc.call(
            "getLatestBlockhash",
            [{"commitment": "confirmed"}],
            parse=lambda r: Hash.from_string(r["value"]["blockhash"]),
        )
        ixs = [
            set_compute_unit_limit(10_000),
            set_compute_unit_price(price),
            transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=sink, lamports=10**6)),
        ]
        tx = VersionedTransaction(
            MessageV0.try_compile(payer.pubkey(), ixs, [], blockhash), [payer]
        )
        signature = await minter.send(base64.b64encode(bytes(tx)).decode())
        await wait_confirmed(minter, signature)


async def test_compute_unit_limit_comes_from_a_simulation_and_the_nft_lands(
    rpc: SolanaRpc,
) -> None:
    minter = await funded_minter(rpc)
    mint_id, owner = fresh_mint_id(), fresh_owner()
    signed = await prepare(minter, mint_id, owner, priority_fee_micro_lamports=2_000)
    budget = compute_budget_of(signed)
    # The ComputeBudget instructions come first; the override is the price, as given.
    assert [(index, kind) for index, kind, _ in budget] == [(0, "limit"), (1, "price")]
    limit, price = budget[0][2], budget[1][2]
    assert price == signed.priority_fee_micro_lamports == 2_000
    assert limit == signed.compute_unit_limit and signed.simulated_units is not None

    assert await minter.send(signed.tx_base64) == signed.signature
    await wait_confirmed(minter, signed.signature)
    meta = await landed_meta(rpc, signed.signature)
    consumed = meta["computeUnitsConsumed"]
    # The limit is what the transaction really consumes, plus 20 % and 1000 units.
    assert consumed > 10_000  # the NFT's instructions ran, not only the budget ones
    assert abs(limit - (consumed * 1.2 + 1000)) <= 1
    assert limit < FALLBACK_COMPUTE_UNIT_LIMIT
    assert meta["fee"] == BASE_FEE + priority_lamports(2_000, limit)
    state = await minter.nft_state(signed.mint_address, owner)
    assert state is not None and state.is_fixed_supply_nft and state.owner_balance == 1
    assert (state.name, state.symbol, state.uri) == (NAME, SYMBOL, URI)


async def test_priority_fee_follows_recent_fees_capped_and_raised_per_resign(
    stack: StackConfig, rpc: SolanaRpc
) -> None:
    admin(stack, "POST", "/solana/warp", {"slots": 151})  # earlier tests' fees leave the window
    payer = Keypair()
    minter = await funded_minter(rpc, payer=payer, priority_fee_percentile=99)
    assert await minter.priority_fee(cap_micro_lamports=10**6) == 0  # nothing paid yet
    prices = [3_000, 1_000, 8_000, 2_000, 7_000, 4_000, 6_000, 5_000]
    await land_priced_transfers(stack, minter, payer, prices)

    # The percentile is over all 150 samples, zeros included (issue 15): 8 paid slots on a quiet
    # chain are not the 75th percentile; near the top they are (nearest rank over 142 zeros,
    # then 1000..8000). The cap and the raise apply to it.
    assert await minter.priority_fee(cap_micro_lamports=10**6) == 0
    assert await minter.priority_fee(percentile=99, cap_micro_lamports=10**6) == 7_000  # 149th
    assert await minter.priority_fee(percentile=97, cap_micro_lamports=10**6) == 4_000  # 146th
    assert await minter.priority_fee(percentile=99, cap_micro_lamports=5_000) == 5_000
    assert await minter.priority_fee(percentile=99, cap_micro_lamports=10**6, resign=1) == 10_500

    mint_id, owner = fresh_mint_id(), fresh_owner()
    first = await prepare(minter, mint_id, owner)
    assert [kind for _, kind, _ in compute_budget_of(first)] == ["limit", "price"]
    assert compute_budget_of(first)[1][2] == first.priority_fee_micro_lamports == 7_000
    resigned = await prepare(minter, mint_id, owner, resign=2)
    assert compute_budget_of(resigned)[1][2] == 15_750  # 7000 x 1.5 x 1.5

    capped = SolanaMinter(
        minter.rpc, payer, os.urandom(32), priority_fee_cap=5_000, priority_fee_percentile=99
    )
    assert compute_budget_of(await prepare(capped, fresh_mint_id(), owner))[1][2] == 5_000
    assert compute_budget_of(await prepare(capped, fresh_mint_id(), owner, resign=3))[1][2] == (
        5_000
    )
    # A fee given with the mint is clamped: an operator's retry's to the operator's cap, a
    # request's (a starter that is not ours skips start_mint's check) to the cap; the signed
    # transaction fits the per-mint budget (the spend policy, issue 14).
    bounded = SolanaMinter(
        minter.rpc, payer, os.urandom(32), priority_fee_cap=5_000, operator_fee_cap=20_000
    )
    clamped = await prepare(
        bounded, fresh_mint_id(), owner, priority_fee_micro_lamports=10**7, fee_from_operator=True
    )
    assert clamped.priority_fee_micro_lamports == compute_budget_of(clamped)[1][2] == 20_000
    requested = await prepare(bounded, fresh_mint_id(), owner, priority_fee_micro_lamports=10**7)
    assert requested.priority_fee_micro_lamports == compute_budget_of(requested)[1][2] == 5_000
    quantile = SolanaMinter(minter.rpc, payer, os.urandom(32), priority_fee_percentile=96)
    assert compute_budget_of(await prepare(quantile, fresh_mint_id(), owner))[1][2] == 2_000

    # The re-signed transaction lands, pays the raised price, and the NFT reads back.
    assert await minter.send(resigned.tx_base64) == resigned.signature
    await wait_confirmed(minter, resigned.signature)
    meta = await landed_meta(rpc, resigned.signature)
    assert meta["fee"] == BASE_FEE + priority_lamports(15_750, resigned.compute_unit_limit)
    await assert_one_nft(minter, resigned.mint_address, owner)


async def test_a_failed_simulation_falls_back_or_refuses(
    stack: StackConfig, rpc: SolanaRpc
) -> None:
    minter = await funded_minter(rpc)
    mint_id, owner = fresh_mint_id(), fresh_owner()
    faults = [
        add_fault(stack, target=name, kind="status", status=503, match="simulateTransaction")
        for name in ENDPOINTS
    ]
    signed = await prepare(minter, mint_id, owner)
    assert all(fault_hits(stack, fault) == 1 for fault in faults)
    # No simulation to be had: the fixed limit, and the transaction still lands.
    assert signed.simulated_units is None
    assert compute_budget_of(signed)[0][1:] == ("limit", FALLBACK_COMPUTE_UNIT_LIMIT)
    admin(stack, "DELETE", "/faults")
    assert await minter.send(signed.tx_base64) == signed.signature
    await wait_confirmed(minter, signed.signature)
    await assert_one_nft(minter, signed.mint_address, owner)

    # The mint exists now: the simulation shows the instructions would fail, so prepare
    # raises what sending would, and nothing is signed.
    with pytest.raises(ServiceError) as raised:
        await prepare(minter, mint_id, owner)
    assert raised.value.kind is ErrorKind.PERMANENT
    assert raised.value.code == "TransactionRejected"


async def test_longest_name_and_a_long_uri_still_fit_with_both_budget_instructions(
    rpc: SolanaRpc,
) -> None:
    minter = await funded_minter(rpc)
    owner = fresh_owner()
    name, symbol, uri = "N" * 32, "S" * 10, "https://gateway.example/ipfs/" + "b" * 300
    signed = await minter.prepare(
        fresh_mint_id(),
        owner=owner,
        name=name,
        symbol=symbol,
        uri=uri,
        priority_fee_micro_lamports=1,
    )
    assert len(base64.b64decode(signed.tx_base64)) <= 1232
    assert [kind for _, kind, _ in compute_budget_of(signed)] == ["limit", "price"]
    assert await minter.send(signed.tx_base64) == signed.signature
    await wait_confirmed(minter, signed.signature)
    state = await minter.nft_state(signed.mint_address, owner)
    assert state is not None and state.uri == uri and state.owner_balance == 1

    with pytest.raises(ServiceError) as raised:  # too long: refused before any simulation
        await minter.prepare(
            fresh_mint_id(), owner=owner, name=name, symbol=symbol, uri=uri + "b" * 400
        )
    assert raised.value.code == "TransactionTooLarge"


async def test_the_blockhash_comes_from_the_endpoint_with_the_highest_slot(stack: Any) -> None:
    """A node that lags (here: one that does not answer getSlot) is not asked for the
    blockhash; the one furthest ahead is."""
    async with httpx.AsyncClient(timeout=10) as http:
        for endpoint in ("solana-1", "solana-2"):
            answer = await http.post(
                stack.url("admin") + "/faults",
                json={"target": endpoint, "kind": "status", "status": 503, "match": "getSlot"},
            )
            answer.raise_for_status()
    async with SolanaRpc([stack.url(n) for n in ("solana-1", "solana-2", "solana-3")]) as pool:
        assert await pool.highest_slot_index() == 2
