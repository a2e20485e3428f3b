"""The devstack's Pinata plans (issue 16): each plan's limits, /data/* on its own bucket, 429s
as Pinata answers them, the counters tests assert on, pinList by `cid`, and content types.

Over the admin API and Pinata's face of a running devstack; each test puts the start plan back.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aleph_cid import CidHasher

from devstack.__main__ import _config, main
from devstack.config import StackConfig
from devstack.ipfs.limits import DEFAULT_PLAN

pytestmark = pytest.mark.integration


def cid_v1(data: bytes) -> str:
    hasher = CidHasher.for_ipfs_v1_raw_leaves()
    hasher.update(data)
    return hasher.finalize()


def auth(stack: StackConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.pinata_jwt}"}


@pytest.fixture
async def http(stack: StackConfig) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client
        # Back to the stack's start plan and limit, whatever the test did.
        put = await client.put(
            f"{stack.url('admin')}/pinata/plan", json={"plan": stack.pinata_plan}
        )
        assert put.status_code == 200, put.text
        limits = {"requests_per_minute": stack.pinata_requests_per_minute}
        assert (await client.post(f"{stack.url('admin')}/pinata/limits", json=limits)).is_success


async def plan(http: httpx.AsyncClient, stack: StackConfig) -> dict[str, Any]:
    answer = await http.get(f"{stack.url('admin')}/pinata/plan")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_the_start_plan_is_a_paid_one_and_plans_switch_through_the_admin_api(
    http: httpx.AsyncClient, stack: StackConfig
) -> None:
    start = await plan(http, stack)
    assert stack.pinata_plan == DEFAULT_PLAN == start["plan"] == "picnic"
    assert (start["requests_per_minute"], start["data_requests_per_minute"]) == (250, 30)
    admin = stack.url("admin")
    for name, limits in (("free", (60, 30)), ("fiesta", (500, 30)), ("legacy", (180, 30))):
        answer = await http.put(f"{admin}/pinata/plan", json={"plan": name})
        assert answer.status_code == 200, answer.text
        now = answer.json()
        assert (now["plan"], now["requests_per_minute"], now["data_requests_per_minute"]) == (
            name,
            *limits,
        )
        assert now["buckets"]["general"]["limit"] == limits[0]
        assert now["buckets"]["data"]["limit"] == limits[1]
    bad = await http.put(f"{admin}/pinata/plan", json={"plan": "platinum"})
    assert bad.status_code == 400 and "unknown Pinata plan" in bad.json()["error"]
    assert (await http.put(f"{admin}/pinata/plan", json={"plan": 60})).status_code == 400
    assert (await http.put(f"{admin}/pinata/plan", json={"name": "free"})).status_code == 400
    # The older body keeps working and still answers requests_per_minute.
    older = await http.post(f"{admin}/pinata/limits", json={"requests_per_minute": 77})
    assert older.status_code == 200 and older.json()["requests_per_minute"] == 77
    assert older.json()["plan"] == "custom"
    for body in ({}, {"requests_per_minute": -1}, {"rpm": 5}, {"data_requests_per_minute": "x"}):
        assert (await http.post(f"{admin}/pinata/limits", json=body)).status_code == 400, body


async def test_data_routes_429_on_their_own_bucket_with_pinatas_headers_and_are_counted(
    http: httpx.AsyncClient, stack: StackConfig
) -> None:
    admin, pinata = stack.url("admin"), stack.url("pinata")
    # /data/* limited to 2, so its window fills at once; the general bucket to a few more than
    # the earlier tests left in its sliding minute.
    general = (await plan(http, stack))["buckets"]["general"]["requests_in_window"] + 5
    limits = {"requests_per_minute": general, "data_requests_per_minute": 2}
    assert (await http.post(f"{admin}/pinata/limits", json=limits)).status_code == 200
    before = await plan(http, stack)
    held = before["buckets"]["data"]["requests_in_window"]
    auth_url = f"{pinata}/data/testAuthentication"
    statuses = [(await http.get(auth_url, headers=auth(stack))).status_code for _ in range(3)]
    # What earlier requests left in the sliding minute counts: at most 2 accepted in it.
    assert statuses.count(200) == max(0, 2 - held) and statuses[-1] == 429, statuses
    refused = await http.get(auth_url, headers=auth(stack))
    assert refused.status_code == 429
    body = refused.json()
    assert body["error"]["reason"] == "RATE_LIMITED"
    assert "/data/" in body["error"]["details"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 61
    assert refused.headers["X-RateLimit-Limit"] == "2"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert time.time() < int(refused.headers["X-RateLimit-Reset"]) <= time.time() + 62
    # The general bucket is another one: an upload still goes through.
    salt = uuid.uuid4().hex.encode()
    pinned = await http.post(
        f"{pinata}/pinning/pinFileToIPFS",
        headers=auth(stack),
        files={"file": ("a.txt", b"plan test " + salt, "text/plain")},
        data={"pinataOptions": json.dumps({"cidVersion": 1})},
    )
    assert pinned.status_code == 200, pinned.text

    after = await plan(http, stack)
    assert after["rate_limited"]["data"] - before["rate_limited"]["data"] == statuses.count(429) + 1
    assert after["rate_limited"]["general"] == before["rate_limited"]["general"]
    assert after["test_authentication_calls"] - before["test_authentication_calls"] == 4
    routes_before, routes = before["requests_by_route"], after["requests_by_route"]
    route = "POST /pinning/pinFileToIPFS"
    assert routes[route] - routes_before.get(route, 0) == 1
    # /stats carries the same counters.
    stats = (await http.get(f"{admin}/stats")).json()
    assert stats["pinata"]["test_authentication_calls"] == after["test_authentication_calls"]
    assert stats["rate_limited"]["pinata"] >= sum(after["rate_limited"].values())


async def test_pin_list_by_cid_matches_exactly_and_rows_carry_the_uploads_content_type(
    http: httpx.AsyncClient, stack: StackConfig
) -> None:
    pinata = stack.url("pinata")
    data = b"\x89PNG\r\n\x1a\n" + uuid.uuid4().bytes
    pinned = await http.post(
        f"{pinata}/pinning/pinFileToIPFS",
        headers=auth(stack),
        files={"file": ("image.png", data, "image/png")},
        data={"pinataOptions": json.dumps({"cidVersion": 1})},
    )
    assert pinned.status_code == 200, pinned.text
    cid = pinned.json()["IpfsHash"]
    assert cid == cid_v1(data)

    async def rows(**params: str) -> list[dict[str, Any]]:
        answer = await http.get(f"{pinata}/data/pinList", params=params, headers=auth(stack))
        assert answer.status_code == 200, answer.text
        found: list[dict[str, Any]] = answer.json()["rows"]
        return found

    (row,) = await rows(cid=cid, status="pinned")
    assert row["ipfs_pin_hash"] == cid and row["mime_type"] == "image/png"
    assert await rows(cid=cid[:-4]) == []  # `cid` is the whole CID, not a part of it
    assert [r["ipfs_pin_hash"] for r in await rows(hashContains=cid[:-4])] == [cid]
    document = {"name": f"metadata {uuid.uuid4()}"}
    as_json = await http.post(
        f"{pinata}/pinning/pinJSONToIPFS",
        headers=auth(stack),
        json={"pinataContent": document, "pinataOptions": {"cidVersion": 1}},
    )
    (json_row,) = await rows(cid=as_json.json()["IpfsHash"])
    assert json_row["mime_type"] == "application/json"


def test_up_takes_a_plan_and_the_worker_env_carries_its_limits(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DEVSTACK_PINATA_PLAN", "DEVSTACK_PINATA_RPM"):
        monkeypatch.delenv(name, raising=False)
    free = StackConfig.create(tmp_path / "a", pinata_plan="free")
    assert (free.pinata_plan, free.pinata_requests_per_minute) == ("free", 60)
    env = free.worker_env()
    assert env["PINATA_REQUESTS_PER_MINUTE"] == "60"
    assert env["PINATA_DATA_REQUESTS_PER_MINUTE"] == "30"
    assert StackConfig.create(tmp_path / "b").pinata_plan == "picnic"
    monkeypatch.setenv("DEVSTACK_PINATA_PLAN", "fiesta")
    assert StackConfig.create(tmp_path / "c").pinata_requests_per_minute == 500
    # --pinata-rpm (DEVSTACK_PINATA_RPM) still overrides the plan's general limit.
    monkeypatch.setenv("DEVSTACK_PINATA_RPM", "90")
    assert StackConfig.create(tmp_path / "d").pinata_requests_per_minute == 90
    monkeypatch.delenv("DEVSTACK_PINATA_RPM")
    # A saved stack, brought up again with another plan: that plan's limit, not the saved one.
    saved = StackConfig.create(tmp_path / "e", pinata_plan="free")
    saved.save()

    class Args:
        command, state_dir, pinata_plan, pinata_rpm = "up", saved.state_dir, "picnic", None

    assert _config(Args()).pinata_requests_per_minute == 250  # type: ignore[arg-type]
    # An unknown plan is refused by name, before anything starts.
    assert main(["--state-dir", str(tmp_path / "f"), "up", "--pinata-plan", "gold"]) == 2
