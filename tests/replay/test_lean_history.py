"""The lean saga (issue 19, `workflow.patched("lean-saga")`) against stored histories.

`happy-path-lean.json` (a happy mint recorded with the patch, `RECORD_HISTORIES=1` with
tests/integration/test_lean_saga.py) replays its local activities and its three regular ones;
the histories recorded before the patch replay the regular activities they scheduled and no
local one, so mints in flight at a deploy finish the way they started.
"""

from __future__ import annotations

import json
from datetime import timedelta

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

from bench.figures import (
    billable_actions,
    local_activity_types,
    regular_activity_types,
    timer_durations,
)
from tests.paths import HISTORIES
from tests.saga_support import replay_failures

E = EventType


def load(name: str) -> WorkflowHistory:
    return WorkflowHistory.from_json(name, (HISTORIES / f"{name}.json").read_text())


def patches(history: WorkflowHistory) -> list[str]:
    found = []
    for e in history.events:
        marker = e.marker_recorded_event_attributes
        if e.event_type == E.EVENT_TYPE_MARKER_RECORDED and marker.marker_name == "core_patch":
            found.append(json.loads(dict(marker.details)["patch-data"].payloads[0].data)["id"])
    return found


async def test_the_lean_history_replays_with_its_local_steps() -> None:
    lean = load("happy-path-lean")
    assert patches(lean) == ["lean-saga"]  # one marker: the older patches are implied
    assert regular_activity_types(lean.events) == [
        "upload_assets",
        "send_transaction",
        "await_confirmation",
    ]
    assert {"open_mint", "admit_mint", "prepare_transaction", "finish_mint"} <= set(
        local_activity_types(lean.events)
    )
    assert billable_actions(lean.events) <= 12 and len(lean.events) <= 45
    assert await replay_failures([lean]) == {}


async def test_histories_before_the_lean_saga_replay_their_regular_steps() -> None:
    for name in ("happy-path-status-notices", "happy-path-pinata-queue", "collection-member"):
        before = load(name)
        assert "lean-saga" not in patches(before)
        assert local_activity_types(before.events) == []
        assert {"upload_image", "upload_metadata", "prepare_transaction"} <= set(
            regular_activity_types(before.events)
        )
        assert await replay_failures([before]) == {}, name


async def test_a_failed_local_attempt_waits_as_it_asked_only_after_the_patch() -> None:
    """`lean-local-failure-waits.json`: prepare_transaction's local attempt failed asking for a
    3 s wait (`next_retry_delay`); the saga slept 3 s (`workflow.patched("local-attempt-backoff")`)
    before the regular activity. `lean-local-failure-before-backoff.json`, the same path run
    before the patch, went straight on: both replay the way they ran."""
    waits = load("lean-local-failure-waits")
    before = load("lean-local-failure-before-backoff")
    assert patches(waits) == ["lean-saga", "local-attempt-backoff"]
    assert patches(before) == ["lean-saga"]
    for history in (waits, before):
        assert "prepare_transaction" in regular_activity_types(history.events)
        assert "prepare_transaction" in local_activity_types(history.events)
    asked = timedelta(seconds=3)
    assert asked in timer_durations(waits.events) and asked not in timer_durations(before.events)
    assert await replay_failures([waits, before]) == {}
