"""A mint's story for an operator (`mintsaga show`): its workflow history and its rows in
``mint_events``, merged by time.

The history gives what Temporal saw: each step scheduled, its attempts (the attempt a step
finished on, and the failure before it), failures with their kind, the search attribute
changes (``MintStage``, ``MintStatus``), the operators' signals and updates, timers, and how
the workflow ended. The event table gives what the mint recorded in Postgres (claimed,
uploaded, submitted, minted, rolled back), with its details. A running mint adds its pending
steps (attempt, last failure, next attempt) from ``describe``.

Nothing here prints a payload wholesale: inputs and results are decoded only where a field is
shown (the result's status and reason, a retry's overrides), and endpoint URLs are redacted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowExecutionDescription, WorkflowHandle
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError

from mintsaga.db.rows import Event
from mintsaga.errors import redact_url
from mintsaga.workflows.activity_models import FailureDetails
from mintsaga.workflows.models import MintResult, RetryOverrides

__all__ = [
    "Entry",
    "awaiting_since_from_history",
    "event_entries",
    "history_entries",
    "last_failure_from_history",
    "merge",
    "pending_entries",
]

HISTORY, EVENTS, PENDING = "history", "events", "pending"
# Search attributes the saga sets, and how the timeline names them.
_ATTRIBUTES = {"MintStage": "stage", "MintStatus": "status"}


@dataclass(frozen=True)
class Entry:
    """One line of the timeline."""

    at: datetime
    source: str  # history (Temporal), events (mint_events in Postgres), pending (now)
    kind: str  # e.g. activity_failed, status, update, db_event
    text: str
    step: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "source": self.source,
            "kind": self.kind,
            "step": self.step,
            "text": self.text,
            "detail": self.detail,
        }


def merge(*parts: Iterable[Entry]) -> list[Entry]:
    """Every entry, oldest first (stable: within one instant, the order given)."""
    return sorted((entry for part in parts for entry in part), key=lambda entry: entry.at)


def _time(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _seconds(duration: Any) -> float:
    return float(duration.seconds) + float(duration.nanos) / 1e9


def _json_payload(payload: Payload) -> Any:
    """A plain JSON payload (search attributes, failure details without a codec), or None."""
    try:
        return json.loads(payload.data)
    except ValueError:
        return None


async def _failure(converter: DataConverter, failure: Failure) -> dict[str, Any]:
    """``{"type", "message", "kind"}`` of a recorded failure (the codec, if any, applied)."""
    copy = Failure()
    copy.CopyFrom(failure)  # decoding may rewrite it in place
    try:
        error = await converter.decode_failure(copy)
    except Exception:  # an undecodable failure still has a message
        return {"type": "", "message": failure.message, "kind": ""}
    if isinstance(error, ApplicationError):
        details = FailureDetails.of(error)
        kind = (details.kind if details is not None else None) or ""
        return {"type": error.type or "ApplicationError", "message": error.message, "kind": kind}
    return {"type": type(error).__name__, "message": str(error), "kind": ""}


def failure_text(failure: dict[str, Any]) -> str:
    kind = f" ({failure['kind']})" if failure.get("kind") else ""
    kind_type = f"{failure['type']}{kind}: " if failure.get("type") else ""
    return f"{kind_type}{failure['message']}"


async def history_entries(
    handle: WorkflowHandle[Any, Any], converter: DataConverter
) -> list[Entry]:
    """The history's events an operator cares about, as timeline entries."""
    entries: list[Entry] = []
    steps: dict[int, str] = {}  # scheduled event id -> step name
    attempts: dict[int, int] = {}  # scheduled event id -> attempt it started
    async for event in handle.fetch_history_events():
        entry = await _entry(event, converter, steps, attempts)
        if entry is not None:
            entries.append(entry)
    return entries


