"""A provider's other CID for the same bytes (issue 16) checked by its blocks against the devstack:
Kubo's dag/export CAR and a gateway's CAR of a DAG in another layout (1 MiB chunks) verify;
other bytes do not. End to end: with Pinata down and a Kubo node that builds its own layout
whatever the add's flags (the devstack's ``ignore_add_flags``, on the unixfs-v1-2025 profile),
the upload lands under Kubo's CID. More cases over fake providers:
tests/unit/ipfs/test_provider_cids.py."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator

import httpx
import pytest

from devstack.config import StackConfig
from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.ipfs.car import Cid
from mintsaga.ipfs.cid import cid_sync
from mintsaga.ipfs.gateways import GatewayReader
from mintsaga.ipfs.kubo import KuboClient
from mintsaga.ipfs.pinata import PinataClient
from mintsaga.ipfs.provider_cids import ProviderCids
from mintsaga.ipfs.uploads import IpfsUploader
from tests.saga_support import add_fault, clear_faults

pytestmark = pytest.mark.integration


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


async def test_kubos_export_of_other_bytes_is_a_mismatch(
    http: httpx.AsyncClient, stack: StackConfig
) -> None:
    kubo = KuboClient(stack.url("kubo"), http)
    data, other = os.urandom(400_000), os.urandom(400_000)
    cid = await kubo.add(other, filename="other.bin")
    checker = ProviderCids(http, kubo_api_url=kubo.api_url, gateways=None)
    assert await checker.mismatch(await kubo.add(data, filename="d.bin"), data, "kubo") is None
    reason = await checker.mismatch(cid, data, "kubo")
    assert reason is not None and "other bytes" in reason
    # Pinata's CIDs are read through the gateways; with none, nothing proves them.
    assert await checker.mismatch(cid, other, "pinata") is not None


async def test_another_layouts_cid_verifies_through_kubo_and_through_a_gateway(
    http: httpx.AsyncClient, stack: StackConfig
) -> None:
    data = os.urandom(2_500_000)
    resp = await http.post(  # another layout, asked for explicitly: 1 MiB chunks
        f"{stack.url('kubo')}/api/v0/add",
        params={"cid-version": "1", "chunker": "size-1048576"},
        files={"file": ("f.bin", data)},
    )
    assert resp.status_code == 200, resp.text
    cid = json.loads(resp.text.strip().splitlines()[-1])["Hash"]
    assert cid != cid_sync(data, 1)
    checker = ProviderCids(
        http,
        kubo_api_url=stack.url("kubo"),
        gateways=GatewayReader([stack.url("gateway-1")], http),
    )
    assert await checker.mismatch(cid, data, "kubo") is None  # its dag/export CAR
    assert await checker.mismatch(cid, data, "pinata") is None  # a gateway's CAR
    assert await checker.mismatch(cid, data[:-1] + b"x", "kubo") is not None


@pytest.fixture
async def kubo_building_its_own_layout_and_pinata_down(
    http: httpx.AsyncClient, stack: StackConfig
) -> AsyncIterator[None]:
    admin = stack.url("admin")
    body = {"profile": "unixfs-v1-2025", "ignore_add_flags": True}
    resp = await http.put(f"{admin}/kubo/import", json=body)
    assert resp.status_code == 200, resp.text
    add_fault(stack, target="pinata", kind="down")
    try:
        yield
    finally:
        clear_faults(stack)
        resp = await http.put(f"{admin}/kubo/import", json={"profile": "default"})
        assert resp.status_code == 200, resp.text


def uploader(stack: StackConfig, http: httpx.AsyncClient, *, verify: bool) -> IpfsUploader:
    kubo = KuboClient(stack.url("kubo"), http)
    checker = ProviderCids(
        http, kubo_api_url=kubo.api_url, gateways=GatewayReader([stack.url("gateway-1")], http)
    )
    return IpfsUploader(
        PinataClient(stack.url("pinata"), stack.pinata_jwt, http),
        kubo,
        provider_cids=checker if verify else None,
    )


@pytest.mark.usefixtures("kubo_building_its_own_layout_and_pinata_down")
async def test_the_fallback_upload_lands_under_kubos_cid_when_its_blocks_verify(
    http: httpx.AsyncClient, stack: StackConfig
) -> None:
    data = os.urandom(2_500_000)  # three 1 MiB chunks on Kubo, ten 256 KiB ones locally
    upload = await uploader(stack, http, verify=True).upload(
        data, filename="image.png", name="t", keyvalues={}
    )
    assert upload.provider == "kubo" and upload.cid != cid_sync(data, 1)
    assert Cid.parse(upload.cid).codec == 0x70
    served = await GatewayReader([stack.url("gateway-2")], http).read(upload.cid, max_bytes=2**22)
    assert served.data == data and served.trustless
    # Without the block check the same upload is refused, as before issue 16.
    with pytest.raises(ServiceError) as caught:
        await uploader(stack, http, verify=False).upload(
            data, filename="image.png", name="t", keyvalues={}
        )
    assert (caught.value.code, caught.value.kind) == ("CidMismatch", ErrorKind.PERMANENT)
