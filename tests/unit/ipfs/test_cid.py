"""CIDs equal Kubo's: aleph-cid checked against (a) an independent UnixFS builder written here
from the specs and (b) CIDs that Kubo's and js-unixfs' own test suites pin.

The builder uses only hashlib/base64: dag-pb PBNode/PBLink and UnixFS ``Data`` protobufs
encoded by hand, sha2-256 multihashes, Kubo's balanced layout (262144-byte chunks, at most
174 links per node, links carry an empty name and the child's cumulative size).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

import pytest
from aleph_cid import CidHasher, compute_cid

from devstack.ipfs.cid import dag_size, parse_cid

CHUNK = 262_144
MAX_LINKS = 174
DAG_PB, RAW = 0x70, 0x55
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

# -- the independent builder -------------------------------------------------------------


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


def pb_bytes(field: int, payload: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def pb_varint(field: int, value: int) -> bytes:
    return varint(field << 3) + varint(value)


def unixfs_file(data: bytes, filesize: int, blocksizes: list[int]) -> bytes:
    """UnixFS ``Data`` message: Type=File(2), Data (omitted when empty), filesize, blocksizes."""
    out = pb_varint(1, 2)
    if data:
        out += pb_bytes(2, data)
    out += pb_varint(3, filesize)
    for size in blocksizes:
        out += pb_varint(4, size)
    return out


def pb_node(links: list[bytes], data: bytes) -> bytes:
    """dag-pb canonical order: Links (field 2) before Data (field 1)."""
    return b"".join(pb_bytes(2, link) for link in links) + pb_bytes(1, data)


def pb_link(cid: bytes, tsize: int) -> bytes:
    return pb_bytes(1, cid) + pb_bytes(2, b"") + pb_varint(3, tsize)


def b58encode(raw: bytes) -> str:
    num = int.from_bytes(raw, "big")
    out = ""
    while num:
        num, rem = divmod(num, 58)
        out = B58[rem] + out
    return "1" * (len(raw) - len(raw.lstrip(b"\0"))) + out


def b58decode(text: str) -> bytes:
    num = 0
    for ch in text:
        num = num * 58 + B58.index(ch)
    return num.to_bytes((num.bit_length() + 7) // 8, "big")


@dataclass(frozen=True)
class Node:
    cid: bytes  # binary CID (v0: the bare multihash)
    filesize: int
    tsize: int  # this block plus every block below it


def make_cid(version: int, codec: int, block: bytes) -> bytes:
    multihash = b"\x12\x20" + hashlib.sha256(block).digest()
    return multihash if version == 0 else b"\x01" + varint(codec) + multihash


def cid_text(cid: bytes) -> str:
    if cid[:2] == b"\x12\x20":
        return b58encode(cid)
    return "b" + base64.b32encode(cid).decode().lower().rstrip("=")


def build(data: bytes, *, version: int, raw_leaves: bool) -> tuple[str, int]:
    """Root CID and cumulative DAG size of ``data`` added the way Kubo adds a file."""
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
    level = []
    for chunk in chunks:
        if raw_leaves:
            level.append(Node(make_cid(1, RAW, chunk), len(chunk), len(chunk)))
        else:
            block = pb_node([], unixfs_file(chunk, len(chunk), []))
            level.append(Node(make_cid(version, DAG_PB, block), len(chunk), len(block)))
    while len(level) > 1:
        parents = []
        for start in range(0, len(level), MAX_LINKS):
            group = level[start : start + MAX_LINKS]
            filesize = sum(n.filesize for n in group)
            block = pb_node(
                [pb_link(n.cid, n.tsize) for n in group],
                unixfs_file(b"", filesize, [n.filesize for n in group]),
            )
            tsize = len(block) + sum(n.tsize for n in group)
            parents.append(Node(make_cid(version, DAG_PB, block), filesize, tsize))
        level = parents
    return cid_text(level[0].cid), level[0].tsize


# -- what is under test ------------------------------------------------------------------


def aleph_v0(data: bytes) -> str:
    return compute_cid(data)


def aleph_v1(data: bytes) -> str:
    hasher = CidHasher.for_ipfs_v1_raw_leaves()
    hasher.update(data)
    return hasher.finalize()


def content(size: int) -> bytes:
    """Deterministic, non-repeating bytes: sha256 of a counter, concatenated."""
    blocks = (hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(size // 32 + 1))
    return b"".join(blocks)[:size]


SIZES = [
    0,
    1,
    CHUNK - 1,
    CHUNK,
    CHUNK + 1,
    5 * 1024 * 1024 + 12_345,  # a few MB: 21 leaves under one root
    MAX_LINKS * CHUNK,  # exactly one full root
    MAX_LINKS * CHUNK + 1,  # a second tree level
]


@pytest.fixture(scope="module", params=SIZES, ids=lambda s: f"{s}B")
def sample(request: pytest.FixtureRequest) -> bytes:
    return content(request.param)


def test_v0_matches_independent_builder(sample: bytes) -> None:
    assert aleph_v0(sample) == build(sample, version=0, raw_leaves=False)[0]


def test_v1_raw_leaves_matches_independent_builder(sample: bytes) -> None:
    expected = build(sample, version=1, raw_leaves=True)[0]
    assert aleph_v1(sample) == expected
    # v1 roots are raw blocks for one chunk, dag-pb above that
    assert expected.startswith("bafk" if len(sample) <= CHUNK else "bafy")


def test_streaming_in_odd_pieces_gives_the_same_cid(sample: bytes) -> None:
    hasher = CidHasher.for_ipfs_v1_raw_leaves()
    for start in range(0, len(sample), 100_003):
        hasher.update(sample[start : start + 100_003])
    assert hasher.finalize() == aleph_v1(sample)


def test_emulator_dag_size_matches_builder(sample: bytes) -> None:
    """Kubo's ``Size`` / Pinata's ``PinSize`` as the emulator reports them."""
    assert dag_size(len(sample), 0) == build(sample, version=0, raw_leaves=False)[1]
    assert dag_size(len(sample), 1) == build(sample, version=1, raw_leaves=True)[1]


# -- (b) published vectors ---------------------------------------------------------------

# ipfs/kubo test/sharness/t0040-add-and-cat.sh (files written with `echo`, hence the "\n"),
# plus the well-known "hello world\n".
KUBO_V0 = {
    b"": "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH",
    b"hello world\n": "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o",
    b"Hello Worlds!\n": "QmVr26fY1tKyspEJBniVhqxQeEjhF78XerGiqWAwraVLQH",
    b"Helloo Worlds!\n": "Qmf35k66MZNW2GijohUmXQEWKZU4cCGTCwK6idfnt152wJ",
    b"IPFS\n": "QmdFyxZXsFiP4csgfM5uPu99AvFiKH62CSPDw5TP92nr7w",
    b"Hello Venus!\n": "QmU5kp3BH3B8tnWUU2Pikdb2maksBNkb92FHRr56hyghh4",
    b"Hello Jupiter!\n": "QmUnvPcBctVTAcJpigv6KMqDvmDewksPWrNVoy1E1WP5fh",
    b"Hello Mars!\n": "QmPrrHqJzto9m7SyiRzarwkqPcCSsKR2EB1AyqJfe8L8tN",
    b"Hello Neptune!\nHello Pluton!": "QmZDhWpi8NvKrekaYYhxKCdNVGWsFFe1CREnAjP1QbPaB3",
}
# Same file, `--cid-version=1` (raw leaves): t0040's add_directory '--cid-version=1' and
# test_add_cat_raw.
KUBO_V1_RAW = {
    b"": "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
    b"Hello Mars!\n": "bafkreibmlvvgdyihetgocpof6xk64kjjzdeq2e4c7hqs3krdheosk4tgj4",
    b"Hello Venus!\n": "bafkreihfsphazrk2ilejpekyltjeh5k4yvwgjuwg26ueafohqioeo3sdca",
}
# `--cid-version=1 --raw-leaves=false` and `--cid-base=base32` (a v0 DAG shown as v1) from
# t0040; the 262144-byte fills and their 3-chunk file from ipld/js-unixfs test/file.spec.js
# ("splits into 3 chunks"), whose layout is Kubo's with v1 dag-pb leaves.
FILL_1, FILL_2, FILL_3 = (bytes([b]) * CHUNK for b in (1, 2, 3))
V1_DAG_PB = {
    b"Hello Mars!\n": "bafybeiawta2ntdmsy24aro35w3homzl4ak7svr3si7l7gesvq4erglyye4",
    b"Hello Venus!\n": "bafybeicvkvhs2fr75ynebtdjqpgm4g2fc63abqbmysupwpmcjl4gx7mzrm",
    b"base32 test\n": "bafybeibyosqxljd2eptb4ebbtvk7pb4aoxzqa6ttdsflty6rsslz5y6i34",
    b"": "bafybeif7ztnhq65lumvvtr4ekcwd2ifwgm3awq4zfr3srh462rwyinlb4y",
    FILL_1: "bafybeihhsdoupgd3fnl3e3367ymsanmikafpllldsdt37jzyoh6nuatowe",
    FILL_2: "bafybeief3dmadxfymhhhrflqytqmlhlz47w6glaxvyzmm6s6tpfb6izzee",
    FILL_3: "bafybeihznihf5g5ibdyoawn7uu3inlyqrxjv63lt6lop6h3w6rzwrp67a4",
    FILL_1 + FILL_2 + FILL_3: "bafybeiegda62p2cdi5sono3h3hqjnxwc56z4nocynrj44rz7rtc2p246cy",
}
JS_UNIXFS_3_CHUNK_DAG_BYTES = 786_632  # the same test's dagByteLength


def as_v0(v1_dag_pb: str) -> str:
    """A single-block dag-pb CIDv1 names the same block as the CIDv0 of its multihash."""
    return b58encode(parse_cid(v1_dag_pb).multihash)


@pytest.mark.parametrize("data", list(KUBO_V0), ids=repr)
def test_published_v0(data: bytes) -> None:
    assert aleph_v0(data) == KUBO_V0[data]
    assert build(data, version=0, raw_leaves=False)[0] == KUBO_V0[data]


@pytest.mark.parametrize("data", list(KUBO_V1_RAW), ids=repr)
def test_published_v1_raw_leaves(data: bytes) -> None:
    assert aleph_v1(data) == KUBO_V1_RAW[data]
    assert build(data, version=1, raw_leaves=True)[0] == KUBO_V1_RAW[data]


@pytest.mark.parametrize("data", list(V1_DAG_PB), ids=lambda d: f"{len(d)}B")
def test_builder_matches_published_v1_dag_pb(data: bytes) -> None:
    """Anchors the builder's dag-pb encoding, including a multi-chunk root, to outside CIDs."""
    assert build(data, version=1, raw_leaves=False)[0] == V1_DAG_PB[data]


@pytest.mark.parametrize("data", [FILL_1, FILL_2, FILL_3], ids=["0x01", "0x02", "0x03"])
def test_published_single_chunk_fills_v0(data: bytes) -> None:
    """One full 256 KiB chunk: its v0 CID is the js-unixfs leaf's multihash in base58."""
    assert aleph_v0(data) == as_v0(V1_DAG_PB[data])


def test_builder_dag_size_matches_js_unixfs() -> None:
    data = FILL_1 + FILL_2 + FILL_3
    assert build(data, version=1, raw_leaves=False)[1] == JS_UNIXFS_3_CHUNK_DAG_BYTES


def test_v0_and_v1_spellings_parse_to_the_same_block() -> None:
    v0 = KUBO_V0[b"Hello Venus!\n"]
    assert as_v0(V1_DAG_PB[b"Hello Venus!\n"]) == v0
    assert parse_cid(v0).key == parse_cid(V1_DAG_PB[b"Hello Venus!\n"]).key
    assert b58decode(v0) == parse_cid(v0).multihash
