"""The priority fee under the devstack's fee-market load (issue 15), over real sockets.

With the load on, every slot is busy: its block minimum is 0 (a zero-fee landing, as on mainnet),
the accounts the load write-locks show what it took to land, and a busy slot's leader passes
over a bid below its clearing price (devstack.solana.fee_market). An estimator that reads only
our own accounts sees 0 and its mint waits for blockhash expiry; the product's estimate (recent
fees over Token-2022 and the busy accounts, percentile over all samples; or Helius'
getPriorityFeeEstimate) is above 0 and the mint lands without a re-sign.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction
from temporalio.client import Client

import mintsaga
from devstack.config import StackConfig
from devstack.requests import mint_request
from mintsaga.solana.fees import percentile_fee
from mintsaga.solana.minter import SolanaMinter
from mintsaga.solana.nft import TOKEN_2022_PROGRAM_ID, associated_token_address
from mintsaga.solana.rpc import SolanaRpc
from mintsaga.workflows.models import MintStatus
from tests.integration.test_solana_minter import (
    ENDPOINTS,
    add_fault,
    admin,
    assert_one_nft,
    fault_hits,
    fresh_mint_id,
    fresh_owner,
    funded_minter,
    prepare,
    wait_confirmed,
)

pytestmark = pytest.mark.integration

LOAD = {"busy_fraction": 1.0, "min_fee": 2_000, "max_fee": 20_000, "seed": 15}
BASE_FEE = 2 * 5_000  # the mint's two signatures


@pytest.fixture
async def rpc(stack: StackConfig) -> AsyncIterator[SolanaRpc]:
    async with SolanaRpc([stack.url(name) for name in ENDPOINTS], timeout=2) as pool:
        yield pool


@pytest.fixture
def fee_market(stack: StackConfig) -> Iterator[Callable[..., dict[str, Any]]]:
    """Turns the load on (PUT /solana/fee-market); off again, and its samples forgotten, after
    the test, so the next test's estimates see a quiet chain."""

    def put(**overrides: Any) -> dict[str, Any]:
        described: dict[str, Any] = admin(stack, "PUT", "/solana/fee-market", LOAD | overrides)
        return described

    try:
        yield put
    finally:
        admin(stack, "DELETE", "/solana/fee-market")


def emulator_fees(stack: StackConfig, accounts: list[str]) -> list[int]:
    answer = httpx.post(
        stack.url("solana-1"),
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "getRecentPrioritizationFees",
            "params": [accounts],
        },
        timeout=10,
    ).json()
    return [entry["prioritizationFee"] for entry in answer["result"]]


def our_accounts(minter: SolanaMinter, mint_id: str, owner: str) -> list[str]:
    mint = Pubkey.from_string(minter.mint_address(mint_id))
    ata = associated_token_address(Pubkey.from_string(owner), mint)
    return [minter.payer, str(mint), str(ata)]


def compute_unit_price(tx_base64: str) -> int:
    """The SetComputeUnitPrice a signed transaction carries (0: none)."""
    message = VersionedTransaction.from_bytes(base64.b64decode(tx_base64)).message
    assert isinstance(message, MessageV0)
    for ix in message.instructions:
        data = bytes(ix.data)
        program = str(message.account_keys[ix.program_id_index])
        if program.startswith("ComputeBudget") and data[:1] == b"\x03":
            return int.from_bytes(data[1:9], "little")
    return 0


STABLE_WINDOW_TRIES = 10


