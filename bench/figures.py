"""The benchmark's arithmetic: rates, percentiles, concurrency, and where one workflow's time went.

Pure functions over what the runs recorded (`Flight`s) and over Temporal histories; the unit
tests in tests/tools/test_bench.py pin each one down.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

E = EventType


@dataclass
class Flight:
    """One workflow as the driver saw it: monotonic seconds at start and close, how it ended."""

    workflow_id: str
    started: float
    closed: float | None = None
    status: str | None = None
    retries: int = 0  # attempts beyond the first, over every service (MintResult.retries)

    @property
    def seconds(self) -> float:
        assert self.closed is not None, f"{self.workflow_id} has not closed"
        return self.closed - self.started


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), interpolated between the two nearest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    return {
        "samples": len(seconds),
        "p50_s": round(percentile(seconds, 50), 4),
        "p95_s": round(percentile(seconds, 95), 4),
        "p99_s": round(percentile(seconds, 99), 4),
        "mean_s": round(sum(seconds) / len(seconds), 4),
    }


def batch_rate(flights: Sequence[Flight]) -> float:
    """Workflows closed per second over the batch: how many closed, over the span from the
    first start to the last close. (Started together, a batch's workflows move in step and
    close in a burst near its end: a rate between closings would measure the burst.)"""
    closed = [f.closed for f in flights if f.closed is not None]
    if not closed:
        raise ValueError("a rate needs at least one closed workflow")
    span = max(closed) - min(f.started for f in flights)
    if span <= 0:
        raise ValueError("no time passed: no rate to measure")
    return len(closed) / span


def max_in_flight(flights: Iterable[Flight]) -> int:
    """The most workflows open at the same moment (started, not yet closed)."""
    edges: list[tuple[float, int]] = []
    for flight in flights:
        edges.append((flight.started, 1))
        if flight.closed is not None:
            edges.append((flight.closed, -1))
    edges.sort(key=lambda edge: (edge[0], edge[1]))  # a close before a start at the same time
    open_now = most = 0
    for _, step in edges:
        open_now += step
        most = max(most, open_now)
    return most


def recovery_s(
    flights: Sequence[Flight], fault_at: float, target_rate: float, *, window_s: float = 10.0
) -> float | None:
    """Seconds from `fault_at` to the first `window_s` window whose closing rate reaches 90 % of
    `target_rate` (0: the rate never dropped). None: it never did while the batch ran."""
    closed = sorted(f.closed for f in flights if f.closed is not None and f.closed >= fault_at)
    if not closed:
        return None
    offset = 0.0
    while fault_at + offset + window_s <= closed[-1]:
        begin, end = fault_at + offset, fault_at + offset + window_s
        count = sum(1 for t in closed if begin <= t < end)
        if count / window_s >= 0.9 * target_rate:
            return offset
        offset += 0.5
    return None


# ------------------------------------------------------------------ one workflow's history


@dataclass
class ActivityRun:
    name: str
    round_id: int  # the workflow task that scheduled it: one round of the saga
    scheduled: datetime
    started: datetime | None = None
    closed: datetime | None = None
    outcome: str = "open"

    @property
    def queued_s(self) -> float:
        """Scheduled until a worker took it: Temporal's dispatch (and the worker's slots)."""
        return _seconds(self.scheduled, self.started)

    @property
    def ran_s(self) -> float:
        """Taken until its result reached the server: the activity's own code (and the SDK)."""
        return _seconds(self.started, self.closed)


@dataclass
class HistoryProfile:
    total_s: float
    activities: list[ActivityRun] = field(default_factory=list)
    workflow_task_queued_s: float = 0.0
    workflow_task_ran_s: float = 0.0
    events: int = 0  # history events, first to last
    actions: int = 0  # Temporal Cloud's billable actions (`billable_actions`)
    workflow_tasks: int = 0  # completed

    @property
    def in_activities_s(self) -> float:
        """Time on the critical path inside activities: per round, its longest activity."""
        rounds: dict[int, float] = defaultdict(float)
        for run in self.activities:
            rounds[run.round_id] = max(rounds[run.round_id], run.ran_s)
        return sum(rounds.values())

    @property
    def in_temporal_s(self) -> float:
        """Everything else: task dispatch, workflow tasks, history writes, round trips."""
        return max(0.0, self.total_s - self.in_activities_s)


def _seconds(begin: datetime | None, end: datetime | None) -> float:
    if begin is None or end is None:
        return 0.0
    return (end - begin).total_seconds()


def profile_history(history: WorkflowHistory) -> HistoryProfile:
    """Where one workflow's time went, from its history's event times."""
    events = list(history.events)
    first, last = events[0].event_time.ToDatetime(), events[-1].event_time.ToDatetime()
    profile = HistoryProfile(
        total_s=(last - first).total_seconds(),
        events=len(events),
        actions=billable_actions(events),
    )
    by_scheduled: dict[int, ActivityRun] = {}
    wft_scheduled: datetime | None = None
    wft_started: datetime | None = None
    for event in events:
        at = event.event_time.ToDatetime()
        kind = event.event_type
        if kind == E.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            wft_scheduled = at
        elif kind == E.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            profile.workflow_task_queued_s += _seconds(wft_scheduled, at)
            wft_started = at
        elif kind in (E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, E.EVENT_TYPE_WORKFLOW_TASK_FAILED):
            profile.workflow_task_ran_s += _seconds(wft_started, at)
            profile.workflow_tasks += kind == E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
        elif kind == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            run = ActivityRun(
                name=attrs.activity_type.name,
                round_id=attrs.workflow_task_completed_event_id,
                scheduled=at,
            )
            by_scheduled[event.event_id] = run
            profile.activities.append(run)
        elif kind == E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            scheduled_id = event.activity_task_started_event_attributes.scheduled_event_id
            by_scheduled[scheduled_id].started = at
        elif kind in _ACTIVITY_CLOSES:
            attr_name, outcome = _ACTIVITY_CLOSES[kind]
            attrs = getattr(event, attr_name)
            run = by_scheduled[attrs.scheduled_event_id]
            run.closed, run.outcome = at, outcome
    return profile


