"""Underfunding the system wallet, the way a real one runs dry: its lamports leave in a transfer.

The drain is a real signed transfer to a sink account over JSON-RPC; the refill is the local
chain's airdrop, as the devstack funds the wallet at start.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from devstack.config import SOLANA_ENDPOINTS, StackConfig
from devstack.dev_identity import system_wallet
from devstack.supervisor import FUNDED_LAMPORTS

LEFT_LAMPORTS = 1_000_000  # 0.001 SOL: less than one mint's rent, more than a transfer's fee
PREFLIGHT_FAILURE = -32002
SINK = Pubkey.from_string("Sink111111111111111111111111111111111111111")


class RpcRefused(RuntimeError):
    pass


async def _rpc(config: StackConfig, method: str, params: list[Any]) -> Any:
    """Ask each endpoint in turn: the chaos schedule may have taken one down or made it flaky."""
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    last: Exception | None = None
    async with httpx.AsyncClient(timeout=5) as client:
        for _ in range(10):
            for name in SOLANA_ENDPOINTS:
                try:
                    answer = (await client.post(config.url(name), json=body)).json()
                except (httpx.HTTPError, ValueError) as exc:
                    last = exc
                    continue
                if "error" in answer:
                    last = RpcRefused(f"{method} at {name}: {answer['error']}")
                    error = answer["error"]
                    if isinstance(error, dict) and error.get("code") == PREFLIGHT_FAILURE:
                        raise last  # the chain's answer, not a flaky endpoint's
                    continue
                return answer["result"]
    raise RpcRefused(f"{method}: no endpoint answered: {last}")


async def balance(config: StackConfig) -> int:
    wallet = str(system_wallet(config.state_dir).pubkey())
    return int((await _rpc(config, "getBalance", [wallet, {"commitment": "confirmed"}]))["value"])


async def drain(config: StackConfig) -> int:
    """Move all but LEFT_LAMPORTS out of the system wallet; returns the lamports moved."""
    last: Exception | None = None
    for _ in range(5):  # a warp between the blockhash and the send makes it stale: again
        amount = await balance(config) - LEFT_LAMPORTS - 5_000
        if amount <= 0:
            return 0
        try:
            await _send_transfer(config, amount)
            return amount
        except RpcRefused as exc:
            last = exc
    raise RpcRefused(f"could not drain the system wallet: {last}")


async def _send_transfer(config: StackConfig, lamports: int) -> None:
    payer: Keypair = system_wallet(config.state_dir)
    latest = await _rpc(config, "getLatestBlockhash", [{"commitment": "confirmed"}])
    instruction = transfer(
        TransferParams(from_pubkey=payer.pubkey(), to_pubkey=SINK, lamports=lamports)
    )
    blockhash = Hash.from_string(latest["value"]["blockhash"])
    message = Message.new_with_blockhash([instruction], payer.pubkey(), blockhash)
    tx = Transaction([payer], message, blockhash)
    wire = base64.b64encode(bytes(tx)).decode()
    await _rpc(
        config,
        "sendTransaction",
        [wire, {"encoding": "base64", "preflightCommitment": "confirmed"}],
    )


async def refill(config: StackConfig) -> None:
    """Top the wallet up to the devstack's funding again."""
    wallet = str(system_wallet(config.state_dir).pubkey())
    missing = FUNDED_LAMPORTS - await balance(config)
    if missing > 0:
        await _rpc(config, "requestAirdrop", [wallet, missing])
