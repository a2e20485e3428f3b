"""What a backend is told (issue 17), end to end on the devstack: the notices each mint records
(`mint_events` rows with a type, the `mints` row's status), delay notices, an ended mint that
answers from its row after its history is deleted, and admission control.

The webhook delivery of these notices is tests/integration/test_webhooks.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

import mintsaga
from bench.figures import local_activity_types, regular_activity_types
from devstack.config import StackConfig
from devstack.requests import mint_request
from mintsaga.errors import endpoint_name
from mintsaga.workflows import activity_models as io
from mintsaga.workflows.models import MintRequest, MintStatus
from mintsaga.workflows.saga import MINT_STAGE, MINT_STATUS
from tests.integration.test_webhooks import FROM_NOW
from tests.saga_support import add_fault, clear_faults, running_worker, wait_for
from tests.tools.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

UPLOADS = ("upload_assets",)  # the lean saga's one upload step (issue 19)
HAPPY_PATH_STAGES = [
    "INITIATED",
    "IPFS_UPLOADED",
    "DATABASE_UPDATED",
    "BLOCKCHAIN_SUBMITTED",
    "BLOCKCHAIN_CONFIRMED",
    "VERIFIED",
]


async def fetch(stack: StackConfig, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(stack.direct_database_url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def notices(stack: StackConfig, mint_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The mint's notices, in order: (type, data)."""
    rows = await fetch(
        stack,
        """SELECT type, detail::text AS detail FROM mint_events
           WHERE mint_id = $1 AND type IS NOT NULL ORDER BY id""",
        mint_id,
    )
    return [(r["type"], json.loads(r["detail"])) for r in rows]


async def row_of(stack: StackConfig, mint_id: str) -> asyncpg.Record:
    [row] = await fetch(stack, "SELECT * FROM mints WHERE mint_id = $1", mint_id)
    return row


