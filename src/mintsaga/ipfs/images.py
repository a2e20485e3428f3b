"""Loading an NFT's image from a reference: a file in the image folder, or a URL.

A reference comes from a backend's request, so it is untrusted input:

- ``{"path": "tiers/gold.png"}`` must resolve inside ``MINT_IMAGE_DIR``: no absolute paths,
  no ``..`` escapes, no symlinks leading out.
- ``{"url": "https://..."}`` is fetched with a size cap, an image content type, at most
  ``MAX_REDIRECTS`` redirects followed by hand, and every hop's host resolved and refused
  when it is a private, loopback or link-local address (SSRF; link-local even where the
  devstack allows private hosts). The request then goes to the address that was checked, so
  a second DNS answer cannot point it elsewhere.
- ``sha256`` (hex), when given, must match the bytes.

Every refusal is a PERMANENT ``ServiceError`` (service "image") naming the field at fault;
network failures are TRANSIENT, as for every client.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import posixpath
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.http_errors import capped_error_answer, status_error, transport_error

log = logging.getLogger(__name__)

SERVICE = "image"
DIR_SETTING = "MINT_IMAGE_DIR"
DEFAULT_MAX_BYTES = 10 * 2**20
MAX_REDIRECTS = 3
CONTENT_TYPES = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
}
_REDIRECTS = {301, 302, 303, 307, 308}

Resolver = Callable[[str, int], Awaitable[list[str]]]


# Where set (the devstack), http and private hosts are fetched too (`url_problem`).
PRIVATE_URLS_SETTING = "MINT_IMAGE_ALLOW_PRIVATE_URLS"


class ImageRefLike(Protocol):
    """Anything with the reference's fields (a pydantic model, a dataclass)."""

    path: str | None
    url: str | None
    sha256: str | None


@dataclass(frozen=True)
class LoadedImage:
    data: bytes
    content_type: str
    filename: str


def sniff_image_type(data: bytes) -> str | None:
    """The image type from magic bytes (PNG, JPEG, GIF, WebP), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
    return ip


def is_public_address(address: str) -> bool:
    """Whether an IP address is on the public internet (SSRF guard)."""
    ip = _ip(address)
    return ip.is_global and not ip.is_multicast


def is_link_local(address: str) -> bool:
    """169.254.0.0/16 and fe80::/10: where cloud metadata services answer (169.254.169.254).

    No image lives there, so these are refused even when private hosts are allowed.
    """
    return _ip(address).is_link_local


def url_problem(url: str, *, allow_private: bool) -> str | None:
    """What is wrong with an image URL before any request (None: nothing), the one policy for
    the API's check before a mint starts and the worker's: only https, to a host that is not a
    loopback, private or link-local address literal (or `localhost`); with `allow_private` (the
    devstack, MINT_IMAGE_ALLOW_PRIVATE_URLS) http and private hosts pass, link-local never does.
    Host names are checked again by the loader, every address of every hop."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    if parts.scheme not in ("https", "http"):
        return f"must be an https URL, not {parts.scheme or 'schemeless'}"
    if not host:
        return "has no host"
    if parts.scheme == "http" and not allow_private:
        return f"must be https (http is for the devstack only: {PRIVATE_URLS_SETTING})"
    address = _address_literal(host)
    if address is not None and is_link_local(address):
        return f"host {host} is link-local (cloud metadata lives there); it is never fetched"
    if allow_private:
        return None
    if host == "localhost" or host.endswith(".localhost"):
        return f"host {host} is loopback; only public hosts may be fetched"
    if address is not None and not is_public_address(address):
        return (
            f"host {host} is a loopback, private or reserved address;"
            " only public hosts may be fetched"
        )
    return None


