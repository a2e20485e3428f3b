"""With keys set, the codec refuses payloads that are not encrypted (issue 14): in a worker, in
a client and in the codec server alike, unless MINTSAGA_CODEC_ALLOW_PLAINTEXT lets them through
for the migration from an unencrypted namespace. Pure: no server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DefaultFailureConverterWithEncodedAttributes
from temporalio.exceptions import ApplicationError

from mintsaga.codec import (
    ALLOW_PLAINTEXT_SETTING,
    KEYS_SETTING,
    CodecError,
    EncryptionCodec,
    PlaintextPayloadError,
    allow_plaintext_from_env,
    data_converter_from_env,
    parse_keys,
)
from mintsaga.codec.payloads import ENCODING, new_key_entry
from mintsaga.codec.server import TOKEN_SETTING, build_app, server_settings_from_env
from mintsaga.setting_readers import SettingsError

K1 = new_key_entry("k1")
TOKEN = "unit-codec-token-0123456789abcdef"


def json_payload(value: Any) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode())


def refusing() -> EncryptionCodec:
    return EncryptionCodec(parse_keys(K1))


def allowing() -> EncryptionCodec:
    return EncryptionCodec(parse_keys(K1), allow_plaintext=True)


# What an unencrypted history holds: JSON, the SDK's null, raw bytes, a protobuf, and the odd
# payload with no encoding at all (an empty one).
PLAINTEXT = [
    json_payload({"user_id": "u-1", "wallet": "W"}),
    Payload(metadata={"encoding": b"binary/null"}),
    Payload(metadata={"encoding": b"binary/plain"}, data=b"\x00\x01"),
    Payload(metadata={"encoding": b"json/protobuf", "messageType": b"x.Y"}, data=b"{}"),
    Payload(),
]


@pytest.mark.parametrize("payload", PLAINTEXT, ids=lambda p: str(p.metadata.get("encoding")))
async def test_with_keys_set_a_plaintext_payload_is_refused_naming_the_settings(
    payload: Payload,
) -> None:
    with pytest.raises(PlaintextPayloadError) as refused:
        await refusing().decode([payload])
    message = str(refused.value)
    assert "not encrypted" in message
    assert KEYS_SETTING in message and f"{ALLOW_PLAINTEXT_SETTING}=true" in message
    assert isinstance(refused.value, CodecError)  # the codec server answers it 400
    if payload.data:
        assert payload.data.decode(errors="replace") not in message  # never the data


async def test_one_plaintext_payload_among_encrypted_ones_refuses_the_batch() -> None:
    sealed = await refusing().encode([json_payload("sealed")])
    with pytest.raises(PlaintextPayloadError):
        await refusing().decode([*sealed, json_payload("injected")])


async def test_the_refusal_shows_a_hostile_encoding_safely() -> None:
    odd = Payload(metadata={"encoding": b"\x1b[2J" + b"A" * 500}, data=b"x")
    with pytest.raises(PlaintextPayloadError) as refused:
        await refusing().decode([odd])
    message = str(refused.value)
    assert "\x1b" not in message and "A" * 41 not in message


@pytest.mark.parametrize("payload", PLAINTEXT, ids=lambda p: str(p.metadata.get("encoding")))
async def test_the_migration_setting_lets_plaintext_through_unchanged(payload: Payload) -> None:
    assert await allowing().decode([payload]) == [payload]


@pytest.mark.parametrize("codec", [refusing, allowing])
async def test_encrypted_payloads_still_round_trip(codec: Any) -> None:
    plain = [json_payload({"name": "round trip"}), Payload(metadata={"encoding": b"binary/null"})]
    sealed = await codec().encode(plain)
    assert all(p.metadata["encoding"] == ENCODING for p in sealed)
    assert await codec().decode(sealed) == plain
    # Encoding never passes plaintext on, whatever the setting.
    assert all(b"round trip" not in p.data for p in sealed)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("", False), ("false", False), ("0", False), ("no", False), ("true", True), ("1", True)],
)
def test_the_setting_is_a_boolean(raw: str, expected: bool) -> None:
    assert allow_plaintext_from_env({ALLOW_PLAINTEXT_SETTING: raw}) is expected
    assert allow_plaintext_from_env({}) is False


def test_a_malformed_setting_is_named() -> None:
    with pytest.raises(SettingsError, match=ALLOW_PLAINTEXT_SETTING):
        data_converter_from_env({KEYS_SETTING: K1, ALLOW_PLAINTEXT_SETTING: "maybe"})


def test_the_converter_refuses_by_default_and_follows_the_setting() -> None:
    refusing_converter = data_converter_from_env({KEYS_SETTING: K1})
    assert isinstance(refusing_converter.payload_codec, EncryptionCodec)
    assert refusing_converter.payload_codec.allow_plaintext is False
    migrating = data_converter_from_env({KEYS_SETTING: K1, ALLOW_PLAINTEXT_SETTING: "true"})
    assert isinstance(migrating.payload_codec, EncryptionCodec)
    assert migrating.payload_codec.allow_plaintext is True
    # Without keys there is no codec: plain JSON, as before.
    assert data_converter_from_env({ALLOW_PLAINTEXT_SETTING: "true"}) is pydantic_data_converter


async def test_a_client_refuses_a_plaintext_result_and_a_plaintext_failure() -> None:
    """What `handle.result()` and a workflow's activation do: the converter's decode."""
    converter = data_converter_from_env({KEYS_SETTING: K1})
    with pytest.raises(PlaintextPayloadError):
        await converter.decode([json_payload({"status": "MINTED"})])
    # A failure whose message a client without the key moved into plain encoded attributes.
    plain_attributes = Failure()
    DefaultFailureConverterWithEncodedAttributes().to_failure(
        ApplicationError("forged"), pydantic_data_converter.payload_converter, plain_attributes
    )
    assert plain_attributes.HasField("encoded_attributes")
    with pytest.raises(PlaintextPayloadError):
        await converter.decode_failure(plain_attributes)
    # A failure Temporal itself made (a timeout) carries no payload: nothing to refuse.
    server_made = Failure(message="activity StartToClose timeout")
    server_made.timeout_failure_info.SetInParent()
    decoded = await converter.decode_failure(server_made)
    assert "StartToClose" in str(decoded)


async def _server_decode(env: dict[str, str], payloads: list[Payload]) -> tuple[int, str]:
    app = build_app(server_settings_from_env({KEYS_SETTING: K1, TOKEN_SETTING: TOKEN, **env}))
    async with TestClient(TestServer(app)) as http:
        answer = await http.post(
            "/decode",
            data=json_format.MessageToJson(Payloads(payloads=payloads)),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        return answer.status, await answer.text()


# What the SDK's core writes for `workflow.patched`, unencrypted, in every mint's history; the
# Temporal CLI and UI send it to the codec server with the rest.
PATCH_MARKER = json_payload({"id": "maintenance-gate", "deprecated": False})


@pytest.mark.parametrize("env", [{}, {ALLOW_PLAINTEXT_SETTING: "false"}])
async def test_the_codec_server_shows_plaintext_as_it_is(env: dict[str, str]) -> None:
    """The server only shows payloads to people; refusing the SDK's own unencrypted patch
    markers would fail `temporal workflow show` for every mint (test_codec.py shows it)."""
    sealed = await refusing().encode([json_payload("sealed")])
    status, body = await _server_decode(env, [*sealed, PATCH_MARKER])
    assert status == 200, body
    decoded = list(json_format.Parse(body, Payloads()).payloads)
    assert decoded == [json_payload("sealed"), PATCH_MARKER]
    # While the workers' converter refuses the same marker: it never reaches their codec.
    with pytest.raises(PlaintextPayloadError):
        await data_converter_from_env({KEYS_SETTING: K1}).decode([PATCH_MARKER])