async def _entry(
    event: HistoryEvent,
    converter: DataConverter,
    steps: dict[int, str],
    attempts: dict[int, int],
) -> Entry | None:
    at = _time(event.event_time)
    which = event.WhichOneof("attributes")

    def at_step(kind: str, scheduled_id: int, text: str, **detail: Any) -> Entry:
        step = steps.get(scheduled_id, "?")
        return Entry(at, HISTORY, kind, f"{step}: {text}", step, detail)

    if which == "workflow_execution_started_event_attributes":
        started = event.workflow_execution_started_event_attributes
        return Entry(
            at,
            HISTORY,
            "workflow_started",
            f"workflow started on task queue {started.task_queue.name}",
            detail={"task_queue": started.task_queue.name, "attempt": started.attempt},
        )
    if which == "activity_task_scheduled_event_attributes":
        scheduled = event.activity_task_scheduled_event_attributes
        steps[event.event_id] = scheduled.activity_type.name
        policy = scheduled.retry_policy
        limit = f" (at most {policy.maximum_attempts} attempts)" if policy.maximum_attempts else ""
        return at_step(
            "activity_scheduled",
            event.event_id,
            f"scheduled{limit}",
            max_attempts=policy.maximum_attempts,
        )
    if which == "activity_task_started_event_attributes":
        task_started = event.activity_task_started_event_attributes
        attempts[task_started.scheduled_event_id] = task_started.attempt
        if task_started.attempt <= 1:
            return None  # "scheduled" and its outcome say enough
        before = await _failure(converter, task_started.last_failure)
        return at_step(
            "activity_attempt",
            task_started.scheduled_event_id,
            f"attempt {task_started.attempt} started; attempt {task_started.attempt - 1} failed:"
            f" {failure_text(before)}",
            attempt=task_started.attempt,
            previous_failure=before,
        )
    if which == "activity_task_completed_event_attributes":
        done = event.activity_task_completed_event_attributes
        attempt = attempts.get(done.scheduled_event_id, 1)
        return at_step(
            "activity_completed",
            done.scheduled_event_id,
            f"completed (attempt {attempt})",
            attempt=attempt,
        )
    if which == "activity_task_failed_event_attributes":
        failed = event.activity_task_failed_event_attributes
        attempt = attempts.get(failed.scheduled_event_id, 1)
        failure = await _failure(converter, failed.failure)
        return at_step(
            "activity_failed",
            failed.scheduled_event_id,
            f"FAILED after {attempt} attempt{'s' if attempt != 1 else ''}: {failure_text(failure)}",
            attempt=attempt,
            failure=failure,
        )
    if which == "activity_task_timed_out_event_attributes":
        timed_out = event.activity_task_timed_out_event_attributes
        failure = await _failure(converter, timed_out.failure)
        return at_step(
            "activity_timed_out",
            timed_out.scheduled_event_id,
            f"TIMED OUT: {failure_text(failure)}",
            failure=failure,
        )
    if which == "activity_task_cancel_requested_event_attributes":
        requested = event.activity_task_cancel_requested_event_attributes
        return at_step(
            "activity_cancel_requested", requested.scheduled_event_id, "cancel requested"
        )
    if which == "activity_task_canceled_event_attributes":
        cancelled = event.activity_task_canceled_event_attributes
        return at_step("activity_cancelled", cancelled.scheduled_event_id, "cancelled")
    if which == "upsert_workflow_search_attributes_event_attributes":
        fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
        changes = {
            _ATTRIBUTES[name]: _json_payload(payload)
            for name, payload in fields.indexed_fields.items()
            if name in _ATTRIBUTES
        }
        if not changes:
            return None
        text = ", ".join(f"{name} -> {value}" for name, value in sorted(changes.items()))
        return Entry(at, HISTORY, "search_attributes", text, detail=changes)
    if which == "timer_started_event_attributes":
        timer = event.timer_started_event_attributes
        seconds = _seconds(timer.start_to_fire_timeout)
        return Entry(
            at,
            HISTORY,
            "timer_started",
            f"timer {timer.timer_id} set to fire in {seconds:.0f} s",
            detail={"timer_id": timer.timer_id, "seconds": seconds},
        )
    if which == "timer_fired_event_attributes":
        fired = event.timer_fired_event_attributes
        return Entry(at, HISTORY, "timer_fired", f"timer {fired.timer_id} fired")
    if which == "workflow_execution_signaled_event_attributes":
        signal = event.workflow_execution_signaled_event_attributes
        extra = await _overrides_text(converter, signal.signal_name, signal.input.payloads)
        return Entry(
            at,
            HISTORY,
            "signal",
            f"signal {signal.signal_name} from {signal.identity or '?'}{extra}",
            detail={"name": signal.signal_name, "identity": signal.identity},
        )
    if which == "workflow_execution_update_accepted_event_attributes":
        request = event.workflow_execution_update_accepted_event_attributes.accepted_request
        name = request.input.name
        extra = await _overrides_text(converter, name, request.input.args.payloads)
        return Entry(
            at,
            HISTORY,
            "update",
            f"update {name} accepted from {request.meta.identity or '?'}{extra}",
            detail={"name": name, "identity": request.meta.identity},
        )
    if which == "workflow_execution_update_completed_event_attributes":
        outcome = event.workflow_execution_update_completed_event_attributes.outcome
        if not outcome.HasField("failure"):
            return None  # the accepted update says it all
        failure = await _failure(converter, outcome.failure)
        return Entry(at, HISTORY, "update_failed", f"update failed: {failure_text(failure)}")
    if which == "workflow_execution_cancel_requested_event_attributes":
        cancel = event.workflow_execution_cancel_requested_event_attributes
        return Entry(
            at,
            HISTORY,
            "cancel_requested",
            f"cancellation requested by {cancel.identity or '?'}"
            + (f": {cancel.cause}" if cancel.cause else ""),
        )
    if which == "workflow_task_failed_event_attributes":
        task_failed = event.workflow_task_failed_event_attributes
        failure = await _failure(converter, task_failed.failure)
        return Entry(
            at,
            HISTORY,
            "workflow_task_failed",
            f"workflow task failed ({task_failed.cause}): {failure_text(failure)}",
            detail={"cause": int(task_failed.cause), "failure": failure},
        )
    return await _closing_entry(event, at, which, converter)


