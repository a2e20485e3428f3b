"""The lean saga (issue 19, docs/design.md "Local activities"): which steps a happy mint runs
as regular activities and which as local ones, and what it upserts, read from its history.

The figures (actions, events, CPU) are measured by `make bench`; this pins the shape down, so a
step that slips back to a regular activity, or an upsert per stage, fails here.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, cast

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

import mintsaga
from bench.figures import local_activity_types, regular_activity_types, timer_durations
from devstack.config import StackConfig
from devstack.requests import mint_request
from mintsaga.worker import activity_name
from mintsaga.workflows import activity_models as io
from mintsaga.workflows.models import MintStatus
from mintsaga.workflows.policies import SAGA_STEPS
from mintsaga.workflows.steps import LOCAL_ATTEMPT_TIMEOUT
from tests.saga_support import running_worker

pytestmark = pytest.mark.integration

E = EventType
ASKED_WAIT = timedelta(seconds=3)  # what a failed attempt's next_retry_delay asks for
REGULAR = ["upload_assets", "send_transaction", "await_confirmation"]
LOCAL = {
    "open_mint",
    "check_ipfs",
    "check_rpc",
    "compute_image_cid",
    "admit_mint",
    "record_uploads",
    "prepare_transaction",
    "record_minted",
    "verify_nft",
    "check_gateways",
    "check_partner_view",
    "check_db_consistency",
    "finish_mint",
    "record_notices",
}


async def test_a_happy_mint_runs_three_regular_activities_and_the_rest_locally(
    stack: StackConfig, client: Client, worker: str
) -> None:
    request = mint_request(stack)
    handle = await mintsaga.start_mint(client, request, queue=worker)
    assert (await handle.result()).status == MintStatus.MINTED
    history = await handle.fetch_history()

    assert regular_activity_types(history.events) == REGULAR
    local = local_activity_types(history.events)
    assert set(local) == LOCAL
    # each of them is marked local in the policy table (which also has rollback_mint)
    assert {step.name for step in SAGA_STEPS if step.local} >= LOCAL
    # the notices of a run of local activities go in one batch: at most one per workflow task
    tasks = sum(e.event_type == E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED for e in history.events)
    assert local.count("record_notices") <= tasks
    # the starter set MintStage/MintStatus: the saga upserts the patch's version and MINTED only
    upserts = [
        dict(e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields)
        for e in history.events
        if e.event_type == E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
    ]
    assert [sorted(u) for u in upserts] == [
        ["TemporalChangeVersion"],
        ["MintStage", "MintStatus"],
    ]
    assert [json.loads(upserts[1][k].data) for k in ("MintStage", "MintStatus")] == [
        "MINTED",
        "MINTED",
    ]
    # no timer is cancelled: the delay notice's is left to run
    assert not any(e.event_type == E.EVENT_TYPE_TIMER_CANCELED for e in history.events)


@pytest.mark.parametrize(
    "first_attempt", ["fails", "outlasts_the_local_timeout", "fails_asking_for_a_wait"]
)
async def test_a_local_step_that_fails_runs_its_other_attempts_as_a_regular_activity(
    stack: StackConfig, client: Client, first_attempt: str
) -> None:
    """prepare_transaction's local attempt fails (a retryable error, as a dependency's would
    be) or runs past LOCAL_ATTEMPT_TIMEOUT: the step's attempts go on as a regular activity,
    retried by the server rather than held in the workflow task, and the mint ends MINTED.
    When the failure asks for a wait (a provider's Retry-After, the service's backoff: its
    `next_retry_delay`), the regular activity starts after it, as the server's retry would."""
    calls: list[float] = []

    def fail_first(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapped(arg: io.PrepareIn) -> io.PreparedTx:
            calls.append(time.monotonic())
            if len(calls) == 1 and first_attempt == "fails":
                raise ApplicationError("the first attempt fails", type="Injected")
            if len(calls) == 1 and first_attempt == "fails_asking_for_a_wait":
                raise ApplicationError(
                    "the first attempt fails", type="Injected", next_retry_delay=ASKED_WAIT
                )
            if len(calls) == 1:
                await asyncio.sleep(LOCAL_ATTEMPT_TIMEOUT.total_seconds() + 1)
            return cast(io.PreparedTx, await original(arg))

        return activity.defn(name=activity_name(original))(wrapped)

    queue = f"lean-{uuid.uuid4().hex[:6]}"
    request = mint_request(stack)
    async with running_worker(stack, client, queue, wrap={"prepare_transaction": fail_first}):
        handle = await mintsaga.start_mint(client, request, queue=queue)
        result = await handle.result()
    assert result.status == MintStatus.MINTED
    assert len(calls) == 2
    history = await handle.fetch_history()
    timers = timer_durations(history.events)
    if first_attempt == "fails_asking_for_a_wait":
        assert calls[1] - calls[0] >= ASKED_WAIT.total_seconds()
        assert ASKED_WAIT in timers
    else:
        assert ASKED_WAIT not in timers
    if first_attempt == "fails":  # nothing asked: the regular activity starts at once
        assert calls[1] - calls[0] < ASKED_WAIT.total_seconds()
    assert regular_activity_types(history.events) == [
        "upload_assets",
        "prepare_transaction",
        "send_transaction",
        "await_confirmation",
    ]
    assert local_activity_types(history.events).count("prepare_transaction") == 1  # the failed one
