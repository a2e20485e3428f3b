"""Classification at the client boundary: HTTP status and transport failure -> ErrorKind.

Pure: statuses are checked on the table itself, transport failures through the clients with
an httpx.MockTransport that raises them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.http_errors import classify_status, parse_retry_after, status_error
from mintsaga.ipfs.gateways import GatewayReader
from mintsaga.ipfs.kubo import KuboClient
from mintsaga.ipfs.pinata import PinataClient

CID = "bafkreibnoelefnzgwbcacyt4vh52ymxvzbjq7mmqhtcnwarfq4lzegsiqe"  # b"x"
JWT = "test-jwt-0123456789"
NOW = datetime(2026, 11, 5, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, ErrorKind.PERMANENT),
        (401, ErrorKind.PERMANENT),
        (403, ErrorKind.PERMANENT),
        (404, ErrorKind.PERMANENT),
        (409, ErrorKind.PERMANENT),
        (413, ErrorKind.PERMANENT),
        (422, ErrorKind.PERMANENT),
        (408, ErrorKind.TRANSIENT),
        (500, ErrorKind.TRANSIENT),
        (502, ErrorKind.TRANSIENT),
        (503, ErrorKind.TRANSIENT),
        (504, ErrorKind.TRANSIENT),
        (429, ErrorKind.RATE_LIMITED),
    ],
)
def test_status_table(status: int, kind: ErrorKind) -> None:
    assert classify_status(status) is kind


def test_success_is_not_classified() -> None:
    with pytest.raises(ValueError):
        classify_status(200)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("1", 1.0),
        (" 120 ", 120.0),
        ("Thu, 05 Nov 2026 12:00:30 GMT", 30.0),
        ("Thu, 05 Nov 2026 11:59:00 GMT", 0.0),  # a date in the past: go now
        ("soon", None),
        ("-5", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_seconds_or_http_date(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=lambda: NOW) == seconds


def _response(status: int, **kwargs: object) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", "http://p/x"), **kwargs)  # type: ignore[arg-type]


def test_429_carries_retry_after_and_endpoint() -> None:
    error = status_error(
        _response(429, headers={"Retry-After": "7"}, json={"error": "slow down"}),
        service="pinata",
        endpoint="http://p",
        action="pin a file",
    )
    assert (error.kind, error.code, error.retry_after) == (
        ErrorKind.RATE_LIMITED,
        "PinataRateLimited",
        7.0,
    )
    assert error.endpoint == "http://p"
    assert "slow down" in error.message


@pytest.mark.parametrize("status", [401, 403])
def test_unauthorized_with_a_credential_needs_an_operator(status: int) -> None:
    error = status_error(
        _response(status),
        service="pinata",
        endpoint="http://p",
        action="x",
        credential_setting="PINATA_JWT",
    )
    assert (error.kind, error.code) == (ErrorKind.NEEDS_OPERATOR, "PinataUnauthorized")
    assert "PINATA_JWT" in error.message


def test_unauthorized_without_a_credential_is_permanent() -> None:
    error = status_error(_response(401), service="kubo", endpoint="http://k", action="x")
    assert (error.kind, error.code) == (ErrorKind.PERMANENT, "KuboRejected")


# -- transport failures, through each client -------------------------------------------------


def _raising(exc_type: type[httpx.TransportError]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("boom", request=request)

    return httpx.MockTransport(handler)


TRANSPORT_ERRORS = [
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.PoolTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
]

CALLS: dict[str, Callable[[httpx.AsyncClient], object]] = {
    "pinata": lambda http: PinataClient("http://p/", JWT, http).pin_file(
        b"x", filename="x", name="x", keyvalues={}
    ),
    "kubo": lambda http: KuboClient("http://k/", http).add(b"x", filename="x"),
    "gateway": lambda http: GatewayReader(["http://g/"], http).fetch_verified(CID, max_bytes=9),
}


@pytest.mark.parametrize("exc_type", TRANSPORT_ERRORS, ids=lambda t: t.__name__)
@pytest.mark.parametrize("service", sorted(CALLS))
async def test_transport_failures_are_transient(
    service: str, exc_type: type[httpx.TransportError]
) -> None:
    async with httpx.AsyncClient(transport=_raising(exc_type)) as http:
        with pytest.raises(ServiceError) as caught:
            await CALLS[service](http)  # type: ignore[misc]
    error = caught.value
    assert error.kind is ErrorKind.TRANSIENT
    assert error.code == f"{service.capitalize()}Unreachable"
    assert error.endpoint == f"http://{service[0]}"  # the base URL, trailing slash dropped
    assert isinstance(error.__cause__, exc_type)


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (400, ErrorKind.PERMANENT, "KuboRejected"),
        (500, ErrorKind.TRANSIENT, "KuboUnavailable"),
        (429, ErrorKind.RATE_LIMITED, "KuboRateLimited"),
    ],
)
async def test_kubo_status_errors(status: int, kind: ErrorKind, code: str) -> None:
    transport = httpx.MockTransport(
        lambda request: httpx.Response(status, json={"Message": "nope", "Code": 0})
    )
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(ServiceError) as caught:
            await KuboClient("http://k", http).add(b"x", filename="x")
    assert (caught.value.kind, caught.value.code) == (kind, code)
    assert "nope" in caught.value.message


async def test_a_jwt_echoed_by_the_server_is_scrubbed() -> None:
    transport = httpx.MockTransport(
        lambda request: httpx.Response(
            400, json={"error": {"reason": "BAD", "details": f"got {JWT}"}}
        )
    )
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(ServiceError) as caught:
            await PinataClient("http://p", JWT, http).test_authentication()
    assert "BAD" in str(caught.value)
    assert JWT not in str(caught.value)
    assert JWT not in repr(caught.value)


@pytest.mark.parametrize("jwt", ["", "  ", "two words", "line\nbreak", "é-accented"])
def test_a_jwt_that_cannot_be_a_header_needs_an_operator(jwt: str) -> None:
    with pytest.raises(ServiceError) as caught:
        PinataClient("http://p", jwt, httpx.AsyncClient())
    assert (caught.value.kind, caught.value.code) == (ErrorKind.NEEDS_OPERATOR, "PinataJwtInvalid")
    assert "PINATA_JWT" in caught.value.message
    if jwt.strip():
        assert jwt not in str(caught.value)


def test_a_trailing_newline_on_the_jwt_is_tolerated() -> None:
    PinataClient("http://p", JWT + "\n", httpx.AsyncClient())


def test_every_service_error_keeps_only_a_redacted_endpoint() -> None:
    from mintsaga.errors import ErrorKind, ServiceError

    error = ServiceError(
        "x",
        service="gateway",
        kind=ErrorKind.TRANSIENT,
        code="GatewayUnreachable",
        endpoint="https://user:pw@gw.example/ipfs-token/abcdefghijklmnopqrstuvwxyz?key=secret",
    )
    assert error.endpoint == "https://gw.example/ipfs-token/***"
    assert "secret" not in str(error) and "pw" not in str(error)
