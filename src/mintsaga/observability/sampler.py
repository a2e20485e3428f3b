"""Gauges sampled on a timer: mints by status, the longest operator wait, admission, queue
backlog, wallet.

The worker runs these while it serves `/metrics` (every `INTERVAL_S`): mints are counted from
Temporal visibility (the `MintStatus` search attribute), the backlog comes from
`DescribeTaskQueue` with stats, and the system wallet's balance from `getBalance` through the
worker's own RPC pool (so its failover and breakers apply). With a `FleetDatabase` (the worker
passes `db.fleet_gauges.FleetGauges`) the admission gauges come from Postgres, and so does when
each wait for an operator began (`mints.status_at`); without one, or for a mint whose row does
not say it waits (recorded by an older worker), the wait's start is the workflow's own
`awaiting_since` (its `status` query). A failed sample keeps the last value and is logged once
until sampling works again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowExecution

from mintsaga.observability.metrics import (
    MINT_STATUSES,
    set_admission,
    set_backlog,
    set_collection,
    set_mints,
    set_wallet_lamports,
)

log = logging.getLogger("mintsaga.metrics")

INTERVAL_S = 15.0
WORKFLOW_TYPE = "MintSaga"
RUNNING_ONLY = frozenset({"QUEUED", "IN_PROGRESS", "AWAITING_OPERATOR"})
OLDEST_SCAN_LIMIT = 1000  # stuck mints looked at for the oldest (visibility lists newest first)
WORKFLOW_ID_PREFIX = "mint-"  # workflows.models.workflow_id_for (a higher layer: not imported)
STATUS_QUERY = "status"  # MintSaga's query; its answer carries `awaiting_since`
STATUS_QUERY_TIMEOUT = timedelta(seconds=5)


class FleetDatabase(Protocol):
    """What the sampler reads from Postgres (`db.fleet_gauges.FleetGauges`)."""

    async def admission_counts(self) -> tuple[int, int]:
        """(mints queued at admission, mints between claim and pivot)."""
        ...

    async def awaiting_since(self, mint_ids: Sequence[str]) -> dict[str, datetime]:
        """Of these mints, those whose row says AWAITING_OPERATOR, with when that began."""
        ...

    async def collection_counts(self) -> list[tuple[str, int, int, int]]:
        """Per collection: (key, members minted, members minting, max size)."""
        ...


def mint_query(status: str) -> str:
    """The visibility query for mints in `status` (running ones only while unfinished)."""
    query = f'WorkflowType="{WORKFLOW_TYPE}" AND MintStatus="{status}"'
    if status in RUNNING_ONLY:
        query += ' AND ExecutionStatus="Running"'
    return query


async def sample_mints(
    client: Client, *, database: FleetDatabase | None = None, now: datetime | None = None
) -> dict[str, int]:
    """Set `mintsaga_mints{status}` and `mintsaga_oldest_awaiting_operator_seconds`: how long
    the running mint AWAITING_OPERATOR that began waiting first has waited (not since its
    start: a mint started a day ago that began waiting a minute ago has waited a minute)."""
    counts = {
        status: (await client.count_workflows(mint_query(status))).count for status in MINT_STATUSES
    }
    starts = await awaiting_starts(client, database=database)
    oldest = min(starts.values(), default=None)
    now = now or datetime.now(UTC)
    age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else None
    set_mints(counts, oldest_awaiting_s=age)
    return counts


async def awaiting_starts(
    client: Client, *, database: FleetDatabase | None = None
) -> dict[str, datetime]:
    """The running mints AWAITING_OPERATOR (at most `OLDEST_SCAN_LIMIT`), each with when its
    wait began: its row's `status_at` (with `database`), else its workflow's `awaiting_since`;
    one that says neither is left out."""
    waiting = [
        execution
        async for execution in client.list_workflows(
            mint_query("AWAITING_OPERATOR"), limit=OLDEST_SCAN_LIMIT
        )
    ]
    recorded = await database.awaiting_since([_mint_id(e) for e in waiting]) if database else {}
    starts: dict[str, datetime] = {}
    for execution in waiting:
        mint_id = _mint_id(execution)
        since = recorded.get(mint_id) or await _awaiting_since(client, execution)
        if since is not None:
            starts[mint_id] = since
    return starts


def _mint_id(execution: WorkflowExecution) -> str:
    return execution.id.removeprefix(WORKFLOW_ID_PREFIX)


async def _awaiting_since(client: Client, execution: WorkflowExecution) -> datetime | None:
    """When the workflow began waiting, as its `status` query says (None when it does not
    answer, or is not waiting any more: such a mint is left out of this sample)."""
    handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
    try:
        view: Any = await handle.query(STATUS_QUERY, rpc_timeout=STATUS_QUERY_TIMEOUT)
    except Exception as exc:  # no worker answering, a query failed: the next sample asks again
        log.debug("awaiting_since of %s: no answer (%s)", execution.id, exc)
        return None
    since = view.get("awaiting_since") if isinstance(view, dict) else None
    if not since:
        return None
    moment = datetime.fromisoformat(since) if isinstance(since, str) else since
    if not isinstance(moment, datetime):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # the workflow's clock: UTC


async def sample_admission(database: FleetDatabase) -> tuple[int, int]:
    """Set `mintsaga_admission_queued` and `mintsaga_admission_held` (fleet-wide, Postgres)."""
    queued, held = await database.admission_counts()
    set_admission(queued=queued, held=held)
    return queued, held


async def sample_collections(database: FleetDatabase) -> None:
    """Set `mintsaga_collection_members{collection,state}` and `..._max_size` (Postgres)."""
    for key, minted, minting, max_size in await database.collection_counts():
        set_collection(key, minted=minted, minting=minting, max_size=max_size)


async def sample_backlog(client: Client, task_queue: str) -> int:
    """Set `mintsaga_task_queue_backlog{task_queue}`: workflow plus activity tasks waiting."""
    total = 0
    for kind in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
        answer = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
                task_queue_type=kind,
                report_stats=True,
            )
        )
        total += answer.stats.approximate_backlog_count
    set_backlog(task_queue, total)
    return total


async def sample_wallet(balance: Callable[[], Awaitable[int]]) -> int:
    """Set `mintsaga_system_wallet_lamports` from `balance()` (e.g. `SolanaMinter.balance`)."""
    lamports = await balance()
    set_wallet_lamports(lamports)
    return lamports


@contextlib.asynccontextmanager
async def every(
    interval_s: float, sample: Callable[[], Awaitable[object]], *, name: str
) -> AsyncIterator[None]:
    """Run `sample()` now and then every `interval_s` while the block runs."""

    async def loop() -> None:
        failing = False
        while True:
            try:
                await sample()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    log.warning("sampling %s failed: %s", name, exc)
                failing = True
            else:
                if failing:
                    log.info("sampling %s works again", name)
                failing = False
            await asyncio.sleep(interval_s)

    task = asyncio.create_task(loop(), name=f"sample {name}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def sampling_visibility(
    client: Client,
    task_queue: str,
    *,
    also: Sequence[str] = (),
    interval_s: float = INTERVAL_S,
    database: FleetDatabase | None = None,
) -> AsyncIterator[None]:
    """Mints by status, the longest operator wait and the backlog of `task_queue` (and of the
    queues `also` names: the Pinata queue), every `interval_s`; with `database`, the admission
    gauges too, and the waits' starts from Postgres."""

    async def sample() -> None:
        await sample_mints(client, database=database)
        if database is not None:
            await sample_admission(database)
            await sample_collections(database)
        for queue in (task_queue, *also):
            await sample_backlog(client, queue)

    async with every(interval_s, sample, name="mints and backlog"):
        yield
