"""IPFS content verified block by block, whatever layout (chunker, CID version, raw leaves,
fan-out) the uploader chose: the Trustless Gateway's answers checked by hash.

specs.ipfs.tech/http-gateways/trustless-gateway/ ("Block Responses": "The Body hash MUST match
the Multihash from the requested CID"; "CAR roots": "A Client SHOULD ignore this field";
"Streaming and Missing Child Blocks": "Clients MUST verify CAR completeness and handle
incomplete streams as retrieval failures"; "CAR dups": with no ``dups`` in the answer's
Content-Type the client "MUST ignore duplicates and other unexpected blocks"). So:

- a raw block (codec 0x55) is its bytes, checked against the CID's multihash (`verify_block`);
- a CAR (CARv1, ipld.io/specs/transport/car/carv1/) is read section by section, every block
  checked against the CID it is filed under, and a block that does not hash to it refuses the
  whole CAR (`read_car`); the header's roots are not trusted: the DAG is walked from the CID
  *we asked for*, so a CAR of another DAG fails for want of that root block;
- the walk (`unixfs_file`) follows dag-pb links in order from the root, reassembling a UnixFS
  file's bytes from its leaves (a node's own data first, then its children's: the UnixFS
  spec's file layout), checking each node's ``blocksizes`` and ``filesize`` against what its
  children really hold; a linked block missing from the CAR, or more blocks nobody links than
  `MAX_UNLINKED_BLOCKS`, refuses it.

Everything is bounded: a block at most `MAX_BLOCK_BYTES` (the IPFS ecosystem's 2 MiB block
limit, the largest block Bitswap carries; Kubo's chunkers stay at or below 1 MiB), the
reassembled file at most the caller's ``max_bytes`` (a DAG linking one leaf a million times
fails there, not in memory), nodes visited at most `MAX_NODES`, depth at most `MAX_DEPTH`.
Blocks are memoryviews into the body, never copied.

Library: `libipld` (PyPI; a Rust-backed binding of the Rust IPLD crates, maintained for the AT
Protocol SDK) decodes CID strings in any multibase, encodes binary CIDs back to strings and
decodes the CAR header's DAG-CBOR. Its own ``decode_car`` is not used: it decodes only
DAG-CBOR blocks (it refuses dag-pb and raw ones) and checks no block's hash. The CAR framing
(varints and sections) and dag-pb / UnixFS protobuf decoding are a few dozen lines here, like
the specs that define them (ipld.io/specs/codecs/dag-pb/spec/, specs.ipfs.tech/unixfs/);
docs/dependencies.md says why no other package was taken.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import libipld

RAW = 0x55
DAG_PB = 0x70
IDENTITY = 0x00
SHA2_256 = 0x12

# The multihashes a block can be checked with (multiformats' multicodec table).
HASHES: dict[int, tuple[str, int]] = {
    0x12: ("sha256", 32),
    0x13: ("sha512", 64),
    0x16: ("sha3_256", 32),
    0x14: ("sha3_512", 64),
    0xB220: ("blake2b_256", 32),
}

MAX_BLOCK_BYTES = 2 * 2**20
MAX_NODES = 200_000
MAX_DEPTH = 64
MAX_UNLINKED_BLOCKS = 16
MAX_HEADER_BYTES = 64 * 1024
MAX_IDENTITY_BYTES = 128  # an inlined block (identity multihash) holds at most this
# A CAR of a file carries, per block, its section header and a link in its parent: ~80 bytes,
# 8 % of a 1 KiB chunk (the smallest chunker anyone uses for images).
CAR_OVERHEAD_DIVISOR = 8
CAR_OVERHEAD_FLOOR = 64 * 1024

# UnixFS Data.Type (specs.ipfs.tech/unixfs/)
_UNIXFS_RAW = 0
_UNIXFS_FILE = 2


class BlockError(ValueError):
    """The blocks do not prove the content: a block whose bytes do not hash to its CID, a
    malformed CAR or node, content that is not a UnixFS file. The message is for a person."""


class IncompleteDag(BlockError):
    """Every block present verifies, but the DAG is not all there (a linked block missing, a
    CAR cut short): what a gateway still fetching the content, or a cut stream, sends."""


def sections_allowed(max_bytes: int) -> int:
    """The most CAR sections read for a file of at most ``max_bytes``: a leaf per KiB (the
    smallest chunker `car_allowance` allows for), their parents, and the unlinked blocks
    tolerated; a CAR of tiny junk blocks is refused before it costs memory."""
    leaves = max_bytes // 1024 + 1
    return leaves + leaves // 100 + MAX_UNLINKED_BLOCKS + 8


def car_allowance(max_bytes: int) -> int:
    """The most CAR bytes read for a file of at most ``max_bytes``."""
    return max_bytes + max_bytes // CAR_OVERHEAD_DIVISOR + CAR_OVERHEAD_FLOOR


# -- varints and CIDs ------------------------------------------------------------------------


def read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """An unsigned LEB128 varint (at most 9 bytes, as multiformats allows) and the position
    after it."""
    value = 0
    for i in range(9):
        if pos + i >= len(buf):
            raise IncompleteDag("the data ends inside a varint")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i:
                raise BlockError("a varint is not minimally encoded")
            return value, pos + i + 1
    raise BlockError("a varint is longer than 9 bytes")


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@dataclass(frozen=True)
class Cid:
    """A CID's parts. Blocks are matched by multihash (`key`): Kubo's blockstore is keyed by
    it, so ``Qm…`` and its ``bafybei…`` spelling name the same block."""

    version: int
    codec: int
    hash_code: int
    digest: bytes

    @property
    def key(self) -> bytes:
        """The multihash: what a block is stored and found under."""
        return _varint_bytes(self.hash_code) + _varint_bytes(len(self.digest)) + self.digest

    def binary(self) -> bytes:
        if self.version == 0:
            return self.key
        return b"\x01" + _varint_bytes(self.codec) + self.key

    def __str__(self) -> str:
        return str(libipld.encode_cid(self.binary()))

    @classmethod
    def parse(cls, text: str) -> Cid:
        """A CID string in any multibase; BlockError when it is not one."""
        try:
            parts = libipld.decode_cid(text)
        except ValueError as exc:
            raise BlockError(f"{text[:100]!r} is not a CID: {exc}") from None
        digest = parts["hash"]["digest"]
        if len(digest) != parts["hash"]["size"]:
            raise BlockError(f"{text[:100]!r}: its multihash is truncated")
        return cls(parts["version"], parts["codec"], parts["hash"]["code"], bytes(digest))

    @classmethod
    def read(cls, buf: memoryview, pos: int = 0) -> tuple[Cid, int]:
        """A binary CID at ``pos`` and the position after it (CIDv0: a bare sha2-256
        multihash, 0x12 0x20 + 32 bytes)."""
        if len(buf) >= pos + 2 and buf[pos] == SHA2_256 and buf[pos + 1] == 0x20:
            end = pos + 34
            if end > len(buf):
                raise IncompleteDag("the data ends inside a CID")
            return cls(0, DAG_PB, SHA2_256, bytes(buf[pos + 2 : end])), end
        version, pos = read_varint(buf, pos)
        if version != 1:
            raise BlockError(f"CID version {version} is not 0 or 1")
        codec, pos = read_varint(buf, pos)
        code, pos = read_varint(buf, pos)
        size, pos = read_varint(buf, pos)
        if size > 128:
            raise BlockError(f"a multihash digest of {size} bytes")
        if pos + size > len(buf):
            raise IncompleteDag("the data ends inside a CID")
        return cls(1, codec, code, bytes(buf[pos : pos + size])), pos + size


def verify_block(cid: Cid, data: bytes | memoryview) -> None:
    """BlockError unless ``data`` hashes to ``cid``'s multihash."""
    if cid.hash_code == IDENTITY:
        if bytes(data) != cid.digest:
            raise BlockError(f"block {cid}: its bytes are not the ones inlined in its CID")
        return
    known = HASHES.get(cid.hash_code)
    if known is None:
        raise BlockError(f"block {cid}: multihash 0x{cid.hash_code:x} cannot be checked here")
    name, size = known
    if len(cid.digest) != size:
        raise BlockError(f"block {cid}: a {name} digest of {len(cid.digest)} bytes")
    hasher = hashlib.blake2b(digest_size=32) if name == "blake2b_256" else hashlib.new(name)
    hasher.update(data)
    if hasher.digest() != cid.digest:
        raise BlockError(f"block {cid}: its {len(data)} bytes do not hash to its CID")


