"""IpfsUploader's failover rules and GatewayReader's verification, with fake HTTP services.

Each fake is an httpx.MockTransport routing by host, so a test states exactly what each
provider answers and sees which ones were called.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from mintsaga.activities.ipfs import IpfsActivities
from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.ipfs.cid import cid_sync, compute_cid
from mintsaga.ipfs.gateways import RAW_TYPE, GatewayReader
from mintsaga.ipfs.kubo import KuboClient
from mintsaga.ipfs.pinata import PinataClient
from mintsaga.ipfs.uploads import IpfsUploader, Upload
from mintsaga.resilience.breaker import IPFS_BREAKER, BreakerRegistry, BreakerState, Override
from mintsaga.workflows import activity_models as io

DATA = b"\x89PNG\r\n\x1a\nfailover-test"
OTHER_CID = cid_sync(b"something else")
Answer = Callable[[httpx.Request], httpx.Response]


def pinata_ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200, json={"IpfsHash": cid_sync(DATA), "PinSize": 1, "isDuplicate": False}
    )


def kubo_ok(request: httpx.Request) -> httpx.Response:
    line = json.dumps({"Name": "a.png", "Hash": cid_sync(DATA), "Size": "1"})
    return httpx.Response(200, text=line + "\n")


def status(code: int, **headers: str) -> Answer:
    return lambda request: httpx.Response(code, json={"error": "fake"}, headers=headers)


class Fakes:
    def __init__(self, pinata: Answer, kubo: Answer) -> None:
        self.answers = {"pinata": pinata, "kubo": kubo}
        self.calls: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request.url.host)
        return self.answers[request.url.host](request)

    def uploader(self, http: httpx.AsyncClient) -> IpfsUploader:
        return IpfsUploader(
            PinataClient("http://pinata", "jwt", http), KuboClient("http://kubo", http)
        )


async def run(pinata: Answer, kubo: Answer) -> tuple[Upload | ServiceError, list[str]]:
    fakes = Fakes(pinata, kubo)
    async with httpx.AsyncClient(transport=httpx.MockTransport(fakes.handle)) as http:
        try:
            result: Upload | ServiceError = await fakes.uploader(http).upload(
                DATA, filename="a.png", name="a", keyvalues={"k": "v"}
            )
        except ServiceError as exc:
            result = exc
    return result, fakes.calls


async def test_pinata_success_never_touches_kubo() -> None:
    result, calls = await run(pinata_ok, kubo_ok)
    assert result == Upload(cid_sync(DATA), "pinata")
    assert calls == ["pinata"]


async def test_pinata_request_carries_file_metadata_and_cid_version() -> None:
    seen: list[httpx.Request] = []

    def pinata(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return pinata_ok(request)

    await run(pinata, kubo_ok)
    body = seen[0].read()
    assert seen[0].headers["Authorization"] == "Bearer jwt"
    assert b'{"cidVersion": 1}' in body
    assert b'{"name": "a", "keyvalues": {"k": "v"}}' in body
    assert DATA in body


@pytest.mark.parametrize("code", [429, 500, 502, 503, 408])
async def test_retryable_pinata_failure_fails_over_to_kubo(code: int) -> None:
    result, calls = await run(status(code), kubo_ok)
    assert result == Upload(cid_sync(DATA), "kubo")
    assert calls == ["pinata", "kubo"]


@pytest.mark.parametrize(
    ("code", "kind"),
    [(400, ErrorKind.PERMANENT), (401, ErrorKind.NEEDS_OPERATOR), (403, ErrorKind.NEEDS_OPERATOR)],
)
async def test_permanent_pinata_failure_is_raised_not_hidden(code: int, kind: ErrorKind) -> None:
    result, calls = await run(status(code), kubo_ok)
    assert isinstance(result, ServiceError)
    assert result.kind is kind
    assert calls == ["pinata"]


async def test_both_failing_raises_pinatas_error_with_its_retry_after() -> None:
    result, calls = await run(status(429, **{"Retry-After": "9"}), status(503))
    assert isinstance(result, ServiceError)
    assert (result.code, result.retry_after) == ("PinataRateLimited", 9.0)
    assert any("KuboUnavailable" in note for note in result.__notes__)
    assert calls == ["pinata", "kubo"]


def answering_cid(cid: str, kubo: bool = False) -> Answer:
    if kubo:
        return lambda request: httpx.Response(200, text=json.dumps({"Hash": cid}) + "\n")
    return lambda request: httpx.Response(200, json={"IpfsHash": cid})


async def test_pinata_cid_mismatch_is_permanent_and_does_not_fail_over() -> None:
    result, calls = await run(answering_cid(OTHER_CID), kubo_ok)
    assert isinstance(result, ServiceError)
    assert (result.kind, result.code, result.service) == (
        ErrorKind.PERMANENT,
        "CidMismatch",
        "pinata",
    )
    assert OTHER_CID in result.message
    assert calls == ["pinata"]


async def test_kubo_cid_mismatch_is_permanent() -> None:
    result, _ = await run(status(503), answering_cid(OTHER_CID, kubo=True))
    assert isinstance(result, ServiceError)
    assert (result.kind, result.code, result.service) == (
        ErrorKind.PERMANENT,
        "CidMismatch",
        "kubo",
    )


async def test_pinata_answer_without_a_cid_is_a_bad_response() -> None:
    result, calls = await run(lambda r: httpx.Response(200, text="<html>proxy</html>"), kubo_ok)
    # A garbled answer is transient, so the backup gets its turn.
    assert result == Upload(cid_sync(DATA), "kubo")
    assert calls == ["pinata", "kubo"]


async def test_compute_cid_matches_kubo_for_v0_and_v1_and_large_data() -> None:
    assert (
        await compute_cid(b"Hello Worlds!\n", 0) == "QmVr26fY1tKyspEJBniVhqxQeEjhF78XerGiqWAwraVLQH"
    )
    big = bytes(range(256)) * 4096  # 1 MiB: hashed on a thread, several chunks
    assert await compute_cid(big) == cid_sync(big, 1)
    assert (await compute_cid(big)).startswith("bafy")  # a dag-pb root over raw leaves
    with pytest.raises(ValueError):
        await compute_cid(b"x", 2)


# -- gateways --------------------------------------------------------------------------------


async def test_gateway_serving_wrong_bytes_is_skipped() -> None:
    cid = cid_sync(DATA)

    def handle(request: httpx.Request) -> httpx.Response:
        body = b"not the content" if request.url.host == "g1" else DATA
        return httpx.Response(200, content=body)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        reader = GatewayReader(["http://g1", "http://g2"], http)
        assert await reader.fetch_verified(cid, max_bytes=1000) == (DATA, "http://g2")
        assert await reader.check_all(cid) == {"http://g1": False, "http://g2": True}


async def test_every_gateway_serving_wrong_bytes_raises_content_mismatch() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=b"wrong"))
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(ServiceError) as caught:
            await GatewayReader(["http://g1", "http://g2"], http).fetch_verified(
                cid_sync(DATA), max_bytes=1000
            )
    assert (caught.value.code, caught.value.endpoint) == ("GatewayContentMismatch", "http://g2")


@pytest.mark.parametrize("cid", ["not-a-cid", "../../etc/passwd", "Qm/../x", ""])
async def test_a_malformed_cid_is_refused_before_any_request(cid: str) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        for call in (
            GatewayReader(["http://g"], http).fetch_verified(cid, max_bytes=1),
            PinataClient("http://p", "jwt", http).unpin(cid),
            KuboClient("http://k", http).pin_rm(cid),
        ):
            with pytest.raises(ServiceError) as caught:
                await call
            assert (caught.value.kind, caught.value.code) == (ErrorKind.PERMANENT, "InvalidCid")


# -- gateway redirects -----------------------------------------------------------------------


async def test_a_gateway_redirect_on_its_own_host_is_followed() -> None:
    cid = cid_sync(DATA)
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.path == f"/ipfs/{cid}":
            query = request.url.query.decode()
            return httpx.Response(301, headers={"Location": f"/ipfs/{cid}/?{query}"})
        return httpx.Response(200, content=DATA, headers={"Content-Type": RAW_TYPE})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        reader = GatewayReader(["http://g1:8080"], http)
        assert await reader.fetch_verified(cid, max_bytes=1000) == (DATA, "http://g1:8080")
    assert seen == [
        f"http://g1:8080/ipfs/{cid}?format=raw",
        f"http://g1:8080/ipfs/{cid}/?format=raw",
    ]


@pytest.mark.parametrize(
    "location",
    [
        "http://g2/ipfs/{cid}",  # another host
        "https://g1:8080/ipfs/{cid}",  # another scheme
        "http://g1:8081/ipfs/{cid}",  # another port
        "http://{cid}.ipfs.g1:8080/",  # a subdomain gateway
        "//evil.example/ipfs/{cid}",  # scheme-relative
        "http://user@g1:8080/ipfs/{cid}",  # credentials
    ],
)
async def test_a_gateway_redirect_off_its_host_is_refused_and_the_next_one_tried(
    location: str,
) -> None:
    cid = cid_sync(DATA)
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.scheme}://{request.url.netloc.decode()}")
        if request.url.host == "g1":
            return httpx.Response(302, headers={"Location": location.format(cid=cid)})
        return httpx.Response(200, content=DATA, headers={"Content-Type": RAW_TYPE})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        reader = GatewayReader(["http://g1:8080", "http://g3"], http)
        assert await reader.fetch_verified(cid, max_bytes=1000) == (DATA, "http://g3")
        with pytest.raises(ServiceError) as caught:
            await GatewayReader(["http://g1:8080"], http).fetch_verified(cid, max_bytes=1000)
    assert (caught.value.code, caught.value.kind) == ("GatewayRedirectRefused", ErrorKind.TRANSIENT)
    assert "redirected off its host" in caught.value.message
    assert seen == ["http://g1:8080", "http://g3", "http://g1:8080"]  # the target: never


async def test_a_gateway_redirecting_in_circles_is_refused() -> None:
    cid = cid_sync(DATA)
    calls = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(302, headers={"Location": f"/ipfs/{cid}?n={calls}"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        with pytest.raises(ServiceError) as caught:
            await GatewayReader(["http://g1"], http).fetch_verified(cid, max_bytes=1000)
    assert caught.value.code == "GatewayRedirectRefused" and "more than 3" in caught.value.message
    assert calls == 4


async def test_a_gateway_body_over_the_limit_or_stacked_is_refused() -> None:
    cid = cid_sync(DATA)

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "g1":
            bomb = gzip.compress(gzip.compress(bytes(2**26)))
            headers = {"Content-Encoding": "gzip, gzip"}
            return httpx.Response(200, headers=headers, stream=httpx.ByteStream(bomb))
        return httpx.Response(200, stream=httpx.ByteStream(bytes(2000)))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        for gateway, said in (("http://g1", "encoded 2 times"), ("http://g2", "more than 1000")):
            with pytest.raises(ServiceError) as caught:
                await GatewayReader([gateway], http).fetch_verified(cid, max_bytes=1000)
            assert caught.value.code == "GatewayContentMismatch" and said in caught.value.message


# -- our own breakers never fail a call a provider could serve (issue 15) ---------------------


def opened(breakers: BreakerRegistry, name: str) -> None:
    """Open `name`'s breaker by the spec's IPFS rule (5 failures in a row)."""
    breaker = breakers.get(name, IPFS_BREAKER)
    for _ in range(5):
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


async def test_an_upload_asks_pinata_as_the_last_resort_when_its_breaker_opened_by_itself() -> None:
    """Pinata's breaker is open and Kubo fails: before, the upload failed with
    PinataCircuitOpen and its retry waited for Pinata's half-open time (~30 s)."""
    fakes = Fakes(pinata_ok, status(500))
    breakers = BreakerRegistry()
    opened(breakers, "http://pinata")
    async with httpx.AsyncClient(transport=httpx.MockTransport(fakes.handle)) as http:
        uploader = IpfsUploader(
            PinataClient("http://pinata", "jwt", http, breakers=breakers),
            KuboClient("http://kubo", http, breakers=breakers),
        )
        upload = await uploader.upload(DATA, filename="a.png", name="a", keyvalues={})
        assert upload == Upload(cid_sync(DATA), "pinata")
        assert fakes.calls == ["kubo", "pinata"]
        breakers.set_override("http://pinata", Override.FORCE_OPEN)
        with pytest.raises(ServiceError) as refused:
            await uploader.upload(DATA, filename="a.png", name="a", keyvalues={})
    assert refused.value.code == "PinataCircuitOpen"  # an operator's force-open holds
    assert fakes.calls == ["kubo", "pinata", "kubo"]


