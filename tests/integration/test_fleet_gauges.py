"""The fleet gauges on the devstack: how long a mint has waited for an operator (from when its
wait began, recorded in Postgres, not from its start), the admission gauges, `list --queued`,
and a real `python worker.py` exporting the task queue's capacity and whether the devstack's
Temporal server honours task priorities.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.worker import Worker

import mintsaga
from devstack.config import StackConfig
from devstack.requests import mint_request
from mintsaga.db.fleet_gauges import FleetGauges
from mintsaga.db.mint_store import MintStore
from mintsaga.notices import NoticeType
from mintsaga.observability import metrics
from mintsaga.observability.sampler import awaiting_starts, sample_admission, sample_mints
from mintsaga.observability.temporal_features import task_priorities, task_priorities_supported
from mintsaga.stages import MintStage
from mintsaga.workflows.models import MintStatus
from mintsaga.workflows.saga import MINT_STAGE, MINT_STATUS
from tests.deploy.test_deploy_runtime import WorkerProcess, free_port
from tests.paths import ROOT
from tests.saga_support import run_starter

pytestmark = pytest.mark.integration

# No worker polls this queue: the workflows started on it stay as started, with the search
# attributes they were given, for visibility to list.
IDLE_QUEUE = "fleet-gauges-idle"


@pytest.fixture
async def store(stack: StackConfig) -> AsyncIterator[MintStore]:
    mint_store = await MintStore.connect(stack.database_url, min_size=1, max_size=2)
    try:
        yield mint_store
    finally:
        await mint_store.close()


@pytest.fixture
async def gauges(stack: StackConfig) -> AsyncIterator[FleetGauges]:
    async with FleetGauges.open(stack.database_url) as fleet:
        yield fleet


async def _start_idle(
    stack: StackConfig, client: Client, status: MintStatus
) -> tuple[str, WorkflowHandle[object, object]]:
    """A MintSaga workflow nobody runs, listed with `MintStatus=status`."""
    request = mint_request(stack)
    handle: WorkflowHandle[object, object] = await client.start_workflow(
        "MintSaga",
        request,
        id=request.workflow_id,
        task_queue=IDLE_QUEUE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(MINT_STAGE, MintStage.INITIATED.value),
                SearchAttributePair(MINT_STATUS, status.value),
            ]
        ),
    )
    return request.mint_id, handle


async def _eventually_listed(client: Client, workflow_id: str, query: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        ids = [execution.id async for execution in client.list_workflows(query)]
        if workflow_id in ids:
            return
        assert time.monotonic() < deadline, f"{workflow_id} not listed by {query}"
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def _claimed(store: MintStore, mint_id: str) -> AsyncIterator[None]:
    """The mint's row at INITIATED (between claim and pivot) for the block; removed after."""
    tag = uuid.uuid4().hex[:8]
    await store.claim(mint_id, f"user-{tag}", f"wallet-{tag}", None)
    try:
        yield
    finally:
        async with store.pool.acquire() as conn:
            await conn.execute("DELETE FROM mint_events WHERE mint_id = $1", mint_id)
            await conn.execute("DELETE FROM mints WHERE mint_id = $1", mint_id)


# Between the workflow's start and the wait it records: the old gauge (from the start) read
# at least this much; the new one reads only the wait.
STARTED_BEFORE_WAIT_S = 10.0


