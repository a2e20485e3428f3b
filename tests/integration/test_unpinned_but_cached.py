"""A compensated mint's content is unpinned even while a gateway still serves it from its cache.

Real gateways keep serving content for a long time after every provider unpinned it (the
devstack's `cache_after_unpin_s`, for content it served), so "a gateway serves it" says
nothing about pins: whether content is pinned is read from the providers' pin lists (Pinata's
pinList, Kubo's pin/ls), by the invariant checker too, never from a gateway.
"""

from __future__ import annotations

import typing
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from temporalio import activity
from temporalio.client import Client

import mintsaga
from chaos.checker import check
from devstack.config import GATEWAYS, SOLANA_ENDPOINTS, StackConfig
from devstack.requests import mint_request
from mintsaga.ipfs.cid import compute_cid
from mintsaga.workflows import activity_models as io
from mintsaga.workflows.models import MintStatus
from tests.saga_support import (
    activity_name,
    add_fault,
    clear_faults,
    pinned_anywhere,
    running_worker,
)

pytestmark = pytest.mark.integration

CACHED_S = 600.0


@pytest.fixture
async def caching_gateways(stack: StackConfig) -> AsyncIterator[None]:
    """Every gateway keeps serving unpinned content for CACHED_S, then back as it was."""
    async with httpx.AsyncClient(timeout=10) as http:
        before = {}
        for name in GATEWAYS:
            url = f"{stack.url('admin')}/gateways/{name}"
            before[name] = (await http.get(url)).raise_for_status().json()
            changed = await http.patch(url, json={"cache_after_unpin_s": CACHED_S})
            changed.raise_for_status()
        try:
            yield
        finally:
            for name, behaviour in before.items():
                url = f"{stack.url('admin')}/gateways/{name}"
                (await http.patch(url, json=behaviour)).raise_for_status()


def previewed_first(stack: StackConfig) -> Callable[..., Any]:
    """Wrapper for prepare_transaction: before it runs, the metadata and the image are fetched
    through every gateway (a wallet previewing the NFT), so the gateways have them cached."""

    def wrapper(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapped(arg: io.PrepareIn) -> Any:
            async with httpx.AsyncClient(timeout=10) as http:
                for name in GATEWAYS:
                    base = stack.url(name)
                    metadata_cid = arg.uri.rsplit("/ipfs/", 1)[1]
                    document = await http.get(f"{base}/ipfs/{metadata_cid}")
                    image_cid = document.raise_for_status().json()["image"].rsplit("/", 1)[1]
                    (await http.get(f"{base}/ipfs/{image_cid}")).raise_for_status()
            return await original(arg)

        hints = typing.get_type_hints(original)
        wrapped.__annotations__ = {"arg": next(iter(hints.values())), "return": hints["return"]}
        return activity.defn(name=activity_name(original))(wrapped)

    return wrapper


async def test_a_compensated_mints_image_is_unpinned_though_a_gateway_still_serves_it(
    stack: StackConfig, client: Client, caching_gateways: None
) -> None:
    queue = f"cached-{uuid.uuid4().hex[:8]}"
    request = mint_request(stack, options={"operator_timeout_s": 1})
    for endpoint in SOLANA_ENDPOINTS:
        add_fault(stack, target=endpoint, kind="status", status=503, match="getLatestBlockhash")
    try:
        async with running_worker(
            stack, client, queue, wrap={"prepare_transaction": previewed_first(stack)}
        ):
            handle = await mintsaga.start_mint(client, request, queue=queue)
            result = await handle.result()
    finally:
        clear_faults(stack)
    assert result.status == MintStatus.ROLLED_BACK
    assert result.image_cid is not None and result.metadata_cid is not None

    async with httpx.AsyncClient(timeout=10) as http:
        for cid in (result.image_cid, result.metadata_cid):
            # A gateway still serves the bytes, verified...
            for name in GATEWAYS:
                served = await http.get(f"{stack.url(name)}/ipfs/{cid}")
                assert served.status_code == 200
                assert await compute_cid(served.content) == cid
            # ...yet no provider pins them.
            assert not await pinned_anywhere(stack, cid)

    # The invariant checker reads pin lists: no orphan, and the image counted as unpinned.
    checked = await check(stack, client, [request], pins="mints")
    assert checked.violations == []
    assert [m.status for m in checked.mints] == ["ROLLED_BACK"]
