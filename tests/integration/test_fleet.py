"""A fleet on one machine: `worker.py` processes sharing the saga's task queue and its Pinata queue.

- Settings: worker tuning and the Pinata rate's arithmetic (no server).
- Two workers (`make test`): six mints at once; every Pinata step runs on the Pinata queue, whose
  activities Temporal starts no faster than `PINATA_ACTIVITIES_PER_SECOND` across both processes;
  and a SIGTERM'd worker finishes the activity it runs (the drain of a rolling deploy) while the
  other worker carries the mint on, no activity failing for it.
- Three workers (`make fleet`, marked slow): the devstack's Pinata limited to 60 requests a
  minute, a batch of mints, one worker SIGKILLed mid-batch; every mint completes once (the chaos
  checker's invariants), each worker took part, and Pinata never saw more than its limit in a
  minute nor refused a request.

Worker identities are Temporal's default, `<pid>@<host>`, so a history names the process that
ran each activity.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import Client, WorkflowHandle, WorkflowHistory

import mintsaga
from chaos.checker import check
from chaos.processes import Workers
from devstack.config import StackConfig
from devstack.requests import mint_request
from mintsaga.setting_readers import SettingsError
from mintsaga.worker_tuning import (
    PINATA_HEADROOM,
    PINATA_REQUESTS_PER_ACTIVITY,
    Pollers,
    WorkerTuning,
    pinata_activities_per_second,
)
from mintsaga.workflows.models import MintRequest, MintResult, MintStatus
from mintsaga.workflows.policies import PINATA, PINATA_STEPS, provider_task_queue
from tests.saga_support import add_fault, pinata_room

# Temporal splits a task queue into partitions (4 by default), each dispatching its share of the
# rate with a token of burst: over any span, at most rate x span + this many activities start.
PARTITION_BURST = 5
FAILED_EVENTS = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED,
}


# ------------------------------------------------------------------ settings (no server)


def test_worker_tuning_defaults_are_the_sdks_ours_and_the_pinata_plans() -> None:
    tuning = WorkerTuning.from_env({})
    assert tuning == WorkerTuning()
    assert (tuning.max_concurrent_activities, tuning.max_concurrent_workflow_tasks) == (100, 16)
    assert tuning.max_concurrent_local_activities == 20
    assert tuning.max_cached_workflows == 1000
    assert tuning.workflow_pollers == tuning.activity_pollers == Pollers(maximum=5)
    assert tuning.drain_s == 30
    # The free plan's 60 requests a minute when no plan is named (PINATA_REQUESTS_PER_MINUTE).
    assert tuning.pinata_activities_per_second == pytest.approx(0.4)


def test_worker_tuning_from_the_environment() -> None:
    tuning = WorkerTuning.from_env(
        {
            "WORKER_MAX_CONCURRENT_ACTIVITIES": "40",
            "WORKER_MAX_CONCURRENT_WORKFLOW_TASKS": "20",
            "WORKER_MAX_CONCURRENT_LOCAL_ACTIVITIES": "7",
            "WORKER_MAX_CACHED_WORKFLOWS": "0",
            "WORKER_WORKFLOW_POLLERS": "1",  # no sticky cache: one poller is enough
            "WORKER_ACTIVITY_POLLERS": "auto:2:50",
            "WORKER_DRAIN_S": "90",
            "PINATA_ACTIVITIES_PER_SECOND": "0.5",
        }
    )
    assert (tuning.max_concurrent_activities, tuning.max_concurrent_workflow_tasks) == (40, 20)
    assert tuning.max_concurrent_local_activities == 7
    assert tuning.max_cached_workflows == 0
    assert tuning.workflow_pollers == Pollers(maximum=1)
    assert tuning.activity_pollers == Pollers(minimum=2, maximum=50)
    assert tuning.drain_s == 90
    assert tuning.pinata_activities_per_second == 0.5
    assert WorkerTuning.from_env({"WORKER_ACTIVITY_POLLERS": "auto"}).activity_pollers == Pollers(
        minimum=1, maximum=100
    )
    # 0: no task-queue limit (a plan without one, or Kubo only)
    assert (
        WorkerTuning.from_env({"PINATA_ACTIVITIES_PER_SECOND": "0"}).pinata_activities_per_second
        is None
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WORKER_MAX_CONCURRENT_ACTIVITIES", "0"),
        ("WORKER_MAX_CONCURRENT_WORKFLOW_TASKS", "lots"),
        ("WORKER_MAX_CONCURRENT_WORKFLOW_TASKS", "1"),  # the sticky cache needs 2
        ("WORKER_MAX_CONCURRENT_LOCAL_ACTIVITIES", "0"),
        ("WORKER_MAX_CACHED_WORKFLOWS", "-1"),
        ("WORKER_WORKFLOW_POLLERS", "1"),  # the sticky cache needs 2
        ("WORKER_ACTIVITY_POLLERS", "auto:9:3"),
        ("WORKER_ACTIVITY_POLLERS", "auto:x"),
        ("WORKER_DRAIN_S", "1.5"),
        ("PINATA_ACTIVITIES_PER_SECOND", "-1"),
        ("PINATA_ACTIVITIES_PER_SECOND", "nan"),
        ("PINATA_ACTIVITIES_PER_SECOND", "fast"),
    ],
)
def test_a_bad_tuning_setting_is_refused_by_name(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        WorkerTuning.from_env({variable: value})


@pytest.mark.parametrize("requests_per_minute", [60, 180, 1000])
def test_the_pinata_rate_keeps_the_worst_mix_inside_the_plan_with_headroom(
    requests_per_minute: int,
) -> None:
    rate = pinata_activities_per_second(requests_per_minute)
    worst_requests_per_minute = rate * 60 * PINATA_REQUESTS_PER_ACTIVITY
    assert worst_requests_per_minute <= requests_per_minute * PINATA_HEADROOM + 0.1
    assert worst_requests_per_minute >= requests_per_minute * PINATA_HEADROOM - 0.1


# ------------------------------------------------------------------ reading the histories


@dataclass(frozen=True)
class Started:
    """One activity attempt, as its history tells it."""

    at: float  # epoch seconds
    activity: str
    task_queue: str
    identity: str
    attempt: int


def attempts(history: WorkflowHistory) -> list[Started]:
    scheduled: dict[int, tuple[str, str]] = {}
    seen = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            scheduled[event.event_id] = (attrs.activity_type.name, attrs.task_queue.name)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            name, queue = scheduled[started.scheduled_event_id]
            at = event.event_time.ToDatetime().timestamp()
            seen.append(Started(at, name, queue, started.identity, started.attempt))
    return seen


def failures(history: WorkflowHistory) -> list[str]:
    return [EventType.Name(e.event_type) for e in history.events if e.event_type in FAILED_EVENTS]


def pids(identities: Iterable[str]) -> set[int]:
    return {int(identity.split("@", 1)[0]) for identity in identities}


def overruns(starts: list[float], rate: float, burst: float) -> list[str]:
    """Spans where more activities started than `rate` allows (plus the partitions' burst)."""
    starts = sorted(starts)
    found = []
    for i, first in enumerate(starts):
        for j in range(i + 1, len(starts)):
            span = starts[j] - first
            if j - i + 1 > rate * span + burst:
                found.append(f"{j - i + 1} starts in {span:.2f} s")
    return found


def admin(stack: StackConfig, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, stack.url("admin") + path, timeout=10, **kwargs)
    response.raise_for_status()
    return response.json()


def pinata_per_minute(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """Pinata requests per wall-clock minute between two `GET /stats` answers."""
    old = before["requests_per_minute"].get("pinata", {})
    new = after["requests_per_minute"].get("pinata", {})
    return {minute: n - old.get(minute, 0) for minute, n in new.items() if n > old.get(minute, 0)}


def refused(before: dict[str, Any], after: dict[str, Any]) -> int:
    return after["rate_limited"]["pinata"] - before["rate_limited"]["pinata"]


async def start_all(
    client: Client, requests: list[MintRequest], queue: str
) -> list[WorkflowHandle[Any, MintResult]]:
    return list(
        await asyncio.gather(*(mintsaga.start_mint(client, r, queue=queue) for r in requests))
    )


@contextlib.asynccontextmanager
async def fleet(stack: StackConfig, queue: str, count: int, **env: str) -> AsyncIterator[Workers]:
    workers = Workers(stack, queue, count, env=env, name=queue)
    try:
        await workers.start_all()
        yield workers
    finally:
        await asyncio.to_thread(workers.stop_all)


# ------------------------------------------------------------------ two workers (make test)

PAIR_RATE = 1.0  # Pinata activities a second, for both processes together


@pytest.fixture(scope="module")
async def pair(stack: StackConfig) -> AsyncIterator[Workers]:
    queue = f"fleet-pair-{uuid.uuid4().hex[:6]}"
    async with fleet(stack, queue, 2, PINATA_ACTIVITIES_PER_SECOND=str(PAIR_RATE)) as workers:
        yield workers


@pytest.mark.integration
async def test_two_worker_processes_share_the_mints_and_one_pinata_rate(
    stack: StackConfig, client: Client, pair: Workers
) -> None:
    await pair.ensure_running()
    requests = [mint_request(stack) for _ in range(6)]
    # Room in Pinata's minute for this test's 18 uploads and checks (and the health probes'),
    # so a refusal counted below is this fleet's doing, not the earlier tests'.
    await pinata_room(stack, 3 * len(requests) + 20)
    before = admin(stack, "GET", "/stats")
    handles = await start_all(client, requests, pair.task_queue)
    results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)
    assert [r.status for r in results] == [MintStatus.MINTED] * len(requests)

    ran = [a for h in handles for a in attempts(await h.fetch_history())]
    pinata_queue = provider_task_queue(pair.task_queue, PINATA)
    # the lean saga (issue 19): one Pinata activity a mint; check_ipfs runs locally
    assert {a.activity for a in ran if a.task_queue == pinata_queue} == {"upload_assets"}
    assert all((a.task_queue == pinata_queue) == (a.activity in PINATA_STEPS) for a in ran)
    # Both processes took part, in the Pinata queue too.
    assert pids(a.identity for a in ran) == {pair.pid(0), pair.pid(1)}
    # (Which process took the six Pinata activities is left to chance: one a mint since the
    # lean saga, too few to require both.)
    # Temporal started the 6 Pinata activities (one upload_assets a mint) no faster than the
    # one fleet-wide rate (unpaced, six mints start theirs within a few seconds of each other).
    pinata_starts = [a.at for a in ran if a.task_queue == pinata_queue]
    assert len(pinata_starts) == len(requests)
    assert overruns(pinata_starts, PAIR_RATE, PARTITION_BURST) == []
    assert refused(before, admin(stack, "GET", "/stats")) == 0


async def running_attempt(handle: WorkflowHandle[Any, Any], activities: set[str]) -> Any:
    """The first of `activities` a worker has started, once one has."""
    while True:
        description = await handle.describe()
        for pending in description.raw_description.pending_activities:
            if (
                pending.activity_type.name in activities
                and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
            ):
                return pending
        await asyncio.sleep(0.1)


@pytest.mark.integration
async def test_a_sigtermed_worker_finishes_its_running_activity_and_loses_none(
    stack: StackConfig, client: Client, pair: Workers
) -> None:
    await pair.ensure_running()
    # Each upload takes 6 s at Pinata: long enough to be caught running.
    add_fault(stack, target="pinata", kind="latency", delay_ms=6000, match="/pinning/pinFileToIPFS")
    request = mint_request(stack)
    (handle,) = await start_all(client, [request], pair.task_queue)
    pending = await asyncio.wait_for(running_attempt(handle, {"upload_assets"}), 60)
    draining = next(
        slot for slot in range(2) if pair.pid(slot) in pids([pending.last_worker_identity])
    )
    other = 1 - draining
    pair.sigterm(draining)
    terminated = time.monotonic()

    assert (await asyncio.wait_for(handle.result(), 120)).status == MintStatus.MINTED
    exit_code = await pair.wait(draining, 45)
    assert exit_code == 0, f"the drained worker exited with {exit_code}"
    drained_for = time.monotonic() - terminated
    history = await handle.fetch_history()
    assert failures(history) == []  # nothing timed out, failed or was cancelled by the drain
    ran = attempts(history)
    assert all(a.attempt == 1 for a in ran), [(a.activity, a.attempt) for a in ran]
    # The activity the SIGTERM caught finished on its worker, as the first attempt...
    caught = [a for a in ran if a.activity == pending.activity_type.name]
    assert [pids([a.identity]) for a in caught] == [{pair.pid(draining)}]
    # ...and the mint went on on the other worker.
    after = [a for a in ran if a.activity in ("send_transaction", "await_confirmation")]
    assert pids(a.identity for a in after) == {pair.pid(other)}
    log = pair.log_path(draining).read_text()
    assert "draining" in log and "worker stopped" in log
    assert drained_for < 40


# ------------------------------------------------------------------ three workers (make fleet)

FLEET_MINTS = 30
FLEET_PINATA_RPM = 60  # low, so the limit binds: 30 mints make 60 Pinata requests


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(900)
async def test_three_workers_hold_pinata_limit_and_finish_every_mint_through_a_kill(
    stack: StackConfig, client: Client
) -> None:
    rate = pinata_activities_per_second(FLEET_PINATA_RPM)
    admin(stack, "POST", "/pinata/limits", json={"requests_per_minute": FLEET_PINATA_RPM})
    queue = f"fleet-three-{uuid.uuid4().hex[:6]}"
    try:
        async with fleet(stack, queue, 3, PINATA_ACTIVITIES_PER_SECOND=str(rate)) as workers:
            identities = {slot: workers.pid(slot) for slot in range(3)}
            before = admin(stack, "GET", "/stats")
            requests = [mint_request(stack) for _ in range(FLEET_MINTS)]
            began = time.monotonic()
            handles = await start_all(client, requests, queue)
            results = [asyncio.ensure_future(h.result()) for h in handles]
            # Mid-batch: a third of the mints done, the rest waiting or running.
            for finished, result in enumerate(asyncio.as_completed(results), start=1):
                await result
                if finished == FLEET_MINTS // 3:
                    break
            workers.sigkill(0)
            killed_at = sum(r.done() for r in results)
            outcomes = await asyncio.wait_for(asyncio.gather(*results), 600)
            wall_s = time.monotonic() - began
            after = admin(stack, "GET", "/stats")
    finally:
        limit = stack.pinata_requests_per_minute
        admin(stack, "POST", "/pinata/limits", json={"requests_per_minute": limit})

    assert Counter(r.status for r in outcomes) == {MintStatus.MINTED: FLEET_MINTS}
    checked = await check(stack, client, requests, pins="mints")
    assert checked.violations == []
    for request in requests:  # one workflow per mint, never a second run
        runs = [w async for w in client.list_workflows(f'WorkflowId = "{request.workflow_id}"')]
        assert len(runs) == 1, request.mint_id
    histories = [await h.fetch_history() for h in handles]
    ran = [a for history in histories for a in attempts(history)]
    assert pids(a.identity for a in ran) == set(identities.values())
    per_minute = pinata_per_minute(before, after)
    assert max(per_minute.values()) <= FLEET_PINATA_RPM, per_minute
    assert refused(before, after) == 0
    pinata_queue = provider_task_queue(queue, PINATA)
    by_worker = Counter(
        next(s for s, pid in identities.items() if pids([a.identity]) == {pid})
        for a in ran
        if a.task_queue == pinata_queue
    )
    print(
        f"\nfleet: {FLEET_MINTS} mints on 3 workers (worker 0 SIGKILLed after {killed_at}) in "
        f"{wall_s:.0f} s = {FLEET_MINTS * 60 / wall_s:.1f} mints/min; Pinata limit "
        f"{FLEET_PINATA_RPM}/min, queue rate {rate} activities/s; Pinata requests per minute "
        f"{sorted(per_minute.values(), reverse=True)}; Pinata activities per worker "
        f"{dict(sorted(by_worker.items()))}"
    )
