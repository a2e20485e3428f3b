"""SOLANA_COMMITMENT against the devstack's chain (issue 15), otherwise the worker's default
settings. The devstack's ledger reports a landed signature `confirmed` until 32 slots later
(12.8 s at 400 ms slots), then `finalized`, and reads at `finalized` see the bank 32 slots
behind the tip (devstack/solana/history.py, ledger.py): the same shape as Agave under Tower
BFT. With `finalized`, the confirmation wait returns only once the signature is finalized and
verify_nft reads the NFT at finalized; with the default, both stop at confirmed as before.
"""

from __future__ import annotations

import time
import typing
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from solders.keypair import Keypair
from temporalio import activity
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

import mintsaga
from devstack.config import StackConfig
from devstack.requests import mint_request
from mintsaga.worker import mint_activities
from mintsaga.workflows import activity_models as io
from mintsaga.workflows.models import MintStatus
from tests.saga_support import activity_name, rpc, running_worker, settings_for

pytestmark = pytest.mark.integration

Activities = dict[str, Callable[..., Any]]


@pytest.fixture
async def finalized(stack: StackConfig) -> AsyncIterator[Activities]:
    async with mint_activities(settings_for(stack, SOLANA_COMMITMENT="finalized")) as wired:
        yield {activity_name(a): a for a in wired}


@pytest.fixture
async def default(stack: StackConfig) -> AsyncIterator[Activities]:
    async with mint_activities(settings_for(stack)) as wired:
        yield {activity_name(a): a for a in wired}


async def prepared_unsent(activities: Activities) -> tuple[io.PreparedTx, io.VerifyIn]:
    """A claimed mint signed and recorded but never sent, and what verify_nft will expect."""
    env = ActivityEnvironment()
    mint_id = f"cm-{uuid.uuid4().hex[:10]}"
    wallet = str(Keypair().pubkey())
    claim = io.ClaimIn(mint_id=mint_id, user_id=f"u-{mint_id}", wallet=wallet)
    claimed: io.ClaimOut = await env.run(activities["claim_mint"], claim)
    prepare = io.PrepareIn(mint_id=mint_id, owner=wallet, name="C", symbol="C", uri="ipfs://x")
    prepared: io.PreparedTx = await env.run(activities["prepare_transaction"], prepare)
    verify = io.VerifyIn(
        mint_id=mint_id,
        mint_address=claimed.mint_address,
        owner=wallet,
        name="C",
        symbol="C",
        uri="ipfs://x",
    )
    return prepared, verify


def confirm_input(prepared: io.PreparedTx, wait_s: float) -> io.ConfirmIn:
    return io.ConfirmIn(
        mint_id="unused",
        signature=prepared.signature,
        tx_base64=prepared.tx_base64,
        last_valid_block_height=prepared.last_valid_block_height,
        wait_s=wait_s,
    )


def status_of(stack: StackConfig, signature: str) -> str | None:
    """The signature's confirmationStatus as the RPC reports it (not through our minter)."""
    (value,) = rpc(stack, "getSignatureStatuses", [[signature]])["value"]
    return None if value is None else str(value["confirmationStatus"])


def mint_seen_at(stack: StackConfig, mint_address: str, commitment: str) -> bool:
    params = [mint_address, {"encoding": "base64", "commitment": commitment}]
    return rpc(stack, "getAccountInfo", params)["value"] is not None


async def test_finalized_the_wait_returns_only_once_the_signature_is_finalized(
    stack: StackConfig, finalized: Activities
) -> None:
    """The wait asks for 10 s; the transaction lands at the first rebroadcast (2 s) and is
    finalized 12.8 s later: the wait goes on past its 10 s (stretched after the confirmed
    status) and returns with the signature finalized, not merely confirmed."""
    prepared, verify = await prepared_unsent(finalized)
    started = time.monotonic()
    out: io.ConfirmOut = await ActivityEnvironment().run(
        finalized["await_confirmation"], confirm_input(prepared, wait_s=10.0)
    )
    took = time.monotonic() - started
    assert out.outcome == "confirmed" and out.slot is not None
    assert status_of(stack, prepared.signature) == "finalized"
    assert mint_seen_at(stack, verify.mint_address, "finalized")
    assert 12.0 < took < 40.0, took


async def test_by_default_the_wait_returns_at_confirmed_as_before(
    stack: StackConfig, default: Activities
) -> None:
    prepared, verify = await prepared_unsent(default)
    started = time.monotonic()
    out: io.ConfirmOut = await ActivityEnvironment().run(
        default["await_confirmation"], confirm_input(prepared, wait_s=10.0)
    )
    took = time.monotonic() - started
    assert out.outcome == "confirmed"
    assert status_of(stack, prepared.signature) == "confirmed"  # not finalized yet
    assert not mint_seen_at(stack, verify.mint_address, "finalized")
    assert took < 10.0, took


async def test_finalized_verification_reads_the_nft_at_finalized(
    stack: StackConfig, default: Activities, finalized: Activities
) -> None:
    """A mint confirmed a moment ago (default wait): verify_nft with the default settings
    passes at once, while a read at finalized cannot see the NFT yet; verify_nft with
    `finalized` waits until the NFT is visible at finalized, then passes."""
    prepared, verify = await prepared_unsent(default)
    confirmed: io.ConfirmOut = await ActivityEnvironment().run(
        default["await_confirmation"], confirm_input(prepared, wait_s=10.0)
    )
    assert confirmed.outcome == "confirmed"

    started = time.monotonic()
    await ActivityEnvironment().run(default["verify_nft"], verify)
    assert time.monotonic() - started < 5.0
    assert not mint_seen_at(stack, verify.mint_address, "finalized")  # read at confirmed

    started = time.monotonic()
    await ActivityEnvironment().run(finalized["verify_nft"], verify)
    took = time.monotonic() - started
    assert mint_seen_at(stack, verify.mint_address, "finalized")
    assert status_of(stack, prepared.signature) == "finalized"
    assert 5.0 < took < 25.0, took  # waited for the root, inside the step's 30 s


def status_when_recorded(
    stack: StackConfig, seen: list[str | None]
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Wrapper of record_minted (run right after the confirmation wait): notes the signature's
    status at that moment, then records as usual."""

    def wrapper(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapped(arg: Any) -> Any:
            seen.append(status_of(stack, arg.signature))
            return await original(arg)

        hints = typing.get_type_hints(original)
        wrapped.__annotations__ = {"arg": next(iter(hints.values())), "return": hints["return"]}
        return activity.defn(name=activity_name(original))(wrapped)

    return wrapper


async def test_a_saga_with_finalized_is_minted_from_a_finalized_signature(
    stack: StackConfig, client: Client
) -> None:
    """The whole saga on a worker with SOLANA_COMMITMENT=finalized (the workflow is the same:
    the setting is the worker's, no history changes): MINTED, and the transaction was already
    finalized when the confirmation wait handed it on."""
    queue = f"q-{uuid.uuid4().hex[:8]}"
    request = mint_request(stack)
    seen: list[str | None] = []
    async with running_worker(
        stack,
        client,
        queue,
        env={"SOLANA_COMMITMENT": "finalized"},
        wrap={"record_minted": status_when_recorded(stack, seen)},
    ):
        handle = await mintsaga.start_mint(client, request, queue=queue)
        result = await handle.result()
    assert result.status == MintStatus.MINTED
    assert result.mint_address is not None
    assert seen and seen[0] == "finalized", seen
    assert mint_seen_at(stack, result.mint_address, "finalized")
