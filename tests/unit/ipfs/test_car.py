"""Block verification of raw blocks and CARs (mintsaga.ipfs.car), on DAGs built here by an
independent builder (unixfs_builder), in several layouts."""

from __future__ import annotations

import hashlib
import os

import pytest

from mintsaga.ipfs.car import (
    MAX_UNLINKED_BLOCKS,
    BlockError,
    Cid,
    IncompleteDag,
    file_from_car,
    file_from_raw_block,
    read_car,
    verify_block,
)
from mintsaga.ipfs.cid import cid_sync
from tests.unit.ipfs.unixfs_builder import (
    RAW,
    Built,
    binary_cid,
    build_file,
    car,
    car_header,
    car_section,
    dag_pb,
    unixfs_data,
)

CONTENT = os.urandom(700_000)  # three 256 KiB chunks
MAX = 2**20


def whole_car(built: Built) -> bytes:
    return car([built.root], built.blocks)


def test_builder_default_layout_gives_kubos_cid() -> None:
    # The builder agrees with aleph-cid (Kubo's layout), so the layouts below are real ones.
    assert build_file(CONTENT).cid == cid_sync(CONTENT, 1)
    assert build_file(CONTENT, raw_leaves=False, cid_version=0).cid == cid_sync(CONTENT, 0)
    assert build_file(b"{}").cid == cid_sync(b"{}", 1)


@pytest.mark.parametrize(
    ("layout"),
    [
        {},  # ours: 256 KiB, raw leaves, CIDv1
        {"chunk": 2**20, "fanout": 1024},  # Kubo's unixfs-v1-2025 profile
        {"raw_leaves": False, "cid_version": 0},  # Kubo's CIDv0 default
        {"chunk": 4096, "fanout": 3},  # a deep tree
        {"chunk": 100_000, "raw_leaves": False, "cid_version": 1},  # dag-pb leaves, CIDv1
    ],
)
def test_a_car_in_any_layout_gives_the_files_bytes(layout: dict[str, int]) -> None:
    content = CONTENT[:300_000] if layout.get("chunk") == 4096 else CONTENT
    built = build_file(content, **layout)
    root = Cid.parse(built.cid)
    data, size = file_from_car(whole_car(built), root, max_bytes=MAX)
    assert (data, size) == (content, len(content))
    # Without keeping the bytes: the same checks, the size only.
    assert file_from_car(whole_car(built), root, max_bytes=MAX, keep=False) == (None, len(content))


def test_blocks_in_any_order_with_duplicates_verify() -> None:
    built = build_file(CONTENT)
    shuffled = list(reversed(built.blocks)) + built.blocks[:1]
    data, _ = file_from_car(car([built.root], shuffled), Cid.parse(built.cid), max_bytes=MAX)
    assert data == CONTENT


def test_a_tampered_block_refuses_the_car() -> None:
    built = build_file(CONTENT)
    cid, leaf = built.blocks[1]
    tampered = bytearray(leaf)
    tampered[100] ^= 0xFF
    blocks = [*built.blocks[:1], (cid, bytes(tampered)), *built.blocks[2:]]
    with pytest.raises(BlockError, match="do not hash to its CID") as caught:
        file_from_car(car([built.root], blocks), Cid.parse(built.cid), max_bytes=MAX)
    assert not isinstance(caught.value, IncompleteDag)


def test_a_car_of_another_dag_is_refused_whatever_its_header_says() -> None:
    asked = build_file(CONTENT)
    other = build_file(os.urandom(600_000))
    # Its header even names the CID asked for: roots are not trusted, the blocks are.
    body = car([asked.root], other.blocks)
    with pytest.raises(BlockError, match="do not hold the root") as caught:
        file_from_car(body, Cid.parse(asked.cid), max_bytes=MAX)
    assert not isinstance(caught.value, IncompleteDag)


def test_a_truncated_car_is_incomplete() -> None:
    body = whole_car(build_file(CONTENT))
    with pytest.raises(IncompleteDag, match="ends inside"):
        read_car(body[: len(body) - 1000])


def test_a_missing_block_is_incomplete() -> None:
    built = build_file(CONTENT)
    blocks = [b for i, b in enumerate(built.blocks) if i != 1]  # the second leaf
    with pytest.raises(IncompleteDag, match="linked but not in the CAR"):
        file_from_car(car([built.root], blocks), Cid.parse(built.cid), max_bytes=MAX)


