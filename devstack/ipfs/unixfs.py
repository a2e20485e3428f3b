"""UnixFS file DAGs as Kubo builds them: every block, not only the root CID.

aleph-cid (the product's and the emulator's CID library) computes a root CID and nothing else;
the trustless gateway answers (``?format=raw`` for one block, ``?format=car`` for the DAG) and
Kubo's ``dag/export`` need the blocks themselves, so the devstack builds the DAG here.

The layout is boxo's ``balanced`` builder (ipld/unixfs/importer/balanced/builder.go, which
IPIP-499 names as the reference for ``balanced``): fixed-size chunks; the first chunk is the
root while it is the only one; then the tree grows a level at a time, each new root taking the
old root as its first child and being filled depth-first up to ``max_links`` children, so
every leaf sits at the same depth. Blocks (UnixFS spec, https://specs.ipfs.tech/unixfs/, and
the dag-pb codec spec, https://ipld.io/specs/codecs/dag-pb/spec/):

- a raw leaf (``raw_leaves``) is the chunk itself under a CIDv1 ``raw`` (0x55) CID, whatever
  the CID version of the rest of the DAG (CIDv0 can only name dag-pb);
- a dag-pb leaf is ``PBNode{Data: UnixFS{Type: File, Data: chunk, filesize}}``;
- an inner node is ``PBNode{Links, Data: UnixFS{Type: File, filesize, blocksizes}}``, one link
  per child ``{Hash, Name: "", Tsize}`` (Tsize: the child's block plus all blocks under it),
  links encoded before Data as the dag-pb spec's canonical form requires.

Only sha2-256 is built (the only hash the emulator accepts).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

CIDV0_CHUNK = 262_144
MIB = 1_048_576
MAX_CHUNK = 2_096_896  # Kubo docs/config.md, Import.UnixFSChunker: "2MiB - 256 bytes"

DAG_PB = 0x70
RAW = 0x55
SHA2_256 = 0x12

_B58_ALPHABET = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B32_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"

# UnixFS Data.DataType (unixfs.proto)
_TYPE_FILE = 2


class LayoutError(ValueError):
    """A layout the devstack cannot build (names the parameter)."""


@dataclass(frozen=True)
class Layout:
    """The import parameters that change a file's CID (IPIP-499's list, files only)."""

    cid_version: int = 0
    raw_leaves: bool = False
    chunk_size: int = CIDV0_CHUNK
    max_links: int = 174

    def __post_init__(self) -> None:
        if self.cid_version not in (0, 1):
            raise LayoutError(f"cid_version: {self.cid_version!r} is not 0 or 1")
        if not 1 <= self.chunk_size <= MAX_CHUNK:
            raise LayoutError(f"chunk_size: {self.chunk_size!r} is not within 1..{MAX_CHUNK}")
        if self.max_links < 2:
            # Kubo only says "Must be positive (> 0)"; one link a node never ends a balanced
            # tree, so the devstack refuses it.
            raise LayoutError(f"max_links: {self.max_links!r} is below 2")

    def describe(self) -> dict[str, Any]:
        return {
            "cid_version": self.cid_version,
            "raw_leaves": self.raw_leaves,
            "chunk_size": self.chunk_size,
            "max_links": self.max_links,
            "hash": "sha2-256",
            "layout": "balanced",
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Layout:
        return cls(
            cid_version=int(data["cid_version"]),
            raw_leaves=bool(data["raw_leaves"]),
            chunk_size=int(data["chunk_size"]),
            max_links=int(data["max_links"]),
        )


# Kubo's defaults (IPIP-499's "unixfs-v0-2015", and `--cid-version=1`, which turns raw leaves
# on and keeps the rest: IPIP-499's "kubo (CIDv1)" column), and IPIP-499's "unixfs-v1-2025".
UNIXFS_V0_2015 = Layout(cid_version=0, raw_leaves=False, chunk_size=CIDV0_CHUNK, max_links=174)
KUBO_CIDV1 = Layout(cid_version=1, raw_leaves=True, chunk_size=CIDV0_CHUNK, max_links=174)
UNIXFS_V1_2025 = Layout(cid_version=1, raw_leaves=True, chunk_size=MIB, max_links=1024)


def default_layout(cid_version: int) -> Layout:
    """What ``ipfs add --cid-version=N`` builds with every other option at Kubo's default."""
    return UNIXFS_V0_2015 if cid_version == 0 else KUBO_CIDV1


# -- encodings ---------------------------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def _field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def cid_bytes(version: int, codec: int, data: bytes) -> bytes:
    """The binary CID of a block (sha2-256)."""
    multihash = bytes([SHA2_256, 32]) + hashlib.sha256(data).digest()
    if version == 0:
        return multihash
    return varint(1) + varint(codec) + multihash