async def eventually(check: Any, within_s: float = 30.0) -> Any:
    """Poll `check` (async, returns a truthy value when done); the notices are recorded off
    the mint's path, a moment after the status they tell."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        value = await check()
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.2)


async def test_a_mint_tells_each_stage_in_order_then_minted_and_its_row_follows(
    stack: StackConfig, client: Client, worker: str
) -> None:
    request = mint_request(stack)
    result = await (await mintsaga.start_mint(client, request, queue=worker)).result()
    assert result.status == MintStatus.MINTED

    told = await notices(stack, request.mint_id)
    assert [t for t, _ in told] == ["mint.in_progress"] * len(HAPPY_PATH_STAGES) + ["mint.minted"]
    assert [d["stage"] for _, d in told] == [*HAPPY_PATH_STAGES, "MINTED"]
    assert all(d["mint_id"] == request.mint_id for _, d in told)
    assert [d["status"] for _, d in told][-2:] == ["IN_PROGRESS", "MINTED"]
    minted = told[-1][1]
    assert minted["mint_address"] == result.mint_address
    assert minted["signature"] == result.signature
    assert (minted["image_cid"], minted["metadata_cid"]) == (result.image_cid, result.metadata_cid)
    assert minted["metadata_uri"] == result.metadata_uri
    assert minted["owner"] == request.wallet and minted["user_id"] == request.user_id

    row = await row_of(stack, request.mint_id)
    assert (row["stage"], row["status"]) == ("MINTED", "MINTED")
    assert row["metadata_uri"] == result.metadata_uri


def _upload_faults(stack: StackConfig) -> None:
    """Every IPFS upload fails (Pinata answers 503, Kubo 500); the pre-mint check still passes."""
    add_fault(stack, target="pinata", kind="status", status=503, match="/pinning/pinFileToIPFS")
    add_fault(stack, target="kubo", kind="status", status=500, match="/api/v0/add")


async def test_a_mint_stuck_at_ipfs_tells_delayed_and_awaiting_then_resumed_and_minted(
    stack: StackConfig, client: Client, worker: str
) -> None:
    request = mint_request(stack)
    _upload_faults(stack)
    try:
        handle = await mintsaga.start_mint(client, request, queue=worker)
        await wait_for(
            client, request.mint_id, lambda s: "upload_assets" in s.awaiting_steps, within_s=180
        )

        async def waiting_row() -> asyncpg.Record | None:
            row = await row_of(stack, request.mint_id)
            return row if row["status"] == "AWAITING_OPERATOR" else None

        row = await eventually(waiting_row)
        assert row is not None, "the row never showed AWAITING_OPERATOR while the mint waited"
        assert row["status_detail"] is not None and "upload_" in row["status_detail"]
        told = await notices(stack, request.mint_id)
        types = [t for t, _ in told]
        assert types.count("mint.delayed") == 1
        assert types.index("mint.delayed") < types.index("mint.awaiting_operator")
        cause = told[types.index("mint.delayed")][1]["cause"]
        assert cause["step"] in UPLOADS and cause["service"] == "ipfs"
        assert "waiting for an operator" in cause["reason"] and cause["error"]["type"]
        waiting = told[types.index("mint.awaiting_operator")][1]
        assert waiting["step"] in UPLOADS and waiting["status"] == "AWAITING_OPERATOR"
        assert waiting["error"]["type"] and waiting["error"]["message"]
    finally:
        clear_faults(stack)
    await mintsaga.retry(client, request.mint_id)
    result = await handle.result()
    assert result.status == MintStatus.MINTED

    told = await notices(stack, request.mint_id)
    types = [t for t, _ in told]
    resumed = types.index("mint.resumed")
    assert types.index("mint.awaiting_operator") < resumed < types.index("mint.minted")
    assert told[resumed][1]["step"] in UPLOADS
    assert told[resumed][1]["decision"] == "retry"
    assert types[-1] == "mint.minted" and types.count("mint.delayed") == 1
    row = await row_of(stack, request.mint_id)
    assert (row["stage"], row["status"]) == ("MINTED", "MINTED")


async def test_a_mint_late_by_its_delay_notice_tells_delayed_once_with_the_running_step(
    stack: StackConfig, client: Client, worker: str
) -> None:
    """Not waiting for anyone, only slow: DELAYED once `delay_notice_s` has passed."""
    request = mint_request(stack, options={"delay_notice_s": 2})
    add_fault(stack, target="pinata", kind="latency", delay_ms=6000, match="/pinning/pinFileToIPFS")
    try:
        result = await (await mintsaga.start_mint(client, request, queue=worker)).result()
    finally:
        clear_faults(stack)
    assert result.status == MintStatus.MINTED
    told = await notices(stack, request.mint_id)
    types = [t for t, _ in told]
    assert types.count("mint.delayed") == 1 and "mint.awaiting_operator" not in types
    cause = told[types.index("mint.delayed")][1]["cause"]
    assert "not minted within 2 s" in cause["reason"]
    assert "upload_assets" in cause["running"] and "ipfs" in cause["services"]
    assert types[-1] == "mint.minted"


def _fails_once_for_good() -> Any:
    """A release_pins whose first run fails for good: the compensation fails, the saga is
    FAILED until an operator retries it."""

    def wrapper(original: Any) -> Any:
        failed = False

        @activity.defn(name="release_pins")
        async def release_pins(arg: io.MintRef) -> io.ReleaseOut:
            nonlocal failed
            if not failed:
                failed = True
                raise ApplicationError("injected: unpin refused", non_retryable=True)
            result: io.ReleaseOut = await original(arg)
            return result

        return release_pins

    return wrapper


async def test_a_failed_compensation_is_failed_in_the_row_then_rolled_back_after_retry(
    stack: StackConfig, client: Client
) -> None:
    request = mint_request(stack)
    queue = f"q-{uuid.uuid4().hex[:8]}"
    async with running_worker(stack, client, queue, wrap={"release_pins": _fails_once_for_good()}):
        _upload_faults(stack)
        try:
            handle = await mintsaga.start_mint(client, request, queue=queue)
            await wait_for(
                client, request.mint_id, lambda s: "upload_assets" in s.awaiting_steps, within_s=180
            )
            await mintsaga.compensate(client, request.mint_id)
            await wait_for(client, request.mint_id, lambda s: s.status == MintStatus.FAILED)
        finally:
            clear_faults(stack)

        async def failed_attributes() -> tuple[str | None, str | None] | None:
            # what an operator filters on: the stage is published with the status
            found = (await handle.describe()).typed_search_attributes
            shown = (found.get(MINT_STAGE), found.get(MINT_STATUS))
            return shown if shown[1] == "FAILED" else None

        assert await eventually(failed_attributes) == ("FAILED", "FAILED")

        async def failed_row() -> asyncpg.Record | None:
            row = await row_of(stack, request.mint_id)
            return row if row["status"] == "FAILED" else None

        row = await eventually(failed_row)
        # The claim's compensation ran (stage ROLLED_BACK: the user is free), the pins' did not:
        # the mint is FAILED until an operator retries.
        assert row is not None, "the row never showed FAILED"
        assert row["stage"] in ("FAILED", "ROLLED_BACK")
        types = [t for t, _ in await notices(stack, request.mint_id)]
        assert types[-1] == "mint.failed"
        await mintsaga.retry(client, request.mint_id)
        result = await handle.result()
    assert result.status == MintStatus.ROLLED_BACK
    told = await notices(stack, request.mint_id)
    assert [t for t, _ in told][-2:] == ["mint.resumed", "mint.rolled_back"]
    assert "compensate" in told[-1][1]["reason"]
    row = await row_of(stack, request.mint_id)
    assert (row["stage"], row["status"]) == ("ROLLED_BACK", "ROLLED_BACK")


async def _delete_history(client: Client, workflow_id: str) -> None:
    """`temporal workflow delete`: the history is gone once describe says NOT_FOUND."""
    await client.workflow_service.delete_workflow_execution(
        DeleteWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id),
        )
    )
    # The server deletes in the background (a task of its own, after visibility).
    for _ in range(600):
        try:
            await client.get_workflow_handle(workflow_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return
            raise
        await asyncio.sleep(0.2)
    raise AssertionError(f"{workflow_id} was not deleted within 120 s")


async def _scheduled_activities(client: Client, workflow_id: str) -> list[str]:
    """The activities the run ran: regular ones as scheduled, local ones (the lean saga's,
    issue 19) from their markers."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return regular_activity_types(history.events) + local_activity_types(history.events)


