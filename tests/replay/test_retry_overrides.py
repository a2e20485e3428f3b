"""An operator's overrides last until the next decision (`operator-overrides-per-retry`), and
mints that decided before that rule replay the way they ran.

A change to which fee or endpoint a retried step uses would replay "fine" while running mints
behaved differently (tests/replay/scheduled_inputs.py): these tests replay the stored histories
on today's `MintSaga` and compare the inputs it schedules with those the history recorded:

- `operator-retry-drops-overrides`: a retry with a fee and an endpoint, then a plain retry;
  recorded by tests/integration/test_operator_commands.py (`RECORD_HISTORIES=1`) with the patch.
- `operator-retry-keeps-overrides`: the same, the second retry with `--keep-overrides`.
- `operator-retry-keeps-overrides-before-per-retry`: the first path run by the code before the
  patch (the commit before it, a one-off copy of that test), where the plain retry kept the
  fee and the endpoint: no marker, and it must still replay to the same inputs.
"""

from __future__ import annotations

from typing import Any

import pytest

from mintsaga.workflows.saga import OVERRIDES_PER_RETRY
from tests.replay.scheduled_inputs import load, patches, recorded, replayed

FEE = 7_000
WATCHED = {
    "prepare_transaction": "priority_fee_micro_lamports",
    "send_transaction": "preferred_endpoint",
}


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
    history, raw = load(name)
    assert (OVERRIDES_PER_RETRY in patches(raw)) is patched
    inputs = recorded(raw, WATCHED)
    # The path the history holds: a retry with a fee and an endpoint, then another retry.
    assert _fees(inputs) == fees
    endpoints = _endpoints(inputs)
    assert len(endpoints) == 1 and (None not in endpoints) is kept_endpoint
    # Today's code schedules exactly those inputs again (a replay failure raises).
    assert await replayed(history, WATCHED) == inputs