async def test_a_read_skips_an_open_gateway_then_asks_it_when_the_others_failed() -> None:
    cid = cid_sync(DATA)
    calls: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.host)
        if request.url.host == "g2":
            return httpx.Response(500, text="fault")
        return httpx.Response(200, content=DATA, headers={"Content-Type": RAW_TYPE})

    breakers = BreakerRegistry()
    opened(breakers, "http://g1")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        reader = GatewayReader(["http://g1", "http://g2"], http, breakers=breakers)
        assert await reader.fetch_verified(cid, max_bytes=1000) == (DATA, "http://g1")
        assert calls == ["g2", "g1"]  # g1 skipped first, g2 failed, then g1 anyway
        assert await reader.check_all(cid) == {"http://g1": False, "http://g2": False}
        breakers.set_override("http://g1", Override.FORCE_OPEN)
        calls.clear()
        with pytest.raises(ServiceError):
            await reader.fetch_verified(cid, max_bytes=1000)
    assert calls == ["g2", "g2"]  # forced open: never asked, in either pass


async def test_a_refusal_that_is_not_about_availability_gets_no_second_pass() -> None:
    """Wrong bytes (or a refused redirect) come back the same when asked again."""
    calls: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.host)
        return httpx.Response(200, content=b"wrong", headers={"Content-Type": RAW_TYPE})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        with pytest.raises(ServiceError) as caught:
            await GatewayReader(["http://g1"], http).fetch_verified(cid_sync(DATA), max_bytes=99)
    assert caught.value.code == "GatewayContentMismatch" and calls == ["g1"]


