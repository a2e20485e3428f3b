"""IpfsUploader with a provider that answers another CID for the same bytes (issue 16): accepted,
under the provider's CID, only when that CID's blocks verify against the bytes (Kubo: its
dag/export CAR; Pinata: a gateway's CAR), else CidMismatch. Fake HTTP services by host (as in
test_ipfs_failover.py), serving DAGs built by tests/unit/ipfs/unixfs_builder.py in Kubo's
unixfs-v1-2025 layout (1 MiB chunks)."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.ipfs.cid import cid_sync
from mintsaga.ipfs.gateways import CAR_TYPE, GatewayReader
from mintsaga.ipfs.kubo import KuboClient
from mintsaga.ipfs.pinata import PinataClient
from mintsaga.ipfs.provider_cids import ProviderCids
from mintsaga.ipfs.uploads import IpfsUploader, Upload
from tests.unit.ipfs.unixfs_builder import Built, build_file, car

DATA = os.urandom(2_500_000)
THEIRS = build_file(DATA, chunk=2**20, fanout=1024)  # the unixfs-v1-2025 profile's layout
OTHER = build_file(os.urandom(2_500_000), chunk=2**20, fanout=1024)


def answers(*, provider_cid: str, kubo_up: bool, export: Built) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        host, path = request.url.host, request.url.path
        if host == "pinata":
            if not kubo_up:  # Pinata answers with its own CID
                return httpx.Response(200, json={"IpfsHash": provider_cid, "PinSize": 1})
            return httpx.Response(500, json={"error": "down"})
        if host == "kubo" and path == "/api/v0/add":
            return httpx.Response(200, text=json.dumps({"Name": "a", "Hash": provider_cid}))
        if host == "kubo" and path == "/api/v0/dag/export":
            assert request.url.params["arg"] == provider_cid
            body = car([export.root], export.blocks)
            return httpx.Response(200, content=body, headers={"Content-Type": CAR_TYPE})
        if host == "gateway" and request.url.params.get("format") == "car":
            body = car([export.root], export.blocks)
            return httpx.Response(200, content=body, headers={"Content-Type": CAR_TYPE})
        raise AssertionError(f"unexpected {request.method} {request.url}")

    return httpx.MockTransport(handle)


async def upload(transport: httpx.MockTransport, *, verify: bool = True) -> Upload | ServiceError:
    async with httpx.AsyncClient(transport=transport) as http:
        kubo = KuboClient("http://kubo", http)
        checker = ProviderCids(
            http, kubo_api_url="http://kubo", gateways=GatewayReader(["http://gateway"], http)
        )
        uploader = IpfsUploader(
            PinataClient("http://pinata", "jwt", http),
            kubo,
            provider_cids=checker if verify else None,
        )
        try:
            return await uploader.upload(DATA, filename="a.png", name="a", keyvalues={})
        except ServiceError as exc:
            return exc


def test_the_layouts_differ() -> None:
    assert THEIRS.cid != cid_sync(DATA, 1)


async def test_kubos_other_cid_is_accepted_when_its_export_verifies() -> None:
    result = await upload(answers(provider_cid=THEIRS.cid, kubo_up=True, export=THEIRS))
    assert result == Upload(THEIRS.cid, "kubo")


async def test_pinatas_other_cid_is_accepted_when_a_gateways_car_verifies() -> None:
    result = await upload(answers(provider_cid=THEIRS.cid, kubo_up=False, export=THEIRS))
    assert result == Upload(THEIRS.cid, "pinata")


@pytest.mark.parametrize("kubo_up", [True, False])
async def test_a_cid_whose_blocks_hold_other_bytes_is_a_cid_mismatch(kubo_up: bool) -> None:
    # The provider names OTHER's root and serves OTHER's blocks: they verify, the bytes differ.
    result = await upload(answers(provider_cid=OTHER.cid, kubo_up=kubo_up, export=OTHER))
    assert isinstance(result, ServiceError)
    assert (result.code, result.kind) == ("CidMismatch", ErrorKind.PERMANENT)
    assert "other bytes" in result.message


async def test_a_cid_whose_blocks_are_not_served_is_a_cid_mismatch() -> None:
    # Kubo names THEIRS but exports OTHER's DAG: the root asked for is not in it.
    result = await upload(answers(provider_cid=THEIRS.cid, kubo_up=True, export=OTHER))
    assert isinstance(result, ServiceError) and result.code == "CidMismatch"
    assert "does not verify" in result.message


async def test_without_a_checker_another_cid_is_a_cid_mismatch() -> None:
    result = await upload(
        answers(provider_cid=THEIRS.cid, kubo_up=True, export=THEIRS), verify=False
    )
    assert isinstance(result, ServiceError) and result.code == "CidMismatch"


def logged(transport: httpx.MockTransport, events: list[str]) -> httpx.MockTransport:
    """The same answers, each request noted in ``events`` as "<host> <path>"."""

    def handle(request: httpx.Request) -> httpx.Response:
        events.append(f"{request.url.host} {request.url.path}")
        return transport.handler(request)  # type: ignore[no-any-return]

    return httpx.MockTransport(handle)


async def upload_recording(transport: httpx.MockTransport, events: list[str]) -> Upload | str:
    async def record(cid: str) -> None:
        events.append(f"recorded {cid}")

    async with httpx.AsyncClient(transport=logged(transport, events)) as http:
        checker = ProviderCids(
            http, kubo_api_url="http://kubo", gateways=GatewayReader(["http://gateway"], http)
        )
        uploader = IpfsUploader(
            PinataClient("http://pinata", "jwt", http),
            KuboClient("http://kubo", http),
            provider_cids=checker,
        )
        try:
            return await uploader.upload(
                DATA, filename="a.png", name="a", keyvalues={}, on_other_cid=record
            )
        except ServiceError as exc:
            return exc.code


@pytest.mark.parametrize(
    ("export", "outcome"), [(THEIRS, Upload(THEIRS.cid, "kubo")), (OTHER, "CidMismatch")]
)
async def test_another_cid_is_recorded_before_anything_then_pinned_again_then_checked(
    export: Built, outcome: Upload | str
) -> None:
    events: list[str] = []
    transport = answers(provider_cid=THEIRS.cid, kubo_up=True, export=export)
    assert await upload_recording(transport, events) == outcome
    assert events == [
        "pinata /pinning/pinFileToIPFS",  # down: Kubo takes the upload
        "kubo /api/v0/add",
        f"recorded {THEIRS.cid}",  # whatever the check finds, compensation will unpin it
        "kubo /api/v0/add",  # pinned again, now that its record holds it
        "kubo /api/v0/dag/export",
    ]


async def test_a_gateway_that_cannot_serve_pinatas_cid_is_no_proof_of_a_mismatch() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "pinata":
            return httpx.Response(200, json={"IpfsHash": THEIRS.cid, "PinSize": 1})
        return httpx.Response(504, headers={"Retry-After": "1"})  # still finding it

    events: list[str] = []
    code = await upload_recording(httpx.MockTransport(handle), events)
    assert code == "ProviderCidUnverified"  # retryable: the step asks again
    assert f"recorded {THEIRS.cid}" in events
