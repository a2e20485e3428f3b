"""Devstack gateways that behave like recursive gateways (devstack.ipfs.recursive), over HTTP.

Each test sets a gateway's behaviour through the admin API and puts it back afterwards; the
other gateway stays the plain local one, so each test also shows the difference.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from devstack.config import GATEWAYS, StackConfig
from devstack.ipfs.recursive import GatewayBehaviour, GatewayBehaviourError, parse_gateway_spec

PLAIN = GatewayBehaviour().describe()


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


@pytest.fixture
async def admin(http: httpx.AsyncClient, stack: StackConfig) -> AsyncIterator[str]:
    url = stack.url("admin")
    yield url
    for name in GATEWAYS:
        resp = await http.put(f"{url}/gateways/{name}", json={})
        assert resp.json() == PLAIN


async def add(http: httpx.AsyncClient, stack: StackConfig) -> tuple[str, bytes]:
    data = f"gateway-behaviour-{uuid.uuid4()}".encode() * 10
    resp = await http.post(
        f"{stack.url('kubo')}/api/v0/add",
        params={"cid-version": "1"},
        files={"file": ("f.bin", data)},
    )
    assert resp.status_code == 200, resp.text
    return json.loads(resp.text.strip().splitlines()[-1])["Hash"], data


async def configure(http: httpx.AsyncClient, admin: str, name: str, **body: Any) -> None:
    resp = await http.put(f"{admin}/gateways/{name}", json=body)
    assert resp.status_code == 200, resp.text


def get(http: httpx.AsyncClient, stack: StackConfig, gateway: str, cid: str, **params: str):
    return http.get(f"{stack.url(gateway)}/ipfs/{cid}", params=params)


@pytest.mark.integration
async def test_defaults_are_the_plain_gateway(
    http: httpx.AsyncClient, stack: StackConfig, admin: str
) -> None:
    assert (await http.get(f"{admin}/gateways")).json() == {name: PLAIN for name in GATEWAYS}
    assert PLAIN["appear_after_s"] == 0 and PLAIN["cache_after_unpin_s"] == 0
    assert PLAIN["missing_status"] == 404


@pytest.mark.integration
async def test_content_appears_after_n_seconds_with_504_and_retry_after_meanwhile(
    http: httpx.AsyncClient, stack: StackConfig, admin: str
) -> None:
    await configure(http, admin, "gateway-1", recursive=True, appear_after_s=3, retry_after_s=2)
    cid, data = await add(http, stack)
    early = await get(http, stack, "gateway-1", cid)
    assert early.status_code == 504
    assert early.headers["Retry-After"] == "2"
    for fmt in ("raw", "car"):  # the trustless forms wait as well
        assert (await get(http, stack, "gateway-1", cid, format=fmt)).status_code == 504
    plain = await get(http, stack, "gateway-2", cid)
    assert (plain.status_code, plain.content) == (200, data)
    await asyncio.sleep(3.2)
    late = await get(http, stack, "gateway-1", cid)
    assert (late.status_code, late.content) == (200, data)


@pytest.mark.integration
async def test_a_held_request_is_answered_when_the_content_appears(
    http: httpx.AsyncClient, stack: StackConfig, admin: str
) -> None:
    await configure(
        http, admin, "gateway-1", recursive=True, appear_after_s=2, retrieval_timeout_s=20
    )
    cid, data = await add(http, stack)
    started = time.monotonic()
    resp = await get(http, stack, "gateway-1", cid)
    assert (resp.status_code, resp.content) == (200, data)
    assert time.monotonic() - started >= 1.5  # held while "searching", not answered at once


@pytest.mark.integration
async def test_missing_content_is_504_on_a_recursive_gateway_404_on_the_plain_one(
    http: httpx.AsyncClient, stack: StackConfig, admin: str
) -> None:
    await configure(http, admin, "gateway-1", recursive=True, retrieval_timeout_s=1)
    never = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    started = time.monotonic()
    recursive = await get(http, stack, "gateway-1", never)
    assert recursive.status_code == 504
    assert int(recursive.headers["Retry-After"]) >= 1
    assert time.monotonic() - started >= 0.9  # it searched for retrieval_timeout_s first
    assert (await get(http, stack, "gateway-2", never)).status_code == 404


@pytest.mark.integration
async def test_served_content_stays_cached_for_n_seconds_after_the_unpin(
    http: httpx.AsyncClient, stack: StackConfig, admin: str
) -> None:
    await configure(http, admin, "gateway-1", recursive=True, cache_after_unpin_s=3)
    served, data = await add(http, stack)
    never_read, _ = await add(http, stack)
    assert (await get(http, stack, "gateway-1", served)).status_code == 200
    for cid in (served, never_read):
        resp = await http.post(f"{stack.url('kubo')}/api/v0/pin/rm", params={"arg": cid})
        assert resp.status_code == 200, resp.text

    cached = await get(http, stack, "gateway-1", served)
    assert (cached.status_code, cached.content) == (200, data)
    assert (await get(http, stack, "gateway-1", served, format="car")).status_code == 200
    # Only what this gateway fetched is in its cache; the plain gateway forgets at once.
    assert (await get(http, stack, "gateway-1", never_read)).status_code == 504
    assert (await get(http, stack, "gateway-2", served)).status_code == 404
    await asyncio.sleep(3.2)
    assert (await get(http, stack, "gateway-1", served)).status_code == 504


@pytest.mark.integration
async def test_only_if_cached_is_412_unless_the_gateway_holds_it(
    http: httpx.AsyncClient, stack: StackConfig, admin: str
) -> None:
    only = {"Cache-Control": "only-if-cached"}
    await configure(http, admin, "gateway-1", recursive=True)
    cid, data = await add(http, stack)
    never = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    # The plain gateway's dataset is local: what is pinned is there, the rest is not.
    plain = await http.get(f"{stack.url('gateway-2')}/ipfs/{cid}", headers=only)
    assert (plain.status_code, plain.content) == (200, data)
    assert (
        await http.get(f"{stack.url('gateway-2')}/ipfs/{never}", headers=only)
    ).status_code == 412
    # A recursive gateway has only what it fetched before.
    url = f"{stack.url('gateway-1')}/ipfs/{cid}"
    assert (await http.get(url, headers=only)).status_code == 412
    assert (await http.get(url)).status_code == 200
    assert (await http.get(url, headers=only)).status_code == 200


@pytest.mark.integration
async def test_admin_checks_what_it_is_given(
    http: httpx.AsyncClient, stack: StackConfig, admin: str
) -> None:
    url = f"{admin}/gateways"
    assert (await http.put(f"{url}/gateway-9", json={})).status_code == 404
    assert (await http.get(f"{url}/gateway-9")).status_code == 404
    for bad in ({"appear_after": 1}, {"missing_status": 502}, {"appear_after_s": -1}):
        resp = await http.put(f"{url}/gateway-1", json=bad)
        assert resp.status_code == 400, bad
        assert resp.json()["error"]
    patched = await http.patch(f"{url}/gateway-2", json={"cache_after_unpin_s": 60})
    assert patched.json() == {**PLAIN, "cache_after_unpin_s": 60}
    again = await http.patch(f"{url}/gateway-2", json={"appear_after_s": 5})
    assert again.json() == {**PLAIN, "cache_after_unpin_s": 60, "appear_after_s": 5}
    assert (await http.get(f"{url}/gateway-2")).json() == again.json()


def test_up_spec_parses_into_the_admin_body() -> None:
    spec = "gateway-1:recursive,appear_after_s=20 ; gateway-2:cache_after_unpin_s=600"
    parsed = parse_gateway_spec(spec, GATEWAYS)
    assert parsed == {
        "gateway-1": {"recursive": True, "appear_after_s": 20.0},
        "gateway-2": {"cache_after_unpin_s": 600.0},
    }
    behaviour = GatewayBehaviour.from_json(parsed["gateway-1"])
    assert (behaviour.appear_after_s, behaviour.missing_status) == (20.0, 504)
    for bad in ("gateway-3:recursive", "gateway-1", "gateway-1:missing_status=500"):
        with pytest.raises(GatewayBehaviourError):
            parse_gateway_spec(bad, GATEWAYS)


def test_up_flag_reaches_the_saved_config(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVSTACK_GATEWAYS", "gateway-2:recursive,appear_after_s=20")
    config = StackConfig.create(tmp_path)
    config.save()
    loaded = StackConfig.load(tmp_path)
    assert loaded.gateways == {"gateway-2": {"recursive": True, "appear_after_s": 20.0}}
