"""The lean saga (issue 19, `workflow.patched("lean-saga")`) against stored histories.

`happy-path-lean.json` (a happy mint recorded with the patch, `RECORD_HISTORIES=1` with
tests/integration/test_lean_saga.py) replays its local activities and its three regular ones;
the histories recorded before the patch replay the regular activities they scheduled and no
local one, so mints in flight at a deploy finish the way they started.
"""

from __future__ import annotations

import json

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

from bench.figures import billable_actions, local_activity_types, regular_activity_types
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
