"""The health schedule, and the health table for `mintsaga health`.

The worker creates (or updates) the Temporal Schedule `mintsaga-health` at startup: every
`HEALTH_CHECK_INTERVAL_S` seconds (60 by default; 0: this worker leaves the schedule alone) it
starts the `HealthCheck` workflow on the worker's task queue. Only one run at a time (a run
still going when the next is due is skipped), and a run that finds no worker gives up after
`RUN_TIMEOUT`. Pausing it by hand (`temporal schedule toggle --pause`) survives worker restarts.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowHandle,
)

from mintsaga.setting_readers import SettingsError
from mintsaga.workflows.health import SCHEDULED_RUN_ID_PREFIX, HealthCheck, HealthRow

log = logging.getLogger("mintsaga.health")

HEALTH_SCHEDULE_ID = "mintsaga-health"
INTERVAL_SETTING = "HEALTH_CHECK_INTERVAL_S"
DEFAULT_INTERVAL = timedelta(minutes=1)
RUN_TIMEOUT = timedelta(minutes=5)


def interval_from_env(env: Mapping[str, str] | None = None) -> timedelta | None:
    """`HEALTH_CHECK_INTERVAL_S` (seconds, default 60); None when it is 0 (no schedule)."""
    env = os.environ if env is None else env
    raw = env.get(INTERVAL_SETTING, "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    try:
        seconds = int(raw)
    except ValueError:
        raise SettingsError(
            f"{INTERVAL_SETTING}: {raw!r} is not a whole number of seconds"
        ) from None
    if seconds == 0:
        return None
    if seconds < 10:
        raise SettingsError(
            f"{INTERVAL_SETTING}: {seconds} s is too often (at least 10, or 0 for no schedule)"
        )
    return timedelta(seconds=seconds)


UPLOAD_INTERVAL_SETTING = "HEALTH_UPLOAD_PROBE_INTERVAL_S"
DEFAULT_UPLOAD_INTERVAL = timedelta(minutes=15)


def upload_interval_from_env(env: Mapping[str, str] | None = None) -> timedelta:
    """`HEALTH_UPLOAD_PROBE_INTERVAL_S` (seconds, default 900): how often a scheduled health
    run probes an upload (the gateways are probed every run, with the canary CID); 0: every
    run. Runs by hand (`starter.py health`) always probe it."""
    env = os.environ if env is None else env
    raw = env.get(UPLOAD_INTERVAL_SETTING, "").strip()
    if not raw:
        return DEFAULT_UPLOAD_INTERVAL
    try:
        seconds = int(raw)
    except ValueError:
        raise SettingsError(
            f"{UPLOAD_INTERVAL_SETTING}: {raw!r} is not a whole number of seconds"
        ) from None
    if seconds < 0:
        raise SettingsError(f"{UPLOAD_INTERVAL_SETTING}: {seconds} is negative (0: every run)")
    return timedelta(seconds=seconds)


def health_schedule(task_queue: str, every: timedelta = DEFAULT_INTERVAL) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            HealthCheck.run,
            id=SCHEDULED_RUN_ID_PREFIX,  # the server appends the scheduled time
            task_queue=task_queue,
            execution_timeout=RUN_TIMEOUT,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=every),
        state=ScheduleState(note="MintSaga health probes (created by the worker)"),
    )


async def ensure_health_schedule(
    client: Client,
    task_queue: str,
    *,
    every: timedelta = DEFAULT_INTERVAL,
    schedule_id: str = HEALTH_SCHEDULE_ID,
) -> str:
    """Create the schedule, or bring an existing one to this spec (its paused state and note
    are kept); returns "created" or "updated". Safe for every worker to call at startup."""
    desired = health_schedule(task_queue, every)
    try:
        await client.create_schedule(schedule_id, desired)
        return "created"
    except ScheduleAlreadyRunningError:
        pass

    def update(current: ScheduleUpdateInput) -> ScheduleUpdate:
        desired.state = current.description.schedule.state
        return ScheduleUpdate(schedule=desired)

    await client.get_schedule_handle(schedule_id).update(update)
    return "updated"


async def maintain_health_schedule(client: Client, task_queue: str) -> None:
    """The worker's startup step: ensure the schedule unless `HEALTH_CHECK_INTERVAL_S=0`.

    A failure is logged, not fatal: minting does not depend on the health probes.
    """
    every = interval_from_env()
    if every is None:
        log.info("%s=0: this worker leaves the health schedule alone", INTERVAL_SETTING)
        return
    try:
        done = await ensure_health_schedule(client, task_queue, every=every)
    except Exception as exc:
        log.error("could not create the health schedule %s: %s", HEALTH_SCHEDULE_ID, exc)
        return
    log.info(
        "health schedule %s %s: every %.0f s on %s",
        HEALTH_SCHEDULE_ID,
        done,
        every.total_seconds(),
        task_queue,
    )


async def run_health_check(
    client: Client, task_queue: str, *, run_timeout: timedelta = timedelta(minutes=2)
) -> tuple[str, list[HealthRow]]:
    """Run `HealthCheck` once now; (its workflow id, the rows)."""
    workflow_id = f"{HEALTH_SCHEDULE_ID}-now-{uuid.uuid4().hex[:12]}"
    rows = await client.execute_workflow(
        HealthCheck.run,
        id=workflow_id,
        task_queue=task_queue,
        execution_timeout=run_timeout,
        static_summary="health check run by hand",
    )
    return workflow_id, list(rows)


async def latest_scheduled(
    client: Client, *, schedule_id: str = HEALTH_SCHEDULE_ID
) -> tuple[str, list[HealthRow]] | None:
    """The newest scheduled run's id and rows (waiting for it if it still runs); None if the
    schedule has not started one yet."""
    description = await client.get_schedule_handle(schedule_id).describe()
    actions = description.info.recent_actions
    if not actions:
        return None
    newest = max(actions, key=lambda action: action.started_at)
    action = newest.action
    if not isinstance(action, ScheduleActionExecutionStartWorkflow):
        return None  # the schedule only starts workflows; anything else is not ours
    workflow_id = action.workflow_id
    handle: WorkflowHandle[HealthCheck, list[HealthRow]] = client.get_workflow_handle_for(
        HealthCheck.run, workflow_id
    )
    rows = await handle.result()
    return workflow_id, list(rows)


COLUMNS = ("CHECK", "TARGET", "OK", "LATENCY MS", "DETAIL")


def table(rows: Sequence[HealthRow]) -> list[str]:
    """The rows as aligned text lines, a header first."""
    cells: list[tuple[str, ...]] = [COLUMNS]
    for row in rows:
        cells.append(
            (
                row.check,
                row.target,
                "ok" if row.ok else "FAIL",
                f"{row.latency_s * 1000:.0f}",
                row.detail,
            )
        )
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS) - 1)]
    return [
        "  ".join([*(c.ljust(w) for c, w in zip(line[:-1], widths, strict=True)), line[-1]])
        for line in cells
    ]


def as_json(workflow_id: str, rows: Sequence[HealthRow]) -> dict[str, Any]:
    return {
        "workflow_id": workflow_id,
        "ok": all(row.ok for row in rows),
        "rows": [row.model_dump(mode="json") for row in rows],
    }
