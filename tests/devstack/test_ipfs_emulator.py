"""The devstack's IPFS faces over HTTP: Pinata, Kubo and the gateways share one blockstore.

Expected CIDs come from aleph-cid, which tests/unit/ipfs/test_cid.py holds to Kubo's CIDs.
Every test uploads content unique to the run, so reruns against a kept state dir still pass.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aleph_cid import CidHasher, compute_cid

from devstack.config import StackConfig
from devstack.ipfs.cid import dag_size

pytestmark = pytest.mark.integration

CHUNK = 262_144
SIZES = [0, 1, CHUNK, CHUNK + 1, 3 * 1024 * 1024 + 7]
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR"


def kubo_cid(data: bytes, version: int) -> str:
    if version == 0:
        return compute_cid(data)
    hasher = CidHasher.for_ipfs_v1_raw_leaves()
    hasher.update(data)
    return hasher.finalize()


def sized(size: int, salt: str) -> bytes:
    """``size`` bytes starting with the salt (the empty file cannot be made unique)."""
    seed = salt.encode()
    return (seed * (size // len(seed) + 1))[:size]


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


@pytest.fixture
def salt() -> str:
    return f"mintsaga-test-{uuid.uuid4()}|"


def auth(stack: StackConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.pinata_jwt}"}


async def pin_file(
    http: httpx.AsyncClient,
    stack: StackConfig,
    data: bytes,
    *,
    version: int = 0,
    name: str = "file.bin",
    keyvalues: dict[str, Any] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if keyvalues is not None:
        metadata["keyvalues"] = keyvalues
    resp = await http.post(
        f"{stack.url('pinata')}/pinning/pinFileToIPFS",
        headers=auth(stack),
        files={"file": (name, data, "application/octet-stream")},
        data={
            "pinataMetadata": json.dumps(metadata),
            "pinataOptions": json.dumps({"cidVersion": version}),
        },
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


async def kubo_add(
    http: httpx.AsyncClient, stack: StackConfig, data: bytes, *, version: int = 0
) -> dict[str, Any]:
    resp = await http.post(
        f"{stack.url('kubo')}/api/v0/add",
        params={"cid-version": str(version)},
        files={"file": ("file.bin", data)},
    )
    assert resp.status_code == 200, resp.text
    return json.loads(resp.text.strip().splitlines()[-1])


async def gateway_get(http: httpx.AsyncClient, stack: StackConfig, gateway: str, cid: str):
    return await http.get(f"{stack.url(gateway)}/ipfs/{cid}")


async def admin_set_pinata_rpm(http: httpx.AsyncClient, stack: StackConfig, rpm: int) -> None:
    resp = await http.post(f"{stack.url('admin')}/pinata/limits", json={"requests_per_minute": rpm})
    assert resp.status_code == 200, resp.text


# -- CIDs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s}B")
async def test_pinata_cids_are_kubo_cids(
    http: httpx.AsyncClient, stack: StackConfig, salt: str, size: int, version: int
) -> None:
    data = sized(size, salt)
    body = await pin_file(http, stack, data, version=version)
    assert body["IpfsHash"] == kubo_cid(data, version)
    assert body["PinSize"] == dag_size(size, version)
    assert set(body) == {"IpfsHash", "PinSize", "Timestamp", "isDuplicate"}
    assert body["Timestamp"].endswith("Z")


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s}B")
async def test_kubo_cids_are_kubo_cids(
    http: httpx.AsyncClient, stack: StackConfig, salt: str, size: int, version: int
) -> None:
    data = sized(size, salt)
    body = await kubo_add(http, stack, data, version=version)
    assert body == {
        "Name": "file.bin",
        "Hash": kubo_cid(data, version),
        "Size": str(dag_size(size, version)),  # Kubo sends sizes as strings
    }


async def test_known_kubo_vector_through_both_providers(
    http: httpx.AsyncClient, stack: StackConfig
) -> None:
    """Kubo's sharness t0040 pins "Hello Worlds!\\n" to this CID."""
    data = b"Hello Worlds!\n"
    expected = "QmVr26fY1tKyspEJBniVhqxQeEjhF78XerGiqWAwraVLQH"
    assert (await pin_file(http, stack, data))["IpfsHash"] == expected
    assert (await kubo_add(http, stack, data))["Hash"] == expected


async def test_pinning_again_is_a_duplicate(
    http: httpx.AsyncClient, stack: StackConfig, salt: str
) -> None:
    data = sized(100, salt)
    first = await pin_file(http, stack, data)
    second = await pin_file(http, stack, data)
    assert (first["isDuplicate"], second["isDuplicate"]) == (False, True)
    assert second["IpfsHash"] == first["IpfsHash"]