# One billable action each (Temporal Cloud, "Temporal Cloud Actions",
# https://docs.temporal.io/cloud/actions): a start, a search attribute upsert, a timer, a
# signal, an accepted update, a child workflow started. Activities and local activities are
# counted by `billable_actions` itself.
_ONE_ACTION = frozenset(
    {
        E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
        E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
        E.EVENT_TYPE_TIMER_STARTED,
        E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
        E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
        E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED,
    }
)
LOCAL_ACTIVITY_MARKER = (
    "core_local_activity"  # the marker the SDKs' core records per local activity
)


def regular_activity_types(events: Iterable[Any]) -> list[str]:
    """The activity types a history scheduled (regular activities), in order."""
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.event_type == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


def timer_durations(events: Iterable[Any]) -> list[timedelta]:
    """How long each timer a history started was set for, in order."""
    return [
        e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
        for e in events
        if e.event_type == E.EVENT_TYPE_TIMER_STARTED
    ]


def local_activity_types(events: Iterable[Any]) -> list[str]:
    """The activity types a history ran as local activities, in order: one marker each (a
    failed attempt too), its type in the marker's `data` payload, which the SDK's core writes."""
    names = []
    for e in events:
        marker = e.marker_recorded_event_attributes
        if e.event_type == E.EVENT_TYPE_MARKER_RECORDED and (
            marker.marker_name == LOCAL_ACTIVITY_MARKER
        ):
            data = dict(marker.details)["data"].payloads[0].data
            names.append(str(json.loads(data)["activity_type"]))
    return names


def billable_actions(events: Sequence[Any]) -> int:
    """A workflow's billable actions, counted from its history by Temporal Cloud's published
    rules (https://docs.temporal.io/cloud/actions): the start, each activity attempt (an
    activity started or retried: its last attempt number), one per workflow task that ran
    local activities (all of one task's count as one), each upsert, timer, signal and accepted
    update. Not in a history, so not counted: heartbeats sent to the server, queries, and
    retries of local activities past the workflow task they began in. Patch markers are no
    action."""
    actions = 0
    tasks_with_local: set[int] = set()
    for event in events:
        kind = event.event_type
        if kind in _ONE_ACTION:
            actions += 1
        elif kind == E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            actions += max(1, event.activity_task_started_event_attributes.attempt)
        elif kind == E.EVENT_TYPE_MARKER_RECORDED:
            attrs = event.marker_recorded_event_attributes
            if attrs.marker_name == LOCAL_ACTIVITY_MARKER:
                tasks_with_local.add(attrs.workflow_task_completed_event_id)
    return actions + len(tasks_with_local)


_ACTIVITY_CLOSES = {
    E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: ("activity_task_completed_event_attributes", "completed"),
    E.EVENT_TYPE_ACTIVITY_TASK_FAILED: ("activity_task_failed_event_attributes", "failed"),
    E.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: ("activity_task_timed_out_event_attributes", "timed_out"),
    E.EVENT_TYPE_ACTIVITY_TASK_CANCELED: ("activity_task_canceled_event_attributes", "canceled"),
}


def activity_rounds(history: WorkflowHistory) -> list[tuple[str, ...]]:
    """The activities a workflow scheduled, grouped by the workflow task that scheduled them
    (sorted within a round): the workflow's shape."""
    rounds: dict[int, list[str]] = defaultdict(list)
    for run in profile_history(history).activities:
        rounds[run.round_id].append(run.name)
    return [tuple(sorted(names)) for _, names in sorted(rounds.items())]


def summarize_profiles(profiles: Sequence[HistoryProfile]) -> dict[str, Any]:
    """Medians over many workflows: the whole, in activities vs in Temporal, workflow tasks,
    and per activity its queue wait and its run time."""
    per_activity: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for profile in profiles:
        for run in profile.activities:
            if run.outcome == "completed":
                per_activity[run.name]["queued"].append(run.queued_s)
                per_activity[run.name]["ran"].append(run.ran_s)

    def median(values: Iterable[float]) -> float:
        return round(percentile(list(values), 50), 4)

    return {
        "workflows": len(profiles),
        "total_s": median(p.total_s for p in profiles),
        "in_activities_s": median(p.in_activities_s for p in profiles),
        "in_temporal_s": median(p.in_temporal_s for p in profiles),
        "workflow_task_queued_s": median(p.workflow_task_queued_s for p in profiles),
        "workflow_task_ran_s": median(p.workflow_task_ran_s for p in profiles),
        "history_events": median(p.events for p in profiles),
        "actions": median(p.actions for p in profiles),
        "workflow_tasks": median(p.workflow_tasks for p in profiles),
        "activities": {
            name: {"queued_s": median(times["queued"]), "ran_s": median(times["ran"])}
            for name, times in per_activity.items()
        },
    }
