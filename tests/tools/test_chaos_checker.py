"""The chaos suite's invariant checker (tests/chaos/checker.py): silent on honest mints, and each
of its six invariants catches the bug it is there for.

Each broken build is the product's own worker with one behaviour broken by wrapping an
activity (only for the mints a test picks), run on the session devstack; the faults are real
where a fault is needed. The checker then reads the chain, the database, the pin lists and the
histories, and must name the invariant and the mint.

Collections (issue 18): a MINTED mint naming a collection is checked to be in its group, and
each group's size against the MINTED members in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import typing
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import asyncpg
import httpx
import pytest
from solders.keypair import Keypair
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner

import mintsaga
from chaos.checker import CheckResult, Violation, check
from devstack.config import StackConfig
from devstack.dev_identity import group_authority_file
from devstack.requests import mint_request, new_image
from mintsaga.api.collections import create_collection
from mintsaga.solana.mint_keys import load_keypair_file
from mintsaga.worker import build_workers, mint_activities, running
from mintsaga.workflows import activity_models as io
from mintsaga.workflows.mint_saga import MintSaga
from mintsaga.workflows.models import MintRequest, MintResult, MintStatus
from tests.saga_support import activity_name, pinata_call, running_worker, settings_for, wait_for

pytestmark = pytest.mark.integration

Activity = Callable[..., Awaitable[Any]]
Wrapper = Callable[[Activity], Activity]
Behaviour = Callable[[Activity, Any], Awaitable[Any]]


# ------------------------------------------------------------------------ broken behaviours


def broken(mint_ids: Collection[str], behaviour: Behaviour) -> Wrapper:
    """Wrapper: for these mints the activity does `behaviour(original, arg)` instead."""

    def wrapper(original: Activity) -> Activity:
        async def wrapped(arg: Any) -> Any:
            if arg.mint_id in mint_ids:
                return await behaviour(original, arg)
            return await original(arg)

        # The converter reads the input and result types from the annotations.
        hints = typing.get_type_hints(original)
        wrapped.__annotations__ = {"arg": next(iter(hints.values())), "return": hints["return"]}
        return activity.defn(name=activity_name(original))(wrapped)

    return wrapper


def refuse(kind: str, message: str = "refused for good") -> Behaviour:
    """Fail with a classified failure Temporal does not retry (`permanent` compensates before
    the pivot; `needs_operator` waits for one)."""

    async def behaviour(original: Activity, arg: Any) -> Any:
        raise ApplicationError(message, {"kind": kind}, type="Refused", non_retryable=True)

    return behaviour


async def sql(stack: StackConfig, statement: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(stack.direct_database_url)
    try:
        return list(await conn.fetch(statement, *args))
    finally:
        await conn.close()


async def unpin_everywhere(stack: StackConfig, cid: str) -> None:
    # Either may answer "not pinned": that is fine here. A 429 is not: the whole suite's
    # traffic can exhaust Pinata's 180 requests a minute, so it is waited out.
    answer = await pinata_call(stack, "DELETE", f"/pinning/unpin/{cid}")
    assert answer.status_code in (200, 400), answer.text  # 400: not pinned
    async with httpx.AsyncClient(timeout=10) as http:
        await http.post(f"{stack.url('kubo')}/api/v0/pin/rm", params={"arg": cid})


async def solana(stack: StackConfig, method: str, params: list[Any]) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    async with httpx.AsyncClient(timeout=10) as http:
        answer = (await http.post(stack.url("solana-1"), json=body)).json()
    assert "error" not in answer, answer
    return answer["result"]


def queue() -> str:
    return f"checker-{uuid.uuid4().hex[:8]}"


async def mint(client: Client, request: MintRequest, task_queue: str) -> MintResult:
    return await (await mintsaga.start_mint(client, request, queue=task_queue)).result()


def of(result: CheckResult, invariant: int) -> list[Violation]:
    return [v for v in result.violations if v.invariant == invariant]


def mints_of(result: CheckResult, invariant: int) -> set[str | None]:
    return {v.mint_id for v in of(result, invariant)}


async def new_collection(stack: StackConfig, max_size: int = 10) -> str:
    """A fresh collection on the session stack (a key no other test uses); its key."""
    key = f"checker-{uuid.uuid4().hex[:8]}"
    await create_collection(
        settings_for(stack), key=key, name="Checker", symbol="CHK", max_size=max_size
    )
    return key


def statuses(result: CheckResult) -> dict[str, str]:
    return {m.mint_id: m.status for m in result.mints}


# ------------------------------------------------------------------------ the clean case


async def test_honest_mints_break_no_invariant(stack: StackConfig, client: Client) -> None:
    """One MINTED; one ROLLED_BACK by a permanent failure after its uploads (pins released);
    one waiting for an operator at prepare_transaction (its pins live), then compensated.
    The first two name a collection: one member in the group, a size of one."""
    key = await new_collection(stack)
    minted, rolled_back = (mint_request(stack, collection=key) for _ in range(2))
    waiting = mint_request(stack)
    wrap = {"prepare_transaction": _prepare_refusing({rolled_back.mint_id}, {waiting.mint_id})}
    task_queue = queue()
    async with running_worker(stack, client, task_queue, wrap=wrap):
        results = await asyncio.gather(
            mint(client, minted, task_queue), mint(client, rolled_back, task_queue)
        )
        await mintsaga.start_mint(client, waiting, queue=task_queue)
        await wait_for(client, waiting.mint_id, lambda s: s.awaiting_operator)
        assert [r.status for r in results] == [MintStatus.MINTED, MintStatus.ROLLED_BACK]

        requests = [minted, rolled_back, waiting]
        first = await check(stack, client, requests, pins="mints")
        assert first.violations == []
        assert statuses(first) == {
            minted.mint_id: "MINTED",
            rolled_back.mint_id: "ROLLED_BACK",
            waiting.mint_id: "AWAITING_OPERATOR",
        }
        outcome = next(m for m in first.mints if m.mint_id == minted.mint_id)
        assert (outcome.mint_address, outcome.metadata_cid) == (
            results[0].mint_address,
            results[0].metadata_cid,
        )

        await mintsaga.compensate(client, waiting.mint_id)  # the operator rolls it back
        handle = client.get_workflow_handle(waiting.workflow_id, result_type=MintResult)
        assert (await handle.result()).status == MintStatus.ROLLED_BACK
        again = await check(stack, client, requests, pins="mints")
    assert again.violations == []
    assert statuses(again)[waiting.mint_id] == "ROLLED_BACK"


def _prepare_refusing(permanent: set[str], needs_operator: set[str]) -> Wrapper:
    """prepare_transaction refused for good for some mints, and for an operator for others."""

    async def behaviour(original: Activity, arg: Any) -> Any:
        kind = "permanent" if arg.mint_id in permanent else "needs_operator"
        return await refuse(kind)(original, arg)

    return broken(permanent | needs_operator, behaviour)


# ----------------------------------------------------------- 1. every mint settled, none lost


async def test_1_a_terminated_workflow_or_a_row_left_mid_stage_is_a_lost_mint(
    stack: StackConfig, client: Client
) -> None:
    never_started, crashed, stuck_row = (mint_request(stack) for _ in range(3))

    async def rollback_forgets_the_row(original: Activity, arg: Any) -> Any:
        return io.StepOut()

    wrap = {
        "prepare_transaction": broken({stuck_row.mint_id}, refuse("permanent")),
        "rollback_mint": broken({stuck_row.mint_id}, rollback_forgets_the_row),
    }
    task_queue = queue()
    async with running_worker(stack, client, task_queue, wrap=wrap):
        # A crashed build: the workflow never gets a worker and is terminated.
        handle = await mintsaga.start_mint(client, crashed, queue=f"nobody-{task_queue}")
        await handle.terminate(reason="the build crashed")
        assert (await mint(client, stuck_row, task_queue)).status == MintStatus.ROLLED_BACK
        result = await check(stack, client, [never_started, crashed, stuck_row], pins="mints")

    assert mints_of(result, 1) == {never_started.mint_id, crashed.mint_id, stuck_row.mint_id}
    text = {v.mint_id: v.message for v in of(result, 1)}
    assert "no workflow" in text[never_started.mint_id]
    assert "TERMINATED" in text[crashed.mint_id]
    assert "DATABASE_UPDATED" in text[stuck_row.mint_id]
    assert statuses(result)[crashed.mint_id] == "LOST"


# ------------------------------------------------------------ 2. a MINTED mint is the right NFT


async def test_2_an_nft_for_the_wrong_owner_or_a_row_naming_other_metadata(
    stack: StackConfig, client: Client
) -> None:
    wrong_owner, wrong_row = mint_request(stack), mint_request(stack)
    somebody_else = str(Keypair().pubkey())

    async def for_somebody_else(original: Activity, arg: Any) -> Any:
        return await original(arg.model_copy(update={"owner": somebody_else}))

    async def checks_nothing(original: Activity, arg: Any) -> Any:
        return io.StepOut()

    async def records_the_image_as_metadata(original: Activity, arg: Any) -> Any:
        return await original(arg.model_copy(update={"metadata_cid": arg.image_cid}))

    owner = {wrong_owner.mint_id}
    wrap = {
        # A build that mints to another wallet, and whose checks look at that wallet too.
        "prepare_transaction": broken(owner, for_somebody_else),
        "verify_nft": broken(owner, for_somebody_else),
        "check_partner_view": broken(owner, for_somebody_else),
        "check_db_consistency": broken(owner, checks_nothing),
        # A build that writes another CID to the row than the NFT's metadata.
        "record_uploads": broken({wrong_row.mint_id}, records_the_image_as_metadata),
    }
    task_queue = queue()
    async with running_worker(stack, client, task_queue, wrap=wrap):
        results = await asyncio.gather(
            *(mint(client, r, task_queue) for r in (wrong_owner, wrong_row))
        )
        assert [r.status for r in results] == [MintStatus.MINTED, MintStatus.MINTED]
        result = await check(stack, client, [wrong_owner, wrong_row], pins="mints")

    assert mints_of(result, 2) == {wrong_owner.mint_id, wrong_row.mint_id}
    text = " | ".join(v.message for v in of(result, 2))
    assert wrong_owner.wallet in text and "row.metadata_cid" in text


async def test_2_a_member_outside_its_group_or_a_group_larger_than_its_minted_members(
    stack: StackConfig, client: Client
) -> None:
    """A build whose claim forgets the collection: the mint ends MINTED outside its group. A
    build that sends the transaction and then rolls back: the group counts a member that is
    not MINTED. A clean member of a third collection: nothing said of it or its group."""
    outside_key, counted_key, clean_key = [await new_collection(stack) for _ in range(3)]
    outside = mint_request(stack, collection=outside_key)
    counted = mint_request(stack, collection=counted_key)
    clean = mint_request(stack, collection=clean_key)

    async def claims_without_the_collection(original: Activity, arg: Any) -> Any:
        return await original(arg.model_copy(update={"collection": None}))

    async def sends_then_fails(original: Activity, arg: Any) -> Any:
        prepared: io.PreparedTx = await original(arg)
        await _land(stack, prepared.tx_base64)
        raise ApplicationError("refused for good", {"kind": "permanent"}, non_retryable=True)

    task_queue = queue()
    wrap = {
        "claim_mint": broken({outside.mint_id}, claims_without_the_collection),
        "admit_mint": broken({outside.mint_id}, claims_without_the_collection),
        "prepare_transaction": broken({counted.mint_id}, sends_then_fails),
    }
    async with running_worker(stack, client, task_queue, wrap=wrap):
        results = await asyncio.gather(
            *(mint(client, r, task_queue) for r in (outside, counted, clean))
        )
        result = await check(stack, client, [outside, counted, clean], pins="mints")

    assert [r.status for r in results] == [
        MintStatus.MINTED,
        MintStatus.ROLLED_BACK,
        MintStatus.MINTED,
    ]
    assert mints_of(result, 2) == {outside.mint_id, None}
    members = " | ".join(v.message for v in of(result, 2) if v.mint_id == outside.mint_id)
    assert f"not a member of its collection {outside_key}" in members
    assert f"row.collection is None, expected {outside_key}" in members
    [group] = [v.message for v in of(result, 2) if v.mint_id is None]
    assert f"collection {counted_key} " in group
    assert "the group's size is 1 but 0 of its mints are MINTED" in group
    assert mints_of(result, 3) == {counted.mint_id}  # its account exists: rolled back unclean
    about_clean = [
        v for v in result.violations if clean.mint_id == v.mint_id or clean_key in v.message
    ]
    assert about_clean == []


async def _land(stack: StackConfig, tx_base64: str) -> None:
    """Send a signed transaction and wait until the node shows its signature."""
    config = {"encoding": "base64", "preflightCommitment": "confirmed"}
    signature = await solana(stack, "sendTransaction", [tx_base64, config])
    for _ in range(50):  # it lands at once; wait for it to show, to be sure
        if (await solana(stack, "getSignatureStatuses", [[signature]]))["value"][0]:
            return
        await asyncio.sleep(0.1)


# ---------------------------------------------------- 3. a ROLLED_BACK mint left nothing behind


async def test_3_a_rolled_back_mint_whose_transaction_was_sent_before_the_pivot(
    stack: StackConfig, client: Client
) -> None:
    request = mint_request(stack)

    async def sends_then_fails(original: Activity, arg: Any) -> Any:
        prepared: io.PreparedTx = await original(arg)
        config = {"encoding": "base64", "preflightCommitment": "confirmed"}
        signature = await solana(stack, "sendTransaction", [prepared.tx_base64, config])
        for _ in range(50):  # it lands at once; wait for it to show, to be sure
            if (await solana(stack, "getSignatureStatuses", [[signature]]))["value"][0]:
                break
            await asyncio.sleep(0.1)
        raise ApplicationError("refused for good", {"kind": "permanent"}, non_retryable=True)

    task_queue = queue()
    wrap = {"prepare_transaction": broken({request.mint_id}, sends_then_fails)}
    async with running_worker(stack, client, task_queue, wrap=wrap):
        outcome = await mint(client, request, task_queue)
        result = await check(stack, client, [request], pins="mints")

    assert outcome.status == MintStatus.ROLLED_BACK
    assert mints_of(result, 3) == {request.mint_id}
    assert outcome.mint_address is not None and outcome.mint_address in of(result, 3)[0].message


# ---------------------------------------------------------- 4. every pin held, every NFT served


async def test_4_compensation_unpinning_a_shared_image_or_forgetting_to_unpin(
    stack: StackConfig, client: Client
) -> None:
    shared = new_image(stack)
    keeper = mint_request(stack, image={"path": shared})
    careless = mint_request(stack, image={"path": shared})
    forgetful = mint_request(stack)

    async def unpins_everything(original: Activity, arg: Any) -> Any:
        rows = await sql(
            stack,
            "UPDATE mint_pins SET released_at = now() WHERE mint_id = $1 RETURNING cid",
            arg.mint_id,
        )
        cids = sorted({r["cid"] for r in rows})
        for cid in cids:  # whoever else holds it
            await unpin_everywhere(stack, cid)
        return io.ReleaseOut(unpinned=tuple(cids))

    async def forgets_to_unpin(original: Activity, arg: Any) -> Any:
        await sql(stack, "UPDATE mint_pins SET released_at = now() WHERE mint_id = $1", arg.mint_id)
        return io.ReleaseOut()

    failing = {careless.mint_id, forgetful.mint_id}
    wrap = {
        "prepare_transaction": broken(failing, refuse("permanent")),
        "release_pins": _release_by_mint(
            {careless.mint_id: unpins_everything, forgetful.mint_id: forgets_to_unpin}
        ),
    }
    task_queue = queue()
    async with running_worker(stack, client, task_queue, wrap=wrap):
        minted = await mint(client, keeper, task_queue)
        undone = await asyncio.gather(*(mint(client, r, task_queue) for r in (careless, forgetful)))
        assert minted.status == MintStatus.MINTED
        assert [r.status for r in undone] == [MintStatus.ROLLED_BACK] * 2
        result = await check(stack, client, [keeper, careless, forgetful], pins="mints")

    assert mints_of(result, 4) == {keeper.mint_id, forgetful.mint_id}
    for violation in of(result, 4):
        if violation.mint_id == keeper.mint_id:  # its image was unpinned under it
            assert minted.image_cid in violation.message
        else:  # the forgotten pins: image and metadata, on the provider that took them
            assert "orphaned pin" in violation.message
    orphans = {v.message.split()[2] for v in of(result, 4) if v.mint_id == forgetful.mint_id}
    assert orphans == {undone[1].image_cid, undone[1].metadata_cid}


def _release_by_mint(behaviours: dict[str, Behaviour]) -> Wrapper:
    async def behaviour(original: Activity, arg: Any) -> Any:
        return await behaviours[arg.mint_id](original, arg)

    return broken(set(behaviours), behaviour)


# -------------------------------------------------------------- 5. no secret in any history


@workflow.defn(name="LeakyMintSaga")
class LeakyMintSaga(MintSaga):
    """The saga under another name, so the session's audit of every `MintSaga` history
    (test_operations) does not trip over this test's deliberate leak."""

    @workflow.run
    async def run(self, request: MintRequest) -> MintResult:
        return await super().run(request)


