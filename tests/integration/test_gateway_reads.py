"""Gateway reads against the devstack's gateways (issue 16): trustless responses checked block by
block, recursive gateways' 504s paced, the dedicated gateway blocking and the public ones only
reported. Gateway behaviours are set through the devstack's admin API (devstack.ipfs.recursive)
and put back after each test."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from temporalio.client import Client

import mintsaga
from devstack.config import GATEWAYS, StackConfig
from devstack.requests import mint_request
from mintsaga.errors import ServiceError
from mintsaga.ipfs.gateways import GatewayReader
from mintsaga.observability.metrics import sample_value
from mintsaga.workflows.models import MintStatus
from tests.saga_support import running_worker

pytestmark = pytest.mark.integration


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


@pytest.fixture
async def admin(http: httpx.AsyncClient, stack: StackConfig) -> AsyncIterator[str]:
    url = stack.url("admin")
    yield url
    for name in GATEWAYS:  # the plain gateways again
        resp = await http.put(f"{url}/gateways/{name}", json={})
        assert resp.status_code == 200, resp.text


async def behave(http: httpx.AsyncClient, admin: str, name: str, **body: Any) -> None:
    resp = await http.put(f"{admin}/gateways/{name}", json=body)
    assert resp.status_code == 200, resp.text


async def kubo_add(http: httpx.AsyncClient, stack: StackConfig, data: bytes) -> str:
    resp = await http.post(
        f"{stack.url('kubo')}/api/v0/add",
        params={"cid-version": "1"},
        files={"file": ("f.bin", data)},
    )
    assert resp.status_code == 200, resp.text
    cid: str = json.loads(resp.text.strip().splitlines()[-1])["Hash"]
    return cid


async def test_a_dag_is_read_as_a_verified_car_and_a_block_as_a_raw_block(
    http: httpx.AsyncClient, stack: StackConfig
) -> None:
    reader = GatewayReader([stack.url("gateway-1")], http)
    big = os.urandom(700_000)  # three chunks: a dag-pb root over raw leaves
    small = f"one block {uuid.uuid4()}".encode()
    for data in (big, small):
        cid = await kubo_add(http, stack, data)
        served = await reader.read(cid, max_bytes=2**20)
        assert (served.data, served.trustless) == (data, True)  # not the deserialized file
        checked = await reader.read(cid, max_bytes=2**20, keep=False)
        assert (checked.data, checked.size, checked.trustless) == (None, len(data), True)


async def test_a_recursive_gateways_504_is_waited_out_inside_the_budget(
    http: httpx.AsyncClient, stack: StackConfig, admin: str
) -> None:
    await behave(http, admin, "gateway-1", recursive=True, appear_after_s=4, retry_after_s=1)
    data = os.urandom(300_000)
    cid = await kubo_add(http, stack, data)
    reader = GatewayReader([stack.url("gateway-1")], http)
    started = time.monotonic()
    # Outside an activity the default budget is one more pass: the 504 is raised, retryable,
    # with the gateway's Retry-After for the step's retry policy.
    with pytest.raises(ServiceError) as caught:
        await reader.fetch_verified(cid, max_bytes=2**20)
    assert caught.value.retryable and caught.value.code == "GatewayUnavailable"
    assert caught.value.retry_after is not None and caught.value.retry_after >= 0.5
    # With a budget, the same read waits (Retry-After 1 s) until the content appears.
    assert await reader.fetch_verified(cid, max_bytes=2**20, budget_s=30) == (
        data,
        stack.url("gateway-1"),
    )
    assert 3.0 <= time.monotonic() - started < 15


async def test_mints_end_minted_while_every_gateway_finds_content_only_after_20_s(
    http: httpx.AsyncClient, stack: StackConfig, admin: str, client: Client, worker: str
) -> None:
    """The issue's done-means: recursive gateways answering 504 (Retry-After) for 20 s after
    the content is pinned; the worker's default settings; no operator."""
    for name in GATEWAYS:
        await behave(http, admin, name, recursive=True, appear_after_s=20)
    requests = [mint_request(stack) for _ in range(2)]
    started = time.monotonic()
    handles = [await mintsaga.start_mint(client, r, queue=worker) for r in requests]
    results = [await h.result() for h in handles]
    assert [r.status for r in results] == [MintStatus.MINTED] * 2
    # They did wait for the gateways (the content appeared 20 s after its upload)...
    assert time.monotonic() - started >= 18
    for handle in handles:
        events = [e async for e in handle.fetch_history_events()]
        # ...and nobody was asked: no signal or update from an operator.
        assert not any(e.HasField("workflow_execution_signaled_event_attributes") for e in events)
        assert not any(
            e.HasField("workflow_execution_update_accepted_event_attributes") for e in events
        )


async def test_the_dedicated_gateway_blocks_and_a_public_one_is_only_reported(
    http: httpx.AsyncClient, stack: StackConfig, admin: str, client: Client
) -> None:
    dedicated, public = stack.url("gateway-1"), stack.url("gateway-2")
    # The public gateway never finds the content during the test (a slow public gateway).
    await behave(http, admin, "gateway-2", recursive=True, appear_after_s=3600)
    labels = {"gateway": public, "result": "not_served"}
    before = sample_value("mintsaga_gateway_checks_total", labels) or 0.0
    queue = f"gw-dedicated-{uuid.uuid4().hex[:6]}"
    env = {"IPFS_DEDICATED_GATEWAY": dedicated, "IPFS_GATEWAYS": public}
    async with running_worker(stack, client, queue, env=env):
        started = time.monotonic()
        result = await (
            await mintsaga.start_mint(client, mint_request(stack), queue=queue)
        ).result()
    assert result.status == MintStatus.MINTED
    assert time.monotonic() - started < 40  # never waited on the public gateway
    # Both CIDs were reported not served by the public gateway.
    assert (sample_value("mintsaga_gateway_checks_total", labels) or 0.0) - before == 2
