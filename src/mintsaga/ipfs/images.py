"""Loading an NFT's image from a reference: a file in the image folder, or a URL.

A reference comes from a backend's request, so it is untrusted input:

- ``{"path": "tiers/gold.png"}`` must resolve inside ``MINT_IMAGE_DIR``: no absolute paths,
  no ``..`` escapes, no symlinks leading out.
- ``{"url": "https://..."}`` is fetched with an image content type, at most
  ``MAX_REDIRECTS`` redirects followed by hand, and every hop's host judged by the one address
  policy (`mintsaga.addresses`, SSRF): its literal in every spelling, then every address it
  resolves to (private, loopback, shared, reserved, NAT64/6to4/Teredo forms of them refused;
  link-local and metadata addresses even where the devstack allows private hosts). The request
  then goes to the address that was checked, so a second DNS answer cannot point it elsewhere.
- The size cap holds on the wire and decoded (`mintsaga.http_errors.read_bounded`): one gzip or
  deflate layer at most, decoded here in bounded steps; stacked or unknown encodings refused.
- ``sha256`` (hex), when given, must match the bytes.

Images in flight share a per-worker memory budget (`ByteBudget`,
``MINT_IMAGE_MEMORY_BUDGET_BYTES``): `ImageLoader.loaded` holds the cap's worth of it while
fetching, then the image's size until the caller is done with the bytes; a load that does not
fit waits its turn.

Every refusal is a PERMANENT ``ServiceError`` (service "image") naming the field at fault;
network failures are TRANSIENT, as for every client.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import posixpath
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from mintsaga.addresses import address_problem, host_problem
from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.http_errors import (
    ACCEPT_ENCODING,
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    BodyRefused,
    bad_location,
    capped_error_answer,
    read_bounded,
    status_error,
    transport_error,
)

log = logging.getLogger(__name__)

SERVICE = "image"
DIR_SETTING = "MINT_IMAGE_DIR"
DEFAULT_MAX_BYTES = 10 * 2**20
DEFAULT_MEMORY_BUDGET_BYTES = 128 * 2**20
CONTENT_TYPES = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
}

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


def is_public_address(address: str) -> bool:
    """Whether an IP address may be fetched from where private hosts are not allowed (SSRF
    guard): `mintsaga.addresses.address_problem` finds nothing wrong with it."""
    return address_problem(address) is None


def is_link_local(address: str) -> bool:
    """Whether an address is refused even where private hosts are allowed: link-local
    (169.254.0.0/16, fe80::/10, where cloud metadata services answer), the metadata addresses
    outside it, and the other ranges `mintsaga.addresses` never fetches from."""
    return address_problem(address, allow_private=True) is not None


def url_problem(url: str, *, allow_private: bool) -> str | None:
    """What is wrong with an image URL before any request (None: nothing), the one check for
    the API before a mint starts and for the worker: only https, to a host the address policy
    (`mintsaga.addresses.host_problem`) lets through, as httpx (the worker's parser) and
    urllib read it both (a URL the two read differently must pass for both). With
    `allow_private` (the devstack, MINT_IMAGE_ALLOW_PRIVATE_URLS) http and loopback or private
    hosts pass; link-local and metadata addresses never do. Host names are checked again by the
    loader, every address of every hop."""
    try:
        parsed = httpx.URL(url)
        hosts = [parsed.host]
        split = urlsplit(url)
        hosts.append(split.hostname or "")
    except (httpx.InvalidURL, ValueError) as exc:
        return f"not a valid URL: {exc}"
    if parsed.scheme not in ("https", "http") or split.scheme.lower() != parsed.scheme:
        return f"must be an https URL, not {parsed.scheme or 'schemeless'}"
    if parsed.scheme == "http" and not allow_private:
        return f"must be https (http is for the devstack only: {PRIVATE_URLS_SETTING})"
    if any(c.isspace() or c == "\\" or ord(c) < 0x20 for c in url):
        return "has whitespace, a backslash or a control character in it"
    for host in dict.fromkeys(hosts):
        problem = host_problem(host, allow_private=allow_private)
        if problem:
            return problem
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
        max_bytes: the size cap for both kinds of reference (decoded, and on the wire).
        allow_private_hosts: fetch from private/loopback addresses (the devstack, tests);
            link-local and metadata addresses stay refused.
        resolver: ``(host, port) -> addresses``; injectable so tests need no DNS.
        budget: the worker's memory budget for images in flight (None: a budget of its own,
            ``DEFAULT_MEMORY_BUDGET_BYTES``).
    """

    def __init__(
        self,
        image_dir: Path | None,
        http: httpx.AsyncClient,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        allow_private_hosts: bool = False,
        resolver: Resolver = resolve_host,
        budget: ByteBudget | None = None,
    ) -> None:
        self.image_dir = Path(image_dir).resolve() if image_dir is not None else None
        self._http = http
        self.max_bytes = max_bytes
        self.allow_private_hosts = allow_private_hosts
        self._resolve = resolver
        self.budget = budget if budget is not None else ByteBudget(DEFAULT_MEMORY_BUDGET_BYTES)

    async def load(self, ref: Mapping[str, Any] | ImageRefLike) -> LoadedImage:
        """The image the reference names, checked; raises ``ServiceError`` otherwise.

        The memory budget is held while loading only: a caller that keeps the bytes a while
        (hashing, uploading) uses `loaded`."""
        async with self.loaded(ref) as image:
            return image

    @contextlib.asynccontextmanager
    async def loaded(self, ref: Mapping[str, Any] | ImageRefLike) -> AsyncIterator[LoadedImage]:
        """The image, loaded under the memory budget: the cap's worth held while loading, then
        the image's size until the block ends."""
        async with self.budget.hold(self.max_bytes) as held:
            image = await self._load(ref)
            held.shrink(len(image.data))
            yield image

    async def _load(self, ref: Mapping[str, Any] | ImageRefLike) -> LoadedImage:
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
        """The address to connect to, after the SSRF check of the host as written and of every
        address it resolves to (`mintsaga.addresses`)."""
        endpoint = _public_url(url)
        problem = host_problem(url.host, allow_private=self.allow_private_hosts)
        if problem:
            raise _refused(f"image.url {problem}", "ImageUrlPrivateAddress", endpoint)
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
        for address in addresses:
            problem = address_problem(address, allow_private=self.allow_private_hosts)
            if problem:
                raise _refused(
                    f"image.url host {url.host!r} resolves to a refused address: {problem}",
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
        headers = {
            "Host": url.netloc.decode("ascii"),
            "Accept": ", ".join(CONTENT_TYPES),
            "Accept-Encoding": ACCEPT_ENCODING,
        }
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        try:
            async with self._http.stream(
                "GET", pinned, headers=headers, extensions=extensions, follow_redirects=False
            ) as response:
                if response.status_code in REDIRECT_STATUSES:
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
                try:  # stops reading as soon as a limit is passed: the rest is not ours
                    data = await read_bounded(response, self.max_bytes)
                except BodyRefused as exc:
                    if exc.too_large:
                        raise _refused(
                            f"image.url is larger than {self.max_bytes} bytes (its body "
                            f"{exc.reason})",
                            "ImageTooLarge",
                            endpoint,
                        ) from None
                    raise _refused(
                        f"image.url's body {exc.reason}", "ImageEncodingRefused", endpoint
                    ) from None
        except httpx.RequestError as exc:
            reason = bad_location(exc)
            if reason is not None:
                raise _refused(
                    f"image.url redirected to an invalid URL: {reason}", "ImageUrlInvalid", endpoint
                ) from exc
            raise transport_error(exc, service=SERVICE, endpoint=endpoint, action=action) from exc
        content_type = sniff_image_type(data)
        if content_type is None:
            raise _refused(
                f"image.url served {declared} but the bytes are not a PNG, JPEG, GIF or WebP",
                "ImageContentType",
                endpoint,
            )
        return LoadedImage(data, content_type, _filename(url, content_type))


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


class ByteBudget:
    """A semaphore counted in bytes: how much image data a worker holds at once.

    `hold(n)` waits until `n` bytes fit (first come, first served: a large image is not starved
    by small ones); a hold larger than the whole budget waits until nothing else is held.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a ByteBudget needs a capacity of at least 1 byte")
        self.capacity = capacity
        self.held = 0
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def __repr__(self) -> str:
        return f"ByteBudget(held={self.held}, capacity={self.capacity})"

    @property
    def waiting(self) -> int:
        """How many holds wait for room."""
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[Held]:
        """Hold `size` bytes (at most the capacity) of the budget for the block."""
        held = Held(self, min(max(size, 0), self.capacity))
        await self._acquire(held.size)
        try:
            yield held
        finally:
            self._release(held.size)
            held.size = 0

    async def _acquire(self, size: int) -> None:
        if not self._waiting and self.held + size <= self.capacity:
            self.held += size
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, granted)
        self._waiting.append(entry)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release(size)  # granted as it was cancelled: give it back
            else:
                self._waiting.remove(entry)
                self._wake()  # the ones behind it may fit now
            raise

    def _release(self, size: int) -> None:
        self.held -= size
        self._wake()

    def _wake(self) -> None:
        while self._waiting and self.held + self._waiting[0][0] <= self.capacity:
            size, granted = self._waiting.popleft()
            self.held += size
            granted.set_result(None)


class Held:
    """The part of a `ByteBudget` one `hold` has; `shrink` gives back what is not needed."""

    def __init__(self, budget: ByteBudget, size: int) -> None:
        self._budget = budget
        self.size = size

    def shrink(self, size: int) -> None:
        """Keep only `size` bytes (never more than held now) and release the rest."""
        size = max(0, min(size, self.size))
        released, self.size = self.size - size, size
        if released:
            self._budget._release(released)
