"""CIDs as Kubo makes them: compute (through aleph-cid), parse, and size the UnixFS DAG.

Only the two flavours Kubo produces by default are supported for adding: CIDv0 (dag-pb
leaves, base58btc) and CIDv1 with raw leaves (base32). Parsing accepts any CIDv0/v1 string in
base58btc or base32 so gateways can tell a bad CID (400) from an unknown one (404).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aleph_cid import CidHasher, compute_cid

CHUNK_SIZE = 262_144  # Kubo's default fixed-size chunker
MAX_LINKS = 174  # Kubo's balanced-layout fan-out
THREAD_THRESHOLD = 64 * 1024  # below this, hashing on the loop is cheaper than a thread hop

DAG_PB = 0x70
RAW = 0x55
SHA2_256 = 0x12

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
_B32_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_B32_INDEX = {c: i for i, c in enumerate(_B32_ALPHABET)}


class InvalidCid(ValueError):
    """The string is not a CID we can decode."""


@dataclass(frozen=True)
class ParsedCid:
    version: int
    codec: int
    multihash: bytes

    @property
    def key(self) -> str:
        """Identity of the block: Kubo's blockstore is keyed by multihash, so Qm… and its
        bafybei… spelling are the same content."""
        return self.multihash.hex()


def cid_of(data: bytes, cid_version: int) -> str:
    """The CID ``ipfs add --cid-version=N`` would print for ``data`` (Kubo defaults)."""
    if cid_version == 0:
        return compute_cid(data)
    if cid_version == 1:
        hasher = CidHasher.for_ipfs_v1_raw_leaves()
        hasher.update(data)
        return hasher.finalize()
    raise ValueError(f"unknown CID version {cid_version}")


async def cid_of_async(data: bytes, cid_version: int) -> str:
    """``cid_of`` off the event loop for big bodies (aleph-cid releases the GIL)."""
    if len(data) < THREAD_THRESHOLD:
        return cid_of(data, cid_version)
    return await asyncio.to_thread(cid_of, data, cid_version)


# -- parsing -----------------------------------------------------------------------------


def _b58decode(text: str) -> bytes:
    num = 0
    for ch in text:
        try:
            num = num * 58 + _B58_INDEX[ch]
        except KeyError:
            raise InvalidCid(f"invalid base58 character {ch!r}") from None
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    leading = len(text) - len(text.lstrip("1"))
    return b"\x00" * leading + body


def _b32decode(text: str) -> bytes:
    bits = 0
    acc = 0
    out = bytearray()
    for ch in text.lower():
        try:
            acc = (acc << 5) | _B32_INDEX[ch]
        except KeyError:
            raise InvalidCid(f"invalid base32 character {ch!r}") from None
        bits += 5
        if bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise InvalidCid("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _check_multihash(mh: bytes) -> None:
    code, pos = _read_varint(mh, 0)
    length, pos = _read_varint(mh, pos)
    if len(mh) - pos != length:
        raise InvalidCid("multihash length does not match its digest")
    if code == SHA2_256 and length != 32:
        raise InvalidCid("sha2-256 digest must be 32 bytes")


def parse_cid(text: str) -> ParsedCid:
    """Decode a CID string; raises ``InvalidCid`` for anything that is not one."""
    if len(text) == 46 and text.startswith("Qm"):
        mh = _b58decode(text)
        if len(mh) != 34 or mh[:2] != b"\x12\x20":
            raise InvalidCid("CIDv0 must be a base58btc sha2-256 multihash")
        return ParsedCid(0, DAG_PB, mh)
    if len(text) < 2:
        raise InvalidCid("too short")
    prefix, body = text[0], text[1:]
    if prefix in "bB":
        raw = _b32decode(body)
    elif prefix == "z":
        raw = _b58decode(body)
    else:
        raise InvalidCid(f"unsupported multibase prefix {prefix!r}")
    version, pos = _read_varint(raw, 0)
    if version != 1:
        raise InvalidCid(f"unsupported CID version {version}")
    codec, pos = _read_varint(raw, pos)
    mh = raw[pos:]
    _check_multihash(mh)
    return ParsedCid(1, codec, mh)


# -- DAG size (Kubo's "Size" / Pinata's "PinSize") ---------------------------------------


def _varint_len(n: int) -> int:
    length = 1
    while n >= 0x80:
        n >>= 7
        length += 1
    return length


def _field_len(payload_len: int) -> int:
    """Bytes of a length-delimited protobuf field (one-byte tag) holding ``payload_len``."""
    return 1 + _varint_len(payload_len) + payload_len


def _leaf_dag_size(chunk: int, cid_version: int) -> int:
    if cid_version == 1:
        return chunk  # raw leaf: the block is the bytes
    unixfs = 2 + (_field_len(chunk) if chunk else 0) + 1 + _varint_len(chunk)
    return _field_len(unixfs)


def dag_size(length: int, cid_version: int) -> int:
    """Cumulative size of every block of the file's DAG, as Kubo reports it for ``add``.

    Mirrors the balanced layout: leaves of ``CHUNK_SIZE``, parents of up to ``MAX_LINKS``
    links; a link carries the child's CID (34 bytes v0, 36 bytes v1), an empty name and the
    child's cumulative size.
    """
    chunks = [CHUNK_SIZE] * (length // CHUNK_SIZE)
    if length % CHUNK_SIZE or not chunks:
        chunks.append(length % CHUNK_SIZE)
    level = [(c, _leaf_dag_size(c, cid_version)) for c in chunks]  # (file bytes, dag bytes)
    cid_len = 34 if cid_version == 0 else 36
    while len(level) > 1:
        parents = []
        for start in range(0, len(level), MAX_LINKS):
            group = level[start : start + MAX_LINKS]
            filesize = sum(f for f, _ in group)
            unixfs = 2 + 1 + _varint_len(filesize) + sum(1 + _varint_len(f) for f, _ in group)
            links = sum(_field_len(_field_len(cid_len) + 2 + 1 + _varint_len(t)) for _, t in group)
            own = links + _field_len(unixfs)
            parents.append((filesize, own + sum(t for _, t in group)))
        level = parents
    return level[0][1]
