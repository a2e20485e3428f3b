"""Payload encryption: the AES-GCM codec and its settings (pure), the codec server over a real
socket (tokens, CORS, the protocol), then a real encrypted mint on the devstack whose stored
history a plain client reads, and a devstack started with `--codec` (the UI's endpoint, `down`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from temporalio import workflow
from temporalio.api.common.v1 import Payload, Payloads, SearchAttributes
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, Schedule, ScheduleActionStartWorkflow, ScheduleSpec
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DefaultFailureConverterWithEncodedAttributes
from temporalio.exceptions import ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner as Unsandboxed
from temporalio.worker import Worker

import mintsaga
from devstack.config import StackConfig
from devstack.requests import mint_request
from devstack.supervisor import port_open, temporal_binary
from mintsaga.codec.payloads import (
    ALLOW_PLAINTEXT_SETTING,
    ENCODING,
    KEY_ID_METADATA,
    KEYS_SETTING,
    CodecError,
    EncryptionCodec,
    PlaintextPayloadError,
    data_converter_from_env,
    new_key_entry,
    parse_keys,
)
from mintsaga.codec.server import (
    ORIGIN_SETTING,
    TOKEN_SETTING,
    ServerSettings,
    server_settings_from_env,
    serving,
)
from mintsaga.observability import logging as obs_logging
from mintsaga.setting_readers import SettingsError
from mintsaga.workflows.models import MintResult, MintStatus
from tests.saga_support import fault_first, running_worker, temporal_client

CODEC_QUEUE = "codec-tests"
TOKEN = "test-codec-token-0123456789abcdef"
UI_ORIGIN = "http://127.0.0.1:8233"
K1, K2 = new_key_entry("k1"), new_key_entry("k2")


def codec(keys: str) -> EncryptionCodec:
    return EncryptionCodec(parse_keys(keys))


def json_payload(value: Any) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode())


# -- the codec ------------------------------------------------------------------------------------


async def test_round_trip_hides_the_data_and_restores_it_exactly() -> None:
    plain = [json_payload({"user_id": "user-round-trip"}), json_payload("second")]
    encoded = await codec(K1).encode(plain)
    assert len(encoded) == 2
    for payload in encoded:
        assert payload.metadata["encoding"] == ENCODING
        assert payload.metadata[KEY_ID_METADATA] == b"k1"
        assert b"user-round-trip" not in payload.SerializeToString()
    assert encoded[0].data != (await codec(K1).encode(plain[:1]))[0].data  # a fresh nonce
    assert await codec(K1).decode(encoded) == plain


async def test_rotation_old_key_still_decrypts_and_new_payloads_use_the_first() -> None:
    before = await codec(K1).encode([json_payload("written with k1")])
    rotated = codec(f"{K2},{K1}")
    assert await rotated.decode(before) == [json_payload("written with k1")]
    after = await rotated.encode([json_payload("written with k2")])
    assert after[0].metadata[KEY_ID_METADATA] == b"k2"
    assert await codec(K2).decode(after) == [json_payload("written with k2")]
    with pytest.raises(CodecError, match="'k2'"):
        await codec(K1).decode(after)  # a worker not given the new key yet cannot read it


async def test_tampered_ciphertext_or_key_id_is_refused() -> None:
    [sealed] = await codec(K1).encode([json_payload({"wallet": "W"})])
    flipped = Payload()
    flipped.CopyFrom(sealed)
    flipped.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(CodecError, match="does not decrypt"):
        await codec(K1).decode([flipped])
    relabelled = Payload()
    relabelled.CopyFrom(sealed)
    relabelled.metadata[KEY_ID_METADATA] = b"k2"  # a key that exists, but not the one used
    with pytest.raises(CodecError, match="does not decrypt"):
        await codec(f"{K1},{K2}").decode([relabelled])


async def test_an_unknown_key_id_is_refused_naming_it_and_the_setting() -> None:
    [sealed] = await codec(new_key_entry("retired")).encode([json_payload(1)])
    with pytest.raises(CodecError) as refused:
        await codec(f"{K2},{K1}").decode([sealed])
    message = str(refused.value)
    assert "'retired'" in message and KEYS_SETTING in message and "k2, k1" in message


async def test_payloads_from_before_the_codec_are_refused_unless_migrating() -> None:
    plain = json_payload({"old": True})
    with pytest.raises(PlaintextPayloadError, match=ALLOW_PLAINTEXT_SETTING):
        await codec(K1).decode([plain])
    migrating = EncryptionCodec(parse_keys(K1), allow_plaintext=True)
    assert await migrating.decode([plain]) == [plain]


def _key_text(entry: str) -> str:
    return entry.split(":", 1)[1]


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ("just-some-text", "is not KEY_ID:BASE64_KEY"),
        (f"{K1},", "entry 2 of 2 is not KEY_ID:BASE64_KEY"),
        (f":{_key_text(K1)}", "is not KEY_ID:BASE64_KEY"),
        (f"bad id!:{_key_text(K1)}", "a key id is 1 to 64"),
        (f"k1:{_key_text(K1)},{K1}", "key id 'k1' appears twice"),
        ("k1:not*base64*at*all!", "the key is not base64"),
        (f"k1:{base64.b64encode(os.urandom(16)).decode()}", "the key is 16 bytes"),
    ],
)
def test_a_malformed_key_setting_is_named_without_echoing_the_key(raw: str, complaint: str) -> None:
    with pytest.raises(SettingsError) as refused:
        data_converter_from_env({KEYS_SETTING: raw})
    message = str(refused.value)
    assert message.startswith(f"{KEYS_SETTING}:") and complaint in message
    for part in raw.replace(",", ":").split(":"):
        if len(part) > 8:
            assert part not in message


def test_unset_is_todays_plain_converter_and_set_adds_codec_and_failure_encryption() -> None:
    assert data_converter_from_env({}) is pydantic_data_converter
    assert data_converter_from_env({KEYS_SETTING: "  "}) is pydantic_data_converter
    converter = data_converter_from_env({KEYS_SETTING: f"{K2},{K1}"})
    assert isinstance(converter.payload_codec, EncryptionCodec)
    assert converter.payload_codec.keys.current == "k2"
    assert isinstance(converter.failure_converter, DefaultFailureConverterWithEncodedAttributes)
    assert converter.payload_converter_class is pydantic_data_converter.payload_converter_class


async def test_failure_messages_and_stack_traces_are_encrypted() -> None:
    converter = data_converter_from_env({KEYS_SETTING: K1})
    failure = Failure()
    try:
        raise ApplicationError("wallet W-secret refused", {"kind": "permanent"})
    except ApplicationError as error:
        await converter.encode_failure(error, failure)
    assert failure.message == "Encoded failure" and failure.stack_trace == ""
    assert failure.encoded_attributes.metadata["encoding"] == ENCODING
    assert b"W-secret" not in failure.SerializeToString()
    assert b"permanent" not in failure.SerializeToString()  # the details too
    decoded = await converter.decode_failure(failure)
    assert isinstance(decoded, ApplicationError)
    assert decoded.message == "wallet W-secret refused" and decoded.details == (
        {"kind": "permanent"},
    )


def test_keys_never_reach_a_log_line() -> None:
    entry = new_key_entry("logged")
    parse_keys(entry)
    line = obs_logging.redact(f"loaded {entry} and {_key_text(entry)}")
    assert _key_text(entry) not in line
    bad = f"k1:{base64.b64encode(os.urandom(20)).decode()}"  # refused, still a secret
    with pytest.raises(SettingsError):
        parse_keys(bad)
    assert _key_text(bad) not in obs_logging.redact(f"oops {bad}")


def test_keygen_makes_a_usable_entry() -> None:
    keys = parse_keys(new_key_entry())
    assert keys.current.startswith("k") and len(keys.keys[keys.current]) == 32
    with pytest.raises(SettingsError):
        new_key_entry("no spaces")


def test_the_worker_and_starter_refuse_a_bad_key_setting_naming_it(tmp_path: Path) -> None:
    valid = StackConfig.create(tmp_path).worker_env()  # every other setting well-formed
    Path(valid["MINT_IMAGE_DIR"]).mkdir()
    for program in (["worker.py"], ["starter.py", "list"]):
        env = {**os.environ, **valid, KEYS_SETTING: "k1:dG9vIHNob3J0"}
        done = subprocess.run(
            [sys.executable, *program], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2, done.stderr
        assert KEYS_SETTING in done.stderr and "dG9vIHNob3J0" not in done.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, KEYS_SETTING),
        ({KEYS_SETTING: K1}, TOKEN_SETTING),
        ({KEYS_SETTING: K1, TOKEN_SETTING: "short"}, TOKEN_SETTING),
        ({KEYS_SETTING: K1, TOKEN_SETTING: TOKEN, ORIGIN_SETTING: "http://h:1/ui"}, ORIGIN_SETTING),
        (
            {KEYS_SETTING: K1, TOKEN_SETTING: TOKEN, ORIGIN_SETTING: "127.0.0.1:8233"},
            ORIGIN_SETTING,
        ),
    ],
)
def test_codec_server_settings_are_checked(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        server_settings_from_env(env)


def test_codec_server_settings_accept_an_origin() -> None:
    settings = server_settings_from_env(
        {KEYS_SETTING: K1, TOKEN_SETTING: TOKEN, ORIGIN_SETTING: "http://127.0.0.1:8233/"}
    )
    assert settings.ui_origin == UI_ORIGIN and TOKEN not in repr(settings)


# -- the codec server over a real socket ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def codec_server(keys: str = K1) -> AsyncIterator[str]:
    settings = ServerSettings(parse_keys(keys), TOKEN, UI_ORIGIN)
    port = free_port()
    async with serving(settings, "127.0.0.1", port):
        yield f"http://127.0.0.1:{port}"


def payloads_json(payloads: Iterable[Payload]) -> dict[str, Any]:
    return json.loads(json_format.MessageToJson(Payloads(payloads=list(payloads))))


def payloads_from(answer: httpx.Response) -> list[Payload]:
    return list(json_format.Parse(answer.text, Payloads()).payloads)


BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def test_codec_server_encodes_and_decodes_by_the_protocol() -> None:
    plain = [json_payload({"user_id": "user-over-http"})]
    async with codec_server() as url, httpx.AsyncClient(timeout=10) as http:
        encoded = await http.post(f"{url}/encode", json=payloads_json(plain), headers=BEARER)
        assert encoded.status_code == 200, encoded.text
        assert encoded.headers["Content-Type"].startswith("application/json")
        sealed = payloads_from(encoded)
        assert sealed[0].metadata["encoding"] == ENCODING
        assert await codec(K1).decode(sealed) == plain  # the workers' codec reads it
        # Only the last path segment counts: mounted under a prefix, with the UI's query.
        decoded = await http.post(
            f"{url}/default/decode?preserveStorageRefs=true",
            json=payloads_json(sealed),
            headers=BEARER | {"X-Namespace": "default"},
        )
        assert decoded.status_code == 200 and payloads_from(decoded) == plain
        # The Temporal UI's form: the token as the path prefix (it cannot add a header).
        by_path = await http.post(f"{url}/{TOKEN}//decode", json=payloads_json(sealed))
        assert by_path.status_code == 200 and payloads_from(by_path) == plain


async def test_codec_server_needs_the_token() -> None:
    [sealed] = await codec(K1).encode([json_payload("x")])
    body = payloads_json([sealed])
    async with codec_server() as url, httpx.AsyncClient(timeout=10) as http:
        attempts = [
            (f"{url}/decode", {}),
            (f"{url}/decode", {"Authorization": "Bearer not-the-token-at-all"}),
            (f"{url}/decode", {"Authorization": f"Bearer {TOKEN[:-1]}"}),
            (f"{url}/decode", {"Authorization": f"Basic {TOKEN}"}),
            (f"{url}/encode", {}),
            (f"{url}/{TOKEN[:-1]}/decode", {}),
            (f"{url}/wrong/{TOKEN}/decode", {}),
        ]
        for target, headers in attempts:
            answer = await http.post(target, json=body, headers=headers)
            assert answer.status_code == 401, (target, headers, answer.text)
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
            assert "payloads" not in answer.text


async def test_codec_server_answers_400_for_bad_bodies_and_undecryptable_payloads() -> None:
    [foreign] = await codec(new_key_entry("elsewhere")).encode([json_payload("x")])
    async with codec_server() as url, httpx.AsyncClient(timeout=10) as http:
        not_json = await http.post(f"{url}/decode", content=b"{nope", headers=BEARER)
        assert not_json.status_code == 400
        wrong_shape = await http.post(f"{url}/decode", json={"payloads": 3}, headers=BEARER)
        assert wrong_shape.status_code == 400
        unknown = await http.post(f"{url}/decode", json=payloads_json([foreign]), headers=BEARER)
        assert unknown.status_code == 400 and "'elsewhere'" in unknown.json()["error"]
        other = await http.post(f"{url}/other", json={}, headers=BEARER)
        assert other.status_code == 404
        health = await http.get(f"{url}/health")
        assert health.status_code == 200


async def test_codec_server_cors_allows_only_the_ui_origin() -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
    }
    async with codec_server() as url, httpx.AsyncClient(timeout=10) as http:
        allowed = await http.options(f"{url}/decode", headers=preflight | {"Origin": UI_ORIGIN})
        assert allowed.status_code in (200, 204)
        assert allowed.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
        allowed_headers = {
            h.strip().lower() for h in allowed.headers["Access-Control-Allow-Headers"].split(",")
        }
        assert {"authorization", "content-type", "x-namespace"} <= allowed_headers
        assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
        assert allowed.headers["Access-Control-Allow-Credentials"] == "true"

        for origin in ("http://evil.example", "http://localhost:8233", "http://127.0.0.1:8234"):
            refused = await http.options(f"{url}/decode", headers=preflight | {"Origin": origin})
            assert "Access-Control-Allow-Origin" not in refused.headers, origin
            assert refused.status_code == 403

        body = payloads_json(await codec(K1).encode([json_payload("x")]))
        from_ui = await http.post(
            f"{url}/decode", json=body, headers=BEARER | {"Origin": UI_ORIGIN}
        )
        assert from_ui.status_code == 200
        assert from_ui.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
        # A page elsewhere holding the token still gets nothing its browser would show it.
        elsewhere = await http.post(
            f"{url}/decode", json=body, headers=BEARER | {"Origin": "http://evil.example"}
        )
        assert elsewhere.status_code == 403
        assert "Access-Control-Allow-Origin" not in elsewhere.headers


# -- a real encrypted mint on the devstack --------------------------------------------------------


def payloads_in(message: Message) -> list[Payload]:
    """Every Payload anywhere inside a protobuf message, but search attributes' (which Temporal
    indexes, so no codec touches them: MintStage, MintStatus and the SDK's own)."""
    if isinstance(message, Payload):
        return [message]
    if isinstance(message, SearchAttributes):
        return []
    found: list[Payload] = []
    for _, value in message.ListFields():
        if isinstance(value, Message):
            items: list[Any] = [value]
        elif hasattr(value, "values") and callable(value.values):  # a map
            items = list(value.values())
        elif isinstance(value, str | bytes | int | float | bool):
            continue
        else:
            try:
                items = list(value)
            except TypeError:
                continue
        for item in items:
            if isinstance(item, Message):
                found += payloads_in(item)
    return found


