"""What a stored MintSaga history scheduled, and what today's code schedules replaying it.

Replay alone does not compare an activity's input with the one recorded (the SDK checks the
activity's type and order, not its arguments), so a change to an input would replay "fine"
while running mints behaved differently. These helpers replay a history on today's `MintSaga`
with an interceptor noting one field of each watched activity's input, to compare with the
same fields read from the history's events.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    Replayer,
    StartActivityInput,
    UnsandboxedWorkflowRunner,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)
from temporalio.workflow import ActivityHandle

from mintsaga.workflows.mint_saga import MintSaga
from tests.paths import HISTORIES

# The replay under way: the watched fields (activity -> field) and what it scheduled.
_watched: dict[str, str] = {}
_scheduled: list[tuple[str, Any]] = []


class _Outbound(WorkflowOutboundInterceptor):
    def start_activity(self, input: StartActivityInput) -> ActivityHandle[Any]:
        field = _watched.get(input.activity)
        if field is not None:
            _scheduled.append((input.activity, getattr(input.args[0], field)))
        return super().start_activity(input)


class _Inbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_Outbound(outbound))

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        return await super().execute_workflow(input)


class _Watch(Interceptor):
    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _Inbound


def load(name: str) -> tuple[WorkflowHistory, dict[str, Any]]:
    text = (HISTORIES / f"{name}.json").read_text()
    return WorkflowHistory.from_json(name, text), json.loads(text)


def recorded(raw: dict[str, Any], watched: Mapping[str, str]) -> list[tuple[str, Any]]:
    """The watched activities' fields as the history recorded them, in order (None when the
    recorded input has no such field)."""
    found = []
    for event in raw["events"]:
        scheduled = event.get("activityTaskScheduledEventAttributes")
        if scheduled is None or scheduled["activityType"]["name"] not in watched:
            continue
        name = scheduled["activityType"]["name"]
        [payload] = scheduled["input"]["payloads"]
        found.append((name, json.loads(base64.b64decode(payload["data"])).get(watched[name])))
    return found


def patches(raw: dict[str, Any]) -> set[str]:
    ids = set()
    for event in raw["events"]:
        marker = event.get("markerRecordedEventAttributes")
        if marker and marker["markerName"] == "core_patch":
            [payload] = marker["details"]["patch-data"]["payloads"]
            ids.add(json.loads(base64.b64decode(payload["data"]))["id"])
    return ids


async def replayed(history: WorkflowHistory, watched: Mapping[str, str]) -> list[tuple[str, Any]]:
    """Replay ``history`` on today's MintSaga (a replay failure raises); the watched fields
    of what it scheduled, in order."""
    _watched.clear()
    _watched.update(watched)
    _scheduled.clear()
    replayer = Replayer(
        workflows=[MintSaga],
        data_converter=pydantic_data_converter,
        interceptors=[_Watch()],
        workflow_runner=UnsandboxedWorkflowRunner(),  # the interceptor writes to this module
    )
    await replayer.replay_workflow(history)
    return list(_scheduled)
