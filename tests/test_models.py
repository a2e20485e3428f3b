"""The request a backend sends: validation that names the field, and the published schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from mintsaga.workflows.models import MintRequest, MintResult, MintStatus

SCHEMA = Path(__file__).parent.parent / "schemas" / "mint_request.schema.json"


def valid(**overrides: object) -> dict[str, object]:
    request: dict[str, object] = {
        "mint_id": "m-1",
        "user_id": "u-1",
        "wallet": str(Keypair().pubkey()),
        "name": "Saga #1",
        "symbol": "SAGA",
        "image": {"path": "a.png"},
    }
    request.update(overrides)
    return request


def fields_in_error(**overrides: object) -> set[str]:
    with pytest.raises(ValidationError) as raised:
        MintRequest.model_validate(valid(**overrides))
    return {".".join(str(p) for p in e["loc"]) for e in raised.value.errors()}


def test_a_valid_request_is_frozen_and_derives_its_workflow_id() -> None:
    request = MintRequest.model_validate(valid())
    assert request.workflow_id == "mint-m-1"
    with pytest.raises(ValidationError):
        request.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"wallet": "not-base58!"}, "wallet"),
        ({"wallet": str(Pubkey.find_program_address([b"x"], Pubkey.default())[0])}, "wallet"),
        ({"name": "é" * 17}, "name"),  # 34 bytes of UTF-8
        ({"symbol": "ELEVENCHARS"}, "symbol"),
        ({"mint_id": "has space"}, "mint_id"),
        ({"image": {"path": "a.png", "url": "https://x/a.png"}}, "image"),
        ({"image": {"path": "/etc/passwd"}}, "image"),
        ({"image": {"url": "ftp://x/a.png"}}, "image"),
        ({"image": {"path": "a.png", "sha256": "abc"}}, "image"),
        ({"attributes": [{"trait_type": "", "value": 1}]}, "attributes.0.trait_type"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_an_invalid_request_names_the_field(overrides: dict[str, object], field: str) -> None:
    assert field in fields_in_error(**overrides)


def test_the_published_json_schema_is_current() -> None:
    """Backends in other languages build requests from schemas/mint_request.schema.json;
    regenerate it with `python -m mintsaga.workflows.models > schemas/mint_request.schema.json`."""
    assert json.loads(SCHEMA.read_text()) == MintRequest.model_json_schema()


def test_answers_from_a_newer_worker_decode_in_an_older_starter_but_requests_stay_strict() -> None:
    """A rolling deploy: the worker's StatusView/MintResult may carry a field this code does
    not know yet; a backend's request with an unknown field is still refused."""
    result = MintResult(mint_id="m-1", status=MintStatus.MINTED, owner="o")
    newer = {**result.model_dump(mode="json"), "field_from_the_future": 1}
    assert MintResult.model_validate(newer) == result
    with pytest.raises(ValidationError, match="field_from_the_future"):
        MintRequest.model_validate({"field_from_the_future": 1})