async def test_the_pre_mint_check_asks_kubo_as_the_last_resort_when_its_breaker_opened() -> None:
    """Pinata fails and Kubo's breaker opened by itself: before, check_ipfs failed with
    KuboCircuitOpen and its three attempts could all meet the open circuit (the benchmark's
    one mint of 200 waiting for an operator under 20 % faults)."""
    fakes = Fakes(status(500), lambda request: httpx.Response(200, json={"Version": "0.40.0"}))
    breakers = BreakerRegistry()
    opened(breakers, "http://kubo")
    async with httpx.AsyncClient(transport=httpx.MockTransport(fakes.handle)) as http:
        pinata = PinataClient("http://pinata", "jwt", http, breakers=breakers)
        kubo = KuboClient("http://kubo", http, breakers=breakers)
        activities = IpfsActivities(
            pinata=pinata,
            kubo=kubo,
            uploader=IpfsUploader(pinata, kubo),
            gateways=GatewayReader(["http://g"], http),
            images=None,  # type: ignore[arg-type]
            store=None,  # type: ignore[arg-type]
        )
        out = await ActivityEnvironment().run(activities.check_ipfs, io.MintRef(mint_id="m"))
        assert out.attempt == 1 and fakes.calls == ["pinata", "kubo"]
        breakers.set_override("http://kubo", Override.FORCE_OPEN)
        with pytest.raises(ApplicationError) as refused:
            await ActivityEnvironment().run(activities.check_ipfs, io.MintRef(mint_id="m"))
    assert refused.value.type == "KuboCircuitOpen"
    # Pinata's 500 a moment ago stands for it (no testAuthentication per check: issue 16).
    assert fakes.calls == ["pinata", "kubo"]
