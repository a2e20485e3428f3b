"""Histories recorded from earlier versions of the workflows replay on today's code.

A non-deterministic change to `MintSaga` (a step added, removed or reordered without
`workflow.patched`) fails here before it reaches a running fleet. One history per main path is
stored in tests/histories (`RECORD_HISTORIES=1` with tests/integration/test_operations.py
records the session's); no server is needed to replay them.
"""

from __future__ import annotations

from temporalio.client import WorkflowHistory

from tests.paths import HISTORIES
from tests.saga_support import replay_failures


async def test_stored_histories_of_the_main_paths_replay() -> None:
    """Every stored history: a non-deterministic change fails here."""
    stored = sorted(HISTORIES.glob("*.json"))
    assert stored, "tests/histories holds no recorded history"
    histories = [WorkflowHistory.from_json(path.stem, path.read_text()) for path in stored]
    assert await replay_failures(histories) == {}
