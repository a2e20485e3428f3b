"""The IPFS clients against the devstack's Pinata, Kubo and gateways, over real sockets.

Every test uploads content unique to the run, so no pin from another test (or an earlier
run against a kept state folder) can make it pass.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from devstack.config import StackConfig
from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.ipfs.cid import compute_cid
from mintsaga.ipfs.gateways import NOT_FOUND_GRACE_S, GatewayReader
from mintsaga.ipfs.kubo import KuboClient
from mintsaga.ipfs.pinata import PinataClient
from mintsaga.ipfs.uploads import IpfsUploader, Upload
from mintsaga.resilience.breaker import IPFS_BREAKER, BreakerRegistry, BreakerState

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
MAX = 1 << 20


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
def content() -> bytes:
    return PNG + f"mintsaga-clients-{uuid.uuid4()}".encode()


def pinata(stack: StackConfig, http: httpx.AsyncClient, jwt: str | None = None) -> PinataClient:
    return PinataClient(stack.url("pinata"), jwt or stack.pinata_jwt, http)


def kubo(stack: StackConfig, http: httpx.AsyncClient) -> KuboClient:
    return KuboClient(stack.url("kubo"), http)


def uploader(stack: StackConfig, http: httpx.AsyncClient) -> IpfsUploader:
    return IpfsUploader(pinata(stack, http), kubo(stack, http))


def gateways(stack: StackConfig, http: httpx.AsyncClient) -> GatewayReader:
    return GatewayReader([stack.url("gateway-1"), stack.url("gateway-2")], http)


async def fault(http: httpx.AsyncClient, stack: StackConfig, **spec: Any) -> str:
    resp = await http.post(f"{stack.url('admin')}/faults", json=spec)
    assert resp.status_code in (200, 201), resp.text
    return resp.json()["id"]


async def upload(stack: StackConfig, http: httpx.AsyncClient, data: bytes) -> Upload:
    return await uploader(stack, http).upload(
        data, filename="image.png", name="test image", keyvalues={"mint_id": "test"}
    )


# -- upload and read back --------------------------------------------------------------------


async def test_upload_lands_on_pinata_with_the_local_cid_and_both_gateways_serve_it(
    stack: StackConfig, http: httpx.AsyncClient, content: bytes
) -> None:
    local = await compute_cid(content)
    result = await upload(stack, http, content)
    assert result == Upload(local, "pinata")
    assert local.startswith("b")  # CIDv1 by default
    assert await pinata(stack, http).is_pinned(local)
    assert not await kubo(stack, http).is_pinned(local)
    reader = gateways(stack, http)
    assert await reader.fetch_verified(local, max_bytes=MAX) == (content, stack.url("gateway-1"))
    assert await reader.check_all(local) == {
        stack.url("gateway-1"): True,
        stack.url("gateway-2"): True,
    }


async def test_pinata_down_fails_over_to_kubo_with_the_same_cid(
    stack: StackConfig, http: httpx.AsyncClient, content: bytes
) -> None:
    await fault(http, stack, target="pinata", kind="down")
    result = await upload(stack, http, content)
    assert result == Upload(await compute_cid(content), "kubo")
    assert await kubo(stack, http).is_pinned(result.cid)
    data, _ = await gateways(stack, http).fetch_verified(result.cid, max_bytes=MAX)
    assert data == content


async def test_pinata_rate_limited_fails_over_to_kubo(
    stack: StackConfig, http: httpx.AsyncClient, content: bytes
) -> None:
    await fault(http, stack, target="pinata", kind="status", status=429)
    with pytest.raises(ServiceError) as direct:
        await pinata(stack, http).pin_file(content, filename="a.png", name="a", keyvalues={})
    assert direct.value.kind is ErrorKind.RATE_LIMITED
    assert direct.value.code == "PinataRateLimited"
    assert direct.value.retry_after == 1.0
    assert direct.value.endpoint == stack.url("pinata")

    result = await upload(stack, http, content)
    assert result.provider == "kubo"
    assert await kubo(stack, http).is_pinned(result.cid)


async def test_pinata_server_error_is_transient_and_fails_over(
    stack: StackConfig, http: httpx.AsyncClient, content: bytes
) -> None:
    await fault(http, stack, target="pinata", kind="error")
    with pytest.raises(ServiceError) as direct:
        await pinata(stack, http).test_authentication()
    assert (direct.value.kind, direct.value.code) == (ErrorKind.TRANSIENT, "PinataUnavailable")
    assert (await upload(stack, http, content)).provider == "kubo"


async def test_pinata_timeout_is_transient(stack: StackConfig, http: httpx.AsyncClient) -> None:
    await fault(http, stack, target="pinata", kind="hang", delay_ms=3000)
    async with httpx.AsyncClient(timeout=0.3) as impatient:
        with pytest.raises(ServiceError) as caught:
            await pinata(stack, impatient).test_authentication()
    assert (caught.value.kind, caught.value.code) == (ErrorKind.TRANSIENT, "PinataUnreachable")
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)


async def test_wrong_jwt_needs_an_operator_and_is_not_hidden_by_failover(
    stack: StackConfig, http: httpx.AsyncClient, content: bytes
) -> None:
    wrong = f"wrong-jwt-{uuid.uuid4()}"
    client = PinataClient(stack.url("pinata"), wrong, http)
    assert wrong not in repr(client)
    with pytest.raises(ServiceError) as direct:
        await client.test_authentication()
    assert direct.value.kind is ErrorKind.NEEDS_OPERATOR
    assert direct.value.code == "PinataUnauthorized"
    assert "PINATA_JWT" in str(direct.value)
    for text in (str(direct.value), repr(direct.value), direct.value.message):
        assert wrong not in text

    with pytest.raises(ServiceError) as via_uploader:
        await IpfsUploader(client, kubo(stack, http)).upload(
            content, filename="a.png", name="a", keyvalues={}
        )
    assert via_uploader.value.code == "PinataUnauthorized"
    assert wrong not in str(via_uploader.value)
    assert not await kubo(stack, http).is_pinned(await compute_cid(content))


async def test_right_jwt_authenticates(stack: StackConfig, http: httpx.AsyncClient) -> None:
    await pinata(stack, http).test_authentication()
    assert await kubo(stack, http).version()


# -- gateways --------------------------------------------------------------------------------


async def test_gateway_down_next_gateway_serves(
    stack: StackConfig, http: httpx.AsyncClient, content: bytes
) -> None:
    cid = (await upload(stack, http, content)).cid
    await fault(http, stack, target="gateway-1", kind="down")
    reader = gateways(stack, http)
    assert await reader.fetch_verified(cid, max_bytes=MAX) == (content, stack.url("gateway-2"))
    assert await reader.check_all(cid) == {
        stack.url("gateway-1"): False,
        stack.url("gateway-2"): True,
    }


async def test_every_gateway_failing_raises_the_last_classified_error(
    stack: StackConfig, http: httpx.AsyncClient, content: bytes
) -> None:
    cid = (await upload(stack, http, content)).cid
    await fault(http, stack, target="gateway-1", kind="down")
    await fault(http, stack, target="gateway-2", kind="status", status=502)
    with pytest.raises(ServiceError) as caught:
        await gateways(stack, http).fetch_verified(cid, max_bytes=MAX)
    assert (caught.value.kind, caught.value.code) == (ErrorKind.TRANSIENT, "GatewayUnavailable")
    assert caught.value.endpoint == stack.url("gateway-2")


async def test_gateway_body_over_max_bytes_is_a_content_failure(
    stack: StackConfig, http: httpx.AsyncClient, content: bytes
) -> None:
    cid = (await upload(stack, http, content)).cid
    with pytest.raises(ServiceError) as caught:
        await gateways(stack, http).fetch_verified(cid, max_bytes=len(content) - 1)
    assert caught.value.code == "GatewayContentMismatch"


# -- compensation ----------------------------------------------------------------------------


async def test_pinata_unpin_is_idempotent_and_the_gateways_stop_serving(
    stack: StackConfig, http: httpx.AsyncClient, content: bytes
) -> None:
    ipfs = uploader(stack, http)
    cid = (await upload(stack, http, content)).cid
    assert await ipfs.unpin(cid, "pinata") is True
    assert await ipfs.unpin(cid, "pinata") is False
    assert not await pinata(stack, http).is_pinned(cid)
    # A 404 is transient while the content is young (a recursive gateway may not have found
    # a provider yet), permanent once it was pinned longer ago than the grace (ipfs/gateways.py).
    with pytest.raises(ServiceError) as caught:
        await gateways(stack, http).fetch_verified(cid, max_bytes=MAX, pinned_at=time.time())
    assert (caught.value.kind, caught.value.code) == (ErrorKind.TRANSIENT, "GatewayNotFound")
    long_ago = time.time() - NOT_FOUND_GRACE_S - 1
    with pytest.raises(ServiceError) as caught:
        await gateways(stack, http).fetch_verified(cid, max_bytes=MAX, pinned_at=long_ago)
    assert (caught.value.kind, caught.value.code) == (ErrorKind.PERMANENT, "GatewayNotFound")


async def test_kubo_pin_rm_is_idempotent(
    stack: StackConfig, http: httpx.AsyncClient, content: bytes
) -> None:
    client = kubo(stack, http)
    cid = await client.add(content, filename="image.png")
    assert cid == await compute_cid(content)
    assert await client.is_pinned(cid)
    assert await client.pin_rm(cid) is True
    assert await client.pin_rm(cid) is False
    assert not await client.is_pinned(cid)


async def test_kubo_not_pinned_answers_do_not_count_against_its_breaker(
    stack: StackConfig, http: httpx.AsyncClient, content: bytes
) -> None:
    """Kubo says "not pinned" with a 500; compensations unpin what was never pinned there
    often, and that must not open the breaker that guards uploads."""
    client = KuboClient(stack.url("kubo"), http, breakers=BreakerRegistry())
    cid = await compute_cid(content)  # never added
    for _ in range(IPFS_BREAKER.consecutive_failures + 2):
        assert await client.pin_rm(cid) is False
        assert await client.is_pinned(cid) is False
    assert client.breaker is not None
    assert client.breaker.state is BreakerState.CLOSED


async def test_unpin_all_clears_both_providers_after_a_lost_answer(
    stack: StackConfig, http: httpx.AsyncClient, content: bytes
) -> None:
    """Pinata pins, its answer is lost, Kubo pins too: compensation must find both."""
    await fault(http, stack, target="pinata", kind="drop_response", match="/pinning/pinFileToIPFS")
    result = await upload(stack, http, content)
    assert result.provider == "kubo"
    assert await pinata(stack, http).is_pinned(result.cid)  # the lost answer's pin
    ipfs = uploader(stack, http)
    assert await ipfs.unpin_all(result.cid) == {"pinata": True, "kubo": True}
    assert await ipfs.unpin_all(result.cid) == {"pinata": False, "kubo": False}