def test_unlinked_blocks_are_ignored_up_to_a_bound() -> None:
    built = build_file(CONTENT)
    root = Cid.parse(built.cid)
    extra = [(binary_cid(block, RAW, 1), block) for block in (os.urandom(10) for _ in range(20))]
    within = car([built.root], built.blocks + extra[:MAX_UNLINKED_BLOCKS])
    assert file_from_car(within, root, max_bytes=MAX)[0] == CONTENT
    beyond = car([built.root], built.blocks + extra[: MAX_UNLINKED_BLOCKS + 1])
    with pytest.raises(BlockError, match="does not link"):
        file_from_car(beyond, root, max_bytes=MAX)


def test_a_car_of_many_tiny_blocks_is_refused_before_it_is_all_read() -> None:
    # A hostile gateway's CAR: the real file's blocks, then thousands of valid 1-byte blocks
    # nothing links to; refused by their count (a bound from max_bytes), not held first.
    built = build_file(CONTENT)
    tiny = [i.to_bytes(3, "big") for i in range(5_000)]
    junk = [(binary_cid(block, RAW, 1), block) for block in tiny]
    body = car([built.root], junk + built.blocks)
    with pytest.raises(BlockError, match=r"more than \d+ blocks"):
        file_from_car(body, Cid.parse(built.cid), max_bytes=MAX)


def test_a_file_over_max_bytes_is_refused_even_when_its_dag_is_tiny() -> None:
    # One 64 KiB leaf linked 64 times: 4 MiB of file from 64 KiB of blocks.
    leaf = os.urandom(65_536)
    leaf_cid = binary_cid(leaf, RAW, 1)
    node = dag_pb(
        [(leaf_cid, len(leaf))] * 64, unixfs_data(2, b"", 64 * len(leaf), [len(leaf)] * 64)
    )
    root = binary_cid(node, 0x70, 1)
    body = car([root], [(root, node), (leaf_cid, leaf)])
    parsed = Cid.read(memoryview(root))[0]
    assert file_from_car(body, parsed, max_bytes=4 * 2**20)[1] == 4 * 2**20
    with pytest.raises(BlockError, match="more than"):
        file_from_car(body, parsed, max_bytes=MAX)


def test_blocksizes_that_lie_are_refused() -> None:
    leaf = os.urandom(1000)
    leaf_cid = binary_cid(leaf, RAW, 1)
    node = dag_pb([(leaf_cid, len(leaf))], unixfs_data(2, b"", 2000, [2000]))
    root = binary_cid(node, 0x70, 1)
    with pytest.raises(BlockError, match="holds 1000 bytes, not 2000"):
        file_from_car(
            car([root], [(root, node), (leaf_cid, leaf)]),
            Cid.read(memoryview(root))[0],
            max_bytes=MAX,
        )


def test_not_a_carv1_is_refused() -> None:
    built = build_file(b"hello")
    with pytest.raises(BlockError, match="CARv1"):
        read_car(car_header([built.root], version=2) + car_section(*built.blocks[0]))
    with pytest.raises(BlockError):
        read_car(b"\x05hello")


def test_a_raw_block_is_checked_against_its_cid() -> None:
    data = b'{"name": "x"}'
    cid = Cid.parse(cid_sync(data, 1))
    assert file_from_raw_block(data, cid, max_bytes=MAX) == data
    with pytest.raises(BlockError, match="do not hash"):
        file_from_raw_block(data + b" ", cid, max_bytes=MAX)
    with pytest.raises(BlockError, match="more than"):
        file_from_raw_block(data, cid, max_bytes=5)


def test_other_multihashes_and_identity_cids_verify() -> None:
    data = b"abc"
    sha512 = Cid(1, RAW, 0x13, hashlib.sha512(data).digest())
    verify_block(sha512, data)
    assert Cid.parse(str(sha512)) == sha512
    identity = Cid(1, RAW, 0x00, data)
    verify_block(identity, data)
    with pytest.raises(BlockError):
        verify_block(identity, b"abd")
    with pytest.raises(BlockError, match="cannot be checked"):
        verify_block(Cid(1, RAW, 0x1E, b"x" * 32), data)  # blake3: not checked here


def test_cid_strings_round_trip_in_both_versions() -> None:
    for text in (cid_sync(CONTENT, 0), cid_sync(CONTENT, 1), cid_sync(b"x", 1)):
        assert str(Cid.parse(text)) == text
    with pytest.raises(BlockError, match="not a CID"):
        Cid.parse("bafynotacid")
