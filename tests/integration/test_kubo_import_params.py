"""The product's Kubo adds name their import parameters, and the worker's start check refuses a
Kubo node that would still build other CIDs (issue 16). The devstack's Kubo is put on the
unixfs-v1-2025 import profile (1 MiB chunks, 1024 links) through the admin API."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from temporalio.client import Client

import mintsaga
from devstack.config import GATEWAYS, StackConfig
from devstack.dev_identity import png
from devstack.requests import image_dir, mint_request
from mintsaga.ipfs.cid import cid_sync
from mintsaga.ipfs.kubo import KuboClient
from mintsaga.ipfs.kubo_import import check_kubo_import
from mintsaga.setting_readers import SettingsError
from mintsaga.workflows.models import MintStatus
from tests.paths import ROOT
from tests.saga_support import add_fault, clear_faults, gateway_status, pinata_get

pytestmark = pytest.mark.integration


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


async def kubo_import(http: httpx.AsyncClient, stack: StackConfig, **body: object) -> None:
    resp = await http.put(f"{stack.url('admin')}/kubo/import", json=body)
    assert resp.status_code == 200, resp.text


@pytest.fixture
async def kubo_2025(http: httpx.AsyncClient, stack: StackConfig) -> AsyncIterator[None]:
    await kubo_import(http, stack, profile="unixfs-v1-2025")
    try:
        yield
    finally:
        clear_faults(stack)
        await kubo_import(http, stack, profile="default")


@pytest.mark.usefixtures("kubo_2025")
async def test_add_names_its_import_parameters(http: httpx.AsyncClient, stack: StackConfig) -> None:
    kubo = KuboClient(stack.url("kubo"), http)
    data = os.urandom(2_500_000)  # three 1 MiB chunks on the profile, ten 256 KiB ones ours
    assert await kubo.add(data, filename="f.bin") == cid_sync(data, 1)
    imports = await kubo.import_config()
    assert (imports["UnixFSChunker"], imports["UnixFSFileMaxLinks"]) == ("size-1048576", 1024)


@pytest.mark.usefixtures("kubo_2025")
async def test_start_check_passes_a_node_that_honours_the_flags(
    http: httpx.AsyncClient, stack: StackConfig, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="mintsaga.ipfs.kubo_import"):
        await check_kubo_import(KuboClient(stack.url("kubo"), http))
    text = caplog.text
    assert "Import.UnixFSChunker is 'size-1048576' on the node" in text  # overridden, noted
    assert "builds our CIDs" in text


@pytest.mark.usefixtures("kubo_2025")
async def test_start_check_refuses_a_node_that_builds_other_cids(
    http: httpx.AsyncClient, stack: StackConfig
) -> None:
    # The node builds with its config alone (a proxy dropping the add's flags).
    await kubo_import(http, stack, profile="unixfs-v1-2025", ignore_add_flags=True)
    with pytest.raises(SettingsError) as caught:
        await check_kubo_import(KuboClient(stack.url("kubo"), http))
    message = str(caught.value)
    assert message.startswith("KUBO_API_URL: ")
    assert "Import.UnixFSChunker is 'size-1048576' on the node, ours is 'size-262144'" in message
    assert "Import.UnixFSFileMaxLinks is 1024" in message


@pytest.mark.usefixtures("kubo_2025")
async def test_the_worker_refuses_to_start_naming_the_kubo_setting(
    http: httpx.AsyncClient, stack: StackConfig
) -> None:
    await kubo_import(http, stack, profile="unixfs-v1-2025", ignore_add_flags=True)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "worker.py",
        env={**os.environ, **stack.worker_env()},
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 2
    lines = [line for line in stderr.decode().splitlines() if line.startswith("worker: ")]
    assert len(lines) == 1, stderr.decode()
    assert lines[0].startswith("worker: KUBO_API_URL: Kubo ")
    assert "Import.UnixFSChunker is 'size-1048576' on the node, ours is 'size-262144'" in lines[0]


async def test_start_check_tolerates_a_node_that_does_not_answer(
    http: httpx.AsyncClient, stack: StackConfig, caplog: pytest.LogCaptureFixture
) -> None:
    add_fault(stack, target="kubo", kind="down")
    try:
        with caplog.at_level(logging.WARNING, logger="mintsaga.ipfs.kubo_import"):
            await check_kubo_import(KuboClient(stack.url("kubo"), http))
    finally:
        clear_faults(stack)
    assert "did not answer the import check at start" in caplog.text


@pytest.mark.usefixtures("kubo_2025")
async def test_mint_on_kubo_2025_profile_with_pinata_down_records_the_nodes_cids(
    http: httpx.AsyncClient, stack: StackConfig, client: Client, worker: str
) -> None:
    name = f"kubo2025-{uuid.uuid4().hex[:10]}.png"
    image = png(600, 600, seed=uuid.uuid4().int % 10**9)  # ~430 KB: two chunks of ours, one 1 MiB
    assert len(image) > 262_144
    (image_dir(stack) / name).write_bytes(image)
    before = await kubo_pins(http, stack)
    add_fault(stack, target="pinata", kind="down")

    request = mint_request(stack, image={"path": name})
    result = await (await mintsaga.start_mint(client, request, queue=worker)).result()

    assert result.status == MintStatus.MINTED
    assert result.image_cid == cid_sync(image, 1)  # no CidMismatch: the node built our layout
    assert result.metadata_cid is not None
    for cid in (result.image_cid, result.metadata_cid):
        assert [gateway_status(stack, g, cid) for g in GATEWAYS] == [200, 200]
    # Nothing orphaned: the node holds exactly this mint's two files more than before.
    assert await kubo_pins(http, stack) - before == {result.image_cid, result.metadata_cid}
    clear_faults(stack)
    rows = (await pinata_get(stack, "/data/pinList", {"status": "pinned"})).json()["rows"]
    assert not {r["ipfs_pin_hash"] for r in rows} & {result.image_cid, result.metadata_cid}


async def kubo_pins(http: httpx.AsyncClient, stack: StackConfig) -> set[str]:
    resp = await http.post(f"{stack.url('kubo')}/api/v0/pin/ls", params={"type": "recursive"})
    return set(resp.json()["Keys"])
