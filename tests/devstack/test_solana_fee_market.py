"""The ledger's fee market in-process (devstack.solana.fee_market): the background load on busy
slots, what getRecentPrioritizationFees and getPriorityFeeEstimate answer under it, and the
inclusion rule (a busy slot's leader passes over a bid below its clearing price)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from solders.keypair import Keypair

from devstack.solana import SolanaLedger
from devstack.solana.fee_market import (
    HOT_ACCOUNTS,
    TOKEN_2022_PROGRAM_ID,
    FeeMarketError,
    FeeMarketLoad,
    background_block,
    includes,
    parse_fee_market_spec,
)
from devstack.solana.ledger import MAX_PROCESSING_AGE
from tests.devstack.test_solana_ledger import _priced_transfer

BUSY = FeeMarketLoad(busy_fraction=1.0, min_fee=2_000, max_fee=20_000, seed=7)


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[SolanaLedger]:
    chain = SolanaLedger(tmp_path, slot_ms=60_000)  # the clock stands still; tests warp
    await chain.start()
    try:
        yield chain
    finally:
        await chain.stop()


def funded(ledger: SolanaLedger) -> Keypair:
    payer = Keypair()
    ledger.airdrop(payer.pubkey(), 10**10)
    return payer


def send(ledger: SolanaLedger, payer: Keypair, price: int) -> str:
    tx = _priced_transfer(ledger, payer, Keypair().pubkey(), price)
    return ledger.send(bytes(tx), preflight_commitment="processed")


def fees(ledger: SolanaLedger, accounts=None) -> list[int]:
    return [f["prioritizationFee"] for f in ledger.recent_prioritization_fees(accounts)]


# -- the pure rules -----------------------------------------------------------------------------


def test_inclusion_is_a_price_at_least_the_clearing_price() -> None:
    assert includes(0, 0)  # a quiet slot includes everything
    assert includes(5_000, 5_000)
    assert not includes(4_999, 5_000)
    assert not includes(0, 1)


def test_a_busy_block_clears_at_its_lowest_paying_price_and_carries_a_zero_fee_landing() -> None:
    block = background_block(BUSY, random.Random(1))
    assert block is not None
    paying = [t for t in block.transactions if t.price > 0]
    assert len(paying) == BUSY.transactions_per_slot
    assert block.clearing_price == min(t.price for t in paying) >= BUSY.min_fee
    assert all(t.writable & set(HOT_ACCOUNTS) for t in paying)
    assert all(
        TOKEN_2022_PROGRAM_ID in t.touched and TOKEN_2022_PROGRAM_ID not in t.writable
        for t in paying
    )  # invoked, never write-locked
    assert [t.price for t in block.transactions if t.price == 0] == [0]  # the bundle
    assert background_block(FeeMarketLoad(), random.Random(1)) is None  # off
    quiet = FeeMarketLoad(busy_fraction=0.5, seed=3)
    rng = random.Random(3)
    busy = sum(background_block(quiet, rng) is not None for _ in range(1000))
    assert 400 < busy < 600


def test_load_settings_are_checked() -> None:
    assert FeeMarketLoad.from_json({"busy_fraction": 1}).busy_fraction == 1.0
    assert parse_fee_market_spec("0.8") == {"busy_fraction": 0.8}
    assert parse_fee_market_spec("busy_fraction=1,min_fee=10,max_fee=20") == {
        "busy_fraction": 1.0,
        "min_fee": 10,
        "max_fee": 20,
    }
    assert parse_fee_market_spec("") == {}
    for bad in (
        {"busy_fraction": 2},
        {"busy_fraction": "x"},
        {"min_fee": 0},
        {"min_fee": 10, "max_fee": 5},
        {"hot_accounts": ["nope"]},
        {"hot_accounts": []},
        {"surprise": 1},
    ):
        with pytest.raises(FeeMarketError):
            FeeMarketLoad.from_json(bad)
    with pytest.raises(FeeMarketError):
        parse_fee_market_spec("min_fee=lots")


# -- what the node answers under load ----------------------------------------------------------


async def test_under_load_only_the_busy_accounts_show_fees(ledger: SolanaLedger) -> None:
    """The mainnet shape issue 15 describes: the block minimum is 0 (zero-fee landings), so
    our own new accounts and the Token-2022 program read 0 in every slot; the accounts the
    load write-locks read what it took to land next to them."""
    ours = [Keypair().pubkey() for _ in range(3)]
    assert set(fees(ledger, ours)) == {0}
    ledger.set_fee_market(BUSY)
    window = fees(ledger, ours)
    assert len(window) == min(MAX_PROCESSING_AGE, ledger.slot - 99)
    assert set(window) == {0}
    assert set(fees(ledger, [TOKEN_2022_PROGRAM_ID])) == {0}  # a program is never write-locked
    assert set(fees(ledger)) == {0}
    hot = fees(ledger, [*ours, TOKEN_2022_PROGRAM_ID, *HOT_ACCOUNTS])
    assert len(hot) == len(window) and min(hot) >= BUSY.min_fee  # backfilled: the whole window
    assert max(hot) <= BUSY.max_fee
    # Without zero-fee landings every transaction of a busy block paid: the minimum shows it.
    ledger.set_fee_market(FeeMarketLoad(busy_fraction=1.0, zero_fee_landings=False, seed=1))
    assert min(fees(ledger, ours)) >= 2_000
    # Taken away (DELETE /solana/fee-market): the window shows only real transactions again.
    ledger.set_fee_market(FeeMarketLoad(), forget=True)
    assert set(fees(ledger, HOT_ACCOUNTS)) == {0}


async def test_helius_estimate_reads_the_programs_fee_market(ledger: SolanaLedger) -> None:
    assert ledger.priority_fee_estimate([TOKEN_2022_PROGRAM_ID], {}) == {"priorityFeeEstimate": 0.0}
    ledger.set_fee_market(BUSY)
    ours = Keypair().pubkey()
    medium = ledger.priority_fee_estimate([ours, TOKEN_2022_PROGRAM_ID], {})["priorityFeeEstimate"]
    assert BUSY.min_fee <= medium <= BUSY.max_fee
    levels = ledger.priority_fee_estimate(
        [TOKEN_2022_PROGRAM_ID], {"includeAllPriorityFeeLevels": True}
    )["priorityFeeLevels"]
    assert list(levels) == ["min", "low", "medium", "high", "veryHigh", "unsafeMax"]
    assert list(levels.values()) == sorted(levels.values())
    assert levels["medium"] == medium
    high = ledger.priority_fee_estimate([TOKEN_2022_PROGRAM_ID], {"priorityLevel": "High"})
    assert high["priorityFeeEstimate"] == levels["high"]
    with pytest.raises(ValueError):
        ledger.priority_fee_estimate([TOKEN_2022_PROGRAM_ID], {"priorityLevel": "Urgent"})


# -- inclusion ---------------------------------------------------------------------------------


async def test_a_zero_bid_under_load_waits_and_expires_unlanded(ledger: SolanaLedger) -> None:
    payer = funded(ledger)
    ledger.set_fee_market(BUSY)
    signature = send(ledger, payer, 0)  # the node accepts it: the signature comes back
    assert ledger.status(signature, search_history=True) is None
    assert ledger.waiting() == [signature]
    ledger.warp(20)
    assert ledger.status(signature, search_history=True) is None  # every slot passed it over
    ledger.warp(MAX_PROCESSING_AGE)  # its blockhash expires: it never lands
    assert ledger.waiting() == []
    assert ledger.status(signature, search_history=True) is None


async def test_a_bid_at_the_top_of_the_market_lands_at_once(ledger: SolanaLedger) -> None:
    payer = funded(ledger)
    ledger.set_fee_market(BUSY)
    signature = send(ledger, payer, BUSY.max_fee)
    assert ledger.waiting() == []
    assert ledger.status(signature, search_history=False) is not None


async def test_a_waiting_bid_lands_in_the_first_slot_it_clears(ledger: SolanaLedger) -> None:
    payer = funded(ledger)
    ledger.set_fee_market(BUSY)
    price = (BUSY.min_fee + BUSY.max_fee) // 2
    while ledger.clearing_price() <= price:  # a slot this bid does not clear
        ledger.warp(1)
    sent_at = ledger.slot
    signature = send(ledger, payer, price)
    assert ledger.waiting() == [signature]
    ledger.warp(40)  # with 4 draws a slot, a clearing price at or below the middle is common
    status = ledger.status(signature, search_history=False)
    assert status is not None and status["slot"] > sent_at
    assert ledger.clearing_price(status["slot"]) <= price
    assert ledger.waiting() == []


async def test_the_load_turned_off_includes_the_waiting_bids(ledger: SolanaLedger) -> None:
    payer = funded(ledger)
    ledger.set_fee_market(BUSY)
    signature = send(ledger, payer, 0)
    ledger.set_fee_market(FeeMarketLoad())
    ledger.warp(1)
    assert ledger.status(signature, search_history=False) is not None
    # A quiet chain includes a zero bid at once.
    assert ledger.status(send(ledger, payer, 0), search_history=False) is not None
