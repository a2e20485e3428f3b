"""A mint joining a collection (issue 18: `collection-member.json`, recorded from
tests/integration/test_collections.py): it replays on today's MintSaga scheduling the claim with
its collection's key and the metadata upload with its external_url, as recorded. No patch: the
fields ride in existing steps' inputs (left out when unset, as in every older history).
"""

from __future__ import annotations

from tests.replay.scheduled_inputs import load, recorded, replayed

WATCHED = {"admit_mint": "collection", "upload_metadata": "external_url"}


async def test_a_collection_member_replays_claiming_its_slot_and_naming_its_page() -> None:
    history, raw = load("collection-member")
    inputs = recorded(raw, WATCHED)
    assert inputs and all(name in WATCHED for name, _ in inputs)
    [(_, key)] = [(n, v) for n, v in inputs if n == "admit_mint"]
    assert key is not None and key.startswith("tier-")
    assert ("upload_metadata", "https://example.com/saga/1") in inputs
    assert await replayed(history, WATCHED) == inputs


async def test_a_mint_before_collections_replays_with_neither_field() -> None:
    history, raw = load("happy-path-status-notices")
    inputs = recorded(raw, WATCHED)
    assert inputs and all(value is None for _, value in inputs)
    assert await replayed(history, WATCHED) == inputs