async def cli_show(stack: StackConfig, workflow_id: str, *codec_args: str) -> dict[str, Any]:
    """`temporal workflow show --output json`, as an operator runs it (run off the event loop's
    thread: the codec server it may call lives in this loop)."""
    process = await asyncio.create_subprocess_exec(
        temporal_binary(), "workflow", "show", "--workflow-id", workflow_id,
        "--address", stack.temporal_address, "--output", "json", *codec_args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    shown: dict[str, Any] = json.loads(out)
    return shown


@pytest.mark.integration
async def test_an_encrypted_mint_stores_no_plaintext_and_the_codec_server_decodes_it(
    stack: StackConfig,
) -> None:
    keys = f"{K2},{K1}"
    encrypted = await temporal_client(stack, **{KEYS_SETTING: keys})
    plain: Client = await temporal_client(stack)
    assert plain.data_converter is pydantic_data_converter  # the stack itself has no codec
    request = mint_request(stack, description=f"private description {uuid.uuid4().hex}")
    secrets = {
        "user_id": request.user_id,
        "wallet": request.wallet,
        "name": request.name,
        "description": request.description,
        "image path": request.image.path,
    }
    # Statements fail for 4 s: longer than the store's own retries on a fresh connection
    # (0.5 s, 1 s, 2 s), so one attempt of record_uploads fails and the next succeeds.
    reset = {"target": "postgres", "kind": "error", "match": "statement", "duration_ms": 4000}
    async with running_worker(
        stack, encrypted, CODEC_QUEUE, wrap={"record_uploads": fault_first(stack, reset)}
    ):
        handle = await mintsaga.start_mint(encrypted, request, queue=CODEC_QUEUE)
        result = await handle.result()
    assert result.status == MintStatus.MINTED and result.retries["db"] >= 1

    # The history as Temporal stores it, read without the key.
    history = await plain.get_workflow_handle(handle.id).fetch_history()
    stored = b"".join(event.SerializeToString() for event in history.events)
    stored_json = history.to_json()
    for field, value in secrets.items():
        assert value is not None
        assert value.encode() not in stored, f"{field} stored in plaintext"
        assert value not in stored_json, f"{field} in the history's JSON"
    payloads = payloads_in_history(history.events)
    unencrypted = [
        p
        for p in payloads
        if p.metadata["encoding"] != ENCODING and not _local_activity_bookkeeping(p.data)
    ]
    assert payloads and not unencrypted, unencrypted
    unchecked = [p for p in payloads if _local_activity_bookkeeping(p.data)]
    assert {p.metadata[KEY_ID_METADATA] for p in payloads if p not in unchecked} == {b"k2"}
    with pytest.raises(Exception, match=r"encrypted|decrypt|binary"):
        await plain.get_workflow_handle(handle.id).result()  # unreadable without the key

    # The activity's failed attempt: its message and stack trace are encrypted too.
    failures = [
        event.activity_task_started_event_attributes.last_failure
        for event in history.events
        if event.HasField("activity_task_started_event_attributes")
        and event.activity_task_started_event_attributes.HasField("last_failure")
    ] + [  # a failed local attempt (the lean saga) is recorded in its marker
        event.marker_recorded_event_attributes.failure
        for event in history.events
        if event.HasField("marker_recorded_event_attributes")
        and event.marker_recorded_event_attributes.HasField("failure")
    ]
    assert failures, "the injected fault left no failure in the history"
    for failure in failures:
        assert failure.message == "Encoded failure" and failure.stack_trace == ""
        assert failure.encoded_attributes.metadata["encoding"] == ENCODING
    real = await encrypted.data_converter.decode_failure(copy_of(failures[0]))
    assert real.message and real.message != "Encoded failure"

    # Control: the same history, decrypted, holds every field (so the search above looked in
    # the right place).
    decrypted = b"".join(
        p.data
        for p in await encrypted.data_converter.payload_codec.decode(  # type: ignore[union-attr]
            [p for p in payloads if p not in unchecked]
        )
    )
    for field, value in secrets.items():
        assert value.encode() in decrypted, field

    # The codec server decodes the stored payloads and the failure over HTTP.
    started = history.events[0].workflow_execution_started_event_attributes.input.payloads
    async with codec_server(keys) as url, httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(
            f"{url}/decode",
            json=payloads_json([*started, failures[0].encoded_attributes]),
            headers=BEARER | {"X-Namespace": "default"},
        )
        assert answer.status_code == 200, answer.text
        request_payload, failure_payload = payloads_from(answer)
        assert request_payload.metadata["encoding"] == b"json/plain"
        assert json.loads(request_payload.data) == request.model_dump(mode="json")
        assert json.loads(failure_payload.data)["message"] == real.message

        # And the Temporal CLI, pointed at it, shows the history decoded.
        shown = await cli_show(
            stack, handle.id, "--codec-endpoint", url, "--codec-auth", f"Bearer {TOKEN}"
        )
        first = shown["events"][0]["workflowExecutionStartedEventAttributes"]["input"]
        data = base64.b64decode(first["payloads"][0]["data"])
        assert json.loads(data)["user_id"] == request.user_id
    unaided = await cli_show(stack, handle.id)
    assert request.user_id not in json.dumps(unaided)


async def first_workflow_task_failure(client: Client, workflow_id: str) -> Failure:
    """The failure of the workflow's first failed workflow task, once it is in the history."""
    for _ in range(300):
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        for event in history.events:
            if event.HasField("workflow_task_failed_event_attributes"):
                return copy_of(event.workflow_task_failed_event_attributes.failure)
        await asyncio.sleep(0.1)
    raise AssertionError(f"{workflow_id}: no workflow task failed within 30 s")


@pytest.mark.integration
async def test_a_worker_with_keys_refuses_a_plaintext_mint_until_the_migration_setting(
    stack: StackConfig,
) -> None:
    """A mint started by a client without the key (an unencrypted history, as before encryption
    was turned on, or as anyone who can reach Temporal would send it): a worker with the keys
    fails its workflow task on the plaintext input, naming the migration setting, and runs none
    of it; a worker with MINTSAGA_CODEC_ALLOW_PLAINTEXT=true then finishes the same mint."""
    queue = f"{CODEC_QUEUE}-plaintext-{uuid.uuid4().hex[:6]}"
    plain = await temporal_client(stack)
    refusing = await temporal_client(stack, **{KEYS_SETTING: K1})
    migrating = await temporal_client(stack, **{KEYS_SETTING: K1, ALLOW_PLAINTEXT_SETTING: "true"})
    request = mint_request(stack)
    handle = await mintsaga.start_mint(plain, request, queue=queue)
    history = await plain.get_workflow_handle(handle.id).fetch_history()
    [stored] = history.events[0].workflow_execution_started_event_attributes.input.payloads
    assert stored.metadata["encoding"] == b"json/plain"  # what the refusing worker is handed

    async with running_worker(stack, refusing, queue):
        failure = await first_workflow_task_failure(plain, handle.id)
    refusal = await refusing.data_converter.decode_failure(failure)  # encrypted by the worker
    assert "not encrypted" in str(refusal) and ALLOW_PLAINTEXT_SETTING in str(refusal), refusal
    history = await plain.get_workflow_handle(handle.id).fetch_history()
    assert not [e for e in history.events if e.HasField("activity_task_scheduled_event_attributes")]
    conn = await asyncpg.connect(stack.direct_database_url)
    try:
        row = await conn.fetchval("SELECT 1 FROM mints WHERE mint_id = $1", request.mint_id)
    finally:
        await conn.close()
    assert row is None  # nothing of the mint ran

    async with running_worker(stack, migrating, queue):
        result = await migrating.get_workflow_handle(handle.id, result_type=MintResult).result()
    assert result.status == MintStatus.MINTED
    # The migrating worker still encrypts what it writes: the result is sealed.
    history = await plain.get_workflow_handle(handle.id).fetch_history()
    completed = history.events[-1].workflow_execution_completed_event_attributes.result.payloads
    assert completed and all(p.metadata["encoding"] == ENCODING for p in completed)


@workflow.defn(name="CodecScheduledProbe")
class ScheduledProbe:
    """Stands in for the health schedule's workflow: a schedule hands each run the result of the
    last successful one (`last_completion_result`), a payload Temporal carries forward."""

    @workflow.run
    async def run(self) -> list[str]:
        return ["row"]


async def scheduled_run(
    client: Client, schedule_id: str, queue: str
) -> tuple[str, list[HistoryEvent]]:
    """Trigger the schedule once with a worker on `client`: the run's workflow id and its history
    once it completed or a workflow task of it failed."""
    schedule = client.get_schedule_handle(schedule_id)
    before = len((await schedule.describe()).info.recent_actions)
    async with Worker(
        client, task_queue=queue, workflows=[ScheduledProbe], workflow_runner=Unsandboxed()
    ):
        await schedule.trigger()
        for _ in range(300):
            actions = (await schedule.describe()).info.recent_actions
            if len(actions) > before:
                workflow_id = actions[-1].action.workflow_id
                history = await client.get_workflow_handle(workflow_id).fetch_history()
                if any(
                    e.HasField("workflow_task_failed_event_attributes")
                    or e.HasField("workflow_execution_completed_event_attributes")
                    for e in history.events
                ):
                    return workflow_id, list(history.events)
            await asyncio.sleep(0.1)
    raise AssertionError(f"{schedule_id}: the triggered run neither completed nor failed")


def carried_result(events: list[HistoryEvent]) -> Payload:
    [payload] = events[
        0
    ].workflow_execution_started_event_attributes.last_completion_result.payloads
    return payload


@pytest.mark.integration
async def test_a_schedules_result_from_before_encryption_needs_the_migration_setting(
    stack: StackConfig,
) -> None:
    """Temporal itself carries a payload across the switch: a schedule's next run gets the last
    successful run's result. Written before the keys, it is plaintext, so a refusing worker fails
    the next run (the health schedule's, until one run succeeds under the codec); a worker with
    MINTSAGA_CODEC_ALLOW_PLAINTEXT finishes it, its result sealed, and the runs after it need no
    setting."""
    queue = f"{CODEC_QUEUE}-schedule-{uuid.uuid4().hex[:6]}"
    plain = await temporal_client(stack)
    refusing = await temporal_client(stack, **{KEYS_SETTING: K1})
    migrating = await temporal_client(stack, **{KEYS_SETTING: K1, ALLOW_PLAINTEXT_SETTING: "true"})
    schedule_id = f"codec-{queue}"
    action = ScheduleActionStartWorkflow(
        ScheduledProbe.run, id=f"{schedule_id}-run", task_queue=queue
    )
    await plain.create_schedule(schedule_id, Schedule(action=action, spec=ScheduleSpec()))
    try:
        _, first = await scheduled_run(plain, schedule_id, queue)  # before encryption
        assert first[-1].HasField("workflow_execution_completed_event_attributes")

        stuck_id, refused = await scheduled_run(refusing, schedule_id, queue)
        assert carried_result(refused).metadata["encoding"] == b"json/plain"
        failure = next(
            e.workflow_task_failed_event_attributes.failure
            for e in refused
            if e.HasField("workflow_task_failed_event_attributes")
        )
        refusal = await refusing.data_converter.decode_failure(copy_of(failure))
        assert "not encrypted" in str(refusal) and ALLOW_PLAINTEXT_SETTING in str(refusal)

        async with Worker(
            migrating, task_queue=queue, workflows=[ScheduledProbe], workflow_runner=Unsandboxed()
        ):
            await asyncio.wait_for(migrating.get_workflow_handle(stuck_id).result(), 60)

        _, after = await scheduled_run(refusing, schedule_id, queue)
        assert after[-1].HasField("workflow_execution_completed_event_attributes")
        assert carried_result(after).metadata["encoding"] == ENCODING
    finally:
        await plain.get_schedule_handle(schedule_id).delete()


def payloads_in_history(events: Iterable[HistoryEvent]) -> list[Payload]:
    """Every payload of the history but the SDK's own patch markers (`workflow.patched` ids, which
    its core writes without the codec)."""
    return [
        payload
        for event in events
        if event.marker_recorded_event_attributes.marker_name != "core_patch"
        for payload in payloads_in(event)
    ]


def copy_of(failure: Failure) -> Failure:
    copy = Failure()
    copy.CopyFrom(failure)
    return copy


# -- the devstack with --codec --------------------------------------------------------------------

# Beside the suite's stack (+0) and the lifecycle test's (+10000), and below Linux's ephemeral
# ports (32768 up), where a client socket of the suite may already hold one of ours.
CODEC_STACK_OFFSET = int(os.environ.get("DEVSTACK_TEST_PORT_OFFSET", "10000")) + 13000


def devstack(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DEVSTACK_CODEC")}
    return subprocess.run(
        [sys.executable, "-m", "devstack", "--state-dir", str(state_dir), *args],
        capture_output=True, text=True, timeout=180, check=False, env=env,
    )  # fmt: skip


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")


@pytest.mark.integration
async def test_devstack_with_codec_points_the_ui_at_its_codec_server_and_down_stops_it(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "codec-stack"
    config: StackConfig | None = None
    pids: list[int] = []
    try:
        up = await asyncio.to_thread(
            devstack, state_dir, "up", "--detach", "--codec", "--port-offset",
            str(CODEC_STACK_OFFSET),
        )  # fmt: skip
        assert up.returncode == 0, up.stderr
        config = StackConfig.load(state_dir)
        env = config.worker_env()
        assert f"export {KEYS_SETTING}=" in up.stdout and f"export {TOKEN_SETTING}=" in up.stdout
        assert "export TEMPORAL_CODEC_AUTH='Bearer " in up.stdout  # quoted for `eval`
        codec_pid = int((state_dir / "run" / "codec.pid").read_text())
        pids = [int(p.read_text()) for p in (state_dir / "run").glob("*.pid")]
        assert alive(codec_pid)
        status = await asyncio.to_thread(devstack, state_dir, "status")
        assert status.returncode == 0 and "codec" in status.stdout, status.stdout
        # The key and token are never on a command line; the UI endpoint carries the token.
        cmdline = await asyncio.to_thread(Path(f"/proc/{codec_pid}/cmdline").read_bytes)
        assert _key_text(env[KEYS_SETTING]).encode() not in cmdline
        assert env[TOKEN_SETTING].encode() not in cmdline

        async with httpx.AsyncClient(timeout=10) as http:
            ui = (await http.get(config.url("temporal-ui") + "/api/v1/settings")).json()
            assert ui["Codec"]["Endpoint"] == config.codec_ui_endpoint

            # A client with the stack's settings encrypts; the UI's request decodes it.
            client = await Client.connect(
                config.temporal_address, data_converter=data_converter_from_env(env)
            )
            secret = f"ui-secret-{uuid.uuid4().hex}"
            handle = await client.start_workflow(
                "NoWorkerWorkflow", secret, id=f"codec-{secret}", task_queue="nobody"
            )
            plain = await Client.connect(config.temporal_address)
            history = await plain.get_workflow_handle(handle.id).fetch_history()
            [stored] = history.events[0].workflow_execution_started_event_attributes.input.payloads
            assert stored.metadata["encoding"] == ENCODING and secret.encode() not in stored.data
            # What the UI sends: `${endpoint}/decode`, its origin, X-Namespace, no header token.
            answer = await http.post(
                config.codec_ui_endpoint + "/decode?preserveStorageRefs=true",
                json=payloads_json([stored]),
                headers={"Origin": config.url("temporal-ui"), "X-Namespace": "default"},
            )
            assert answer.status_code == 200, answer.text
            assert answer.headers["Access-Control-Allow-Origin"] == config.url("temporal-ui")
            assert json.loads(payloads_from(answer)[0].data) == secret
            unauthorized = await http.post(
                config.url("codec") + "/decode", json=payloads_json([stored])
            )
            assert unauthorized.status_code == 401

        down = await asyncio.to_thread(devstack, state_dir, "down")
        assert down.returncode == 0, down.stderr
        assert not [pid for pid in pids if alive(pid)]
        assert not port_open(config.ports["codec"])
    finally:
        wiped = await asyncio.to_thread(devstack, state_dir, "down", "--wipe")
        assert wiped.returncode == 0, wiped.stderr
    assert not [pid for pid in pids if alive(pid)]
    if config is not None:
        assert not [name for name, port in config.ports.items() if port_open(port)]


# What the SDK's core writes beside a local activity's (encrypted) result in its marker: its
# own bookkeeping, never a payload of ours, so no codec sees it (the lean saga, issue 19).
LOCAL_ACTIVITY_FIELDS = {
    "seq",
    "attempt",
    "activity_id",
    "activity_type",
    "complete_time",
    "backoff",
    "original_schedule_time",
    "activation_index",
}


def _local_activity_bookkeeping(data: bytes) -> bool:
    try:
        fields = json.loads(data)
    except ValueError:
        return False
    return isinstance(fields, dict) and set(fields) <= LOCAL_ACTIVITY_FIELDS