# -- CAR -------------------------------------------------------------------------------------


@dataclass
class Car:
    """A CAR's verified blocks by multihash (`Cid.key`), and how many sections it had."""

    blocks: dict[bytes, memoryview] = field(default_factory=dict)
    sections: int = 0


def read_car(body: bytes | memoryview, *, max_sections: int = MAX_NODES) -> Car:
    """Every section of a CARv1, each block checked against its CID (BlockError on the first
    that does not hash to it); duplicates kept once. IncompleteDag when the body ends inside
    a section (a stream cut short)."""
    buf = memoryview(body)
    size, pos = read_varint(buf, 0)
    if size > MAX_HEADER_BYTES:
        raise BlockError(f"the CAR header claims {size} bytes")
    if pos + size > len(buf):
        raise IncompleteDag("the CAR ends inside its header")
    try:
        header = libipld.decode_dag_cbor(bytes(buf[pos : pos + size]))
    except ValueError as exc:
        raise BlockError(f"the CAR header is not DAG-CBOR: {exc}") from None
    if not isinstance(header, dict) or header.get("version") != 1:
        version = header.get("version") if isinstance(header, dict) else None
        raise BlockError(f"not a CARv1 (header version {version!r})")
    pos += size
    car = Car()
    while pos < len(buf):
        length, start = read_varint(buf, pos)
        end = start + length
        if length == 0 or length > MAX_BLOCK_BYTES + 256:
            raise BlockError(f"a CAR section of {length} bytes")
        if end > len(buf):
            raise IncompleteDag(f"the CAR ends inside a section ({len(buf) - start} of {length})")
        cid, data_at = Cid.read(buf[:end], start)
        data = buf[data_at:end]
        verify_block(cid, data)
        car.sections += 1
        if car.sections > max_sections:
            raise BlockError(f"the CAR has more than {max_sections} blocks")
        car.blocks.setdefault(cid.key, data)
        pos = end
    return car


