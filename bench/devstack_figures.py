"""Devstack figures: whole-stack startup (cold and warm) and the local chain's NFT throughput.

    .venv/bin/python -m bench.devstack_figures

Startup runs `python -m devstack up --detach` the way a developer does, in a temporary state
folder on ports shifted by 40000. Throughput lands NFT transactions on the ledger in-process,
with its write-through persistence, to show the local chain is never a mint's bottleneck.
"""

from __future__ import annotations

import asyncio
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from devstack.solana import SolanaLedger
from mintsaga.solana.nft import build_nft_instructions, nft_mint_account_size

PORT_OFFSET = "40000"
NFT_TRANSACTIONS = 1000


def _devstack(state_dir: Path, *args: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "devstack", "--state-dir", str(state_dir), *args],
        check=True, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - started


def startup_seconds() -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp) / "stack"
        try:
            cold = _devstack(state_dir, "up", "--detach", "--port-offset", PORT_OFFSET)
            _devstack(state_dir, "down")
            warm = _devstack(state_dir, "up", "--detach")
        finally:
            _devstack(state_dir, "down", "--wipe")
    return cold, warm


def _nft_transaction(ledger: SolanaLedger, payer: Keypair, owner: Pubkey, index: int) -> bytes:
    mint = Keypair()
    name, symbol, uri = f"Saga #{index}", "SAGA", f"ipfs://bafy{index}"
    size = nft_mint_account_size(name, symbol, uri, payer.pubkey(), mint.pubkey())
    instructions = build_nft_instructions(
        payer=payer.pubkey(), mint=mint.pubkey(), owner=owner, name=name, symbol=symbol,
        uri=uri, rent_lamports=ledger.minimum_balance_for_rent_exemption(size),
    )  # fmt: skip
    blockhash, _, _ = ledger.latest_blockhash("processed")
    message = MessageV0.try_compile(payer.pubkey(), instructions, [], blockhash)
    return bytes(VersionedTransaction(message, [payer, mint]))


async def nft_transactions_per_second() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = SolanaLedger(Path(tmp), slot_ms=400)
        await ledger.start()
        try:
            payer, owner = Keypair(), Keypair().pubkey()
            ledger.airdrop(payer.pubkey(), 10**13)
            signed = [_nft_transaction(ledger, payer, owner, i) for i in range(NFT_TRANSACTIONS)]
            started = time.perf_counter()
            for raw in signed:
                ledger.send(raw, preflight_commitment="processed")
            return NFT_TRANSACTIONS / (time.perf_counter() - started)
        finally:
            await ledger.stop()


def main() -> None:
    print(
        f"machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, {sys.platform}",
        flush=True,
    )
    print("startup: running `devstack up --detach` cold, then warm ...", flush=True)
    cold, warm = startup_seconds()
    print(f"startup cold (fresh state folder): {cold:.2f} s")
    print(f"startup warm (existing state folder): {warm:.2f} s")
    print(f"ledger: landing {NFT_TRANSACTIONS} NFT transactions with preflight ...", flush=True)
    print(f"ledger NFT transactions/s: {asyncio.run(nft_transactions_per_second()):.0f}")


if __name__ == "__main__":
    main()