async def _closing_entry(
    event: HistoryEvent, at: datetime, which: str | None, converter: DataConverter
) -> Entry | None:
    if which == "workflow_execution_completed_event_attributes":
        payloads = event.workflow_execution_completed_event_attributes.result.payloads
        try:
            [result] = await converter.decode(payloads, [MintResult])
        except Exception:
            return Entry(at, HISTORY, "workflow_completed", "workflow completed")
        reason = f": {result.reason}" if result.reason else ""
        return Entry(
            at,
            HISTORY,
            "workflow_completed",
            f"workflow completed: {result.status}{reason}",
            detail={"status": str(result.status), "reason": result.reason},
        )
    if which == "workflow_execution_failed_event_attributes":
        failure = await _failure(
            converter, event.workflow_execution_failed_event_attributes.failure
        )
        return Entry(at, HISTORY, "workflow_failed", f"workflow FAILED: {failure_text(failure)}")
    if which == "workflow_execution_canceled_event_attributes":
        return Entry(at, HISTORY, "workflow_cancelled", "workflow cancelled")
    if which == "workflow_execution_terminated_event_attributes":
        terminated = event.workflow_execution_terminated_event_attributes
        return Entry(
            at,
            HISTORY,
            "workflow_terminated",
            f"workflow TERMINATED by {terminated.identity or '?'}: {terminated.reason}",
        )
    if which == "workflow_execution_timed_out_event_attributes":
        return Entry(at, HISTORY, "workflow_timed_out", "workflow TIMED OUT")
    if which == "workflow_execution_continued_as_new_event_attributes":
        return Entry(at, HISTORY, "continued_as_new", "workflow continued as new")
    return None


async def _overrides_text(converter: DataConverter, name: str, payloads: Sequence[Payload]) -> str:
    """`` (priority fee N, endpoint URL, keeping earlier overrides)`` for a retry that said
    something, else ``""``."""
    if name not in ("retry", "retry_now") or not payloads:
        return ""
    try:
        [overrides] = await converter.decode(payloads, [RetryOverrides])
    except Exception:
        return ""
    if overrides is None:
        return ""
    parts = []
    if overrides.priority_fee_micro_lamports is not None:
        parts.append(f"priority fee {overrides.priority_fee_micro_lamports}")
    if overrides.preferred_endpoint:
        parts.append(f"endpoint {redact_url(overrides.preferred_endpoint)}")
    if overrides.keep_overrides:
        parts.append("keeping earlier overrides")
    return f" ({', '.join(parts)})" if parts else ""


