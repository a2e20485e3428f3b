"""A small UnixFS file builder and CARv1 writer for tests, written from the specs
(ipld.io/specs/codecs/dag-pb/spec/, specs.ipfs.tech/unixfs/, ipld.io/specs/transport/car/carv1/)
and independent of mintsaga.ipfs.car: it builds balanced DAGs of any chunk size, fan-out, CID
version and leaf kind, as Kubo's importer does, so verification is tested on layouts other
than ours. Its default layout (256 KiB chunks, 174 links, raw leaves, CIDv1) gives Kubo's CIDs
(checked against aleph-cid in test_car.py)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

RAW, DAG_PB = 0x55, 0x70
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def unixfs_data(kind: int, data: bytes, filesize: int | None, blocksizes: list[int]) -> bytes:
    out = _int_field(1, kind)
    if data:
        out += _field(2, data)
    if filesize is not None:
        out += _int_field(3, filesize)
    for size in blocksizes:
        out += _int_field(4, size)
    return out


def dag_pb(links: list[tuple[bytes, int]], data: bytes) -> bytes:
    """A PBNode: its links (binary CID, Tsize) first, then Data (the spec's field order)."""
    out = b""
    for cid, tsize in links:
        out += _field(2, _field(1, cid) + _field(2, b"") + _int_field(3, tsize))
    return out + _field(1, data)


def multihash(block: bytes) -> bytes:
    return b"\x12\x20" + hashlib.sha256(block).digest()


def binary_cid(block: bytes, codec: int, version: int) -> bytes:
    if version == 0:
        assert codec == DAG_PB
        return multihash(block)
    return b"\x01" + varint(codec) + multihash(block)


def cid_text(binary: bytes) -> str:
    if binary[0] == 0x12:
        num = int.from_bytes(binary, "big")
        out = ""
        while num:
            num, rem = divmod(num, 58)
            out = _B58[rem] + out
        return out
    return "b" + base64.b32encode(binary).decode().lower().rstrip("=")


@dataclass
class Built:
    root: bytes  # binary CID
    blocks: list[tuple[bytes, bytes]]  # (binary CID, block), leaves first

    @property
    def cid(self) -> str:
        return cid_text(self.root)


def build_file(
    content: bytes,
    *,
    chunk: int = 262_144,
    fanout: int = 174,
    raw_leaves: bool = True,
    cid_version: int = 1,
) -> Built:
    """A balanced UnixFS file DAG, as `ipfs add --chunker=size-<chunk>` builds one."""
    blocks: list[tuple[bytes, bytes]] = []
    # (binary CID, file bytes under it, cumulative Tsize)
    level: list[tuple[bytes, int, int]] = []
    pieces = [content[i : i + chunk] for i in range(0, len(content), chunk)] or [b""]
    for piece in pieces:
        if raw_leaves and cid_version == 1:
            block, codec = piece, RAW
        else:
            block = dag_pb([], unixfs_data(2, piece, len(piece), []))
            codec = DAG_PB
        cid = binary_cid(block, codec, cid_version)
        blocks.append((cid, block))
        level.append((cid, len(piece), len(block)))
    while len(level) > 1:
        parents = []
        for i in range(0, len(level), fanout):
            group = level[i : i + fanout]
            sizes = [size for _, size, _ in group]
            block = dag_pb(
                [(cid, tsize) for cid, _, tsize in group],
                unixfs_data(2, b"", sum(sizes), sizes),
            )
            cid = binary_cid(block, DAG_PB, cid_version)
            blocks.append((cid, block))
            parents.append((cid, sum(sizes), len(block) + sum(t for _, _, t in group)))
        level = parents
    return Built(level[0][0], blocks)


def car_header(roots: list[bytes], version: int = 1) -> bytes:
    """DAG-CBOR {"roots": [CID...], "version": N} (keys sorted length-first), length-prefixed."""
    body = b"\xa2" + b"\x65roots" + bytes([0x80 | len(roots)])
    for root in roots:
        link = b"\x00" + root
        body += b"\xd8\x2a" + b"\x58" + bytes([len(link)]) + link
    body += b"\x67version" + bytes([version])
    return varint(len(body)) + body


def car_section(cid: bytes, block: bytes) -> bytes:
    return varint(len(cid) + len(block)) + cid + block


def car(roots: list[bytes], blocks: list[tuple[bytes, bytes]]) -> bytes:
    return car_header(roots) + b"".join(car_section(cid, block) for cid, block in blocks)