async def test_pin_json_pins_json_stringify_bytes(
    http: httpx.AsyncClient, stack: StackConfig, salt: str
) -> None:
    content = {
        "name": f"NFT {salt}",
        "b": 1,
        "2": "index-like keys come first in JS",
        "a": [1.5, 1e-7, 10.0, "é\u2028"],
        "1": None,
    }
    js_bytes = (
        '{"1":null,"2":"index-like keys come first in JS",'
        f'"name":"NFT {salt}","b":1,"a":[1.5,1e-7,10,"é\u2028"]}}'
    ).encode()
    resp = await http.post(
        f"{stack.url('pinata')}/pinning/pinJSONToIPFS",
        headers=auth(stack),
        json={
            "pinataContent": content,
            "pinataMetadata": {"name": "metadata.json"},
            "pinataOptions": {"cidVersion": 1},
        },
    )
    assert resp.status_code == 200, resp.text
    cid = resp.json()["IpfsHash"]
    assert cid == kubo_cid(js_bytes, 1)
    served = await gateway_get(http, stack, "gateway-1", cid)
    assert served.content == js_bytes
    assert served.headers["content-type"].startswith("application/json")


# -- Pinata API --------------------------------------------------------------------------


async def test_pinata_requires_the_jwt(http: httpx.AsyncClient, stack: StackConfig) -> None:
    url = f"{stack.url('pinata')}/data/testAuthentication"
    for headers in ({}, {"Authorization": "Bearer not-the-jwt"}):
        resp = await http.get(url, headers=headers)
        assert resp.status_code == 401
        assert set(resp.json()["error"]) == {"reason", "details"}
    resp = await http.post(
        f"{stack.url('pinata')}/pinning/pinFileToIPFS", files={"file": ("x", b"x")}
    )
    assert resp.status_code == 401
    ok = await http.get(url, headers=auth(stack))
    assert ok.status_code == 200
    assert "Congratulations" in ok.json()["message"]