def cid_text(binary: bytes) -> str:
    """Kubo's string form: base58btc for CIDv0, base32 (``b``) for CIDv1."""
    if binary[:2] == bytes([SHA2_256, 32]) and len(binary) == 34:
        num = int.from_bytes(binary, "big")
        out = bytearray()
        while num:
            num, rem = divmod(num, 58)
            out.append(_B58_ALPHABET[rem])
        return bytes(reversed(out)).decode()  # a CIDv0 starts 0x12, so no leading zeros
    bits = acc = 0
    chars = []
    for byte in binary:
        acc = (acc << 8) | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            chars.append(_B32_ALPHABET[(acc >> bits) & 31])
    if bits:
        chars.append(_B32_ALPHABET[(acc << (5 - bits)) & 31])
    return "b" + "".join(chars)


def _unixfs_file(data: bytes | None, filesize: int, blocksizes: list[int]) -> bytes:
    out = _field_varint(1, _TYPE_FILE)
    if data:
        out += _field_bytes(2, data)
    out += _field_varint(3, filesize)
    for size in blocksizes:
        out += _field_varint(4, size)  # proto2 `repeated uint64`: not packed
    return out


def _pb_link(child: Node) -> bytes:
    return _field_bytes(1, child.cid) + _field_bytes(2, b"") + _field_varint(3, child.tsize)


def _pb_node(links: list[Node], unixfs: bytes) -> bytes:
    return b"".join(_field_bytes(2, _pb_link(child)) for child in links) + _field_bytes(1, unixfs)


# -- the DAG -----------------------------------------------------------------------------


@dataclass
class Node:
    """One block of a file's DAG, and the part of the file under it."""

    cid: bytes
    block: bytes
    offset: int  # first file byte under this node
    length: int  # file bytes under this node
    tsize: int  # this block plus every block under it (a link's Tsize)
    children: list[Node] = field(default_factory=list)

    @property
    def cid_str(self) -> str:
        return cid_text(self.cid)


@dataclass
class FileDag:
    """A file's DAG: the root and the layout it was built with."""

    layout: Layout
    root: Node

    @property
    def cid(self) -> str:
        return self.root.cid_str

    @property
    def dag_size(self) -> int:
        """Kubo's ``Size`` for ``add`` (Pinata's ``PinSize``): every block's bytes."""
        return self.root.tsize

    def walk(self, *, dups: bool = False) -> Iterator[Node]:
        return walk(self.root, dups=dups)

    def find(self, binary_cid_multihash: bytes) -> Node | None:
        """The first node whose CID has this multihash (blocks are keyed by multihash)."""
        for node in self.walk():
            if _multihash(node.cid) == binary_cid_multihash:
                return node
        return None


def walk(top: Node, *, dups: bool = False) -> Iterator[Node]:
    """``top`` and the blocks under it depth-first, parents before children, left to right (a
    CAR's ``order=dfs``); a block met again (identical chunks) comes again only with ``dups``."""
    seen: set[bytes] = set()
    stack = [top]
    while stack:
        node = stack.pop()
        if dups or node.cid not in seen:
            seen.add(node.cid)
            yield node
        stack.extend(reversed(node.children))


def _multihash(binary: bytes) -> bytes:
    if len(binary) == 34 and binary[0] == SHA2_256:
        return binary
    return binary[-34:]  # CIDv1: version and codec (one byte each here), then the multihash


class _Builder:
    def __init__(self, data: bytes, layout: Layout) -> None:
        self.data = data
        self.layout = layout
        self.pos = 0

    def done(self) -> bool:
        return self.pos >= len(self.data)

    def leaf(self) -> Node:
        start = self.pos
        chunk = self.data[start : start + self.layout.chunk_size]
        self.pos += len(chunk)
        if self.layout.raw_leaves:
            return Node(cid_bytes(1, RAW, chunk), chunk, start, len(chunk), len(chunk))
        block = _field_bytes(1, _unixfs_file(chunk, len(chunk), []))
        cid = cid_bytes(self.layout.cid_version, DAG_PB, block)
        return Node(cid, block, start, len(chunk), len(block))

    def inner(self, children: list[Node]) -> Node:
        sizes = [child.length for child in children]
        block = _pb_node(children, _unixfs_file(None, sum(sizes), sizes))
        cid = cid_bytes(self.layout.cid_version, DAG_PB, block)
        tsize = len(block) + sum(child.tsize for child in children)
        return Node(cid, block, children[0].offset, sum(sizes), tsize, children)

    def fill(self, children: list[Node], depth: int) -> Node:
        """boxo's fillNodeRec: add children of ``depth - 1`` until full or out of data."""
        while len(children) < self.layout.max_links and not self.done():
            children.append(self.leaf() if depth == 1 else self.fill([], depth - 1))
        return self.inner(children)


def build_file(data: bytes, layout: Layout) -> FileDag:
    """The DAG ``ipfs add`` builds for ``data`` with ``layout`` (balanced)."""
    builder = _Builder(data, layout)
    root = builder.leaf()  # also the empty file's single (empty) leaf
    depth = 1
    while not builder.done():
        root = builder.fill([root], depth)
        depth += 1
    return FileDag(layout, root)
