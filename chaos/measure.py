"""What a chaos run did to the saga, read from the workflow histories and the worker logs.

- retries per service: each activity's last `ActivityTaskStarted.attempt` minus one;
- compensations: completed `release_pins` / `rollback_mint` activities;
- recovery after each outage: from the moment it began, how long until a step that needs the
  service completed again (the spec's impact table bounds these);
- failovers and breaker transitions: the lines the worker logs for them.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory

from mintsaga.workflows.policies import STEPS

COMPENSATIONS = ("release_pins", "rollback_mint")

# The spec's impact table ("Recovery Time"), seconds.
SPEC_RECOVERY_S = {"solana endpoint": 30.0, "gateway": 120.0, "database": 300.0}

# Which completed steps show an outage is over: None means any step at all.
_RECOVERED_BY: dict[str, tuple[str, ...] | None] = {
    "solana endpoint": tuple(n for n, s in STEPS.items() if s.service == "solana"),
    "pinata": ("upload_image", "upload_metadata", "upload_assets"),
    "gateway": ("check_gateways",),
    # Every step that queries Postgres (the maintenance gate reads the workers' cached settings).
    "database": tuple(
        n for n, s in STEPS.items() if s.service == "db" and n != "wait_out_maintenance"
    ),
    "worker": None,
    "temporal": None,
}

_FAILOVER_LINES = {
    "solana": re.compile(rb"trying the next endpoint"),
    "ipfs": re.compile(rb"failing over to kubo"),
    "gateway": re.compile(rb"gateway failed"),
}
_BREAKER_LINE = re.compile(rb"breaker (\S+): (?:BreakerState\.)?(\w+) -> (?:BreakerState\.)?(\w+)")


@dataclass(frozen=True)
class Completion:
    at: datetime
    activity: str
    started: datetime  # when its last (successful) attempt started


@dataclass(frozen=True)
class Outage:
    label: str
    group: str  # a key of _RECOVERED_BY
    began: datetime
    lasted_s: float


@dataclass(frozen=True)
class Recovery:
    outage: str
    lasted_s: float
    recovered_after_s: float | None  # None: no such step completed afterwards
    spec_limit_s: float | None

    @property
    def within_spec(self) -> bool | None:
        if self.spec_limit_s is None or self.recovered_after_s is None:
            return None
        return self.recovered_after_s < self.spec_limit_s


@dataclass
class HistoryFigures:
    retries: Counter[str]
    compensations: int
    completions: list[Completion]


async def fetch_histories(
    client: Client, workflow_ids: Iterable[str], concurrency: int = 16
) -> list[WorkflowHistory]:
    gate = asyncio.Semaphore(concurrency)

    async def one(workflow_id: str) -> WorkflowHistory:
        async with gate:
            return await client.get_workflow_handle(workflow_id).fetch_history()

    return list(await asyncio.gather(*(one(w) for w in workflow_ids)))


def history_figures(histories: Sequence[WorkflowHistory]) -> HistoryFigures:
    retries: Counter[str] = Counter()
    compensations = 0
    completions: list[Completion] = []
    for history in histories:
        scheduled: dict[int, str] = {}
        started: dict[int, datetime] = {}
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                attrs = event.activity_task_scheduled_event_attributes
                scheduled[event.event_id] = attrs.activity_type.name
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                attrs_s = event.activity_task_started_event_attributes
                name = scheduled.get(attrs_s.scheduled_event_id, "?")
                started[attrs_s.scheduled_event_id] = event.event_time.ToDatetime()
                step = STEPS.get(name)
                if attrs_s.attempt > 1:
                    retries[step.service if step else name] += attrs_s.attempt - 1
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                attrs_c = event.activity_task_completed_event_attributes
                name = scheduled.get(attrs_c.scheduled_event_id, "?")
                at = event.event_time.ToDatetime()
                began = started.get(attrs_c.scheduled_event_id, at)
                completions.append(Completion(at, name, began))
                if name in COMPENSATIONS:
                    compensations += 1
    completions.sort(key=lambda c: c.at)
    return HistoryFigures(retries, compensations, completions)


def recoveries(outages: Sequence[Outage], completions: Sequence[Completion]) -> list[Recovery]:
    """For each outage, how long until a step that needs the service, started after the
    outage began, completed: work already under way when it began does not count."""
    found = []
    for outage in outages:
        wanted = _RECOVERED_BY[outage.group]
        began = outage.began.replace(tzinfo=None)
        after = next(
            (
                c
                for c in completions
                if c.started > began and (wanted is None or c.activity in wanted)
            ),
            None,
        )
        found.append(
            Recovery(
                outage=outage.label,
                lasted_s=round(outage.lasted_s, 2),
                recovered_after_s=None
                if after is None
                else round((after.at - began).total_seconds(), 2),
                spec_limit_s=SPEC_RECOVERY_S.get(outage.group),
            )
        )
    return found


@dataclass
class LogFigures:
    failovers: Counter[str]
    breaker_trips: Counter[str]  # CLOSED -> OPEN, per breaker
    breaker_recoveries: Counter[str]  # HALF_OPEN -> CLOSED, per breaker


def log_figures(logs: Iterable[Path]) -> LogFigures:
    failovers: Counter[str] = Counter()
    trips: Counter[str] = Counter()
    recovered: Counter[str] = Counter()
    for path in logs:
        if not path.exists():
            continue
        for line in path.read_bytes().splitlines():
            for service, pattern in _FAILOVER_LINES.items():
                if pattern.search(line):
                    failovers[service] += 1
            match = _BREAKER_LINE.search(line)
            if match is None:
                continue
            name, old, new = (part.decode() for part in match.groups())
            if old.upper() == "CLOSED" and new.upper() == "OPEN":
                trips[name] += 1
            elif old.upper() == "HALF_OPEN" and new.upper() == "CLOSED":
                recovered[name] += 1
    return LogFigures(failovers, trips, recovered)
