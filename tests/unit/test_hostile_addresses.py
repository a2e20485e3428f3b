"""The hostile-address table (issue 14): every URL and address below is refused alike by the
starter (`check_image_url`, `url_problem` without the devstack's allowance), by the worker's
image loader (the URL as written, and a host name resolving to the address) and by the gateway
reader (a real gateway on 127.0.0.1 answering 302 to it); a few public ones pass all three, so
a policy refusing everything fails here too.

No request may reach a hostile target: the loader's and the reader's HTTP clients record every
request they send.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator

import httpx
import pytest
from solders.keypair import Keypair

from mintsaga.addresses import address_problem, host_address, host_problem
from mintsaga.api.errors import StarterError
from mintsaga.api.image_urls import check_image_url
from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.ipfs.cid import cid_sync
from mintsaga.ipfs.gateways import GatewayReader
from mintsaga.ipfs.images import ImageLoader, url_problem
from mintsaga.workflows.models import MintRequest

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"png-body"

# (address, why it is hostile): each is tried as a URL literal and as what a name resolves to.
ADDRESSES = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback, the end of 127/8"),
    ("10.0.0.1", "private 10/8"),
    ("172.16.5.4", "private 172.16/12"),
    ("192.168.1.1", "private 192.168/16"),
    ("169.254.169.254", "link-local: cloud metadata"),
    ("169.254.170.2", "link-local: container metadata"),
    ("100.64.0.1", "shared address space (CGNAT) 100.64/10"),
    ("100.100.100.200", "cloud metadata in 100.64/10"),
    ("192.0.0.192", "cloud metadata; global to Python < 3.11.10"),
    ("192.0.0.9", "192.0.0.0/24, global to Python < 3.11.10"),
    ("192.0.0.170", "192.0.0.0/24 (NAT64 discovery)"),
    ("198.18.0.1", "benchmarking 198.18/15"),
    ("198.19.255.254", "benchmarking, its end"),
    ("192.0.2.1", "documentation TEST-NET-1"),
    ("198.51.100.7", "documentation TEST-NET-2"),
    ("203.0.113.9", "documentation TEST-NET-3"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "this network 0/8"),
    ("255.255.255.255", "broadcast"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast (SSDP)"),
    ("240.0.0.1", "reserved 240/4"),
    ("::1", "IPv6 loopback"),
    ("::", "IPv6 unspecified"),
    ("fe80::1", "IPv6 link-local"),
    ("fc00::1", "unique local fc00::/7"),
    ("fd12:3456::1", "unique local fd00::/8"),
    ("fd00:ec2::254", "AWS metadata over IPv6"),
    ("fec0::1", "site-local fec0::/10, global to Python 3.11"),
    ("ff02::1", "IPv6 multicast"),
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
    ("::ffff:169.254.169.254", "IPv4-mapped metadata"),
    ("::ffff:10.0.0.1", "IPv4-mapped private"),
    ("::7f00:1", "IPv4-compatible loopback"),
    ("::a9fe:a9fe", "IPv4-compatible metadata"),
    ("::808:808", "IPv4-compatible, even of a public address"),
    ("::ffff:0:7f00:1", "IPv4-translated loopback"),
    ("::ffff:0:808:808", "IPv4-translated, even of a public address"),
    ("64:ff9b::7f00:1", "NAT64 of loopback"),
    ("64:ff9b::a9fe:a9fe", "NAT64 of metadata"),
    ("64:ff9b::a00:1", "NAT64 of private"),
    ("64:ff9b::c000:c0", "NAT64 of 192.0.0.192"),
    ("64:ff9b:1::808:808", "local-use NAT64 64:ff9b:1::/48"),
    ("2002:7f00:1::1", "6to4 of loopback"),
    ("2002:a9fe:a9fe::1", "6to4 of metadata"),
    ("2002:808:808::1", "6to4, even of a public address"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("2001:0:a9fe:a9fe::1", "Teredo, server at metadata"),
    ("2001:db8::1", "IPv6 documentation"),
    ("3fff::1", "IPv6 documentation 3fff::/20, global to Python 3.11"),
    ("5f00::1", "SRv6 SIDs 5f00::/16, global to Python 3.11"),
    ("100::1", "discard-only 100::/64"),
    ("2001:10::1", "ORCHID"),
    ("2001:2::1", "IPv6 benchmarking"),
]

# URLs whose host spells a hostile address or name some other way.
SPELLINGS = [
    ("https://2130706433/a.png", "decimal 127.0.0.1"),
    ("https://017700000001/a.png", "octal 127.0.0.1, one number"),
    ("https://0177.0.0.1/a.png", "octal first byte"),
    ("https://0x7f.0.0.1/a.png", "hex first byte"),
    ("https://0x7f000001/a.png", "hex, one number"),
    ("https://127.1/a.png", "short form"),
    ("https://0/a.png", "0 is 0.0.0.0"),
    ("https://0xa9fea9fe/a.png", "hex metadata"),
    ("https://2852039166/a.png", "decimal metadata"),
    ("https://169.254.43518/a.png", "metadata, two-part"),
    ("https://127.0.0.1./a.png", "trailing dot"),
    ("https://[::1]/a.png", "bracketed IPv6"),
    ("https://[::1]:8443/a.png", "bracketed IPv6 with a port"),
    ("https://[fe80::1%25eth0]/a.png", "zone id"),
    ("https://[fe80::a9fe:a9fe%25en0]:80/a.png", "zone id and port"),
    ("https://[::ffff:7f00:1]/a.png", "mapped, hex form"),
    ("https://[64:ff9b::127.0.0.1]/a.png", "NAT64, dotted form"),
    ("https://localhost/a.png", "localhost"),
    ("https://localhost./a.png", "localhost, trailing dot"),
    ("https://LOCALHOST./a.png", "localhost, capitals"),
    ("https://images.localhost/a.png", "*.localhost"),
    ("https://ip6-localhost/a.png", "/etc/hosts loopback name"),
    ("https://example.com@127.0.0.1/a.png", "userinfo: the host is after the @"),
    ("https://user:pw@[::1]:443/a.png", "userinfo before IPv6 loopback"),
    ("https://127.0.0.1#@example.com/a.png", "fragment hiding the real host"),
    ("https://127\u30020\u30020\u30021/a.png", "ideographic full stops"),
    ("https://\u24dbocalhost/a.png", "circled letter lookalike"),
    ("https://1.2.3.4.5/a.png", "ends in a number, not an address"),
    ("https://%31%32%37.0.0.1/a.png", "percent-escaped host"),
]

PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111", "2001:4860:4860::8888"]
PUBLIC_IPV6_FORMS = ["::ffff:8.8.8.8", "64:ff9b::808:808"]  # mapped / NAT64 of a public address


def literal_url(address: str) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}/a.png"


HOSTILE_URLS = [
    pytest.param(literal_url(address), id=f"{address} ({why})") for address, why in ADDRESSES
] + [pytest.param(url, id=why) for url, why in SPELLINGS]


def test_the_table_is_large_and_covers_every_range() -> None:
    assert len(ADDRESSES) + len(SPELLINGS) >= 40
    networks = [
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "2002::/16",
        "::/96",
        "::ffff:0:0:0/96",
        "::ffff:0:0/96",
        "fec0::/10",
        "192.0.0.0/24",
        "2001::/32",
        "100.64.0.0/10",
        "198.18.0.0/15",
        "169.254.0.0/16",
        "fe80::/10",
        "fc00::/7",
        "224.0.0.0/4",
    ]
    addresses = [ipaddress.ip_address(a) for a, _ in ADDRESSES]
    for network in map(ipaddress.ip_network, networks):
        assert any(a in network for a in addresses), f"no entry in {network}"
    assert "192.0.0.192" in {str(a) for a in addresses}


# -- the starter -------------------------------------------------------------------------------


def request_with(url: str) -> MintRequest:
    return MintRequest.model_validate(
        {
            "mint_id": "hostile-1",
            "user_id": "user-1",
            "wallet": str(Keypair().pubkey()),
            "name": "Hostile",
            "symbol": "HST",
            "image": {"url": url},
        }
    )


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_the_starter_refuses(url: str) -> None:
    assert url_problem(url, allow_private=False) is not None
    with pytest.raises(StarterError, match=r"image\.url"):
        check_image_url(request_with(url), allow_private_urls=False)


@pytest.mark.parametrize("address", PUBLIC + PUBLIC_IPV6_FORMS)
def test_the_starter_lets_public_addresses_through(address: str) -> None:
    assert url_problem(literal_url(address), allow_private=False) is None
    check_image_url(request_with(literal_url(address)), allow_private_urls=False)
    check_image_url(request_with("https://cdn.example.com/a.png"), allow_private_urls=False)


@pytest.mark.parametrize(("address", "why"), ADDRESSES)
def test_the_policy_refuses_each_address(address: str, why: str) -> None:
    assert address_problem(address) is not None, why


def test_the_devstack_allows_loopback_and_private_but_never_metadata_or_translation() -> None:
    for allowed in ("127.0.0.1", "::1", "10.0.0.1", "192.168.1.1", "fd12:3456::1", "100.64.0.1"):
        assert address_problem(allowed, allow_private=True) is None, allowed
        assert host_problem(allowed, allow_private=True) is None, allowed
    assert host_problem("localhost", allow_private=True) is None
    never = [
        "169.254.169.254",
        "fe80::1",
        "fd00:ec2::254",
        "192.0.0.192",
        "100.100.100.200",
        "0.0.0.0",
        "::",
        "255.255.255.255",
        "224.0.0.1",
        "fec0::1",
        "::7f00:1",
        "::ffff:0:7f00:1",
        "64:ff9b::7f00:1",
        "2002:7f00:1::1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        "::ffff:169.254.169.254",
    ]
    for address in never:
        assert address_problem(address, allow_private=True) is not None, address
    for url in ("http://169.254.169.254/a.png", "http://[fd00:ec2::254]/a.png", "http://0/a.png"):
        assert url_problem(url, allow_private=True) is not None, url


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("[::1]", "::1"),
        ("example.com", None),
        ("cafe.be", None),
    ],
)
def test_host_literals_are_read_as_resolvers_read_them(host: str, address: str | None) -> None:
    found = host_address(host)
    assert (str(found) if found else None) == address


# -- the worker --------------------------------------------------------------------------------


class Recorder(httpx.AsyncBaseTransport):
    """Records every request; answers each with a PNG (so only a refusal stops a load)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, content=PNG, headers={"Content-Type": "image/png"})


