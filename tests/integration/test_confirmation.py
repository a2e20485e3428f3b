"""The confirmation wait on its own, against the devstack's chain: it times out (retryable)
while the signature is unseen and the blockhash valid, rebroadcasts the same bytes, and calls a
transaction expired only once the block height passed its lastValidBlockHeight."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from solders.keypair import Keypair
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from devstack.config import StackConfig
from mintsaga.worker import mint_activities
from mintsaga.workflows import activity_models as io
from tests.saga_support import activity_name, settings_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def activities(stack: StackConfig) -> AsyncIterator[dict[str, Callable[..., Any]]]:
    async with mint_activities(settings_for(stack)) as wired:
        yield {activity_name(a): a for a in wired}


async def prepared_unsent(activities: dict[str, Callable[..., Any]]) -> io.PreparedTx:
    """A claimed mint whose transaction is signed and recorded but never sent."""
    env = ActivityEnvironment()
    mint_id = f"c-{uuid.uuid4().hex[:10]}"
    wallet = str(Keypair().pubkey())
    claim = io.ClaimIn(mint_id=mint_id, user_id=f"u-{mint_id}", wallet=wallet)
    await env.run(activities["claim_mint"], claim)
    prepare = io.PrepareIn(mint_id=mint_id, owner=wallet, name="C", symbol="C", uri="ipfs://x")
    prepared: io.PreparedTx = await env.run(activities["prepare_transaction"], prepare)
    return prepared


def confirm_input(prepared: io.PreparedTx, wait_s: float) -> io.ConfirmIn:
    return io.ConfirmIn(
        mint_id="unused",
        signature=prepared.signature,
        tx_base64=prepared.tx_base64,
        last_valid_block_height=prepared.last_valid_block_height,
        wait_s=wait_s,
    )


async def test_unseen_transaction_times_out_retryably_then_expires(
    stack: StackConfig, activities: dict[str, Callable[..., Any]]
) -> None:
    prepared = await prepared_unsent(activities)
    confirm = activities["await_confirmation"]
    with pytest.raises(ApplicationError) as waited:
        # Shorter than the first rebroadcast (2 s): the transaction is never sent.
        await ActivityEnvironment().run(confirm, confirm_input(prepared, wait_s=1.0))
    assert waited.value.type == "ConfirmationTimeout" and not waited.value.non_retryable

    async with httpx.AsyncClient(timeout=10) as http:
        warped = await http.post(stack.url("admin") + "/solana/warp", json={"slots": 160})
        warped.raise_for_status()
    outcome: io.ConfirmOut = await ActivityEnvironment().run(
        confirm, confirm_input(prepared, wait_s=5.0)
    )
    assert outcome.outcome == "expired"


async def test_the_wait_rebroadcasts_the_same_bytes_until_they_land(
    activities: dict[str, Callable[..., Any]],
) -> None:
    prepared = await prepared_unsent(activities)
    outcome: io.ConfirmOut = await ActivityEnvironment().run(
        activities["await_confirmation"], confirm_input(prepared, wait_s=10.0)
    )
    assert outcome.outcome == "confirmed" and outcome.slot is not None


async def test_rebroadcasts_reach_the_backups_when_the_primary_swallows_them(
    stack: StackConfig, activities: dict[str, Callable[..., Any]]
) -> None:
    """The primary answers every sendTransaction with the signature and never executes it: the
    wait's rebroadcasts go to every endpoint at once, so the backups land it."""
    prepared = await prepared_unsent(activities)
    async with httpx.AsyncClient(timeout=10) as http:
        swallow = {"target": "solana-1", "kind": "drop_transaction", "match": "sendTransaction"}
        (await http.post(stack.url("admin") + "/faults", json=swallow)).raise_for_status()
    outcome: io.ConfirmOut = await ActivityEnvironment().run(
        activities["await_confirmation"], confirm_input(prepared, wait_s=10.0)
    )
    assert outcome.outcome == "confirmed" and outcome.slot is not None
