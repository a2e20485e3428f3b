"""Mint key derivation and key-setting parsing: deterministic, distinct, and never leaky."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from solders.keypair import Keypair

from mintsaga.solana.mint_keys import (
    MINT_KEY_INFO_PREFIX,
    MINT_KEY_SALT,
    KeyMaterialError,
    derive_mint_keypair,
    load_keypair_file,
    parse_seed,
)

SEED = bytes(range(32))


def shown_chain(exc: BaseException) -> BaseException | None:
    """The exception a traceback would print under ``exc`` (its cause or unsuppressed context)."""
    if exc.__cause__ is not None:
        return exc.__cause__
    return None if exc.__suppress_context__ else exc.__context__


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 written out with hmac, independent of the cryptography package."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


def test_reference_hkdf_matches_rfc5869_test_case_1() -> None:
    okm = hkdf_sha256(bytes([0x0B] * 22), bytes(range(13)), bytes(range(0xF0, 0xFA)), 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_known_answer_vector() -> None:
    expected_seed = hkdf_sha256(SEED, MINT_KEY_SALT, MINT_KEY_INFO_PREFIX + b"mint-0001", 32)
    derived = derive_mint_keypair(SEED, "mint-0001")
    assert bytes(derived)[:32] == expected_seed
    # Pinned: a change of salt, info or KDF would move every existing mint to a new address.
    assert str(derived.pubkey()) == "3Kw8jJVDg3z7Ve6i7Cbxpr3bGWgeWKM2E4hVUrvjjdcn"


def test_derivation_is_deterministic_and_distinct() -> None:
    assert derive_mint_keypair(SEED, "a") == derive_mint_keypair(SEED, "a")
    keys = {str(derive_mint_keypair(SEED, mint_id).pubkey()) for mint_id in ("a", "b", "A", "é")}
    assert len(keys) == 4
    other_seed = bytes(range(1, 33))
    assert derive_mint_keypair(other_seed, "a").pubkey() != derive_mint_keypair(SEED, "a").pubkey()


def test_derivation_rejects_short_seed_and_empty_mint_id() -> None:
    with pytest.raises(KeyMaterialError, match="MINT_KEY_SEED"):
        derive_mint_keypair(bytes(31), "a")
    with pytest.raises(ValueError, match="mint_id"):
        derive_mint_keypair(SEED, "")


# -- MINT_KEY_SEED ---------------------------------------------------------------------------


def test_parse_seed_accepts_hex_of_32_bytes_or_more() -> None:
    assert parse_seed(SEED.hex()) == SEED
    assert parse_seed(f"  0x{SEED.hex().upper()}\n") == SEED
    assert parse_seed((SEED * 2).hex()) == SEED * 2


@pytest.mark.parametrize(
    "value",
    [
        "zz" + "ab" * 40,  # not hex
        "ab" * 31,  # 31 bytes
        "abc" + "d" * 70,  # odd length
        "",
    ],
)
def test_parse_seed_errors_name_the_setting_never_the_value(value: str) -> None:
    with pytest.raises(KeyMaterialError) as raised:
        parse_seed(value)
    text = str(raised.value)
    assert "MINT_KEY_SEED" in text
    if value:
        assert value not in text
        assert value[4:20] not in text
    assert shown_chain(raised.value) is None


# -- MINT_AUTHORITY_KEYPAIR ------------------------------------------------------------------


def test_load_keypair_file_round_trips_the_solana_cli_format(tmp_path: Path) -> None:
    keypair = Keypair()
    path = tmp_path / "id.json"
    path.write_text(json.dumps(list(bytes(keypair))))
    assert load_keypair_file(path) == keypair
    assert load_keypair_file(str(path)).pubkey() == keypair.pubkey()


def _secret_fragments(keypair: Keypair) -> list[str]:
    secret = list(bytes(keypair)[:32])
    return [json.dumps(secret)[1:40], bytes(secret).hex()[:16], str(secret[:6])[1:-1]]


@pytest.mark.parametrize(
    "content",
    [
        "not json {",
        json.dumps({"key": "value"}),
        json.dumps(list(range(63))),
        json.dumps([*list(range(63)), 256]),
        json.dumps([True] * 64),
        "SECRET",  # a truncated or corrupted file
    ],
)
def test_malformed_keypair_file_names_setting_and_path(tmp_path: Path, content: str) -> None:
    path = tmp_path / "wallet.json"
    path.write_text(content)
    with pytest.raises(KeyMaterialError) as raised:
        load_keypair_file(path)
    text = str(raised.value)
    assert "MINT_AUTHORITY_KEYPAIR" in text and str(path) in text
    assert shown_chain(raised.value) is None


def test_keypair_file_with_mismatched_halves_does_not_echo_the_key(tmp_path: Path) -> None:
    keypair = Keypair()
    raw = bytearray(bytes(keypair))
    raw[40] ^= 1  # the public half no longer matches the secret half
    path = tmp_path / "wallet.json"
    path.write_text(json.dumps(list(raw)))
    with pytest.raises(KeyMaterialError) as raised:
        load_keypair_file(path)
    text = str(raised.value)
    assert "MINT_AUTHORITY_KEYPAIR" in text and str(path) in text
    for fragment in _secret_fragments(keypair):
        assert fragment not in text
    assert shown_chain(raised.value) is None


def test_missing_keypair_file_names_setting_and_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.json"
    with pytest.raises(KeyMaterialError) as raised:
        load_keypair_file(path)
    assert "MINT_AUTHORITY_KEYPAIR" in str(raised.value)
    assert str(path) in str(raised.value)
    assert "does not exist" in str(raised.value)