def _address_literal(host: str) -> str | None:
    """The IP address a host literal spells (127.1 and 2130706433 too, as resolvers read them)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if all(c in "0123456789abcdefx." for c in host.lower()):
        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            return None
    return None


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (IP literals resolve to themselves)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _refused(message: str, code: str, endpoint: str | None = None) -> ServiceError:
    return ServiceError(
        message, service=SERVICE, kind=ErrorKind.PERMANENT, code=code, endpoint=endpoint
    )


def _public_url(url: httpx.URL) -> str:
    """The URL without credentials or query (which may hold a signed token): for messages."""
    return str(url.copy_with(userinfo=b"", query=None, fragment=None))


class ImageLoader:
    """Load an image's bytes from an ``ImageRef`` (path or url, optional sha256).

    Args:
        image_dir: the folder path references resolve in (``MINT_IMAGE_DIR``); None refuses
            path references.
        http: the client URL references are fetched with (its timeouts apply).
        max_bytes: the size cap for both kinds of reference.
        allow_private_hosts: fetch from private/loopback addresses (the devstack, tests);
            link-local addresses (cloud metadata) stay refused.
        resolver: ``(host, port) -> addresses``; injectable so tests need no DNS.
    """

    def __init__(
        self,
        image_dir: Path | None,
        http: httpx.AsyncClient,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        allow_private_hosts: bool = False,
        resolver: Resolver = resolve_host,
    ) -> None:
        self.image_dir = Path(image_dir).resolve() if image_dir is not None else None
        self._http = http
        self.max_bytes = max_bytes
        self.allow_private_hosts = allow_private_hosts
        self._resolve = resolver

    async def load(self, ref: Mapping[str, Any] | ImageRefLike) -> LoadedImage:
        """The image the reference names, checked; raises ``ServiceError`` otherwise."""
        path, url, sha256 = _fields(ref)
        if (path is None) == (url is None):
            raise _refused("image needs exactly one of image.path and image.url", "ImageRefInvalid")
        if sha256 is not None:
            sha256 = sha256.strip().lower()
            if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
                raise _refused("image.sha256 is not 64 hex digits", "ImageRefInvalid")
        image = await (self._load_path(path) if path is not None else self._load_url(url or ""))
        if sha256 is not None:
            actual = hashlib.sha256(image.data).hexdigest()
            if actual != sha256:
                raise _refused(
                    f"image.sha256 is {sha256} but the image's bytes hash to {actual}",
                    "ImageHashMismatch",
                )
        return image

    # -- path references -----------------------------------------------------------------

    async def _load_path(self, relative: str) -> LoadedImage:
        if self.image_dir is None:
            raise _refused(
                f"image.path was given but the {DIR_SETTING} setting is not configured",
                "ImageDirNotConfigured",
            )
        if (
            not relative
            or PurePosixPath(relative).is_absolute()
            or PureWindowsPath(relative).is_absolute()
            or PureWindowsPath(relative).drive
        ):
            raise _refused(
                f"image.path {relative!r} must be relative to {DIR_SETTING}",
                "ImagePathOutsideDir",
            )
        return await asyncio.to_thread(self._read_inside, relative)

    def _read_inside(self, relative: str) -> LoadedImage:
        assert self.image_dir is not None
        try:
            # resolve() follows every symlink and "..": what is left is where the bytes are.
            target = (self.image_dir / relative).resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError):
            raise _refused(
                f"image.path {relative!r} does not exist in {DIR_SETTING}", "ImageNotFound"
            ) from None
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise _refused(
                f"image.path {relative!r} cannot be resolved: {exc}", "ImageNotFound"
            ) from exc
        if not target.is_relative_to(self.image_dir):
            raise _refused(
                f"image.path {relative!r} leads outside {DIR_SETTING}", "ImagePathOutsideDir"
            )
        if not target.is_file():
            raise _refused(f"image.path {relative!r} is not a file", "ImageNotFound")
        with target.open("rb") as file:
            data = file.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise _refused(
                f"image.path {relative!r} is larger than {self.max_bytes} bytes", "ImageTooLarge"
            )
        content_type = sniff_image_type(data)
        if content_type is None:
            raise _refused(
                f"image.path {relative!r} is not a PNG, JPEG, GIF or WebP image",
                "ImageContentType",
            )
        return LoadedImage(data, content_type, target.name)

    # -- url references ------------------------------------------------------------------

    async def _load_url(self, text: str) -> LoadedImage:
        try:
            url = httpx.URL(text)
        except httpx.InvalidURL as exc:
            raise _refused(f"image.url is not a valid URL: {exc}", "ImageUrlInvalid") from exc
        for _hop in range(MAX_REDIRECTS + 1):
            self._check_scheme(url)
            address = await self._checked_address(url)
            location = await self._fetch(url, address)
            if isinstance(location, LoadedImage):
                return location
            url = location
        raise _refused(
            f"image.url redirected more than {MAX_REDIRECTS} times", "ImageTooManyRedirects"
        )

    @staticmethod
    def _check_scheme(url: httpx.URL) -> None:
        if url.scheme not in ("http", "https") or not url.host:
            raise _refused(
                f"image.url must be an http(s) URL with a host, not {_public_url(url)!r}",
                "ImageUrlScheme",
            )

    async def _checked_address(self, url: httpx.URL) -> str:
        """The address to connect to, after the SSRF check of every address the host has."""
        endpoint = _public_url(url)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = await self._resolve(url.host, port)
        except OSError as exc:  # socket.gaierror: DNS may come back
            raise ServiceError(
                f"image.url host {url.host!r} did not resolve: {exc}",
                service=SERVICE,
                kind=ErrorKind.TRANSIENT,
                code="ImageUrlUnresolved",
                endpoint=endpoint,
            ) from exc
        if not addresses:
            raise ServiceError(
                f"image.url host {url.host!r} resolved to no address",
                service=SERVICE,
                kind=ErrorKind.TRANSIENT,
                code="ImageUrlUnresolved",
                endpoint=endpoint,
            )
        refused = [
            a
            for a in addresses
            if is_link_local(a) or not (self.allow_private_hosts or is_public_address(a))
        ]
        if refused:
            raise _refused(
                f"image.url host {url.host!r} resolves to a non-public address "
                f"({refused[0]}); only public hosts may be fetched",
                "ImageUrlPrivateAddress",
                endpoint,
            )
        return addresses[0]

    async def _fetch(self, url: httpx.URL, address: str) -> LoadedImage | httpx.URL:
        """One hop: the image, or the URL it redirects to."""
        endpoint = _public_url(url)
        action = "fetch image.url"
        # Connect to the checked address; the Host header and TLS name stay the URL's host.
        pinned = url.copy_with(host=address)
        headers = {"Host": url.netloc.decode("ascii"), "Accept": ", ".join(CONTENT_TYPES)}
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        try:
            async with self._http.stream(
                "GET", pinned, headers=headers, extensions=extensions, follow_redirects=False
            ) as response:
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("Location")
                    if not location:
                        raise _refused("image.url redirected without a Location", "ImageUrlInvalid")
                    try:
                        return url.join(location)
                    except httpx.InvalidURL as exc:
                        raise _refused(
                            f"image.url redirected to an invalid URL: {exc}", "ImageUrlInvalid"
                        ) from exc
                if not response.is_success:
                    capped = await capped_error_answer(response)
                    raise status_error(capped, service=SERVICE, endpoint=endpoint, action=action)
                declared = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if declared not in CONTENT_TYPES:
                    raise _refused(
                        f"image.url answered with Content-Type {declared or 'none'!r}; "
                        f"expected one of {', '.join(CONTENT_TYPES)}",
                        "ImageContentType",
                        endpoint,
                    )
                length = response.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) > self.max_bytes:
                    raise self._too_large(endpoint)
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > self.max_bytes:
                        raise self._too_large(endpoint)  # stop reading: the rest is not ours
        except httpx.RequestError as exc:
            raise transport_error(exc, service=SERVICE, endpoint=endpoint, action=action) from exc
        content_type = sniff_image_type(bytes(data))
        if content_type is None:
            raise _refused(
                f"image.url served {declared} but the bytes are not a PNG, JPEG, GIF or WebP",
                "ImageContentType",
                endpoint,
            )
        return LoadedImage(bytes(data), content_type, _filename(url, content_type))

    def _too_large(self, endpoint: str) -> ServiceError:
        return _refused(
            f"image.url is larger than {self.max_bytes} bytes", "ImageTooLarge", endpoint
        )


def _fields(ref: Mapping[str, Any] | ImageRefLike) -> tuple[str | None, str | None, str | None]:
    if isinstance(ref, Mapping):
        values = [ref.get(key) for key in ("path", "url", "sha256")]
    else:
        values = [getattr(ref, key, None) for key in ("path", "url", "sha256")]
    for key, value in zip(("path", "url", "sha256"), values, strict=True):
        if value is not None and not isinstance(value, str):
            raise _refused(f"image.{key} must be a string", "ImageRefInvalid")
    path, url, sha256 = values
    return path, url, sha256


def _filename(url: httpx.URL, content_type: str) -> str:
    """The URL's last path segment when it is a plain name, else ``image`` + extension."""
    name = posixpath.basename(url.path)
    extension = CONTENT_TYPES[content_type]
    if not name or name in (".", "..") or any(c in name for c in '\\:*?"<>|\x00'):
        return "image" + extension
    return name
