"""A small CARv1 / dag-pb / UnixFS reader for tests, written from the specs (not from the
devstack's writer): CARv1 https://ipld.io/specs/transport/car/carv1/, dag-pb
https://ipld.io/specs/codecs/dag-pb/spec/, UnixFS https://specs.ipfs.tech/unixfs/.

It checks what a verifying client checks: every block's bytes hash to its CID's multihash,
and the file is the leaves in link order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from devstack.ipfs.cid import ParsedCid

DAG_PB = 0x70
RAW = 0x55


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _cid_at(buf: bytes, pos: int) -> tuple[ParsedCid, int]:
    if buf[pos] == 0x12 and buf[pos + 1] == 0x20:  # CIDv0: a bare sha2-256 multihash
        return ParsedCid(0, DAG_PB, buf[pos : pos + 34]), pos + 34
    version, pos = _varint(buf, pos)
    codec, pos = _varint(buf, pos)
    start = pos
    _, pos = _varint(buf, pos)  # hash code
    length, pos = _varint(buf, pos)
    return ParsedCid(version, codec, buf[start : pos + length]), pos + length


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Protobuf fields (number, value) in order: varints and length-delimited only."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            out.append((number, value))
        elif wire == 2:
            length, pos = _varint(buf, pos)
            out.append((number, buf[pos : pos + length]))
            pos += length
        else:
            raise ValueError(f"unexpected wire type {wire}")
    return out


@dataclass
class Car:
    roots: list[ParsedCid]
    blocks: list[tuple[ParsedCid, bytes]]


def read_car(data: bytes) -> Car:
    length, pos = _varint(data, 0)
    head = data[pos : pos + length]
    pos += length
    # dag-cbor {"roots": [CID], "version": 1}: map(2), "roots", array(1), tag 42, bytes.
    assert head[:7] == b"\xa2\x65roots", head.hex()
    assert head[7] == 0x81 and head[8:10] == b"\xd8\x2a", head.hex()
    if head[10] == 0x58:  # byte string, one-byte length
        start, size = 12, head[11]
    else:
        assert 0x40 <= head[10] < 0x58, head.hex()  # byte string, length in the head
        start, size = 11, head[10] - 0x40
    link = head[start : start + size]
    assert link[0] == 0, "CID bytes start with the identity multibase prefix"
    root, _ = _cid_at(link, 1)
    assert head[start + size :] == b"\x67version\x01", head.hex()
    blocks = []
    while pos < len(data):
        length, pos = _varint(data, pos)
        cid, start = _cid_at(data, pos)
        blocks.append((cid, data[start : pos + length]))
        pos += length
    return Car([root], blocks)


def verify_blocks(car: Car) -> None:
    for cid, block in car.blocks:
        assert cid.multihash == b"\x12\x20" + hashlib.sha256(block).digest(), cid


def links(block: bytes) -> list[ParsedCid]:
    out = []
    for number, value in _fields(block):
        if number == 2:
            assert isinstance(value, bytes)
            (hash_field,) = [v for n, v in _fields(value) if n == 1]
            assert isinstance(hash_field, bytes)
            out.append(_cid_at(hash_field, 0)[0])
    return out


def unixfs_data(block: bytes) -> bytes:
    (data,) = [v for n, v in _fields(block) if n == 1]
    assert isinstance(data, bytes)
    inner = [v for n, v in _fields(data) if n == 2]
    return inner[0] if inner else b""  # type: ignore[return-value]


def reassemble(car: Car) -> bytes:
    by_key = {cid.multihash: (cid, block) for cid, block in car.blocks}

    def read(cid: ParsedCid) -> bytes:
        got, block = by_key[cid.multihash]
        if got.codec == RAW:
            return block
        children = links(block)
        if not children:
            return unixfs_data(block)
        return b"".join(read(child) for child in children)

    return read(car.roots[0])
