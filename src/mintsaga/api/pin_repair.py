"""The pin repair's schedule, and its settings.

The worker creates (or updates) the Temporal Schedule `mintsaga-pin-repair` at startup: every
`PIN_REPAIR_INTERVAL_S` seconds (300 by default; 0: this worker leaves the schedule alone) it
starts the `PinRepair` workflow on the worker's task queue, which pins to Pinata up to
`PIN_REPAIR_BATCH` CIDs (25 by default) that only Kubo holds (workflows/pin_repair.py). One run
at a time (a run still going when the next is due is skipped). Pausing it by hand
(`temporal schedule toggle --pause --schedule-id mintsaga-pin-repair`) survives restarts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from mintsaga.setting_readers import SettingsError
from mintsaga.workflows.pin_repair import PinRepair

log = logging.getLogger("mintsaga.pin_repair")

PIN_REPAIR_SCHEDULE_ID = "mintsaga-pin-repair"
INTERVAL_SETTING = "PIN_REPAIR_INTERVAL_S"
BATCH_SETTING = "PIN_REPAIR_BATCH"
DEFAULT_INTERVAL = timedelta(minutes=5)
DEFAULT_BATCH = 25
MAX_BATCH = 1000
# A run's steps go one after the other through the Pinata queue's rate, with the mints': a
# lone stream may get one partition's share of it (a quarter on Temporal's default of 4), on
# the Picnic plan's 1.67 a second 0.42, so 25 CIDs take about a minute; this is the backstop.
RUN_TIMEOUT = timedelta(minutes=30)


def _whole(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not a whole number") from None


def interval_from_env(env: Mapping[str, str] | None = None) -> timedelta | None:
    """`PIN_REPAIR_INTERVAL_S` (seconds, default 300); None when it is 0 (no schedule)."""
    env = os.environ if env is None else env
    seconds = _whole(env, INTERVAL_SETTING)
    if seconds is None:
        return DEFAULT_INTERVAL
    if seconds == 0:
        return None
    if seconds < 10:
        raise SettingsError(
            f"{INTERVAL_SETTING}: {seconds} s is too often (at least 10, or 0 for no schedule)"
        )
    return timedelta(seconds=seconds)


def batch_from_env(env: Mapping[str, str] | None = None) -> int:
    """`PIN_REPAIR_BATCH`: CIDs one run looks at (default 25, 1..1000)."""
    env = os.environ if env is None else env
    batch = _whole(env, BATCH_SETTING)
    if batch is None:
        return DEFAULT_BATCH
    if not 1 <= batch <= MAX_BATCH:
        raise SettingsError(f"{BATCH_SETTING}: {batch} is not between 1 and {MAX_BATCH}")
    return batch


def pin_repair_schedule(task_queue: str, every: timedelta = DEFAULT_INTERVAL) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            PinRepair.run,
            id=f"{PIN_REPAIR_SCHEDULE_ID}-run",  # the server appends the scheduled time
            task_queue=task_queue,
            execution_timeout=RUN_TIMEOUT,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=every),
        state=ScheduleState(note="MintSaga pin repair: Kubo-only content to Pinata (worker)"),
    )


async def ensure_pin_repair_schedule(
    client: Client,
    task_queue: str,
    *,
    every: timedelta = DEFAULT_INTERVAL,
    schedule_id: str = PIN_REPAIR_SCHEDULE_ID,
) -> str:
    """Create the schedule, or bring an existing one to this spec (its paused state and note
    are kept); returns "created" or "updated". Safe for every worker to call at startup."""
    desired = pin_repair_schedule(task_queue, every)
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


async def maintain_pin_repair_schedule(client: Client, task_queue: str) -> None:
    """The worker's startup step: ensure the schedule unless `PIN_REPAIR_INTERVAL_S=0`.
    A failure is logged, not fatal: minting does not depend on the repair."""
    every = interval_from_env()
    if every is None:
        log.info("%s=0: this worker leaves the pin repair schedule alone", INTERVAL_SETTING)
        return
    try:
        done = await ensure_pin_repair_schedule(client, task_queue, every=every)
    except Exception as exc:
        log.error("could not create the pin repair schedule %s: %s", PIN_REPAIR_SCHEDULE_ID, exc)
        return
    log.info(
        "pin repair schedule %s %s: every %.0f s on %s",
        PIN_REPAIR_SCHEDULE_ID,
        done,
        every.total_seconds(),
        task_queue,
    )