async def test_pin_list_filters_by_keyvalues(
    http: httpx.AsyncClient, stack: StackConfig, salt: str
) -> None:
    mint_a, mint_b = f"{salt}a", f"{salt}b"
    a = await pin_file(http, stack, sized(64, mint_a), name="a.png", keyvalues={"mint": mint_a})
    await pin_file(http, stack, sized(64, mint_b), name="b.png", keyvalues={"mint": mint_b})

    resp = await http.get(
        f"{stack.url('pinata')}/data/pinList",
        headers=auth(stack),
        params={
            "status": "pinned",
            "metadata[keyvalues]": json.dumps({"mint": {"value": mint_a, "op": "eq"}}),
        },
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["count"] == 1
    (row,) = body["rows"]
    assert row["ipfs_pin_hash"] == a["IpfsHash"]
    assert row["metadata"] == {"name": "a.png", "keyvalues": {"mint": mint_a}}
    assert row["date_unpinned"] is None
    assert {"id", "size", "user_id", "date_pinned"} <= set(row)

    by_name = await http.get(
        f"{stack.url('pinata')}/data/pinList",
        headers=auth(stack),
        params={"metadata[name]": "b.png", "hashContains": a["IpfsHash"]},
    )
    assert by_name.json()["count"] == 0  # name and hash filters combine


async def test_unpinned_content_leaves_the_gateways_unless_kubo_still_pins_it(
    http: httpx.AsyncClient, stack: StackConfig, salt: str
) -> None:
    shared = sized(1000, f"{salt}shared")  # pinned by both providers
    only_pinata = sized(1000, f"{salt}pinata")
    cid_shared = (await pin_file(http, stack, shared))["IpfsHash"]
    assert (await kubo_add(http, stack, shared))["Hash"] == cid_shared
    cid_pinata = (await pin_file(http, stack, only_pinata))["IpfsHash"]

    for gateway in ("gateway-1", "gateway-2"):
        assert (await gateway_get(http, stack, gateway, cid_shared)).content == shared
        assert (await gateway_get(http, stack, gateway, cid_pinata)).content == only_pinata

    for cid in (cid_pinata, cid_shared):
        resp = await http.delete(f"{stack.url('pinata')}/pinning/unpin/{cid}", headers=auth(stack))
        assert (resp.status_code, resp.text) == (200, "OK")
    for gateway in ("gateway-1", "gateway-2"):
        assert (await gateway_get(http, stack, gateway, cid_pinata)).status_code == 404
        assert (await gateway_get(http, stack, gateway, cid_shared)).content == shared

    resp = await http.post(f"{stack.url('kubo')}/api/v0/pin/rm", params={"arg": cid_shared})
    assert resp.json() == {"Pins": [cid_shared]}
    for gateway in ("gateway-1", "gateway-2"):
        assert (await gateway_get(http, stack, gateway, cid_shared)).status_code == 404

    again = await http.delete(
        f"{stack.url('pinata')}/pinning/unpin/{cid_pinata}", headers=auth(stack)
    )
    assert again.status_code == 400
    assert again.json()["error"]["reason"] == "CURRENT_USER_HAS_NOT_PINNED_CID"
    kubo_again = await http.post(f"{stack.url('kubo')}/api/v0/pin/rm", params={"arg": cid_shared})
    assert kubo_again.status_code == 500
    assert kubo_again.json() == {
        "Message": "not pinned or pinned indirectly",
        "Code": 0,
        "Type": "error",
    }

    unpinned = await http.get(
        f"{stack.url('pinata')}/data/pinList",
        headers=auth(stack),
        params={"status": "unpinned", "hashContains": cid_pinata},
    )
    (row,) = unpinned.json()["rows"]
    assert row["date_unpinned"] is not None


# -- Kubo RPC ----------------------------------------------------------------------------


async def test_kubo_pin_ls_and_method_check(
    http: httpx.AsyncClient, stack: StackConfig, salt: str
) -> None:
    data = sized(300, salt)
    cid = (await kubo_add(http, stack, data, version=1))["Hash"]
    listed = await http.post(f"{stack.url('kubo')}/api/v0/pin/ls", params={"arg": cid})
    assert listed.json() == {"Keys": {cid: {"Type": "recursive"}}}
    everything = await http.post(f"{stack.url('kubo')}/api/v0/pin/ls", params={"type": "recursive"})
    assert cid in everything.json()["Keys"]
    cat = await http.post(f"{stack.url('kubo')}/api/v0/cat", params={"arg": cid})
    assert cat.content == data

    assert (await http.get(f"{stack.url('kubo')}/api/v0/pin/ls")).status_code == 405

    unpinned = await kubo_add(http, stack, sized(300, f"{salt}x"))
    resp = await http.post(
        f"{stack.url('kubo')}/api/v0/add",
        params={"pin": "false"},
        files={"file": ("n.bin", sized(50, f"{salt}nopin"))},
    )
    not_pinned_cid = resp.json()["Hash"]
    assert unpinned["Hash"] != not_pinned_cid
    missing = await http.post(f"{stack.url('kubo')}/api/v0/pin/ls", params={"arg": not_pinned_cid})
    assert missing.status_code == 500
    assert missing.json()["Type"] == "error"
    assert (await gateway_get(http, stack, "gateway-1", not_pinned_cid)).status_code == 404


# -- gateways ----------------------------------------------------------------------------


async def test_gateway_serves_bytes_with_type_and_etag(
    http: httpx.AsyncClient, stack: StackConfig, salt: str
) -> None:
    image = PNG + salt.encode() * 50
    cid = (await kubo_add(http, stack, image, version=1))["Hash"]
    for gateway in ("gateway-1", "gateway-2"):
        resp = await gateway_get(http, stack, gateway, cid)
        assert resp.status_code == 200
        assert resp.content == image
        assert resp.headers["content-type"] == "image/png"
        assert resp.headers["etag"] == f'"{cid}"'
        head = await http.head(f"{stack.url(gateway)}/ipfs/{cid}")
        assert head.status_code == 200
        assert int(head.headers["content-length"]) == len(image)

    assert (await gateway_get(http, stack, "gateway-1", "not-a-cid")).status_code == 400
    never_added = kubo_cid(sized(10, f"{salt}never"), 1)
    assert (await gateway_get(http, stack, "gateway-2", never_added)).status_code == 404


# -- rate limit and faults ---------------------------------------------------------------


async def test_pinata_rate_limit_answers_429_with_retry_after(
    http: httpx.AsyncClient, stack: StackConfig
) -> None:
    # A route of the plan's general bucket (/data/* has its own: tests/devstack/
    # test_pinata_plans.py): unpinning a CID never pinned answers 400, counted all the same.
    url = f"{stack.url('pinata')}/pinning/unpin/{kubo_cid(b'never pinned, rate test', 1)}"
    await admin_set_pinata_rpm(http, stack, 2)
    try:
        statuses = []
        for _ in range(4):
            resp = await http.delete(url, headers=auth(stack))
            statuses.append(resp.status_code)
            if resp.status_code == 429:
                assert int(resp.headers["Retry-After"]) >= 1
                assert resp.json()["error"]["reason"]
                break
        assert statuses[-1] == 429, statuses
    finally:
        await admin_set_pinata_rpm(http, stack, stack.pinata_requests_per_minute)
    assert (await http.delete(url, headers=auth(stack))).status_code == 400


async def test_injected_faults_reach_the_client_and_go_away(
    http: httpx.AsyncClient, stack: StackConfig
) -> None:
    admin = stack.url("admin")
    url = f"{stack.url('pinata')}/data/testAuthentication"
    resp = await http.post(
        f"{admin}/faults",
        json={"target": "pinata", "kind": "status", "status": 503, "match": "/data/"},
    )
    assert resp.status_code in (200, 201), resp.text
    fault_id = resp.json()["id"]
    try:
        assert (await http.get(url, headers=auth(stack))).status_code == 503
        # faults sit in front of auth: even an unauthenticated request sees them
        assert (await http.get(url)).status_code == 503
    finally:
        assert (await http.delete(f"{admin}/faults/{fault_id}")).status_code in (200, 204)
    assert (await http.get(url, headers=auth(stack))).status_code == 200

    resp = await http.post(
        f"{admin}/faults", json={"target": "kubo", "kind": "status", "status": 429}
    )
    fault_id = resp.json()["id"]
    try:
        limited = await http.post(f"{stack.url('kubo')}/api/v0/pin/ls")
        assert limited.status_code == 429
        assert limited.headers["Retry-After"]
    finally:
        await http.delete(f"{admin}/faults/{fault_id}")
    assert (await http.post(f"{stack.url('kubo')}/api/v0/pin/ls")).status_code == 200