def event_entries(events: Iterable[Event]) -> list[Entry]:
    """The mint's rows in ``mint_events``."""
    entries = []
    for event in events:
        shown = ", ".join(
            f"{key}={_short(value)}" for key, value in sorted(event.detail.items()) if value
        )
        key = f" [{_short(event.event_key, 24)}]" if event.event_key else ""
        entries.append(
            Entry(
                event.at.astimezone(UTC),
                EVENTS,
                "db_event",
                f"{event.stage}{key}" + (f": {shown}" if shown else ""),
                detail={"id": event.id, "stage": event.stage, "event_key": event.event_key}
                | {"values": event.detail},
            )
        )
    return entries


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if "://" in text:
        text = redact_url(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def pending_entries(
    description: WorkflowExecutionDescription, converter: DataConverter
) -> list[Entry]:
    """A running mint's steps under way: attempt, last failure, next attempt."""
    entries = []
    for pending in description.raw_description.pending_activities:
        step = pending.activity_type.name
        limit = f" of {pending.maximum_attempts}" if pending.maximum_attempts else ""
        parts = [f"{step}: attempt {pending.attempt}{limit} pending"]
        failure = None
        if pending.HasField("last_failure"):
            failure = await _failure(converter, pending.last_failure)
            parts.append(f"last failure: {failure_text(failure)}")
        next_at = None
        if pending.HasField("next_attempt_schedule_time"):
            next_at = _time(pending.next_attempt_schedule_time)
            parts.append(f"next attempt at {next_at:%H:%M:%S}")
        at = datetime.now(UTC)
        for stamp in ("last_attempt_complete_time", "last_started_time", "scheduled_time"):
            if pending.HasField(stamp):
                at = _time(getattr(pending, stamp))
                break
        entries.append(
            Entry(
                at,
                PENDING,
                "activity_pending",
                "; ".join(parts),
                step,
                {
                    "attempt": pending.attempt,
                    "max_attempts": pending.maximum_attempts,
                    "last_failure": failure,
                    "next_attempt_at": next_at.isoformat() if next_at else None,
                },
            )
        )
    return entries


# The statuses of a mint that waits for a person: a step's retries spent, or its compensation.
WAITING_STATUSES = ("AWAITING_OPERATOR", "FAILED")


async def awaiting_since_from_history(handle: WorkflowHandle[Any, Any]) -> datetime | None:
    """When ``MintStatus`` last turned AWAITING_OPERATOR or FAILED (None if it is neither)."""
    since: datetime | None = None
    async for event in handle.fetch_history_events():
        if event.WhichOneof("attributes") != "upsert_workflow_search_attributes_event_attributes":
            continue
        fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
        payload = fields.indexed_fields.get("MintStatus")
        if payload is None:
            continue
        waits = _json_payload(payload) in WAITING_STATUSES
        since = (since or _time(event.event_time)) if waits else None
    return since


async def last_failure_from_history(
    handle: WorkflowHandle[Any, Any], converter: DataConverter
) -> tuple[str, dict[str, Any]] | None:
    """The step and failure of the newest failed activity in the history, if any."""
    steps: dict[int, str] = {}
    last: tuple[str, Failure] | None = None
    async for event in handle.fetch_history_events():
        which = event.WhichOneof("attributes")
        if which == "activity_task_scheduled_event_attributes":
            steps[event.event_id] = (
                event.activity_task_scheduled_event_attributes.activity_type.name
            )
        elif which == "activity_task_failed_event_attributes":
            failed = event.activity_task_failed_event_attributes
            last = (steps.get(failed.scheduled_event_id, "?"), failed.failure)
    if last is None:
        return None
    return last[0], await _failure(converter, last[1])
