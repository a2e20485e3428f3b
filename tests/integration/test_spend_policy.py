"""The hot wallet's guards on the devstack: a worker with another MINT_KEY_SEED never signs for
a claimed mint, and the fleet-wide spend breaker stops signing when the hour's budget is spent.

"Nothing sent" is read independently of the product: the `mint_submissions` rows (a signature
is recorded before any send) and the accounts at both addresses on the chain (Solana RPC).
"""

from __future__ import annotations

import os
import typing
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from temporalio import activity
from temporalio.client import Client

import mintsaga
from devstack.config import StackConfig
from devstack.requests import mint_request
from mintsaga.activities.failures import classified
from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.solana.mint_keys import derive_mint_keypair, parse_seed
from mintsaga.workflows.models import MintStatus, StatusView
from tests.saga_support import activity_name, chain_nft, running_worker, wait_for

pytestmark = pytest.mark.integration


def address_for(seed_hex: str, mint_id: str) -> str:
    return str(derive_mint_keypair(parse_seed(seed_hex), mint_id).pubkey())


async def submissions(stack: StackConfig, mint_id: str) -> int:
    conn = await asyncpg.connect(stack.direct_database_url)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM mint_submissions WHERE mint_id = $1", mint_id
        )
        return count
    finally:
        await conn.close()


def waiting_with(code: str, step: str) -> Callable[[StatusView], bool]:
    return lambda s: (
        s.awaiting_operator
        and s.awaiting_step == step
        and s.last_error is not None
        and s.last_error.type == code
    )


def stop_for_an_operator(original: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """`prepare_transaction` replaced by a failure only an operator can clear."""

    async def wrapped(arg: Any) -> Any:
        with classified():
            raise ServiceError(
                "held for the test", service="solana", kind=ErrorKind.NEEDS_OPERATOR, code="Held"
            )

    hints = typing.get_type_hints(original)  # the converter reads the types from these
    wrapped.__annotations__ = {"arg": next(iter(hints.values())), "return": hints["return"]}
    return activity.defn(name=activity_name(original))(wrapped)


async def test_a_worker_with_another_seed_waits_at_claim_and_signs_nothing(
    stack: StackConfig, client: Client
) -> None:
    """The row was claimed by a worker with the fleet's seed; a pod with another seed picks the
    mint up: it waits for an operator naming MINT_KEY_SEED, and once the seed is right the
    same address is minted."""
    request = mint_request(stack)
    seed = stack.worker_env()["MINT_KEY_SEED"]
    claimed = address_for(seed, request.mint_id)
    conn = await asyncpg.connect(stack.direct_database_url)
    try:  # what a worker with the fleet's seed leaves after claim_mint
        await conn.execute(
            "INSERT INTO mints (mint_id, user_id, wallet, stage, mint_address)"
            " VALUES ($1, $2, $3, 'INITIATED', $4)",
            request.mint_id,
            request.user_id,
            request.wallet,
            claimed,
        )
    finally:
        await conn.close()
    other_seed = os.urandom(32).hex()
    derived = address_for(other_seed, request.mint_id)
    queue = f"q-{uuid.uuid4().hex[:8]}"

    async with running_worker(stack, client, queue, env={"MINT_KEY_SEED": other_seed}):
        handle = await mintsaga.start_mint(client, request, queue=queue)
        await wait_for(client, request.mint_id, waiting_with("MintKeySeedMismatch", "claim_mint"))
        status = await mintsaga.get_status(client, request.mint_id)  # a query needs a worker
    assert status.last_error is not None
    assert "MINT_KEY_SEED" in status.last_error.message
    assert claimed in status.last_error.message and derived in status.last_error.message
    assert other_seed not in status.last_error.message and seed not in status.last_error.message
    assert status.status == MintStatus.AWAITING_OPERATOR and not status.past_pivot
    assert await submissions(stack, request.mint_id) == 0
    assert chain_nft(stack, claimed) is None and chain_nft(stack, derived) is None

    async with running_worker(stack, client, queue):  # the fleet's seed again
        await mintsaga.retry(client, request.mint_id)
        result = await handle.result()
    assert result.status == MintStatus.MINTED and result.mint_address == claimed
    assert chain_nft(stack, derived) is None


async def test_a_worker_with_another_seed_cannot_sign_for_a_claimed_mint(
    stack: StackConfig, client: Client
) -> None:
    """Claimed by the fleet's seed, then (a rotation mid-mint) prepared by a worker with
    another: the prepare step waits for an operator and no transaction is signed or sent."""
    request = mint_request(stack)
    seed = stack.worker_env()["MINT_KEY_SEED"]
    claimed = address_for(seed, request.mint_id)
    other_seed = os.urandom(32).hex()
    queue = f"q-{uuid.uuid4().hex[:8]}"

    held = {"prepare_transaction": stop_for_an_operator}
    async with running_worker(stack, client, queue, wrap=held):
        handle = await mintsaga.start_mint(client, request, queue=queue)
        await wait_for(client, request.mint_id, waiting_with("Held", "prepare_transaction"))
    async with running_worker(stack, client, queue, env={"MINT_KEY_SEED": other_seed}):
        await mintsaga.retry(client, request.mint_id)
        await wait_for(
            client, request.mint_id, waiting_with("MintKeySeedMismatch", "prepare_transaction")
        )
        status = await mintsaga.get_status(client, request.mint_id)
        assert status.last_error is not None and "MINT_KEY_SEED" in status.last_error.message
        assert not status.past_pivot
        assert await submissions(stack, request.mint_id) == 0
        await mintsaga.compensate(client, request.mint_id)
        result = await handle.result()
    assert result.status == MintStatus.ROLLED_BACK
    assert await submissions(stack, request.mint_id) == 0
    assert chain_nft(stack, claimed) is None
    assert chain_nft(stack, address_for(other_seed, request.mint_id)) is None
