"""The devstack's UnixFS DAG builder against independent CIDs, and its CAR writer read back.

Two independent references:
- aleph-cid (a Rust implementation, held to Kubo in tests/unit/ipfs/test_cid.py) for Kubo's
  default layouts (CIDv0 dag-pb leaves; CIDv1 raw leaves; 256 KiB chunks, 174 links);
- the CIDs Kubo publishes for IPIP-499's profiles (kubo test/cli/cid_profiles_test.go, repeated
  in ipfs/specs src/ipips/ipip-0499.md "Test fixtures"): deterministic bytes from kubo's
  test/cli/testutils/random_deterministic.go, which js-ipfs-unixfs' test/helpers/deterministic.ts
  documents as "key = sha256(utf8(seed)), nonce = 12 zero bytes, chacha20 keystream".
"""

from __future__ import annotations

import hashlib
import os

import pytest
from aleph_cid import CidHasher, compute_cid
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from devstack.ipfs.car import car_stream
from devstack.ipfs.cid import dag_size, parse_cid
from devstack.ipfs.unixfs import (
    KUBO_CIDV1,
    UNIXFS_V0_2015,
    UNIXFS_V1_2025,
    Layout,
    LayoutError,
    build_file,
)
from tests.devstack.car_reader import read_car, reassemble, verify_blocks

CHUNK = 262_144
MIB = 1_048_576
SIZES = [0, 1, 1000, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * MIB + 7, 174 * CHUNK]
SIZES += [174 * CHUNK + 1, 175 * CHUNK, 44 * MIB + 12_345]


def deterministic(size: int, seed: str) -> bytes:
    """kubo's DeterministicRandomReader: the ChaCha20 keystream under sha256(seed), nonce 0."""
    key = hashlib.sha256(seed.encode()).digest()
    # cryptography's ChaCha20 takes a 16-byte nonce: 4-byte counter (0) + the 12-byte nonce.
    return Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor().update(bytes(size))


def aleph_v1(data: bytes) -> str:
    hasher = CidHasher.for_ipfs_v1_raw_leaves()
    hasher.update(data)
    return hasher.finalize()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s}B")
def test_default_layouts_match_aleph_cid(size: int) -> None:
    data = os.urandom(size)
    v0 = build_file(data, UNIXFS_V0_2015)
    v1 = build_file(data, KUBO_CIDV1)
    assert v0.cid == compute_cid(data)
    assert v1.cid == aleph_v1(data)
    assert (v0.dag_size, v1.dag_size) == (dag_size(size, 0), dag_size(size, 1))


@pytest.mark.slow
def test_three_levels_match_aleph_cid() -> None:
    """174 * 174 chunks and one more: a third level (identical chunks, so it builds fast)."""
    data = bytes(174 * 174 * CHUNK + CHUNK)
    assert build_file(data, UNIXFS_V0_2015).cid == compute_cid(data)


# (layout, size, seed, CID) from kubo's cid_profiles_test.go and IPIP-499's fixtures.
IPIP_499 = [
    (UNIXFS_V0_2015, CHUNK, "chunk-v0-seed", "QmWmRj3dFDZdb6ABvbmKhEL6TmPbAfBZ1t5BxsEyJrcZhE"),
    (UNIXFS_V0_2015, CHUNK + 1, "chunk-v0-seed", "QmYyLxtzZyW22zpoVAtKANLRHpDjZtNeDjQdJrcQNWoRkJ"),
    (UNIXFS_V0_2015, 174 * CHUNK, "v0-seed", "QmUbBALi174SnogsUzLpYbD4xPiBSFANF4iztWCsHbMKh2"),
    (UNIXFS_V0_2015, 174 * CHUNK + 1, "v0-seed", "QmV81WL765sC8DXsRhE5fJv2rwhS4icHRaf3J9Zk5FdRnW"),
    (UNIXFS_V0_2015, 175 * CHUNK, "v0-seed", "QmepeWtdmS1hHXx1oZXsPUv6bMrfRRKfZcoPPU4eEfjnbf"),
    (
        UNIXFS_V1_2025,
        MIB,
        "chunk-v1-seed",
        "bafkreiacndfy443ter6qr2tmbbdhadvxxheowwf75s6zehscklu6ezxmta",
    ),
    (
        UNIXFS_V1_2025,
        MIB + 1,
        "chunk-v1-seed",
        "bafybeigmix7t42i6jacydtquhet7srwvgpizfg7gjbq7627d35mjomtu64",
    ),
]


@pytest.mark.parametrize(("layout", "size", "seed", "cid"), IPIP_499, ids=lambda v: str(v)[:12])
def test_ipip_499_vectors(layout: Layout, size: int, seed: str, cid: str) -> None:
    assert build_file(deterministic(size, seed), layout).cid == cid


def test_ipip_499_hello_world() -> None:
    hello = b"hello world"
    assert build_file(hello, UNIXFS_V0_2015).cid == "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"
    assert (
        build_file(hello, UNIXFS_V1_2025).cid
        == "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    )


@pytest.mark.slow
def test_ipip_499_v1_2025_at_and_over_max_links() -> None:
    """1024 MiB (one level of 1024 links) and one byte more (two levels): ~1 GiB of memory."""
    data = deterministic(1024 * MIB + 1, "v1-2025-seed")
    assert (
        build_file(data, UNIXFS_V1_2025).cid
        == "bafybeibdsi225ugbkmpbdohnxioyab6jsqrmkts3twhpvfnzp77xtzpyhe"
    )
    assert (
        build_file(data[: 1024 * MIB], UNIXFS_V1_2025).cid
        == "bafybeihmf37wcuvtx4hpu7he5zl5qaf2ineo2lqlfrapokkm5zzw7zyhvm"
    )


def test_layout_rejects_what_kubo_rejects() -> None:
    with pytest.raises(LayoutError, match="chunk_size"):
        Layout(chunk_size=2 * MIB)
    with pytest.raises(LayoutError, match="cid_version"):
        Layout(cid_version=2)


@pytest.mark.parametrize("layout", [UNIXFS_V0_2015, KUBO_CIDV1, UNIXFS_V1_2025], ids=str)
@pytest.mark.parametrize("size", [0, 10, CHUNK + 1, 3 * MIB + 7], ids=lambda s: f"{s}B")
def test_car_reads_back_to_the_file(layout: Layout, size: int) -> None:
    data = os.urandom(size)
    dag = build_file(data, layout)
    car = read_car(b"".join(car_stream(dag.root)))
    assert car.roots == [parse_cid(dag.cid)]
    assert car.blocks[0][0] == parse_cid(dag.cid)  # root first
    verify_blocks(car)
    assert reassemble(car) == data


def test_car_dups() -> None:
    chunk = os.urandom(CHUNK)
    dag = build_file(chunk * 3, KUBO_CIDV1)
    once = read_car(b"".join(car_stream(dag.root)))
    every = read_car(b"".join(car_stream(dag.root, dups=True)))
    assert (len(once.blocks), len(every.blocks)) == (2, 4)
    assert reassemble(once) == reassemble(every) == chunk * 3
    block = read_car(b"".join(car_stream(dag.root, scope="block")))
    assert [cid for cid, _ in block.blocks] == [parse_cid(dag.cid)]