async def test_a_mint_that_started_long_ago_and_just_began_waiting_has_not_waited_long(
    stack: StackConfig, client: Client, store: MintStore, gauges: FleetGauges
) -> None:
    mint_id, handle = await _start_idle(stack, client, MintStatus.AWAITING_OPERATOR)
    try:
        async with _claimed(store, mint_id):
            await _eventually_listed(
                client, handle.id, f'MintStatus="AWAITING_OPERATOR" AND WorkflowId="{handle.id}"'
            )
            await asyncio.sleep(STARTED_BEFORE_WAIT_S)  # the mint is this old before it waits
            cursor = await store.record_notice(
                mint_id,
                NoticeType.AWAITING_OPERATOR,
                event_key="test-awaiting",
                data={"stage": "INITIATED", "step": "upload_image", "error": "test"},
            )
            assert cursor is not None
            row_since = await _status_at(store, mint_id)

            starts = await awaiting_starts(client, database=gauges)
            assert starts[mint_id] == row_since  # the wait's start, from the row
            started = (await handle.describe()).start_time
            assert starts[mint_id] - started >= timedelta(seconds=STARTED_BEFORE_WAIT_S)

            await sample_mints(client, database=gauges)
            now = datetime.now(UTC)
            gauge = metrics.sample_value("mintsaga_oldest_awaiting_operator_seconds")
            assert gauge is not None
            # The gauge is the longest wait of all: ours unless another mint waits longer.
            longest = (now - min(starts.values())).total_seconds()
            assert abs(gauge - longest) < 5
            if min(starts.values()) == row_since:
                assert gauge < STARTED_BEFORE_WAIT_S / 2  # waited seconds, not since the start

            # A wait that began an hour ago (the row says so) reads as an hour.
            async with store.pool.acquire() as conn:
                await conn.execute(
                    "UPDATE mints SET status_at = now() - interval '1 hour' WHERE mint_id = $1",
                    mint_id,
                )
            await sample_mints(client, database=gauges)
            gauge = metrics.sample_value("mintsaga_oldest_awaiting_operator_seconds")
            assert gauge is not None and 3600 <= gauge < 3600 + 60
    finally:
        await handle.terminate("test over")


@workflow.defn(name="MintSaga", sandboxed=False)  # a test module: not re-imported in a sandbox
class WaitingSince:
    """Stands in for a MintSaga whose row says nothing (recorded by an older worker): it
    answers the `status` query with the field the sampler reads, as MintSaga's StatusView."""

    def __init__(self) -> None:
        self._since: str | None = None

    @workflow.run
    async def run(self, since: str) -> None:
        self._since = since
        await workflow.wait_condition(lambda: False)

    @workflow.query(name="status")
    def status(self) -> dict[str, object]:
        return {"stage": "INITIATED", "awaiting_since": self._since}


async def test_without_a_row_the_wait_starts_when_the_workflow_says(
    client: Client, gauges: FleetGauges
) -> None:
    queue = f"fleet-gauges-{uuid.uuid4().hex[:8]}"
    mint_id = f"t-{uuid.uuid4().hex[:10]}"
    since = datetime.now(UTC) - timedelta(minutes=7)
    async with Worker(client, task_queue=queue, workflows=[WaitingSince]):
        handle = await client.start_workflow(
            WaitingSince.run,
            since.isoformat().replace("+00:00", "Z"),
            id=f"mint-{mint_id}",
            task_queue=queue,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(MINT_STAGE, MintStage.INITIATED.value),
                    SearchAttributePair(MINT_STATUS, MintStatus.AWAITING_OPERATOR.value),
                ]
            ),
        )
        try:
            await _eventually_listed(
                client, handle.id, f'MintStatus="AWAITING_OPERATOR" AND WorkflowId="{handle.id}"'
            )
            # No row in Postgres: the database knows nothing, the workflow's answer counts.
            assert mint_id not in await gauges.awaiting_since([mint_id])
            starts = await awaiting_starts(client, database=gauges)
            assert starts[mint_id] == since
            starts = await awaiting_starts(client)  # no database at all: the same
            assert starts[mint_id] == since
        finally:
            await handle.terminate("test over")


async def _status_at(store: MintStore, mint_id: str) -> datetime:
    async with store.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT status, status_at FROM mints WHERE mint_id = $1", mint_id)
    assert row is not None and row["status"] == "AWAITING_OPERATOR"
    value: datetime = row["status_at"]
    return value