@contextlib.asynccontextmanager
async def leaky_worker(
    stack: StackConfig, client: Client, task_queue: str, wrap: dict[str, Wrapper]
) -> AsyncIterator[None]:
    settings = settings_for(stack)
    async with mint_activities(settings) as activities:
        wired = [wrap[activity_name(a)](a) if activity_name(a) in wrap else a for a in activities]
        workers = build_workers(
            client,
            settings.tuning,
            task_queue,
            wired,
            workflows=[LeakyMintSaga],
            workflow_runner=UnsandboxedWorkflowRunner(),
        )
        async with running(workers):
            yield


async def test_5_an_error_message_carrying_the_pinata_jwt_and_the_key_seed(
    stack: StackConfig, client: Client
) -> None:
    request = mint_request(stack)
    env = stack.worker_env()
    group_key = load_keypair_file(group_authority_file(stack.state_dir))
    leak = f"Pinata refused {env['PINATA_JWT']} (seed {env['MINT_KEY_SEED']}, group {group_key})"
    task_queue = queue()
    wrap = {"check_ipfs": broken({request.mint_id}, refuse("permanent", leak))}
    async with leaky_worker(stack, client, task_queue, wrap):
        handle = await client.start_workflow(
            LeakyMintSaga.run, request, id=request.workflow_id, task_queue=task_queue
        )
        assert (await handle.result()).status == MintStatus.ROLLED_BACK
    result = await check(stack, client, [request], pins="mints")

    assert mints_of(result, 5) == {request.mint_id}
    assert "PINATA_JWT" in result.violations[0].message
    assert "MINT_KEY_SEED" in result.violations[0].message
    assert "group authority (base58)" in result.violations[0].message


