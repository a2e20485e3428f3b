"""Development-only key material and sample images, kept in the stack's state folder.

The worker needs a system wallet (`MINT_AUTHORITY_KEYPAIR`, a keypair file) and a seed
(`MINT_KEY_SEED`). For the devstack both are generated once per state folder and the wallet is
funded on the local chain at `up`; they mean nothing anywhere else.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import struct
import zlib
from pathlib import Path

from solders.keypair import Keypair

SEED_FILE = "mint_key_seed.hex"
WALLET_FILE = "system-wallet.json"
# The NFTs' metadata update authority (MINT_UPDATE_AUTHORITY): the devstack keeps its keypair
# here, as an operator keeps theirs off the workers; the workers get only its public key.
UPDATE_AUTHORITY_FILE = "update-authority.json"
# The collections' group authority (MINT_GROUP_AUTHORITY_KEYPAIR): a key the workers hold.
GROUP_AUTHORITY_FILE = "group-authority.json"
SAMPLE_IMAGE = "sample.png"
CODEC_KEYS_FILE = "codec-keys"  # MINTSAGA_CODEC_KEYS, for `up --codec`
CODEC_TOKEN_FILE = "codec-token"  # MINTSAGA_CODEC_TOKEN


def secrets_dir(state_dir: Path) -> Path:
    return state_dir / "dev-secrets"


def images_dir(state_dir: Path) -> Path:
    return state_dir / "images"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def ensure_dev_identity(state_dir: Path) -> tuple[str, Path]:
    """The dev seed (hex) and the system wallet's keypair file, created on first use."""
    folder = secrets_dir(state_dir)
    seed_file, wallet_file = folder / SEED_FILE, folder / WALLET_FILE
    if not seed_file.exists():
        _write_private(seed_file, secrets.token_hex(32))
    if not wallet_file.exists():
        _write_private(wallet_file, json.dumps(list(bytes(Keypair()))))
    return seed_file.read_text().strip(), wallet_file


def _keypair_file(state_dir: Path, name: str) -> Path:
    path = secrets_dir(state_dir) / name
    if not path.exists():
        _write_private(path, json.dumps(list(bytes(Keypair()))))
    return path


def update_authority(state_dir: Path) -> Keypair:
    """The dev update authority's keypair (created on first use); workers get its public key."""
    path = _keypair_file(state_dir, UPDATE_AUTHORITY_FILE)
    return Keypair.from_bytes(bytes(json.loads(path.read_text())))


def group_authority_file(state_dir: Path) -> Path:
    """The dev group authority's keypair file (created on first use)."""
    return _keypair_file(state_dir, GROUP_AUTHORITY_FILE)


def ensure_codec_secrets(state_dir: Path) -> tuple[str, str]:
    """The dev payload key (`dev1:BASE64`) and the codec server's token, created on first use."""
    folder = secrets_dir(state_dir)
    keys_file, token_file = folder / CODEC_KEYS_FILE, folder / CODEC_TOKEN_FILE
    if not keys_file.exists():
        _write_private(keys_file, f"dev1:{base64.b64encode(secrets.token_bytes(32)).decode()}")
    if not token_file.exists():
        _write_private(token_file, secrets.token_urlsafe(32))
    return keys_file.read_text().strip(), token_file.read_text().strip()


def system_wallet(state_dir: Path) -> Keypair:
    _, wallet_file = ensure_dev_identity(state_dir)
    return Keypair.from_bytes(bytes(json.loads(wallet_file.read_text())))


def png(width: int, height: int, seed: int = 0) -> bytes:
    """A small valid RGB PNG, different for each seed, for demos and tests.

    The pixels repeat every 256 seeds, so the seed is also written in a text chunk: two seeds
    never give the same bytes (the same CID), which tests of unshared images rely on.
    """
    rows = b"".join(
        b"\x00"
        + bytes(
            channel
            for x in range(width)
            for channel in ((x * 7 + seed) % 256, (y * 5 + seed * 3) % 256, (x ^ y ^ seed) % 256)
        )
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"tEXt", b"Comment\x00seed " + str(seed).encode())
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def ensure_sample_image(state_dir: Path) -> Path:
    folder = images_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    sample = folder / SAMPLE_IMAGE
    if not sample.exists():
        sample.write_bytes(png(64, 64))
    return sample
