"""Gauges sampled on a timer: mints by status, the oldest stuck mint, queue backlog, wallet.

The worker runs these while it serves `/metrics` (every `INTERVAL_S`): mints are counted from
Temporal visibility (the `MintStatus` search attribute), the backlog comes from
`DescribeTaskQueue` with stats, and the system wallet's balance from `getBalance` through the
worker's own RPC pool (so its failover and breakers apply). A failed sample keeps the last
value and is logged once until sampling works again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime

from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from mintsaga.observability.metrics import (
    MINT_STATUSES,
    set_backlog,
    set_mints,
    set_wallet_lamports,
)

log = logging.getLogger("mintsaga.metrics")

INTERVAL_S = 15.0
WORKFLOW_TYPE = "MintSaga"
RUNNING_ONLY = frozenset({"IN_PROGRESS", "AWAITING_OPERATOR"})
OLDEST_SCAN_LIMIT = 1000  # stuck mints looked at for the oldest (visibility lists newest first)


def mint_query(status: str) -> str:
    """The visibility query for mints in `status` (running ones only while unfinished)."""
    query = f'WorkflowType="{WORKFLOW_TYPE}" AND MintStatus="{status}"'
    if status in RUNNING_ONLY:
        query += ' AND ExecutionStatus="Running"'
    return query


async def sample_mints(client: Client, *, now: datetime | None = None) -> dict[str, int]:
    """Set `mintsaga_mints{status}` and `mintsaga_oldest_awaiting_operator_seconds`."""
    counts = {
        status: (await client.count_workflows(mint_query(status))).count for status in MINT_STATUSES
    }
    oldest: datetime | None = None
    async for execution in client.list_workflows(
        mint_query("AWAITING_OPERATOR"), limit=OLDEST_SCAN_LIMIT
    ):
        if oldest is None or execution.start_time < oldest:
            oldest = execution.start_time
    now = now or datetime.now(UTC)
    age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else None
    set_mints(counts, oldest_awaiting_s=age)
    return counts


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
) -> AsyncIterator[None]:
    """Mints by status, the oldest stuck one and the backlog of `task_queue` (and of the queues
    `also` names: the Pinata queue), every `interval_s`."""

    async def sample() -> None:
        await sample_mints(client)
        for queue in (task_queue, *also):
            await sample_backlog(client, queue)

    async with every(interval_s, sample, name="mints and backlog"):
        yield