# ------------------------------------------------------------------- 6. the story in order


async def test_6_re_signing_before_expiry_or_skipping_a_stage_in_the_events(
    stack: StackConfig, client: Client
) -> None:
    hasty, skipping = mint_request(stack), mint_request(stack)
    first_round: set[str] = set()

    async def lost_to_a_lagging_node(original: Activity, arg: Any) -> Any:
        if arg.mint_id in first_round:
            return await original(arg)
        # A node behind the others refuses the first send as expired (the saga waits for
        # the confirmation to decide).
        raise ApplicationError("Blockhash not found", type="BlockhashNotFound", non_retryable=True)

    async def calls_it_expired_at_once(original: Activity, arg: Any) -> Any:
        if arg.mint_id in first_round:
            return await original(arg)
        first_round.add(arg.mint_id)  # the bug: "expired" without waiting for the height
        return io.ConfirmOut(outcome="expired")

    async def records_verified_for_confirmed(original: Activity, arg: Any) -> Any:
        await sql(
            stack,
            """WITH ev AS (INSERT INTO mint_events (mint_id, stage, event_key)
                           VALUES ($1, 'VERIFIED', 'confirmed'))
               UPDATE mints SET stage = 'VERIFIED', signature = $2, slot = $3
               WHERE mint_id = $1""",
            arg.mint_id,
            arg.signature,
            arg.slot,
        )
        return io.StepOut()

    wrap = {
        "send_transaction": broken({hasty.mint_id}, lost_to_a_lagging_node),
        "await_confirmation": broken({hasty.mint_id}, calls_it_expired_at_once),
        "record_minted": broken({skipping.mint_id}, records_verified_for_confirmed),
    }
    task_queue = queue()
    async with running_worker(stack, client, task_queue, wrap=wrap):
        results = await asyncio.gather(*(mint(client, r, task_queue) for r in (hasty, skipping)))
        assert [r.status for r in results] == [MintStatus.MINTED, MintStatus.MINTED]
        result = await check(stack, client, [hasty, skipping], pins="mints")

    assert mints_of(result, 6) == {hasty.mint_id, skipping.mint_id}
    text = {v.mint_id: v.message for v in of(result, 6)}
    assert "re-signed before expiry" in text[hasty.mint_id]
    assert "VERIFIED" in text[skipping.mint_id] and "may not follow" in text[skipping.mint_id]
    assert {v.invariant for v in result.violations} == {6}