async def test_the_admission_gauges_count_the_queue_and_the_mints_before_the_pivot(
    stack: StackConfig, store: MintStore, gauges: FleetGauges
) -> None:
    # Other mints may come and go meanwhile: tried until nothing else moved between the reads.
    for _ in range(10):
        before = await gauges.admission_counts()
        mint_id, queued_id = f"held-{uuid.uuid4().hex[:10]}", f"queued-{uuid.uuid4().hex[:10]}"
        async with _claimed(store, mint_id):
            async with store.pool.acquire() as conn:
                await conn.execute(
                    "INSERT INTO mint_admission_queue (mint_id) VALUES ($1)", queued_id
                )
            try:
                during = await sample_admission(gauges)
            finally:
                async with store.pool.acquire() as conn:
                    await conn.execute(
                        "DELETE FROM mint_admission_queue WHERE mint_id = $1", queued_id
                    )
            # Past the pivot (sent): no longer held.
            async with store.pool.acquire() as conn:
                await conn.execute(
                    "UPDATE mints SET stage = $2 WHERE mint_id = $1",
                    mint_id,
                    MintStage.BLOCKCHAIN_SUBMITTED.value,
                )
            after_pivot = await gauges.admission_counts()
        if during == (before[0] + 1, before[1] + 1) and after_pivot == before:
            break
    else:
        raise AssertionError(f"counts moved under every try: {before} {during} {after_pivot}")
    assert metrics.sample_value("mintsaga_admission_queued") == during[0]
    assert metrics.sample_value("mintsaga_admission_held") == during[1]


async def test_list_queued_lists_only_the_mints_waiting_at_admission(
    stack: StackConfig, client: Client
) -> None:
    queued_id, queued = await _start_idle(stack, client, MintStatus.QUEUED)
    running_id, running = await _start_idle(stack, client, MintStatus.IN_PROGRESS)
    try:
        await _eventually_listed(client, queued.id, 'MintStatus="QUEUED"')
        await _eventually_listed(client, running.id, 'MintStatus="IN_PROGRESS"')
        listed = {row["mint_id"]: row for row in await mintsaga.list_mints(client, queued=True)}
        assert queued_id in listed and running_id not in listed
        assert listed[queued_id]["status"] == "QUEUED"
        assert {row["status"] for row in listed.values()} == {"QUEUED"}
        everything = {row["mint_id"] for row in await mintsaga.list_mints(client)}
        assert {queued_id, running_id} <= everything
        # The same through the CLI, as an operator runs it.
        ran = await run_starter({**os.environ, **stack.worker_env()}, "list", "--queued", "--json")
        printed = {row["mint_id"]: row["status"] for row in ran.json()["mints"]}
        assert printed.get(queued_id) == "QUEUED" and running_id not in printed
        text = await run_starter({**os.environ, **stack.worker_env()}, "list", "--queued")
        assert text.returncode == 0 and queued_id in text.stdout and running_id not in text.stdout
    finally:
        await queued.terminate("test over")
        await running.terminate("test over")
    # A terminated mint no longer waits: not listed as queued.
    deadline = time.monotonic() + 15
    while queued_id in {row["mint_id"] for row in await mintsaga.list_mints(client, queued=True)}:
        assert time.monotonic() < deadline, "a terminated mint is still listed as queued"
        await asyncio.sleep(0.2)


async def test_the_devstack_server_honours_task_priorities(client: Client) -> None:
    found = await task_priorities(client)
    assert found.supported, found
    assert found.server_version  # the devstack's `temporal server start-dev` reports it
    assert await task_priorities_supported(client)


@pytest.fixture
def worker_process(stack: StackConfig, tmp_path: Path) -> Iterator[WorkerProcess]:
    port, queue = free_port(), f"gauges-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        **stack.worker_env(),
        "METRICS_PORT": str(port),
        "TEMPORAL_TASK_QUEUE": queue,
        "TASK_QUEUE_CAPACITY": "1234",
        "HEALTH_CHECK_INTERVAL_S": "0",
        "PIN_REPAIR_INTERVAL_S": "0",
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "worker.py"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:
        yield WorkerProcess(process, port, queue, log)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)


def test_the_worker_exports_capacity_priorities_and_admission(
    worker_process: WorkerProcess,
) -> None:
    worker_process.wait_for("/readyz", 200)
    deadline = time.monotonic() + 60
    while True:
        text = httpx.get(f"http://127.0.0.1:{worker_process.port}/metrics", timeout=10).text
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        # The samplers' first round may still be running: wait for its mint counts.
        if ("mintsaga_mints", (("status", "QUEUED"),)) in samples or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert samples[("mintsaga_task_queue_capacity", ())] == 1234
    assert samples[("mintsaga_task_priorities_supported", ())] == 1
    assert ("mintsaga_mints", (("status", "QUEUED"),)) in samples
    assert "temporal task priorities honoured" in worker_process.log.read_text()
