"""AES-256-GCM encryption of every Temporal payload, the keys from the environment.

`MINTSAGA_CODEC_KEYS` lists the keys as `KEY_ID:BASE64_KEY` pairs, comma-separated, each key 32
random bytes (`python -m mintsaga.codec keygen` makes one). The first key encrypts every new
payload; the
others only decrypt, so keys rotate without rewriting any history. Unset (or empty): no codec,
payloads stay plain JSON as before.

An encrypted payload has the metadata `encoding: binary/encrypted` and `encryption-key-id: ID`;
its data is a 12-byte random nonce followed by the AES-GCM ciphertext (with its tag) of the
whole original payload (its metadata and data), the key id bound in as associated data.

With keys set, a payload without that encoding is refused (`PlaintextPayloadError`): anyone who
can reach Temporal could otherwise hand the worker a request, a signal or an activity result the
key never sealed. `MINTSAGA_CODEC_ALLOW_PLAINTEXT=true` lets such payloads through as they are,
for the migration from an unencrypted namespace (histories written before the codec was turned
on); docs/payload-encryption.md says when it may be turned off again.

`data_converter_from_env()` is the one converter every Temporal client of the project uses
(worker, starter, tests): Pydantic JSON, plus, with keys set, this codec and a failure converter
that moves error messages and stack traces into an encrypted payload too.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from mintsaga.observability.logging import add_secret
from mintsaga.setting_readers import SettingsError, bool_setting, secret_from_env

KEYS_SETTING = "MINTSAGA_CODEC_KEYS"
ALLOW_PLAINTEXT_SETTING = "MINTSAGA_CODEC_ALLOW_PLAINTEXT"
ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

log = logging.getLogger("mintsaga.codec")


class CodecError(ValueError):
    """A payload that cannot be decrypted here; the message names the key id, never a key."""


class PlaintextPayloadError(CodecError):
    """A payload that is not encrypted, refused because keys are set and the migration setting
    (`MINTSAGA_CODEC_ALLOW_PLAINTEXT`) is off. The message names its encoding, never its data."""


@dataclass(frozen=True)
class CodecKeys:
    """The key new payloads use (`current`) and every key that decrypts, by id."""

    current: str
    keys: Mapping[str, bytes] = field(repr=False)

    @property
    def ids(self) -> list[str]:
        return list(self.keys)


def _key_bytes(text: str, where: str) -> bytes:
    # Standard or URL-safe base64, padding optional.
    normal = text.replace("-", "+").replace("_", "/")
    normal += "=" * (-len(normal) % 4)
    try:
        key = base64.b64decode(normal, validate=True)
    except (binascii.Error, ValueError):
        raise SettingsError(f"{KEYS_SETTING}: {where}: the key is not base64") from None
    if len(key) != KEY_BYTES:
        raise SettingsError(
            f"{KEYS_SETTING}: {where}: the key is {len(key)} bytes; AES-256 needs {KEY_BYTES}"
            " (`python -m mintsaga.codec keygen` makes one)"
        )
    return key


def parse_keys(raw: str) -> CodecKeys:
    """`KEY_ID:BASE64_KEY[,KEY_ID:BASE64_KEY...]`, the encrypting key first.

    Raises SettingsError naming `MINTSAGA_CODEC_KEYS` and the entry at fault; no message ever
    contains a key. Every key is registered with the log redaction guard.
    """
    keys: dict[str, bytes] = {}
    entries = raw.split(",")
    for number, entry in enumerate(entries, start=1):
        where = f"entry {number} of {len(entries)}"
        key_id, colon, key_text = entry.strip().partition(":")
        key_id, key_text = key_id.strip(), key_text.strip()
        if key_text:
            add_secret(key_text)  # before any check: a malformed key is still a key
        if not colon or not key_id or not key_text:
            raise SettingsError(
                f"{KEYS_SETTING}: {where} is not KEY_ID:BASE64_KEY (comma-separated pairs,"
                " the key that encrypts first)"
            )
        if not _KEY_ID.fullmatch(key_id):
            raise SettingsError(
                f"{KEYS_SETTING}: {where}: a key id is 1 to 64 letters, digits, '.', '_' or '-'"
            )
        if key_id in keys:
            raise SettingsError(f"{KEYS_SETTING}: {where}: key id {key_id!r} appears twice")
        keys[key_id] = _key_bytes(key_text, f"{where} (key id {key_id!r})")
    return CodecKeys(current=next(iter(keys)), keys=keys)


def allow_plaintext_from_env(env: Mapping[str, str] | None = None) -> bool:
    """`MINTSAGA_CODEC_ALLOW_PLAINTEXT`: true lets unencrypted payloads through while keys are
    set (the migration to encryption); unset or false: they are refused."""
    return bool_setting(os.environ if env is None else env, ALLOW_PLAINTEXT_SETTING)


def keys_from_env(env: Mapping[str, str] | None = None) -> CodecKeys | None:
    """The keys `MINTSAGA_CODEC_KEYS` (or the file `MINTSAGA_CODEC_KEYS_FILE` names) holds, or
    None when it is unset or empty."""
    raw = secret_from_env(os.environ if env is None else env, KEYS_SETTING, required=False) or ""
    add_secret(raw)
    return parse_keys(raw) if raw.strip() else None


def _shown_encoding(payload: Payload) -> str:
    raw = payload.metadata.get("encoding")
    if raw is None:
        return "no encoding"
    text = raw[:40].decode("ascii", errors="replace")
    return repr("".join(c if c.isprintable() else "?" for c in text))


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM with the current key; decrypts with whichever key the payload names.

    A payload that is not encrypted is refused unless `allow_plaintext` (the migration setting
    `MINTSAGA_CODEC_ALLOW_PLAINTEXT`) lets it through unchanged.
    """

    def __init__(self, keys: CodecKeys, *, allow_plaintext: bool = False) -> None:
        self.keys = keys
        self.allow_plaintext = allow_plaintext
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.keys.items()}

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self.keys.current
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, payload.SerializeToString(), key_id.encode())
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id.encode()},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            if self.allow_plaintext:
                return payload  # written before the codec was on: plain already
            raise PlaintextPayloadError(
                f"a payload that is not encrypted (encoding {_shown_encoding(payload)}) was"
                f" refused: {KEYS_SETTING} is set, so every payload must be encrypted with one of"
                " its keys. It was written before encryption was turned on, or by a client"
                f" without the keys; to read such histories set {ALLOW_PLAINTEXT_SETTING}=true"
                " for the migration (docs/payload-encryption.md)"
            )
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            held = ", ".join(self.keys.ids)
            raise CodecError(
                f"payload encrypted with key id {key_id!r}, which {KEYS_SETTING} does not hold"
                f" (it holds {held}); add that key after the current one"
            )
        data = payload.data
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            raise CodecError(
                f"payload encrypted with key id {key_id!r} does not decrypt: its data or key id"
                " was altered, or the key under that id is not the one that encrypted it"
            ) from None
        decoded = Payload()
        decoded.ParseFromString(plain)
        return decoded

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(payload) for payload in payloads]


def data_converter_from_env(env: Mapping[str, str] | None = None) -> DataConverter:
    """The project's converter: Pydantic JSON; with `MINTSAGA_CODEC_KEYS` set, every payload and
    every failure's message and stack trace encrypted too, and unencrypted payloads refused
    unless `MINTSAGA_CODEC_ALLOW_PLAINTEXT` is true. Raises SettingsError for a malformed
    setting."""
    keys = keys_from_env(env)
    if keys is None:
        return pydantic_data_converter
    allow_plaintext = allow_plaintext_from_env(env)
    if allow_plaintext:
        log.warning(
            "%s=true: unencrypted payloads are accepted (the migration to encryption); turn it"
            " off once no history from before it is read",
            ALLOW_PLAINTEXT_SETTING,
        )
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(keys, allow_plaintext=allow_plaintext),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def new_key_entry(key_id: str | None = None) -> str:
    """A fresh `KEY_ID:BASE64_KEY` pair (the id defaults to today's date, `k20260102`)."""
    key_id = key_id or datetime.now(UTC).strftime("k%Y%m%d")
    if not _KEY_ID.fullmatch(key_id):
        raise SettingsError(f"key id {key_id!r}: use 1 to 64 letters, digits, '.', '_' or '-'")
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}"