# -- dag-pb and UnixFS -----------------------------------------------------------------------


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of a protobuf message: varints as ints,
    length-delimited fields as memoryviews; fixed 32/64-bit fields skipped."""
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
            yield number, wire, value
        elif wire == 2:
            size, pos = read_varint(buf, pos)
            if pos + size > len(buf):
                raise BlockError("a protobuf field runs past its message")
            yield number, wire, buf[pos : pos + size]
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > len(buf):
                raise BlockError("a protobuf field runs past its message")
        else:
            raise BlockError(f"protobuf wire type {wire} in a dag-pb block")


@dataclass
class PbNode:
    """A dag-pb node (ipld.io/specs/codecs/dag-pb/spec/): links in order, and its Data."""

    links: list[Cid]
    data: memoryview | None


def decode_dag_pb(block: memoryview) -> PbNode:
    links: list[Cid] = []
    data: memoryview | None = None
    for number, wire, value in _fields(block):
        if number == 2 and isinstance(value, memoryview):  # PBLink
            target = None
            for n, _w, v in _fields(value):
                if n == 1 and isinstance(v, memoryview):
                    target, end = Cid.read(v)
                    if end != len(v):
                        raise BlockError("a dag-pb link's Hash has bytes after its CID")
            if target is None:
                raise BlockError("a dag-pb link without a Hash")
            links.append(target)
        elif number == 1 and isinstance(value, memoryview):
            data = value
        else:
            raise BlockError(f"dag-pb field {number} (wire type {wire}) is not in the spec")
    return PbNode(links, data)


@dataclass
class UnixFsData:
    kind: int
    data: memoryview
    filesize: int | None
    blocksizes: list[int]


def decode_unixfs(data: memoryview | None) -> UnixFsData:
    if data is None:
        raise BlockError("a dag-pb node without UnixFS Data")
    kind: int | None = None
    content = memoryview(b"")
    filesize: int | None = None
    blocksizes: list[int] = []
    for number, _wire, value in _fields(data):
        if number == 1 and isinstance(value, int):
            kind = value
        elif number == 2 and isinstance(value, memoryview):
            content = value
        elif number == 3 and isinstance(value, int):
            filesize = value
        elif number == 4 and isinstance(value, int):
            blocksizes.append(value)
        elif number == 4 and isinstance(value, memoryview):  # packed repeated
            pos = 0
            while pos < len(value):
                size, pos = read_varint(value, pos)
                blocksizes.append(size)
    if kind is None:
        raise BlockError("UnixFS Data without a Type")
    return UnixFsData(kind, content, filesize, blocksizes)


@dataclass
class _Walk:
    blocks: Mapping[bytes, memoryview]
    max_bytes: int
    sink: Callable[[memoryview], None] | None
    size: int = 0
    nodes: int = 0
    seen: set[bytes] = field(default_factory=set)

    def emit(self, piece: memoryview) -> None:
        self.size += len(piece)
        if self.size > self.max_bytes:
            raise BlockError(f"the file is more than {self.max_bytes} bytes")
        if self.sink is not None and piece:
            self.sink(piece)

    def block(self, cid: Cid) -> memoryview:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise BlockError(f"the DAG has more than {MAX_NODES} nodes")
        if cid.hash_code == IDENTITY:
            if len(cid.digest) > MAX_IDENTITY_BYTES:
                raise BlockError(f"an inlined block of {len(cid.digest)} bytes")
            return memoryview(cid.digest)
        found = self.blocks.get(cid.key)
        if found is None:
            raise IncompleteDag(f"block {cid} is linked but not in the CAR")
        self.seen.add(cid.key)
        return found

    def visit(self, cid: Cid, depth: int) -> int:
        """Emit the bytes under ``cid``; the number of bytes."""
        if depth > MAX_DEPTH:
            raise BlockError(f"the DAG is more than {MAX_DEPTH} levels deep")
        block = self.block(cid)
        if cid.codec == RAW:
            self.emit(block)
            return len(block)
        if cid.codec != DAG_PB:
            raise BlockError(f"block {cid}: codec 0x{cid.codec:x} is not a UnixFS file's")
        node = decode_dag_pb(block)
        unixfs = decode_unixfs(node.data)
        if unixfs.kind not in (_UNIXFS_FILE, _UNIXFS_RAW):
            raise BlockError(f"block {cid}: UnixFS type {unixfs.kind} is not a file")
        if node.links and len(unixfs.blocksizes) != len(node.links):
            raise BlockError(
                f"block {cid}: {len(node.links)} links but {len(unixfs.blocksizes)} blocksizes"
            )
        self.emit(unixfs.data)
        total = len(unixfs.data)
        for child, declared in zip(node.links, unixfs.blocksizes, strict=False):
            got = self.visit(child, depth + 1)
            if got != declared:
                raise BlockError(f"block {cid}: a child holds {got} bytes, not {declared}")
            total += got
        if unixfs.filesize is not None and unixfs.filesize != total:
            raise BlockError(f"block {cid}: filesize {unixfs.filesize}, its DAG holds {total}")
        return total


def unixfs_file(
    root: Cid,
    blocks: Mapping[bytes, memoryview],
    *,
    max_bytes: int,
    keep: bool = True,
    max_unlinked: int = MAX_UNLINKED_BLOCKS,
) -> tuple[bytes | None, int]:
    """The file under ``root`` (its bytes when ``keep``, else None) and its size, from blocks
    already verified (`read_car`). BlockError / IncompleteDag as the module docstring says."""
    if root.hash_code != IDENTITY and root.key not in blocks:
        # Not "incomplete": a gateway without the root block answers 404 (the spec), so a CAR
        # without it is another DAG's.
        raise BlockError(f"the blocks do not hold the root {root} asked for")
    out = bytearray() if keep else None
    walk = _Walk(blocks, max_bytes, out.extend if out is not None else None)
    size = walk.visit(root, 0)
    unlinked = len(set(blocks) - walk.seen)
    if unlinked > max_unlinked:
        raise BlockError(f"the CAR holds {unlinked} blocks the file does not link")
    return (bytes(out) if out is not None else None), size


def file_from_car(
    body: bytes | memoryview, root: Cid, *, max_bytes: int, keep: bool = True
) -> tuple[bytes | None, int]:
    """`read_car` then `unixfs_file`: the verified file under ``root`` in a CAR body."""
    car = read_car(body, max_sections=min(MAX_NODES, sections_allowed(max_bytes)))
    return unixfs_file(root, car.blocks, max_bytes=max_bytes, keep=keep)


def file_from_raw_block(body: bytes, root: Cid, *, max_bytes: int) -> bytes:
    """A raw block answer (``application/vnd.ipld.raw``) for a raw-codec CID, checked."""
    if len(body) > max_bytes:
        raise BlockError(f"the block is more than {max_bytes} bytes")
    verify_block(root, body)
    return body