def honest_resolver(answers: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    """A resolver as getaddrinfo behaves: literals resolve to themselves (in any spelling),
    loopback names to loopback, the names in `answers` to their addresses."""

    async def resolve(host: str, port: int) -> list[str]:
        literal = host_address(host)
        if literal is not None:
            return [str(literal)]
        name = host.rstrip(".").lower()
        if name in ("localhost", "ip6-localhost") or name.endswith(".localhost"):
            return ["127.0.0.1", "::1"]
        return answers[name]

    return resolve


async def worker_load(url: str, answers: dict[str, list[str]]) -> tuple[object, Recorder]:
    recorder = Recorder()
    async with httpx.AsyncClient(transport=recorder) as http:
        loader = ImageLoader(
            None, http, allow_private_hosts=False, resolver=honest_resolver(answers)
        )
        try:
            return await loader.load({"url": url}), recorder
        except ServiceError as exc:
            return exc, recorder


def assert_refused(outcome: object) -> None:
    assert isinstance(outcome, ServiceError), f"loaded: {outcome!r}"
    assert outcome.kind is ErrorKind.PERMANENT and outcome.service == "image"
    assert "image.url" in outcome.message


@pytest.mark.parametrize("url", HOSTILE_URLS)
async def test_the_worker_refuses_the_url(url: str) -> None:
    outcome, recorder = await worker_load(url, {})
    assert_refused(outcome)
    assert recorder.requests == []


@pytest.mark.parametrize(("address", "why"), ADDRESSES)
async def test_the_worker_refuses_a_name_resolving_to_the_address(address: str, why: str) -> None:
    # Alone, and hidden behind a public address: every address a name has is judged.
    for answer in ([address], ["93.184.216.34", address]):
        outcome, recorder = await worker_load(
            "https://cdn.example.com/a.png", {"cdn.example.com": answer}
        )
        assert_refused(outcome)
        assert isinstance(outcome, ServiceError) and outcome.code == "ImageUrlPrivateAddress"
        assert recorder.requests == [], why


@pytest.mark.parametrize(("address", "why"), ADDRESSES)
async def test_the_worker_refuses_a_redirect_to_the_address(address: str, why: str) -> None:
    hops: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        hops.append(str(request.url.host))
        return httpx.Response(302, headers={"Location": "https://next.example.com/b.png"})

    resolve = honest_resolver({"cdn.example.com": ["93.184.216.34"], "next.example.com": [address]})
    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        loader = ImageLoader(None, http, resolver=resolve)
        with pytest.raises(ServiceError) as caught:
            await loader.load({"url": "https://cdn.example.com/a.png"})
    assert caught.value.code == "ImageUrlPrivateAddress", why
    assert hops == ["93.184.216.34"]  # the second hop: never


@pytest.mark.parametrize("address", PUBLIC + PUBLIC_IPV6_FORMS)
async def test_the_worker_fetches_from_public_addresses(address: str) -> None:
    for url, answers in (
        (literal_url(address), {}),
        ("https://cdn.example.com/a.png", {"cdn.example.com": [address]}),
    ):
        outcome, recorder = await worker_load(url, answers)
        assert not isinstance(outcome, ServiceError), outcome
        (request,) = recorder.requests
        assert ipaddress.ip_address(request.url.host) == ipaddress.ip_address(address)


# -- the gateway reader ------------------------------------------------------------------------


class RedirectingGateway:
    """A real HTTP server on 127.0.0.1 answering every request with a 302 to `location`,
    written byte for byte (so any Location, non-ASCII ones too, goes out as given)."""

    def __init__(self) -> None:
        self.location = b""
        self.requests: list[bytes] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head.split(b"\r\n", 1)[0])
        writer.write(
            b"HTTP/1.1 302 Found\r\nLocation: " + self.location + b"\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        writer.close()


@pytest.fixture(scope="module")
async def gateway() -> AsyncIterator[RedirectingGateway]:
    served = RedirectingGateway()
    server = await asyncio.start_server(served.handle, "127.0.0.1", 0)
    served.port = server.sockets[0].getsockname()[1]
    async with server:
        yield served


class Sent(httpx.AsyncBaseTransport):
    """The reader's transport: real sockets, and a record of where each request went."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.urls: list[httpx.URL] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(request.url)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


CID = cid_sync(PNG)


@pytest.mark.parametrize("url", HOSTILE_URLS)
async def test_the_gateway_reader_refuses_a_redirect_to_it(
    gateway: RedirectingGateway, url: str
) -> None:
    gateway.location = url.encode("utf-8")
    gateway.requests.clear()
    sent = Sent()
    base = f"http://127.0.0.1:{gateway.port}"
    async with httpx.AsyncClient(transport=sent, timeout=10) as http:
        with pytest.raises(ServiceError) as caught:
            await GatewayReader([base], http).fetch_verified(CID, max_bytes=1000)
    assert caught.value.code == "GatewayRedirectRefused"
    assert caught.value.kind is ErrorKind.TRANSIENT  # the next gateway is tried
    # A one-block CID is asked for as a raw block (the Trustless Gateway format).
    assert gateway.requests == [f"GET /ipfs/{CID}?format=raw HTTP/1.1".encode()]
    assert [str(u) for u in sent.urls] == [f"{base}/ipfs/{CID}?format=raw"]  # never the target


@pytest.mark.parametrize("address", PUBLIC)
async def test_the_gateway_reader_refuses_public_hosts_too(
    gateway: RedirectingGateway, address: str
) -> None:
    # Off the configured host is refused whatever the target: a gateway's answers are its own.
    gateway.location = literal_url(address).encode()
    sent = Sent()
    async with httpx.AsyncClient(transport=sent, timeout=10) as http:
        with pytest.raises(ServiceError) as caught:
            await GatewayReader([f"http://127.0.0.1:{gateway.port}"], http).fetch_verified(
                CID, max_bytes=1000
            )
    assert caught.value.code == "GatewayRedirectRefused" and len(sent.urls) == 1


async def test_the_gateway_reader_follows_a_redirect_on_its_own_host(
    gateway: RedirectingGateway,
) -> None:
    # The configured gateway itself is trusted, loopback or not: its own redirects are followed
    # (here to itself, until the redirect limit).
    gateway.location = f"http://127.0.0.1:{gateway.port}/ipfs/{CID}".encode()
    gateway.requests.clear()
    async with httpx.AsyncClient(timeout=10) as http:
        with pytest.raises(ServiceError, match="more than 3"):
            await GatewayReader([f"http://127.0.0.1:{gateway.port}"], http).fetch_verified(
                CID, max_bytes=1000
            )
    assert len(gateway.requests) == 4
