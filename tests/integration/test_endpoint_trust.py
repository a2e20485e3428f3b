"""Endpoints and their answers are not trusted alone (issue 14): a node's lastValidBlockHeight
is checked against a block height, and before MINTED the NFT is read back from a second node
(or, with only one answering, at `finalized`).

The liar is a real JSON-RPC server on 127.0.0.1 in front of a devstack node
(`tests.saga_support.lying_rpc`), changing only what a lying or broken node would.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
from solders.keypair import Keypair
from temporalio.client import Client

import mintsaga
from devstack.config import StackConfig
from devstack.requests import mint_request
from mintsaga.errors import ServiceError
from mintsaga.settings import Settings
from mintsaga.solana.prepare import MintPreparer
from mintsaga.solana.prepare_checks import MAX_PROCESSING_AGE, blockhash_window_is_plausible
from mintsaga.solana.rpc import SolanaRpc
from mintsaga.workflows.models import MintStatus
from tests.saga_support import lying_rpc, running_worker, wait_for

pytestmark = pytest.mark.integration


def test_a_blockhash_window_is_plausible_only_within_a_blockhashs_life() -> None:
    assert blockhash_window_is_plausible(1_000 + MAX_PROCESSING_AGE, 1_000)
    assert blockhash_window_is_plausible(1_001, 1_000)
    assert not blockhash_window_is_plausible(1_000, 1_000)  # expires with this block
    assert not blockhash_window_is_plausible(900, 1_000)  # already expired
    assert not blockhash_window_is_plausible(1_000 + 10_000, 1_000)  # lives far too long


async def prepare_with(rpc: SolanaRpc, payer: Keypair) -> int:
    preparer = MintPreparer(rpc, payer, os.urandom(32))
    signed = await preparer.prepare(
        f"trust-{uuid.uuid4()}",
        owner=str(Keypair().pubkey()),
        name="Trust",
        symbol="TRST",
        uri=f"ipfs://{'d' * 59}",
        priority_fee_micro_lamports=0,
    )
    return signed.last_valid_block_height


async def funded_payer(stack: StackConfig) -> Keypair:
    payer = Keypair()
    async with SolanaRpc([stack.url("solana-1")]) as rpc:
        await rpc.call("requestAirdrop", [str(payer.pubkey()), 10**9])
        async with asyncio.timeout(30):
            while True:
                balance = await rpc.call("getBalance", [str(payer.pubkey())])
                if balance["value"] == 10**9:
                    return payer
                await asyncio.sleep(0.1)


async def test_a_node_whose_blockhash_lives_too_long_is_not_believed(stack: StackConfig) -> None:
    timeout = Settings.from_env(stack.worker_env()).solana_timeout_s
    payer = await funded_payer(stack)
    async with lying_rpc(stack.url("solana-1")) as (liar, lies):
        lies.last_valid_shift = 10_000
        async with SolanaRpc([liar, stack.url("solana-2")], timeout=timeout) as rpc:
            last_valid = await prepare_with(rpc, payer)  # the honest backup's window
            height = await rpc.call("getBlockHeight", [{"commitment": "confirmed"}], only=[1])
            assert blockhash_window_is_plausible(last_valid, height)
            assert ("getLatestBlockhash", "confirmed") in lies.seen  # the liar was asked first
        async with SolanaRpc([liar], timeout=timeout) as rpc:
            with pytest.raises(ServiceError) as raised:
                await prepare_with(rpc, payer)
    assert raised.value.code == "ImplausibleBlockhash" and raised.value.retryable


async def test_one_node_alone_cannot_get_a_mint_recorded_as_minted(
    stack: StackConfig, client: Client
) -> None:
    """The primary sends and sees the NFT; the backup does not (lagging, forked or lying):
    verification waits for an operator past the pivot, and the mint is MINTED only once a
    second node agrees."""
    request = mint_request(stack)
    queue = f"q-{uuid.uuid4().hex[:8]}"
    async with lying_rpc(stack.url("solana-2")) as (liar, lies):
        lies.hide_accounts = True
        endpoints = {"SOLANA_RPC_ENDPOINTS": f"{stack.url('solana-1')},{liar}"}
        async with running_worker(stack, client, queue, env=endpoints):
            handle = await mintsaga.start_mint(client, request, queue=queue)
            await wait_for(
                client,
                request.mint_id,
                lambda s: s.awaiting_operator and s.awaiting_step == "verify_nft",
                within_s=120,
            )
            status = await mintsaga.get_status(client, request.mint_id)
            assert status.past_pivot and status.status == MintStatus.AWAITING_OPERATOR
            assert status.last_error is not None and status.last_error.type == "NftNotVisible"
            lies.hide_accounts = False  # the backup catches up
            await mintsaga.retry(client, request.mint_id)
            result = await handle.result()
    assert result.status == MintStatus.MINTED


async def test_with_one_node_the_nft_is_believed_at_finalized(
    stack: StackConfig, client: Client
) -> None:
    request = mint_request(stack)
    queue = f"q-{uuid.uuid4().hex[:8]}"
    async with lying_rpc(stack.url("solana-1")) as (only_node, lies):
        one = {"SOLANA_RPC_ENDPOINTS": only_node}
        async with running_worker(stack, client, queue, env=one):
            result = await (await mintsaga.start_mint(client, request, queue=queue)).result()
    assert result.status == MintStatus.MINTED
    assert ("getMultipleAccounts", "finalized") in lies.seen