async def test_a_minted_request_started_again_after_its_history_is_deleted_answers_from_its_row(
    stack: StackConfig, client: Client, worker: str
) -> None:
    request = mint_request(stack)
    first = await (await mintsaga.start_mint(client, request, queue=worker)).result()
    assert first.status == MintStatus.MINTED
    counts_sql = """SELECT (SELECT count(*) FROM mint_submissions WHERE mint_id = $1) AS sent,
                           (SELECT count(*) FROM mint_pins WHERE mint_id = $1) AS pins,
                           (SELECT count(*) FROM mint_events WHERE mint_id = $1) AS events"""
    [before] = await fetch(stack, counts_sql, request.mint_id)
    await _delete_history(client, request.workflow_id)

    again = await (await mintsaga.start_mint(client, request, queue=worker)).result()

    assert again.status == MintStatus.MINTED
    assert again.mint_address == first.mint_address
    assert (again.signature, again.slot) == (first.signature, first.slot)
    assert (again.image_cid, again.metadata_cid) == (first.image_cid, first.metadata_cid)
    assert again.metadata_uri == first.metadata_uri
    # It ran nothing: one look at the row; no send, no pin, no notice.
    assert await _scheduled_activities(client, request.workflow_id) == ["open_mint"]
    [after] = await fetch(stack, counts_sql, request.mint_id)
    assert dict(after) == dict(before)


