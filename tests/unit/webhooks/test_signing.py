"""Signing: the reference vector, several secrets (rotation), and an independent HMAC check."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

import pytest

from mintsaga.notices import MintNotice, NoticeType
from mintsaga.setting_readers import SettingsError
from mintsaga.settings import webhooks_from_env
from mintsaga.webhooks.signing import Signer
from tests.tools.webhook_receiver import verify_message

# The sign test of the specification's reference library (github.com/standard-webhooks/
# standard-webhooks, libraries/python/tests/test_webhooks.py, test_sign_function); the spec
# itself (spec/standard-webhooks.md) shows the format but no secret to check a value with.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIME = datetime.fromtimestamp(1614265330, UTC)
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

SECOND = "whsec_" + base64.b64encode(bytes(range(32))).decode()


def test_the_reference_vector() -> None:
    headers = Signer([VECTOR_SECRET]).headers(VECTOR_ID, VECTOR_BODY, now=VECTOR_TIME)
    assert headers == {
        "content-type": "application/json",
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": "1614265330",
        "webhook-signature": VECTOR_SIGNATURE,
    }


def independent_signature(secret: str, msg_id: str, stamp: str, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def test_every_secret_signs_in_order_and_each_verifies_independently() -> None:
    notice = MintNotice(
        cursor=42,
        type=NoticeType.MINTED,
        timestamp=datetime(2026, 12, 3, 22, 41, 7, 120000, UTC),
        data={"mint_id": "order-1", "status": "MINTED", "stage": "VERIFIED", "name": "Ünïcode"},
    )
    body = notice.body_bytes()
    now = datetime.now(UTC)
    headers = Signer([VECTOR_SECRET, SECOND]).headers(notice.id, body, now=now)
    stamp = headers["webhook-timestamp"]
    assert headers["webhook-id"] == "evt_42"
    assert stamp == str(int(now.timestamp()))
    assert headers["webhook-signature"].split(" ") == [
        independent_signature(VECTOR_SECRET, "evt_42", stamp, body),
        independent_signature(SECOND, "evt_42", stamp, body),
    ]
    # The test receiver's verifier (tests/tools) accepts it under either secret alone ...
    assert verify_message(VECTOR_SECRET, headers, body)
    assert verify_message(SECOND, headers, body)
    # ... and refuses another secret, another body, another id.
    assert not verify_message("whsec_" + base64.b64encode(b"x" * 32).decode(), headers, body)
    assert not verify_message(SECOND, headers, body.replace(b"order-1", b"order-2"))
    assert not verify_message(SECOND, {**headers, "webhook-id": "evt_43"}, body)


def test_the_signer_never_shows_its_secrets() -> None:
    signer = Signer([VECTOR_SECRET, SECOND])
    assert VECTOR_SECRET.removeprefix("whsec_") not in repr(signer)
    assert repr(signer) == "Signer(2 secrets)"
    with pytest.raises(ValueError, match="WEBHOOK_SECRET"):
        Signer([])


def env(**values: str) -> dict[str, str]:
    return values


def test_webhook_settings_follow_the_spec_secret_sizes() -> None:
    # "At least 24 bytes (192 bits, 512 maximum)" (spec/standard-webhooks.md, symmetric).
    ok = "whsec_" + base64.b64encode(b"k" * 24).decode()
    big = "whsec_" + base64.b64encode(b"k" * 64).decode()
    urls, secrets = webhooks_from_env(
        env(WEBHOOK_URL="https://b.example/hooks", WEBHOOK_SECRET=f"{ok} {big}")
    )
    assert urls == ("https://b.example/hooks",)
    assert [s.get_secret_value() for s in secrets] == [ok, big]
    for bad in (
        "whsec_" + base64.b64encode(b"k" * 23).decode(),
        "whsec_" + base64.b64encode(b"k" * 65).decode(),
        base64.b64encode(b"k" * 32).decode(),  # no prefix
    ):
        with pytest.raises(SettingsError, match="WEBHOOK_SECRET: secret 1") as caught:
            webhooks_from_env(env(WEBHOOK_URL="https://b.example/hooks", WEBHOOK_SECRET=bad))
        assert bad not in str(caught.value)


def test_two_webhook_urls_told_apart_only_by_their_keys_are_refused() -> None:
    ok = "whsec_" + base64.b64encode(b"k" * 32).decode()
    with pytest.raises(SettingsError, match=r"WEBHOOK_URL: .* listed twice"):
        webhooks_from_env(
            env(
                WEBHOOK_URL="https://b.example/hooks?token=aaaa1111bbbb2222cccc,"
                "https://b.example/hooks?token=dddd3333eeee4444ffff",
                WEBHOOK_SECRET=ok,
            )
        )
