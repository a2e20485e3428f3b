"""ImageLoader: path references confined to the image folder, URL references fetched with a
size cap, a content-type check, a redirect limit and an SSRF guard.

URL tests talk to a small aiohttp server on 127.0.0.1 over real sockets (hence
``allow_private_hosts=True`` there); the SSRF redirect and DNS-pinning tests use an
httpx.MockTransport and a fake resolver, since a real public host is not available.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from aiohttp import web

from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.ipfs.images import ImageLoader, LoadedImage, is_public_address, sniff_image_type

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"png-body"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"jpeg-body"
GIF = b"GIF89a" + b"gif-body"
WEBP = b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"webp-body"
CAP = 64 * 1024


def refused(exc: pytest.ExceptionInfo[ServiceError], code: str) -> None:
    assert exc.value.service == "image"
    assert (exc.value.kind, exc.value.code) == (ErrorKind.PERMANENT, code)


# -- path references -------------------------------------------------------------------------


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    (root / "tiers").mkdir(parents=True)
    (root / "tiers" / "gold.png").write_bytes(PNG)
    (root / "photo.jpg").write_bytes(JPEG)
    (root / "anim.gif").write_bytes(GIF)
    (root / "pic.webp").write_bytes(WEBP)
    (root / "notes.txt").write_bytes(b"hello")
    (tmp_path / "secret.png").write_bytes(PNG)
    return root


def loader(image_dir: Path | None, http: httpx.AsyncClient | None = None, **kw: Any) -> ImageLoader:
    return ImageLoader(image_dir, http or httpx.AsyncClient(), **kw)


@pytest.mark.parametrize(
    ("path", "data", "content_type", "filename"),
    [
        ("tiers/gold.png", PNG, "image/png", "gold.png"),
        ("photo.jpg", JPEG, "image/jpeg", "photo.jpg"),
        ("anim.gif", GIF, "image/gif", "anim.gif"),
        ("pic.webp", WEBP, "image/webp", "pic.webp"),
        ("tiers/../photo.jpg", JPEG, "image/jpeg", "photo.jpg"),  # ".." that stays inside
    ],
)
async def test_path_inside_the_folder_loads_with_a_sniffed_type(
    image_dir: Path, path: str, data: bytes, content_type: str, filename: str
) -> None:
    assert await loader(image_dir).load({"path": path}) == LoadedImage(data, content_type, filename)


async def test_a_model_dump_with_none_fields_and_a_matching_sha256_loads(image_dir: Path) -> None:
    ref = {"path": "tiers/gold.png", "url": None, "sha256": hashlib.sha256(PNG).hexdigest().upper()}
    assert (await loader(image_dir).load(ref)).data == PNG


async def test_an_object_with_attributes_is_a_reference_too(image_dir: Path) -> None:
    class Ref:
        path = "photo.jpg"
        url = None
        sha256 = None

    assert (await loader(image_dir).load(Ref())).content_type == "image/jpeg"


@pytest.mark.parametrize("path", ["../secret.png", "tiers/../../secret.png"])
async def test_dotdot_escape_is_refused(image_dir: Path, path: str) -> None:
    with pytest.raises(ServiceError) as caught:
        await loader(image_dir).load({"path": path})
    refused(caught, "ImagePathOutsideDir")
    assert "image.path" in caught.value.message


async def test_absolute_path_is_refused_even_inside_the_folder(image_dir: Path) -> None:
    with pytest.raises(ServiceError) as caught:
        await loader(image_dir).load({"path": str(image_dir / "photo.jpg")})
    refused(caught, "ImagePathOutsideDir")
    assert "image.path" in caught.value.message


async def test_symlink_leading_outside_is_refused(image_dir: Path) -> None:
    (image_dir / "escape.png").symlink_to(image_dir.parent / "secret.png")
    (image_dir / "outdir").symlink_to(image_dir.parent, target_is_directory=True)
    for path in ("escape.png", "outdir/secret.png"):
        with pytest.raises(ServiceError) as caught:
            await loader(image_dir).load({"path": path})
        refused(caught, "ImagePathOutsideDir")


async def test_symlink_staying_inside_is_followed(image_dir: Path) -> None:
    (image_dir / "alias.png").symlink_to(image_dir / "tiers" / "gold.png")
    assert (await loader(image_dir).load({"path": "alias.png"})).data == PNG


async def test_an_image_folder_reached_through_a_symlink_still_works(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "a.png").write_bytes(PNG)
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    assert (await loader(tmp_path / "link").load({"path": "a.png"})).data == PNG


async def test_unsniffable_file_is_refused(image_dir: Path) -> None:
    with pytest.raises(ServiceError) as caught:
        await loader(image_dir).load({"path": "notes.txt"})
    refused(caught, "ImageContentType")


@pytest.mark.parametrize(
    ("path", "code"), [("missing.png", "ImageNotFound"), ("tiers", "ImageNotFound")]
)
async def test_missing_file_or_folder_is_refused(image_dir: Path, path: str, code: str) -> None:
    with pytest.raises(ServiceError) as caught:
        await loader(image_dir).load({"path": path})
    refused(caught, code)


async def test_file_over_the_cap_is_refused(image_dir: Path) -> None:
    (image_dir / "big.png").write_bytes(PNG + bytes(CAP))
    with pytest.raises(ServiceError) as caught:
        await loader(image_dir, max_bytes=CAP).load({"path": "big.png"})
    refused(caught, "ImageTooLarge")


async def test_sha256_mismatch_is_refused(image_dir: Path) -> None:
    with pytest.raises(ServiceError) as caught:
        await loader(image_dir).load(
            {"path": "photo.jpg", "sha256": hashlib.sha256(PNG).hexdigest()}
        )
    refused(caught, "ImageHashMismatch")


async def test_path_without_a_configured_folder_names_the_setting() -> None:
    with pytest.raises(ServiceError) as caught:
        await loader(None).load({"path": "a.png"})
    refused(caught, "ImageDirNotConfigured")
    assert "MINT_IMAGE_DIR" in caught.value.message


@pytest.mark.parametrize(
    "ref",
    [
        {},
        {"path": "a.png", "url": "http://x/a.png"},
        {"path": 3},
        {"path": "a.png", "sha256": "zz"},
    ],
)
async def test_malformed_reference_is_refused(image_dir: Path, ref: dict[str, Any]) -> None:
    with pytest.raises(ServiceError) as caught:
        await loader(image_dir).load(ref)
    refused(caught, "ImageRefInvalid")


def test_sniffing() -> None:
    assert [sniff_image_type(d) for d in (PNG, JPEG, GIF, WEBP)] == [
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
    ]
    assert sniff_image_type(b"<html>") is None
    assert sniff_image_type(b"RIFF\x00\x00\x00\x00WAVE") is None


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("224.0.0.1", False),
    ],
)
def test_public_address_check(address: str, public: bool) -> None:
    assert is_public_address(address) is public


# -- url references: a real server on 127.0.0.1 ---------------------------------------------


class ImageServer:
    def __init__(self) -> None:
        self.hits: list[str] = []
        self.base = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ok.png", self.ok)
        app.router.add_get("/page.html", self.html)
        app.router.add_get("/fake.png", self.fake)
        app.router.add_get("/octet.png", self.octet)
        app.router.add_get("/declared-big.png", self.declared_big)
        app.router.add_get("/endless.png", self.endless)
        app.router.add_get("/r/{n}", self.redirect)
        app.router.add_get("/status/{code}", self.status)
        app.router.add_get("/encoded/{coding}", self.encoded)
        app.middlewares.append(self.count)
        return app

    @web.middleware
    async def count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.hits.append(request.path)
        return await handler(request)

    async def ok(self, request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    async def html(self, request: web.Request) -> web.Response:
        return web.Response(text="<html></html>", content_type="text/html")

    async def fake(self, request: web.Request) -> web.Response:
        return web.Response(body=b"<html>not an image</html>", content_type="image/png")

    async def octet(self, request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="application/octet-stream")

    async def declared_big(self, request: web.Request) -> web.Response:
        return web.Response(body=PNG + bytes(CAP), content_type="image/png")

    async def endless(self, request: web.Request) -> web.StreamResponse:
        # Chunked, no Content-Length: only counting while reading can stop it.
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        await response.prepare(request)
        await response.write(PNG)
        while True:  # ends when the client stops reading and hangs up
            await response.write(bytes(16 * 1024))

    async def redirect(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        target = "/ok.png" if n <= 1 else f"/r/{n - 1}"
        raise web.HTTPFound(target)

    # Raw bodies with the Content-Encoding a hostile host chooses (aiohttp does not encode).
    ENCODED: ClassVar[dict[str, tuple[bytes, str]]] = {
        "gzip": (gzip.compress(PNG), "gzip"),
        "stacked": (gzip.compress(gzip.compress(PNG + bytes(256 * 2**20))), "gzip, gzip"),
        "bomb": (gzip.compress(PNG + bytes(64 * 2**20)), "gzip"),
        "br": (PNG, "br"),
    }

    async def encoded(self, request: web.Request) -> web.Response:
        body, coding = self.ENCODED[request.match_info["coding"]]
        headers = {"Content-Type": "image/png", "Content-Encoding": coding}
        return web.Response(body=body, headers=headers)

    async def status(self, request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="no")


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[ImageServer]:
    images = ImageServer()
    runner = web.AppRunner(images.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    images.base = f"http://127.0.0.1:{port}"
    yield images
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def url_loader(http: httpx.AsyncClient, **kw: Any) -> ImageLoader:
    return ImageLoader(None, http, max_bytes=CAP, allow_private_hosts=True, **kw)


async def test_url_image_loads(server: ImageServer, http: httpx.AsyncClient) -> None:
    image = await url_loader(http).load({"url": f"{server.base}/ok.png", "sha256": None})
    assert image == LoadedImage(PNG, "image/png", "ok.png")


async def test_url_sha256_mismatch_is_refused(server: ImageServer, http: httpx.AsyncClient) -> None:
    with pytest.raises(ServiceError) as caught:
        await url_loader(http).load({"url": f"{server.base}/ok.png", "sha256": "0" * 64})
    refused(caught, "ImageHashMismatch")


@pytest.mark.parametrize("path", ["/endless.png", "/declared-big.png"])
async def test_url_over_the_cap_is_refused(
    server: ImageServer, http: httpx.AsyncClient, path: str
) -> None:
    # An endless body: without the cap while streaming this would never return.
    async with asyncio.timeout(10):
        with pytest.raises(ServiceError) as caught:
            await url_loader(http).load({"url": server.base + path})
    refused(caught, "ImageTooLarge")


async def test_a_gzip_encoded_image_is_decoded(
    server: ImageServer, http: httpx.AsyncClient
) -> None:
    image = await url_loader(http).load({"url": f"{server.base}/encoded/gzip"})
    assert image.data == PNG


@pytest.mark.parametrize(
    ("coding", "code", "said"),
    [
        ("stacked", "ImageEncodingRefused", "encoded 2 times"),
        ("br", "ImageEncodingRefused", "'br'"),
        ("bomb", "ImageTooLarge", f"larger than {CAP} bytes"),
    ],
)
async def test_an_encoded_body_is_bounded(
    server: ImageServer, http: httpx.AsyncClient, coding: str, code: str, said: str
) -> None:
    with pytest.raises(ServiceError) as caught:
        await url_loader(http).load({"url": f"{server.base}/encoded/{coding}"})
    refused(caught, code)
    assert "image.url" in caught.value.message and said in caught.value.message


@pytest.mark.parametrize("path", ["/page.html", "/fake.png", "/octet.png"])
async def test_url_that_is_not_an_image_is_refused(
    server: ImageServer, http: httpx.AsyncClient, path: str
) -> None:
    with pytest.raises(ServiceError) as caught:
        await url_loader(http).load({"url": server.base + path})
    refused(caught, "ImageContentType")


async def test_three_redirects_are_followed(server: ImageServer, http: httpx.AsyncClient) -> None:
    image = await url_loader(http).load({"url": f"{server.base}/r/3"})
    assert image.data == PNG


async def test_a_fourth_redirect_is_refused(server: ImageServer, http: httpx.AsyncClient) -> None:
    server.hits.clear()
    with pytest.raises(ServiceError) as caught:
        await url_loader(http).load({"url": f"{server.base}/r/4"})
    refused(caught, "ImageTooManyRedirects")
    assert server.hits == ["/r/4", "/r/3", "/r/2", "/r/1"]  # /ok.png never fetched


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_private_host_is_refused_before_any_request(
    server: ImageServer, http: httpx.AsyncClient, host: str
) -> None:
    server.hits.clear()
    url = server.base.replace("127.0.0.1", host) + "/ok.png"
    with pytest.raises(ServiceError) as caught:
        await ImageLoader(None, http).load({"url": url})
    refused(caught, "ImageUrlPrivateAddress")
    assert server.hits == []


@pytest.mark.parametrize(
    ("code", "kind", "error"),
    [
        (404, ErrorKind.PERMANENT, "ImageRejected"),
        (503, ErrorKind.TRANSIENT, "ImageUnavailable"),
        (429, ErrorKind.RATE_LIMITED, "ImageRateLimited"),
    ],
)
async def test_url_status_errors_are_classified(
    server: ImageServer, http: httpx.AsyncClient, code: int, kind: ErrorKind, error: str
) -> None:
    with pytest.raises(ServiceError) as caught:
        await url_loader(http).load({"url": f"{server.base}/status/{code}"})
    assert (caught.value.kind, caught.value.code) == (kind, error)


async def test_connection_refused_is_transient(http: httpx.AsyncClient) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ServiceError) as caught:
        await url_loader(http).load({"url": f"http://127.0.0.1:{port}/a.png"})
    assert (caught.value.kind, caught.value.code) == (ErrorKind.TRANSIENT, "ImageUnreachable")


@pytest.mark.parametrize(
    "url", ["ftp://example.com/a.png", "file:///etc/passwd", "data:image/png;base64,AAAA", "/a.png"]
)
async def test_only_http_schemes(http: httpx.AsyncClient, url: str) -> None:
    with pytest.raises(ServiceError) as caught:
        await url_loader(http).load({"url": url})
    refused(caught, "ImageUrlScheme")


# -- url references: public hosts, faked ----------------------------------------------------


FAKE_DNS = {"cdn.example": ["93.184.216.34"], "internal.example": ["10.0.0.5"]}


async def fake_resolver(host: str, port: int) -> list[str]:
    return FAKE_DNS[host]


async def test_redirect_to_a_private_host_is_refused_at_that_hop() -> None:
    requests: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(302, headers={"Location": "http://internal.example/admin.png"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        with pytest.raises(ServiceError) as caught:
            await ImageLoader(None, http, resolver=fake_resolver).load(
                {"url": "http://cdn.example/a.png"}
            )
    refused(caught, "ImageUrlPrivateAddress")
    assert [r.url.host for r in requests] == ["93.184.216.34"]


async def test_request_goes_to_the_checked_address_with_the_original_host() -> None:
    requests: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, content=PNG, headers={"Content-Type": "image/png; q=1"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        image = await ImageLoader(None, http, resolver=fake_resolver).load(
            {"url": "https://cdn.example/a/b.png?sig=secret"}
        )
    assert image == LoadedImage(PNG, "image/png", "b.png")
    (request,) = requests
    assert request.url.host == "93.184.216.34"  # no second DNS lookup to rebind
    assert request.headers["Host"] == "cdn.example"
    assert request.extensions["sni_hostname"] == "cdn.example"


async def test_error_endpoint_drops_credentials_and_query() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(404))
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(ServiceError) as caught:
            await ImageLoader(None, http, resolver=fake_resolver).load(
                {"url": "https://user:pw@cdn.example/a.png?sig=secret"}
            )
    assert caught.value.endpoint == "https://cdn.example/a.png"
    assert "secret" not in str(caught.value) and "pw" not in str(caught.value)


async def test_unresolvable_host_is_transient() -> None:
    async def no_dns(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    async with httpx.AsyncClient() as http:
        with pytest.raises(ServiceError) as caught:
            await ImageLoader(None, http, resolver=no_dns).load({"url": "https://x.example/a.png"})
    assert (caught.value.kind, caught.value.code) == (ErrorKind.TRANSIENT, "ImageUrlUnresolved")