async def test_a_rolled_back_request_started_again_after_its_history_is_deleted_stays_rolled_back(
    stack: StackConfig, client: Client, worker: str
) -> None:
    """A rolled-back mint_id is settled: started again, it answers ROLLED_BACK from its row and
    pins, claims and sends nothing (docs/design.md "Idempotency" says why; README "What a
    backend learns": a new attempt takes a new mint_id)."""
    request = mint_request(stack)
    _upload_faults(stack)
    try:
        handle = await mintsaga.start_mint(client, request, queue=worker)
        await wait_for(
            client, request.mint_id, lambda s: "upload_assets" in s.awaiting_steps, within_s=180
        )
        await mintsaga.compensate(client, request.mint_id)
        first = await handle.result()
    finally:
        clear_faults(stack)
    assert first.status == MintStatus.ROLLED_BACK
    await _delete_history(client, request.workflow_id)

    again = await (await mintsaga.start_mint(client, request, queue=worker)).result()

    assert again.status == MintStatus.ROLLED_BACK and again.reason == first.reason
    assert await _scheduled_activities(client, request.workflow_id) == ["open_mint"]


def _most_at_once(spans: list[tuple[datetime, datetime]]) -> int:
    """The most spans open at one moment (a span closed at t does not overlap one opened at t)."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


@pytest.mark.timeout(900)  # 50 mints, 5 at a time: about a minute alone, more on a busy machine
async def test_with_an_admission_limit_of_5_fifty_mints_hold_at_most_5_slots_and_all_mint(
    stack: StackConfig, client: Client
) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    requests: list[MintRequest] = [mint_request(stack) for _ in range(50)]
    async with running_worker(stack, client, queue, env={"MINT_ADMISSION_LIMIT": "5"}):
        handles = await asyncio.gather(
            *(mintsaga.start_mint(client, r, queue=queue) for r in requests)
        )
        results = await asyncio.wait_for(
            asyncio.gather(*(h.result() for h in handles)), timeout=840
        )
    assert [r.status for r in results] == [MintStatus.MINTED] * 50

    # Between claim and pivot: from the claim's event to the first send's.
    rows = await fetch(
        stack,
        """SELECT mint_id,
                  min(at) FILTER (WHERE event_key = 'claimed') AS claimed,
                  min(at) FILTER (WHERE event_key LIKE 'submitted:%') AS pivot
           FROM mint_events WHERE mint_id = ANY($1::text[]) GROUP BY mint_id""",
        [r.mint_id for r in requests],
    )
    spans = [(r["claimed"], r["pivot"]) for r in rows]
    assert len(spans) == 50 and all(start and end and start < end for start, end in spans)
    assert _most_at_once(spans) == 5  # never more, and the limit was reached
    queued_notices = await fetch(
        stack,
        "SELECT count(*) FROM mint_events WHERE mint_id = ANY($1::text[]) AND type = 'mint.queued'",
        [r.mint_id for r in requests],
    )
    assert queued_notices[0][0] > 0  # some mints waited at admission


OUTAGE_S = 120  # how long the receiver answers 500, from the mint's start
# A mint on the devstack takes about a second (BENCHMARKS.md: one mint's p50 0.87 s); this bound
# leaves room for a busy machine and is a quarter of the outage, so a mint held up by its notices
# cannot pass.
NORMAL_MINT_S = 30


@pytest.mark.timeout(600)
async def test_a_backend_down_for_two_minutes_slows_no_mint_and_gets_every_notice_after(
    stack: StackConfig, client: Client
) -> None:
    """The receiver answers 500 for two minutes from the mint's start: the mint finishes in its
    normal time meanwhile, and once the receiver is back it gets every notice of the mint, in
    order, each once after de-duplication by id, each signed (checked by the receiver with its
    own implementation of the scheme)."""
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    request = mint_request(stack)
    queue = f"q-{uuid.uuid4().hex[:8]}"
    env = {"WEBHOOK_URL": "", "WEBHOOK_SECRET": secret}
    async with WebhookReceiver([secret]) as receiver:
        env["WEBHOOK_URL"] = receiver.url
        # Notices from now on: a new endpoint would start with the day's (every other test's
        # mints in this shared database), and this mint's would wait behind them.
        await fetch(
            stack,
            FROM_NOW,
            endpoint_name(receiver.url),
        )
        receiver.fail_with(500)
        async with running_worker(stack, client, queue, env=env):
            started = time.monotonic()
            result = await (await mintsaga.start_mint(client, request, queue=queue)).result()
            took = time.monotonic() - started
            assert result.status == MintStatus.MINTED
            # Slowed by nothing: done in a mint's normal time, a fraction of the outage, not
            # merely before the receiver came back.
            assert took < NORMAL_MINT_S, (
                f"the mint took {took:.1f} s with the receiver down (at most {NORMAL_MINT_S} s"
                f" expected, the outage is {OUTAGE_S} s): stage seconds {result.stage_seconds},"
                f" retries {result.retries}"
            )
            # Tried meanwhile (an attempt may still be on its way as the result comes), and
            # none accepted.
            try:
                await receiver.wait_for(
                    lambda r: any(a.status == 500 for a in r.attempts), timeout_s=30
                )
            except TimeoutError:
                rows = await fetch(
                    stack,
                    "SELECT * FROM webhook_deliveries WHERE endpoint = $1",
                    endpoint_name(receiver.url),
                )
                pytest.fail(f"no attempt answered 500: {receiver.attempts}, rows {rows}")
            assert receiver.for_mint(request.mint_id) == []
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - started)))
            receiver.fail_with(None)
            await receiver.wait_for(
                lambda r: any(m.type == "mint.minted" for m in r.for_mint(request.mint_id)),
                timeout_s=240,
            )
    got = receiver.for_mint(request.mint_id)
    assert [m.type for m in got] == ["mint.in_progress"] * len(HAPPY_PATH_STAGES) + ["mint.minted"]
    assert [m.json["data"]["stage"] for m in got] == [*HAPPY_PATH_STAGES, "MINTED"]
    assert receiver.rejected == []
    cursors = await fetch(
        stack,
        "SELECT id FROM mint_events WHERE mint_id = $1 AND type IS NOT NULL ORDER BY id",
        request.mint_id,
    )
    assert [m.id for m in got] == [f"evt_{r['id']}" for r in cursors]
    minted = got[-1].json
    assert set(minted) == {"type", "timestamp", "data"}
    assert minted["data"]["mint_address"] == result.mint_address
    assert minted["data"]["signature"] == result.signature


async def test_a_notice_never_touches_another_requests_row_and_minted_stays_minted(
    stack: StackConfig,
) -> None:
    """The same mint_id started by another request (its history gone, its claim refused as a
    Conflict) tells nothing under the owner's mint_id; a MINTED row keeps its status."""
    from mintsaga.db.mint_store import MintStore

    store = await MintStore.connect(stack.direct_database_url, min_size=1, max_size=2)
    try:
        request = mint_request(stack)
        await store.claim(request.mint_id, request.user_id, request.wallet, None)
        theirs = {"stage": "INITIATED", "user_id": "someone-else", "owner": request.wallet}
        assert (
            await store.record_notice(
                request.mint_id, "mint.in_progress", event_key="x:1", data=theirs
            )
            is None
        )
        assert await store.mint_notices(request.mint_id) == []
        await store.set_stage(request.mint_id, "MINTED", event_key="minted")
        ours = {"stage": "MINTED", "user_id": request.user_id, "owner": request.wallet}
        await store.record_notice(request.mint_id, "mint.minted", event_key="y:1", data=ours)
        late = {**ours, "stage": "INITIATED"}
        assert await store.record_notice(
            request.mint_id, "mint.in_progress", event_key="y:2", data=late
        )
        row = await row_of(stack, request.mint_id)
        assert (row["stage"], row["status"]) == ("MINTED", "MINTED")
    finally:
        await store.close()
