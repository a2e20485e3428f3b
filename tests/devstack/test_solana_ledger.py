"""The local chain's ledger in-process: a restart keeps its state."""

from __future__ import annotations

from pathlib import Path

import pytest
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from devstack.solana import SolanaLedger
from devstack.solana.errors import RpcError
from mintsaga.solana.nft import (
    associated_token_address,
    build_nft_instructions,
    nft_mint_account_size,
)


def _nft_tx(ledger: SolanaLedger, payer: Keypair, owner, index: int) -> VersionedTransaction:
    mint = Keypair()
    name, symbol, uri = f"Saga #{index}", "SAGA", f"ipfs://bafy{index}"
    size = nft_mint_account_size(name, symbol, uri, payer.pubkey(), mint.pubkey())
    ixs = build_nft_instructions(
        payer=payer.pubkey(),
        mint=mint.pubkey(),
        owner=owner,
        name=name,
        symbol=symbol,
        uri=uri,
        rent_lamports=ledger.minimum_balance_for_rent_exemption(size),
    )
    blockhash, _, _ = ledger.latest_blockhash("processed")
    return VersionedTransaction(
        MessageV0.try_compile(payer.pubkey(), ixs, [], blockhash), [payer, mint]
    )


async def test_restart_keeps_accounts_signatures_and_slot(tmp_path: Path):
    ledger = SolanaLedger(tmp_path, slot_ms=60_000)
    await ledger.start()
    payer, owner = Keypair(), Keypair().pubkey()
    airdrop = ledger.airdrop(payer.pubkey(), 10**10)
    tx = _nft_tx(ledger, payer, owner, 1)
    signature = ledger.send(bytes(tx), preflight_commitment="processed")
    mint = tx.message.account_keys[1]
    ledger.warp(5)
    slot_before = ledger.slot
    payer_balance = ledger.get_account(payer.pubkey(), "processed").lamports
    await ledger.stop()

    restarted = SolanaLedger(tmp_path, slot_ms=60_000)
    await restarted.start()
    try:
        assert restarted.slot >= slot_before
        assert restarted.get_account(payer.pubkey(), "processed").lamports == payer_balance
        mint_account = restarted.get_account(mint, "processed")
        assert mint_account is not None and len(mint_account.data) > 234
        ata = restarted.get_account(associated_token_address(owner, mint), "processed")
        assert ata is not None
        for sig in (airdrop, signature):
            status = restarted.status(sig, search_history=True)
            assert status is not None and status["err"] is None
        # The old blockhash died with the process; the signature is still known.
        with pytest.raises(RpcError) as raised:
            restarted.send(bytes(tx), preflight_commitment="processed")
        assert raised.value.message == "Transaction simulation failed: Blockhash not found"
        assert restarted.record(signature).transaction_json("json")["meta"]["err"] is None
        # A fresh transaction from the restored payer lands.
        blockhash, _, _ = restarted.latest_blockhash("processed")
        ix = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=owner, lamports=10**6))
        again = VersionedTransaction(
            MessageV0.try_compile(payer.pubkey(), [ix], [], blockhash), [payer]
        )
        restarted.send(bytes(again), preflight_commitment="processed")
        assert restarted.get_account(owner, "processed").lamports == 10**6
    finally:
        await restarted.stop()


def _priced_transfer(ledger: SolanaLedger, payer: Keypair, to, price: int) -> VersionedTransaction:
    ixs = [
        set_compute_unit_limit(10_000),
        *([set_compute_unit_price(price)] if price else []),
        transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=to, lamports=10**6)),
    ]
    blockhash, _, _ = ledger.latest_blockhash("processed")
    return VersionedTransaction(MessageV0.try_compile(payer.pubkey(), ixs, [], blockhash), [payer])


async def test_recent_prioritization_fees_per_block_and_per_written_account(tmp_path: Path):
    """As Agave's fee cache: per slot the block's lowest price, raised to the highest of the
    lowest prices paid by transactions write-locking the accounts asked about."""
    ledger = SolanaLedger(tmp_path, slot_ms=60_000)  # the clock stands still: one slot
    await ledger.start()
    try:
        busy, quiet, other = Keypair(), Keypair(), Keypair()
        for payer in (busy, quiet, other):
            ledger.airdrop(payer.pubkey(), 10**10)
        ledger.warp(1)  # the airdrops (price 0) stay in the slot before
        slot = ledger.slot
        sink = Keypair().pubkey()
        for payer, price in ((busy, 9_000), (busy, 7_000), (quiet, 2_000), (other, 4_000)):
            ledger.send(
                bytes(_priced_transfer(ledger, payer, sink, price)),
                preflight_commitment="processed",
            )
        assert ledger.slot == slot

        def fee_at(accounts) -> int:
            fees = {
                f["slot"]: f["prioritizationFee"]
                for f in ledger.recent_prioritization_fees(accounts)
            }
            return fees[slot]

        assert fee_at(None) == 2_000  # the block's lowest price
        assert fee_at([busy.pubkey()]) == 7_000  # the lowest price that wrote `busy`
        assert fee_at([quiet.pubkey(), other.pubkey()]) == 4_000  # the highest of the two
        assert fee_at([sink]) == 2_000  # every transfer wrote it: its lowest
        assert fee_at([Keypair().pubkey()]) == 2_000  # never written: the block's
        ledger.warp(1)
        later = {
            f["slot"]: f["prioritizationFee"]
            for f in ledger.recent_prioritization_fees([busy.pubkey()])
        }
        assert later[slot] == 7_000 and later[ledger.slot] == 0  # an empty slot bids nothing
        assert len(later) <= 150
    finally:
        await ledger.stop()
