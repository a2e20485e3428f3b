"""The Kubo emulator's Import configuration: config show / get / set, profiles, and `add`
flags over them, producing the CIDs real Kubo produces (IPIP-499 / kubo cid_profiles_test
vectors, aleph-cid for the default layouts)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aleph_cid import CidHasher, compute_cid

from devstack.config import StackConfig
from devstack.ipfs.kubo_config import (
    AddFlags,
    KuboConfig,
    KuboConfigError,
    UnsupportedImport,
    check_kubo_profile,
)
from devstack.ipfs.unixfs import KUBO_CIDV1, UNIXFS_V0_2015, UNIXFS_V1_2025, Layout
from tests.devstack.car_reader import read_car, reassemble, verify_blocks
from tests.devstack.test_ipfs_unixfs import deterministic

CHUNK = 262_144
MIB = 1_048_576
PRODUCT_FLAGS = {
    "cid-version": "1",
    "raw-leaves": "true",
    "chunker": "size-262144",
    "max-file-links": "174",
}


def aleph_v1(data: bytes) -> str:
    hasher = CidHasher.for_ipfs_v1_raw_leaves()
    hasher.update(data)
    return hasher.finalize()


# -- resolution (add.go over the config), no server ------------------------------------


@pytest.mark.parametrize(
    ("profile", "flags", "layout"),
    [
        ("default", AddFlags(), UNIXFS_V0_2015),
        ("default", AddFlags(cid_version=1), KUBO_CIDV1),
        ("unixfs-v1-2025", AddFlags(), UNIXFS_V1_2025),
        ("unixfs-v0-2015", AddFlags(), UNIXFS_V0_2015),
        ("legacy-cid-v0", AddFlags(), UNIXFS_V0_2015),
        # Flags given on the add win over the config, key by key.
        (
            "unixfs-v1-2025",
            AddFlags(cid_version=1, raw_leaves=True, chunker="size-262144", max_file_links=174),
            KUBO_CIDV1,
        ),
        ("unixfs-v1-2025", AddFlags(chunker="size-262144"), Layout(1, True, CHUNK, 1024)),
        # The legacy profile sets UnixFSRawLeaves=false explicitly: --cid-version=1 alone then
        # builds dag-pb leaves (options/unixfs.go turns raw leaves on only when unset).
        ("legacy-cid-v0", AddFlags(cid_version=1), Layout(1, False, CHUNK, 174)),
        # The v1 profile's raw leaves stay on under --cid-version=0 (a CIDv0 root).
        ("unixfs-v1-2025", AddFlags(cid_version=0), Layout(0, True, MIB, 1024)),
    ],
)
def test_add_layout_is_flags_over_config(profile: str, flags: AddFlags, layout: Layout) -> None:
    assert KuboConfig(profile).layout_for(flags) == layout


def test_refusals() -> None:
    config = KuboConfig()
    with pytest.raises(UnsupportedImport, match="hash"):
        config.layout_for(AddFlags(hash="blake3"))
    with pytest.raises(UnsupportedImport, match="trickle"):
        config.layout_for(AddFlags(trickle=True))
    with pytest.raises(UnsupportedImport, match="chunker"):
        config.layout_for(AddFlags(chunker="rabin-1-2-3"))
    with pytest.raises(KuboConfigError, match="maximum chunk size"):
        config.layout_for(AddFlags(chunker="size-4194304"))
    with pytest.raises(KuboConfigError, match="not a profile"):
        config.apply_profile("unixfs-v9")
    with pytest.raises(KuboConfigError, match="not a profile"):
        check_kubo_profile("fast")
    with pytest.raises(KuboConfigError, match="maybe use --json"):
        config.set("Import.CidVersion", "1")


# -- over HTTP -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


@pytest.fixture
async def kubo(http: httpx.AsyncClient, stack: StackConfig) -> AsyncIterator[str]:
    yield stack.url("kubo")
    resp = await http.put(f"{stack.url('admin')}/kubo/import", json={"profile": "default"})
    assert resp.status_code == 200, resp.text


async def add(http: httpx.AsyncClient, kubo: str, data: bytes, **params: str) -> httpx.Response:
    return await http.post(f"{kubo}/api/v0/add", params=params, files={"file": ("f", data)})


def added_cid(resp: httpx.Response) -> str:
    assert resp.status_code == 200, resp.text
    return str(json.loads(resp.text.strip().splitlines()[-1])["Hash"])


@pytest.mark.integration
async def test_config_show_get_set_and_profile_apply(http: httpx.AsyncClient, kubo: str) -> None:
    shown = (await http.post(f"{kubo}/api/v0/config/show")).json()
    assert shown["Import"]["CidVersion"] is None  # a fresh `ipfs init`: defaults unset
    got = await http.post(f"{kubo}/api/v0/config", params={"arg": "Import.UnixFSChunker"})
    assert got.json() == {"Key": "Import.UnixFSChunker", "Value": None}

    applied = await http.post(
        f"{kubo}/api/v0/config/profile/apply", params={"arg": "unixfs-v1-2025"}
    )
    body = applied.json()
    assert body["OldCfg"]["Import"]["UnixFSChunker"] is None
    assert body["NewCfg"]["Import"] == {
        **body["NewCfg"]["Import"],
        "CidVersion": 1,
        "UnixFSRawLeaves": True,
        "UnixFSChunker": "size-1048576",
        "HashFunction": "sha2-256",
        "UnixFSFileMaxLinks": 1024,
        "UnixFSHAMTDirectorySizeEstimation": "block",
        "UnixFSDAGLayout": "balanced",
    }

    set_links = await http.post(
        f"{kubo}/api/v0/config",
        params=[("arg", "Import.UnixFSFileMaxLinks"), ("arg", "2048"), ("json", "true")],
    )
    assert set_links.json() == {"Key": "Import.UnixFSFileMaxLinks", "Value": 2048}
    as_string = await http.post(
        f"{kubo}/api/v0/config", params=[("arg", "Import.CidVersion"), ("arg", "1")]
    )
    assert as_string.status_code == 500
    assert "maybe use --json" in as_string.json()["Message"]
    unknown = await http.post(f"{kubo}/api/v0/config/profile/apply", params={"arg": "nope"})
    assert (unknown.status_code, unknown.json()["Message"]) == (500, "nope is not a profile")


@pytest.mark.integration
async def test_unixfs_v1_2025_profile_gives_ipip_499_cids(
    http: httpx.AsyncClient, stack: StackConfig, kubo: str
) -> None:
    resp = await http.put(f"{stack.url('admin')}/kubo/import", json={"profile": "unixfs-v1-2025"})
    assert resp.json()["add_layout"]["chunk_size"] == MIB
    hello = await add(http, kubo, b"hello world")
    assert added_cid(hello) == "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    over = deterministic(MIB + 1, "chunk-v1-seed")
    cid = added_cid(await add(http, kubo, over))
    assert cid == "bafybeigmix7t42i6jacydtquhet7srwvgpizfg7gjbq7627d35mjomtu64"
    # The store remembers the layout: the gateway's CAR holds the 1 MiB raw leaves.
    car = read_car((await http.get(f"{stack.url('gateway-1')}/ipfs/{cid}?format=car")).content)
    verify_blocks(car)
    assert [len(block) for _, block in car.blocks[1:]] == [MIB, 1]
    assert reassemble(car) == over


@pytest.mark.integration
async def test_add_flags_override_the_profile(
    http: httpx.AsyncClient, stack: StackConfig, kubo: str
) -> None:
    await http.put(f"{stack.url('admin')}/kubo/import", json={"profile": "unixfs-v1-2025"})
    data = f"{uuid.uuid4()}".encode() * (3 * MIB // 36 + 1)
    bare = added_cid(await add(http, kubo, data))
    explicit = added_cid(await add(http, kubo, data, **PRODUCT_FLAGS))
    assert explicit == aleph_v1(data) != bare
    assert added_cid(
        await add(
            http,
            kubo,
            data,
            **{
                "cid-version": "0",
                "raw-leaves": "false",
                "chunker": "size-262144",
                "max-file-links": "174",
            },
        )
    ) == compute_cid(data)


@pytest.mark.integration
async def test_legacy_profile_with_cid_version_1_alone_is_not_kubo_v1(
    http: httpx.AsyncClient, stack: StackConfig, kubo: str
) -> None:
    await http.put(f"{stack.url('admin')}/kubo/import", json={"profile": "legacy-cid-v0"})
    data = f"{uuid.uuid4()}".encode() * 30_000
    alone = added_cid(await add(http, kubo, data, **{"cid-version": "1"}))
    assert alone != aleph_v1(data)  # dag-pb leaves: UnixFSRawLeaves=false is explicit
    assert added_cid(await add(http, kubo, data, **PRODUCT_FLAGS)) == aleph_v1(data)


@pytest.mark.integration
async def test_unmodelled_options_are_refused_in_kubos_error_form(
    http: httpx.AsyncClient, kubo: str
) -> None:
    for params in ({"hash": "blake3"}, {"trickle": "true"}, {"wrap-with-directory": "true"}):
        resp = await add(http, kubo, b"x", **params)
        assert resp.status_code == 400, params
        assert resp.json() == {**resp.json(), "Code": 1, "Type": "error"}
        assert "devstack does not model" in resp.json()["Message"]
    bad = await add(http, kubo, b"x", **{"max-file-links": "many"})
    assert bad.status_code == 400
    too_big = await add(http, kubo, b"x", chunker="size-4194304")
    assert too_big.status_code == 500


@pytest.mark.integration
async def test_admin_kubo_import(http: httpx.AsyncClient, stack: StackConfig, kubo: str) -> None:
    url = f"{stack.url('admin')}/kubo/import"
    initial = (await http.get(url)).json()
    assert initial["profile"] == "default"
    assert initial["add_layout"] == UNIXFS_V0_2015.describe()
    changed = await http.put(url, json={"profile": "unixfs-v1-2025", "Import": {"CidVersion": 0}})
    body: dict[str, Any] = changed.json()
    assert body["Import"]["CidVersion"] == 0
    assert body["add_layout"] == Layout(0, True, MIB, 1024).describe()
    assert (await http.put(url, json={"profile": "nope"})).status_code == 400
    assert (await http.put(url, json={"layout": 1})).status_code == 400
