"""The local chain's ledger in-process: a restart keeps its state."""

from __future__ import annotations

from pathlib import Path

import pytest
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from clients.solana_nft import (
    associated_token_address,
    build_nft_instructions,
    nft_mint_account_size,
)
from devstack.solana import SolanaLedger
from devstack.solana.errors import RpcError


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
