"""Key material for minting: the system wallet from a file, and one mint keypair per ``mint_id``.

The mint keypair is derived, not generated: HKDF-SHA256 over the worker's ``MINT_KEY_SEED``
with ``mint_id`` as the context. The same request therefore always targets the same mint
address, so a retried or duplicated mint can never create a second NFT (docs/design.md,
"Idempotency"). Nothing here ever puts key bytes or the seed into an error message.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from solders.keypair import Keypair

from mintsaga.errors import ErrorKind, ServiceError

# Fixed for the life of the project: changing it moves every mint to another address.
MINT_KEY_SALT = b"mintsaga/mint-keypair/v1"
MINT_KEY_INFO_PREFIX = b"mintsaga/mint/"
# A collection's group mint: another context, so no mint_id can ever name a collection's key.
COLLECTION_KEY_INFO_PREFIX = b"mintsaga/collection/"
MIN_SEED_BYTES = 32
KEYPAIR_SETTING = "MINT_AUTHORITY_KEYPAIR"
SEED_SETTING = "MINT_KEY_SEED"


class KeyMaterialError(ValueError):
    """A key setting is missing or malformed. The message names the setting, never the key."""


def derive_mint_keypair(seed: bytes, mint_id: str) -> Keypair:
    """The mint keypair for ``mint_id``: HKDF-SHA256(seed, salt, info = prefix + mint_id)."""
    if not mint_id:
        raise ValueError("mint_id must not be empty")
    return _derive(seed, MINT_KEY_INFO_PREFIX + mint_id.encode("utf-8"))


def derive_collection_keypair(seed: bytes, key: str) -> Keypair:
    """The group mint keypair of collection ``key`` (``collection create --key``): the same
    HKDF in its own context, so creating a collection again targets the same address."""
    if not key:
        raise ValueError("a collection key must not be empty")
    return _derive(seed, COLLECTION_KEY_INFO_PREFIX + key.encode("utf-8"))


def _derive(seed: bytes, info: bytes) -> Keypair:
    if len(seed) < MIN_SEED_BYTES:
        raise KeyMaterialError(f"{SEED_SETTING} must hold at least {MIN_SEED_BYTES} bytes")
    okm = HKDF(algorithm=hashes.SHA256(), length=32, salt=MINT_KEY_SALT, info=info).derive(seed)
    return Keypair.from_seed(okm)


def seed_mismatch(mint_id: str, *, claimed: str, derived: str) -> ServiceError | None:
    """None when this worker derives the address ``mint_id`` was claimed at; else the error.

    A worker with another ``MINT_KEY_SEED`` (a misconfigured pod, a rotation) derives another
    address: signing there would mint a second NFT for the same mint_id. Only a person can
    fix the seed configuration (NEEDS_OPERATOR); the message names the setting, never a value.
    """
    if claimed == derived:
        return None
    return ServiceError(
        f"mint {mint_id} was claimed at {claimed}, but this worker's {SEED_SETTING} derives"
        f" {derived}: the seed configuration differs between workers (or was rotated); give"
        " every worker the seed the mint was claimed with, then retry. Nothing signed",
        service="solana",
        kind=ErrorKind.NEEDS_OPERATOR,
        code="MintKeySeedMismatch",
    )


def parse_seed(value: str) -> bytes:
    """``MINT_KEY_SEED``: hex of at least 32 bytes (an optional ``0x`` and spaces are ignored)."""
    text = (value or "").strip()
    if text[:2].lower() == "0x":
        text = text[2:]
    if not text:
        raise KeyMaterialError(f"{SEED_SETTING} is not set")
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        # The ValueError names a position only, but drop it anyway: nothing of the value leaves.
        raise KeyMaterialError(
            f"{SEED_SETTING} is not valid hex (expected {2 * MIN_SEED_BYTES}+ hex digits)"
        ) from None
    if len(seed) < MIN_SEED_BYTES:
        raise KeyMaterialError(
            f"{SEED_SETTING} is too short: {len(seed)} bytes, need at least {MIN_SEED_BYTES}"
        )
    return seed


def load_keypair_file(path: str | Path, *, setting: str = KEYPAIR_SETTING) -> Keypair:
    """A Solana CLI keypair file (a JSON array of 64 integers 0..255), for the system wallet."""
    where = f"{setting} file {str(path)!r}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyMaterialError(f"{where} does not exist") from None
    except OSError as exc:
        raise KeyMaterialError(f"{where} cannot be read ({type(exc).__name__})") from None
    # Every error below is raised ``from None``: a JSONDecodeError keeps the whole document
    # (the secret key) in its ``doc`` attribute, and a traceback may print neighbouring values.
    try:
        values = json.loads(text)
    except ValueError:
        raise KeyMaterialError(
            f"{where} is not JSON; expected the Solana CLI format, an array of 64 integers"
        ) from None
    if (
        not isinstance(values, list)
        or len(values) != 64
        or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in values)
    ):
        raise KeyMaterialError(
            f"{where} is malformed; expected the Solana CLI format, an array of 64 integers 0..255"
        )
    try:
        return Keypair.from_bytes(bytes(values))
    except (ValueError, TypeError):
        raise KeyMaterialError(
            f"{where} is not a valid keypair (its public half does not match its secret half)"
        ) from None