async def test_under_load_our_accounts_read_zero_and_the_estimate_lands_the_mint(
    stack: StackConfig, rpc: SolanaRpc, fee_market: Callable[..., dict[str, Any]]
) -> None:
    described = fee_market()
    assert described["on"] and described["clearing_price"] >= LOAD["min_fee"]
    minter = await funded_minter(rpc, priority_fee_accounts=stack.fee_market_hot_accounts)
    mint_id, owner = fresh_mint_id(), fresh_owner()

    # What the old estimator read: our own accounts, every slot 0 (the block minimum), so its
    # percentile of the non-zero fees was 0, and so is the percentile of all of them.
    ours = emulator_fees(stack, our_accounts(minter, mint_id, owner))
    assert 0 < len(ours) <= 150 and set(ours) == {0}  # one per slot (a young chain has fewer)
    assert set(emulator_fees(stack, [str(TOKEN_2022_PROGRAM_ID)])) == {0}
    # With the busy accounts every slot shows what it took to land next to them. The window
    # of recent slots moves on while the mint is prepared (a slot every 400 ms): the estimate
    # is compared with a window that did not move meanwhile (read before and after alike).
    for _ in range(STABLE_WINDOW_TRIES):
        sampled = [*our_accounts(minter, mint_id, owner), str(TOKEN_2022_PROGRAM_ID)]
        busy = emulator_fees(stack, sampled + stack.fee_market_hot_accounts)
        signed = await prepare(minter, mint_id, owner)
        if emulator_fees(stack, sampled + stack.fee_market_hot_accounts) == busy:
            break
        mint_id, owner = fresh_mint_id(), fresh_owner()  # a fresh estimate, not a cached one
    else:
        pytest.fail(f"the fee window moved during each of {STABLE_WINDOW_TRIES} prepares")
    assert min(busy) >= LOAD["min_fee"]
    assert signed.priority_fee_micro_lamports == percentile_fee(busy, 75) > 0
    assert compute_unit_price(signed.tx_base64) == signed.priority_fee_micro_lamports
    assert await minter.send(signed.tx_base64) == signed.signature
    status = await wait_confirmed(minter, signed.signature)  # 10 s, far inside its 60 s life
    assert status.err is None
    await assert_one_nft(minter, signed.mint_address, owner)


async def test_under_load_a_zero_bid_is_passed_over_until_its_blockhash_expires(
    stack: StackConfig, rpc: SolanaRpc, fee_market: Callable[..., dict[str, Any]]
) -> None:
    """What a mint bidding the old estimate (0) met: accepted by the node, never included, and
    expired, so the saga would have re-signed it."""
    fee_market()
    minter = await funded_minter(rpc)
    signed = await prepare(minter, fresh_mint_id(), fresh_owner(), priority_fee_micro_lamports=0)
    assert compute_unit_price(signed.tx_base64) == 0
    assert await minter.send(signed.tx_base64) == signed.signature
    admin(stack, "POST", "/solana/warp", {"slots": 10})
    assert not (await minter.signature_status(signed.signature)).found
    assert admin(stack, "GET", "/solana/fee-market")["waiting"] >= 1
    admin(stack, "POST", "/solana/warp", {"slots": 151})
    assert not await minter.is_blockhash_valid(signed.blockhash)  # expired: re-sign time
    assert not (await minter.signature_status(signed.signature)).found  # and never landed
    assert await minter.nft_state(signed.mint_address, fresh_owner()) is None


async def test_the_helius_estimator_is_asked_and_its_estimate_lands_the_mint(
    stack: StackConfig, rpc: SolanaRpc, fee_market: Callable[..., dict[str, Any]]
) -> None:
    fee_market()
    asked = [
        add_fault(stack, target=name, kind="latency", delay_ms=1, match="getPriorityFeeEstimate")
        for name in ENDPOINTS
    ]
    minter = await funded_minter(rpc, priority_fee_estimator="helius")  # no busy accounts named
    owner = fresh_owner()
    signed = await prepare(minter, fresh_mint_id(), owner)
    assert sum(fault_hits(stack, fault) for fault in asked) == 1
    # Helius' "High" level over the transactions that invoked Token-2022.
    assert LOAD["min_fee"] <= signed.priority_fee_micro_lamports <= LOAD["max_fee"]
    assert await minter.send(signed.tx_base64) == signed.signature
    await wait_confirmed(minter, signed.signature)
    await assert_one_nft(minter, signed.mint_address, owner)


async def test_a_saga_under_load_mints_signed_once(
    stack: StackConfig, client: Client, worker: str, fee_market: Callable[..., dict[str, Any]]
) -> None:
    """The worker's own settings (the devstack's env names the busy accounts): the mint bids
    above 0 and lands on its first signature."""
    fee_market()
    request = mint_request(stack)
    result = await (await mintsaga.start_mint(client, request, queue=worker)).result()

    assert result.status == MintStatus.MINTED
    conn = await asyncpg.connect(stack.direct_database_url)
    try:
        signatures = await conn.fetch(
            "SELECT signature FROM mint_submissions WHERE mint_id = $1", request.mint_id
        )
    finally:
        await conn.close()
    assert len(signatures) == 1  # never re-signed
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(
            stack.url("solana-1"),
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "getTransaction",
                "params": [
                    signatures[0]["signature"],
                    {"maxSupportedTransactionVersion": 0, "commitment": "confirmed"},
                ],
            },
        )
    landed = answer.json()["result"]
    assert landed["meta"]["err"] is None
    assert landed["meta"]["fee"] > BASE_FEE  # it paid a priority fee
