"""The request a backend sends: validation that names the field, and the published schema;
the failure details activities attach, as stored histories hold them."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ActivityError, ApplicationError

from mintsaga.errors import ErrorKind
from mintsaga.workflows.activity_models import FailureDetails
from mintsaga.workflows.models import MintRequest, MintResult, MintStatus, RetryOverrides
from mintsaga.workflows.saga import attempts_made, error_info
from tests.paths import HISTORIES, ROOT

SCHEMA = ROOT / "schemas" / "mint_request.schema.json"


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


OLD_DETAILS = {"kind": "transient", "service": "solana", "endpoint": "http://x:1", "attempt": 2}


def test_failure_details_go_on_the_wire_as_the_dict_they_replace() -> None:
    """Stored histories hold `{"kind", "service", "endpoint", "attempt"}`: same keys, same order."""
    details = FailureDetails(
        kind=ErrorKind.TRANSIENT, service="solana", endpoint="http://x:1", attempt=2
    )
    converter = pydantic_data_converter.payload_converter
    (sent,) = converter.to_payloads([details.as_detail()])
    (old,) = converter.to_payloads([OLD_DETAILS])
    assert sent.data == old.data
    with pytest.raises(ValidationError):
        details.attempt = 3  # type: ignore[misc]


def application_error(*details: object, non_retryable: bool = False) -> ApplicationError:
    return ApplicationError("boom", *details, type="Boom", non_retryable=non_retryable)


def test_failure_details_are_read_field_by_field() -> None:
    read = FailureDetails.of
    assert read(application_error(OLD_DETAILS)) == FailureDetails.model_validate(OLD_DETAILS)
    assert read(application_error({**OLD_DETAILS, "from_the_future": 1})) == read(
        application_error(OLD_DETAILS)
    )
    assert read(application_error({"kind": "needs_operator"})) == FailureDetails(
        kind="needs_operator"
    )
    malformed = read(application_error({"kind": "permanent", "attempt": "2"}))
    assert malformed == FailureDetails(kind="permanent")
    assert read(application_error()) is None
    assert read(application_error("text")) is None


def activity_error(cause: BaseException) -> ActivityError:
    err = ActivityError(
        "activity failed",
        scheduled_event_id=5,
        started_event_id=6,
        identity="w",
        activity_type="claim_mint",
        activity_id="1",
        retry_state=None,
    )
    err.__cause__ = cause
    return err


@pytest.mark.parametrize(
    ("details", "non_retryable", "kind", "attempts"),
    [
        ((OLD_DETAILS,), False, "transient", 2),
        (({"kind": "needs_operator"},), True, "needs_operator", 3),  # a hand-written detail
        (({"kind": "permanent", "attempt": "2"},), False, "permanent", 3),
        ((), True, "permanent", 3),  # no details: the retry flag says
        ((), False, "transient", 3),
        (("text",), False, "transient", 3),
    ],
)
def test_the_saga_reads_what_a_failure_says(
    details: tuple[object, ...], non_retryable: bool, kind: str, attempts: int
) -> None:
    err = activity_error(application_error(*details, non_retryable=non_retryable))
    assert error_info("claim_mint", err).kind == kind
    assert attempts_made(err, 3) == attempts


async def test_every_stored_failure_reads_as_failure_details() -> None:
    """The details of every failed attempt in tests/histories parse, as the saga and
    `mintsaga show` (api/history.py) read them."""
    seen = 0
    for path in sorted(HISTORIES.glob("*.json")):
        history = WorkflowHistory.from_json(path.stem, path.read_text())
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
                failure = event.activity_task_failed_event_attributes.failure
            elif event.activity_task_started_event_attributes.HasField("last_failure"):
                failure = event.activity_task_started_event_attributes.last_failure  # retried
            else:
                continue
            error = await pydantic_data_converter.decode_failure(failure)
            assert isinstance(error, ApplicationError)
            details = FailureDetails.of(error)
            assert details is not None, path.name
            assert details.as_detail() == error.details[0]
            seen += 1
    assert seen >= 12  # in the histories stored today


async def test_a_retry_keeps_earlier_overrides_only_when_it_says_so() -> None:
    earlier = RetryOverrides(priority_fee_micro_lamports=5_000, preferred_endpoint="https://b")
    kept = RetryOverrides(preferred_endpoint="https://c", keep_overrides=True)
    assert kept.over(earlier) == RetryOverrides(
        priority_fee_micro_lamports=5_000, preferred_endpoint="https://c"
    )
    assert RetryOverrides(keep_overrides=True).over(earlier) == earlier
    assert kept.changes == RetryOverrides(preferred_endpoint="https://c")
    # A plain retry's payload is what it was before the field existed (a worker not yet
    # upgraded forbids unknown fields); keep_overrides travels only when set.
    [plain] = await pydantic_data_converter.encode([RetryOverrides(priority_fee_micro_lamports=1)])
    assert json.loads(plain.data) == {"priority_fee_micro_lamports": 1, "preferred_endpoint": None}
    [keep] = await pydantic_data_converter.encode([kept])
    assert json.loads(keep.data)["keep_overrides"] is True
    assert await pydantic_data_converter.decode([keep], [RetryOverrides]) == [kept]


def test_a_preferred_endpoint_given_with_its_key_keeps_only_its_name() -> None:
    """The override travels in the workflow's history: the key must not (issue 14)."""
    key = "Zk3eQ9xY2Lm8Pq4Rt6Uv1Wx5Yz7Ab0Cd"
    overrides = RetryOverrides(preferred_endpoint=f"https://solana-mainnet.g.alchemy.com/v2/{key}/")
    assert overrides.preferred_endpoint == "https://solana-mainnet.g.alchemy.com/v2/***"
    assert key not in overrides.model_dump_json()
    helius = RetryOverrides(preferred_endpoint="https://mainnet.helius-rpc.com/?api-key=k-1234")
    assert helius.preferred_endpoint == "https://mainnet.helius-rpc.com"
