"""A mint whose image a provider stored under another layout's CID (issue 16).

Pinata is down and the Kubo node builds with its own unixfs-v1-2025 configuration whatever the
add asks (the devstack's `ignore_add_flags`: a node we cannot steer): the image's CID is Kubo's
(one 1 MiB chunk), not ours (two 256 KiB chunks). The upload is accepted because the blocks
prove the bytes, and the NFT must then name the CID that is pinned: the metadata is uploaded
again naming it (`workflow.patched("image-cid-from-upload")`), every later step uses it, and no
pin is left without a holder.

`RECORD_HISTORIES=1` stores the mint's history as tests/histories/image-cid-from-provider.json.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import httpx
import pytest
from temporalio.client import Client

import mintsaga
from chaos.checker import check
from devstack.config import GATEWAYS, StackConfig
from devstack.dev_identity import png
from devstack.requests import image_dir, mint_request
from mintsaga.db.mint_store import MintStore
from mintsaga.ipfs.cid import cid_sync
from mintsaga.workflows.models import MintStatus
from tests.paths import HISTORIES
from tests.saga_support import add_fault, clear_faults

pytestmark = pytest.mark.integration


@pytest.fixture
async def kubo_on_its_own_layout_and_pinata_down(stack: StackConfig) -> AsyncIterator[None]:
    admin = stack.url("admin")
    async with httpx.AsyncClient(timeout=10) as http:
        before = (await http.get(f"{admin}/kubo/import")).raise_for_status().json()
        body = {"profile": "unixfs-v1-2025", "ignore_add_flags": True}
        (await http.put(f"{admin}/kubo/import", json=body)).raise_for_status()
        add_fault(stack, target="pinata", kind="down")
        try:
            yield
        finally:
            clear_faults(stack)
            restore = {"profile": before["profile"], "ignore_add_flags": False}
            (await http.put(f"{admin}/kubo/import", json=restore)).raise_for_status()


@pytest.mark.usefixtures("kubo_on_its_own_layout_and_pinata_down")
async def test_the_nft_names_the_image_cid_the_provider_pinned(
    stack: StackConfig, client: Client, worker: str
) -> None:
    image = png(500, 500, seed=int.from_bytes(os.urandom(2), "big"))  # ~360 KiB
    name = f"big-{os.urandom(5).hex()}.png"
    (image_dir(stack) / name).write_bytes(image)
    request = mint_request(stack, image={"path": name})
    handle = await mintsaga.start_mint(client, request, queue=worker)
    result = await handle.result()

    assert result.status == MintStatus.MINTED
    ours = cid_sync(image, 1)
    assert result.image_cid is not None and result.image_cid != ours  # Kubo's layout
    async with httpx.AsyncClient(timeout=10) as http:
        metadata = (await http.get(result.metadata_uri or "")).raise_for_status().json()
        assert metadata["image"].endswith(f"/ipfs/{result.image_cid}")
        assert metadata["properties"]["files"][0]["uri"] == f"ipfs://{result.image_cid}"
        for gateway in GATEWAYS:
            served = await http.get(f"{stack.url(gateway)}/ipfs/{result.image_cid}")
            assert served.status_code == 200 and served.content == image
    # The mint's invariants hold (pins held by it, NFT as requested, content served), read
    # with Pinata back (its pin list is part of the evidence).
    clear_faults(stack)
    checked = await check(stack, client, [request], pins="mints")
    assert checked.violations == []
    # The pin repair takes only what the NFT names: not our CID for the image, which no
    # provider holds (the mint recorded it before the upload, as every pin).
    store = await MintStore.connect(stack.database_url, min_size=1, max_size=2)
    try:
        candidates = {c for c, _ in await store.pin_repair_candidates(10_000, older_than_s=0)}
    finally:
        await store.close()
    assert ours not in candidates
    if os.environ.get("RECORD_HISTORIES"):
        history = await handle.fetch_history()
        (HISTORIES / "image-cid-from-provider.json").write_text(history.to_json())
