"""The devstack gateway's trustless responses and Kubo's ``dag/export``, over HTTP.

Each CAR is read back with tests/devstack/car_reader.py (written from the CAR, dag-pb and
UnixFS specs): every block must hash to its CID, the root come first and the leaves make the
file, which is what a verifying reader relies on.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from devstack.config import StackConfig
from devstack.ipfs.cid import parse_cid
from tests.devstack.car_reader import links, read_car, reassemble, verify_blocks

pytestmark = pytest.mark.integration

CHUNK = 262_144
CAR_TYPE = "application/vnd.ipld.car; version=1; order=dfs; dups=n"


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


def unique(size: int) -> bytes:
    seed = f"trustless-{uuid.uuid4()}|".encode()
    return (seed * (size // len(seed) + 1))[:size]


async def kubo_add(
    http: httpx.AsyncClient, stack: StackConfig, data: bytes, **params: str
) -> dict[str, Any]:
    resp = await http.post(
        f"{stack.url('kubo')}/api/v0/add", params=params, files={"file": ("f.bin", data)}
    )
    assert resp.status_code == 200, resp.text
    return json.loads(resp.text.strip().splitlines()[-1])


def sha256_multihash(data: bytes) -> bytes:
    return b"\x12\x20" + hashlib.sha256(data).digest()


@pytest.mark.parametrize("version", ["0", "1"])
async def test_car_of_a_multi_block_file_verifies_and_reassembles(
    http: httpx.AsyncClient, stack: StackConfig, version: str
) -> None:
    data = unique(3 * CHUNK + 7)
    cid = (await kubo_add(http, stack, data, **{"cid-version": version}))["Hash"]
    for gateway in ("gateway-1", "gateway-2"):
        resp = await http.get(f"{stack.url(gateway)}/ipfs/{cid}", params={"format": "car"})
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"] == CAR_TYPE
        assert resp.headers["content-disposition"] == f'attachment; filename="{cid}.car"'
        assert resp.headers["etag"]
        car = read_car(resp.content)
        assert car.roots == [parse_cid(cid)]
        assert car.blocks[0][0] == parse_cid(cid)
        assert len(car.blocks) == 1 + 4  # root and four leaves
        verify_blocks(car)
        assert reassemble(car) == data
        leaf_codecs = {c.codec for c, _ in car.blocks[1:]}
        assert leaf_codecs == ({0x55} if version == "1" else {0x70})  # raw / dag-pb leaves


async def test_raw_block_of_root_and_leaf(http: httpx.AsyncClient, stack: StackConfig) -> None:
    data = unique(2 * CHUNK)
    cid = (await kubo_add(http, stack, data, **{"cid-version": "1"}))["Hash"]
    url = f"{stack.url('gateway-1')}/ipfs/{cid}"
    root = await http.get(url, params={"format": "raw"})
    assert root.status_code == 200
    assert root.headers["content-type"] == "application/vnd.ipld.raw"
    assert root.headers["content-disposition"] == f'attachment; filename="{cid}.bin"'
    assert "content-location" not in root.headers
    assert sha256_multihash(root.content) == parse_cid(cid).multihash
    first, _ = links(root.content)
    assert first.codec == 0x55

    # By Accept alone: the same block, and where the format= form lives.
    by_accept = await http.get(url, headers={"Accept": "application/vnd.ipld.raw"})
    assert by_accept.content == root.content
    assert by_accept.headers["content-location"] == f"/ipfs/{cid}?format=raw"

    # A leaf, by its own CID: a block under a pinned root is served too.
    leaf_cid = "b" + _b32(b"\x01\x55" + first.multihash)
    leaf = await http.get(f"{stack.url('gateway-2')}/ipfs/{leaf_cid}?format=raw")
    assert leaf.status_code == 200
    assert leaf.content == data[:CHUNK]
    assert sha256_multihash(leaf.content) == first.multihash

    # format= wins over Accept.
    car = await http.get(
        url, params={"format": "raw"}, headers={"Accept": "application/vnd.ipld.car"}
    )
    assert car.headers["content-type"] == "application/vnd.ipld.raw"

    # Unpinned: neither the root nor its leaves are served.
    await http.post(f"{stack.url('kubo')}/api/v0/pin/rm", params={"arg": cid})
    assert (await http.get(url, params={"format": "raw"})).status_code == 404
    assert (await http.get(f"{stack.url('gateway-1')}/ipfs/{leaf_cid}")).status_code == 404


def _b32(raw: bytes) -> str:
    import base64

    return base64.b32encode(raw).decode().lower().rstrip("=")


async def test_car_dups_and_dag_scope(http: httpx.AsyncClient, stack: StackConfig) -> None:
    chunk = unique(CHUNK)
    cid = (await kubo_add(http, stack, chunk * 3, **{"cid-version": "1"}))["Hash"]
    url = f"{stack.url('gateway-1')}/ipfs/{cid}"
    once = await http.get(url, headers={"Accept": "application/vnd.ipld.car"})
    assert once.headers["content-type"] == CAR_TYPE
    assert len(read_car(once.content).blocks) == 2  # root, and the one leaf once
    every = await http.get(
        url, headers={"Accept": "application/vnd.ipld.car; version=1; order=dfs; dups=y"}
    )
    assert every.headers["content-type"].endswith("dups=y")
    car = read_car(every.content)
    assert len(car.blocks) == 4
    assert reassemble(car) == chunk * 3
    block = await http.get(url, params={"format": "car", "dag-scope": "block"})
    assert [c for c, _ in read_car(block.content).blocks] == [parse_cid(cid)]
    for bad in ({"dag-scope": "nope"}, {"car-version": "2"}, {"entity-bytes": "ten"}):
        resp = await http.get(url, params={"format": "car", **bad})
        assert resp.status_code == 400, bad
    assert (await http.get(url, params={"format": "tar"})).status_code == 400


async def test_entity_bytes_gives_the_blocks_of_the_range(
    http: httpx.AsyncClient, stack: StackConfig
) -> None:
    data = unique(4 * CHUNK)  # four raw leaves under one root
    cid = (await kubo_add(http, stack, data, **{"cid-version": "1"}))["Hash"]
    url = f"{stack.url('gateway-1')}/ipfs/{cid}"

    async def leaves(entity_bytes: str) -> list[bytes]:
        resp = await http.get(url, params={"format": "car", "entity-bytes": entity_bytes})
        assert resp.status_code == 200, resp.text
        car = read_car(resp.content)
        verify_blocks(car)
        assert car.blocks[0][0] == parse_cid(cid)  # the root, to verify the leaves by
        return [block for _, block in car.blocks[1:]]

    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    assert await leaves(f"{CHUNK}:{CHUNK}") == [chunks[1]]
    assert await leaves(f"{CHUNK - 1}:{CHUNK}") == chunks[0:2]
    assert await leaves(f"{3 * CHUNK}:*") == [chunks[3]]
    assert await leaves("-10:*") == [chunks[3]]
    assert await leaves(f"0:-{3 * CHUNK + 1}") == [chunks[0]]
    assert await leaves(f"{2 * CHUNK}:{10 * CHUNK}") == chunks[2:]  # past the end: the rest
    assert await leaves("20:10") == []  # zero-length: the root alone
    outside = await http.get(url, params={"format": "car", "entity-bytes": f"{4 * CHUNK}:*"})
    assert outside.status_code == 400


async def test_single_block_file_is_one_raw_block(
    http: httpx.AsyncClient, stack: StackConfig
) -> None:
    data = unique(1000)
    cid = (await kubo_add(http, stack, data, **{"cid-version": "1"}))["Hash"]
    assert parse_cid(cid).codec == 0x55
    raw = await http.get(f"{stack.url('gateway-1')}/ipfs/{cid}?format=raw")
    assert raw.content == data
    car = read_car((await http.get(f"{stack.url('gateway-1')}/ipfs/{cid}?format=car")).content)
    assert car.blocks == [(parse_cid(cid), data)]


async def test_identity_probe(http: httpx.AsyncClient, stack: StackConfig) -> None:
    url = f"{stack.url('gateway-1')}/ipfs/bafkqaaa"
    raw = await http.get(url, params={"format": "raw"})
    assert (raw.status_code, raw.content) == (200, b"")
    car = await http.get(url, params={"format": "car"})
    assert car.status_code == 200
    parsed = read_car(car.content)
    assert parsed.roots == [parse_cid("bafkqaaa")]
    assert parsed.blocks == []


async def test_kubo_dag_export_is_the_gateways_car(
    http: httpx.AsyncClient, stack: StackConfig
) -> None:
    data = unique(CHUNK + 1)
    cid = (await kubo_add(http, stack, data))["Hash"]
    exported = await http.post(f"{stack.url('kubo')}/api/v0/dag/export", params={"arg": cid})
    assert exported.status_code == 200
    car = read_car(exported.content)
    verify_blocks(car)
    assert reassemble(car) == data
    served = await http.get(f"{stack.url('gateway-2')}/ipfs/{cid}", params={"format": "car"})
    assert exported.content == served.content

    never = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    missing = await http.post(f"{stack.url('kubo')}/api/v0/dag/export", params={"arg": never})
    assert missing.status_code == 500
    assert missing.json()["Type"] == "error"
