"""The backend's notices (issue 17: `status-notices`, `answer-ended-mints-from-row`,
`admission-control`, `post-pivot-priority`): a mint recorded with them replays scheduling the
same notices, in the same order, with the same data; a mint that ended answers from its row
and schedules nothing else; mints before the patches schedule none of it.
"""

from __future__ import annotations

from typing import Any

from tests.replay.scheduled_inputs import load, patches, recorded, replayed

PATCHES = {
    "status-notices",
    "answer-ended-mints-from-row",
    "admission-control",
    "post-pivot-priority",
}
WATCHED = {"record_notices": "notices", "look_up_mint": "mint_id", "admit_mint": "mint_id"}


def _plain(inputs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Replayed inputs are models, recorded ones JSON: compare them as JSON."""
    out = []
    for name, value in inputs:
        if name == "record_notices":
            value = [n if isinstance(n, dict) else n.model_dump(mode="json") for n in value]
        out.append((name, value))
    return out


def _types(inputs: list[tuple[str, Any]]) -> list[str]:
    return [n["type"] for name, notices in inputs if name == "record_notices" for n in notices]


async def test_a_happy_mint_replays_telling_each_stage_then_minted() -> None:
    history, raw = load("happy-path-status-notices")
    assert patches(raw) >= PATCHES
    inputs = _plain(recorded(raw, WATCHED))
    assert [name for name, _ in inputs][:2] == ["look_up_mint", "record_notices"]
    assert "admit_mint" in [name for name, _ in inputs]
    assert _types(inputs) == ["mint.in_progress"] * 6 + ["mint.minted"]
    assert _plain(await replayed(history, WATCHED)) == inputs


async def test_a_mint_retried_by_an_operator_replays_its_delay_wait_and_resumption() -> None:
    history, raw = load("operator-retry-status-notices")
    assert patches(raw) >= PATCHES
    inputs = _plain(recorded(raw, WATCHED))
    told = _types(inputs)
    assert told.count("mint.delayed") == 1
    assert told.index("mint.delayed") < told.index("mint.awaiting_operator")
    assert told.index("mint.awaiting_operator") < told.index("mint.resumed")
    assert told[-1] == "mint.minted"
    assert _plain(await replayed(history, WATCHED)) == inputs


async def test_a_mint_that_ended_before_replays_answering_from_its_row_alone() -> None:
    history, raw = load("minted-again-answered-from-row")
    inputs = _plain(recorded(raw, WATCHED))
    assert [name for name, _ in inputs] == ["look_up_mint"]
    assert _plain(await replayed(history, WATCHED)) == inputs


async def test_a_mint_before_the_patches_tells_nothing_and_claims_as_it_did() -> None:
    history, raw = load("happy-path-gateway-uri")
    assert not PATCHES & patches(raw)
    assert recorded(raw, WATCHED) == []
    assert await replayed(history, WATCHED) == []
