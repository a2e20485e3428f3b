"""A PinRepair history recorded by the devstack test of the repair replays on today's code.

`tests/histories/pin-repair/repaired-after-outage.json` is a scheduled run that pinned to Pinata
the content of mints minted during a Pinata outage (`RECORD_HISTORIES=1 pytest
tests/integration/test_pin_repair.py -k period`). A change to the workflow's commands without
`workflow.patched` fails here before it meets a run in flight. No server is needed.
"""

from __future__ import annotations

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from mintsaga.workflows.pin_repair import PinRepair
from tests.paths import HISTORIES


async def test_a_recorded_pin_repair_run_replays() -> None:
    stored = sorted((HISTORIES / "pin-repair").glob("*.json"))
    assert stored, "tests/histories/pin-repair holds no recorded PinRepair history"
    replayer = Replayer(workflows=[PinRepair], data_converter=pydantic_data_converter)
    for path in stored:
        history = WorkflowHistory.from_json(path.stem, path.read_text())
        # The recorded run repaired something: its history schedules the repair's steps.
        assert "pin_repair_repin" in path.read_text()
        await replayer.replay_workflow(history)
