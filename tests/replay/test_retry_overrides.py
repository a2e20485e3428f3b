"""An operator's overrides last until the next decision (`operator-overrides-per-retry`), and
mints that decided before that rule replay the way they ran.

Replay alone does not compare an activity's input with the one recorded (the SDK checks the
activity's type and order, not its arguments), so a change to which fee or endpoint a retried
step uses would replay "fine" while running mints behaved differently. These tests replay the
stored histories on today's `MintSaga` and compare the inputs it schedules with those the
history recorded:

- `operator-retry-drops-overrides`: a retry with a fee and an endpoint, then a plain retry;
  recorded by tests/integration/test_operator_commands.py (`RECORD_HISTORIES=1`) with the patch.
- `operator-retry-keeps-overrides`: the same, the second retry with `--keep-overrides`.
- `operator-retry-keeps-overrides-before-per-retry`: the first path run by the code before the
  patch (the commit before it, a one-off copy of that test), where the plain retry kept the
  fee and the endpoint: no marker, and it must still replay to the same inputs.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
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
from mintsaga.workflows.saga import OVERRIDES_PER_RETRY
from tests.paths import HISTORIES

FEE = 7_000
WATCHED = {
    "prepare_transaction": "priority_fee_micro_lamports",
    "send_transaction": "preferred_endpoint",
}

# What the code scheduled during the replay under way: (activity, watched field's value).
_scheduled: list[tuple[str, Any]] = []


class _Outbound(WorkflowOutboundInterceptor):
    def start_activity(self, input: StartActivityInput) -> ActivityHandle[Any]:
        field = WATCHED.get(input.activity)
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


def _load(name: str) -> tuple[WorkflowHistory, dict[str, Any]]:
    text = (HISTORIES / f"{name}.json").read_text()
    return WorkflowHistory.from_json(name, text), json.loads(text)


def _recorded(raw: dict[str, Any]) -> list[tuple[str, Any]]:
    """The watched activities' inputs as the history recorded them, in order."""
    found = []
    for event in raw["events"]:
        scheduled = event.get("activityTaskScheduledEventAttributes")
        if scheduled is None or scheduled["activityType"]["name"] not in WATCHED:
            continue
        name = scheduled["activityType"]["name"]
        [payload] = scheduled["input"]["payloads"]
        found.append((name, json.loads(base64.b64decode(payload["data"]))[WATCHED[name]]))
    return found


def _patches(raw: dict[str, Any]) -> set[str]:
    ids = set()
    for event in raw["events"]:
        marker = event.get("markerRecordedEventAttributes")
        if marker and marker["markerName"] == "core_patch":
            [payload] = marker["details"]["patch-data"]["payloads"]
            ids.add(json.loads(base64.b64decode(payload["data"]))["id"])
    return ids


async def _replayed(history: WorkflowHistory) -> list[tuple[str, Any]]:
    _scheduled.clear()
    replayer = Replayer(
        workflows=[MintSaga],
        data_converter=pydantic_data_converter,
        interceptors=[_Watch()],
        workflow_runner=UnsandboxedWorkflowRunner(),  # the interceptor writes to this module
    )
    await replayer.replay_workflow(history)
    return list(_scheduled)


def _fees(inputs: list[tuple[str, Any]]) -> list[Any]:
    return [value for name, value in inputs if name == "prepare_transaction"]


def _endpoints(inputs: list[tuple[str, Any]]) -> set[Any]:
    return {value for name, value in inputs if name == "send_transaction"}


@pytest.mark.parametrize(
    ("name", "patched", "fees", "kept_endpoint"),
    [
        ("operator-retry-drops-overrides", True, [None, FEE, None], False),
        ("operator-retry-keeps-overrides", True, [None, FEE, FEE], True),
        ("operator-retry-keeps-overrides-before-per-retry", False, [None, FEE, FEE], True),
    ],
)
async def test_a_retried_step_replays_with_the_overrides_its_history_used(
    name: str, patched: bool, fees: list[int | None], kept_endpoint: bool
) -> None:
    history, raw = _load(name)
    assert (OVERRIDES_PER_RETRY in _patches(raw)) is patched
    recorded = _recorded(raw)
    # The path the history holds: a retry with a fee and an endpoint, then another retry.
    assert _fees(recorded) == fees
    endpoints = _endpoints(recorded)
    assert len(endpoints) == 1 and (None not in endpoints) is kept_endpoint
    # Today's code schedules exactly those inputs again (a replay failure raises).
    assert await _replayed(history) == recorded
