"""Reading content back through IPFS gateways, trusting none of them.

A gateway's bytes count only when they hash to the CID asked for: a gateway that serves
something else (a stale cache, an error page with 200, a truncated body) has failed, and
the next one is tried. This is the spec's "progressive gateway fallback", plus verification.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from mintsaga.errors import ErrorKind, ServiceError, redact_url
from mintsaga.http_errors import capped_error_answer, status_error, transport_error
from mintsaga.ipfs.cid import compute_cid, require_cid
from mintsaga.observability.metrics import record_failover
from mintsaga.resilience.breaker import IPFS_BREAKER, BreakerRegistry
from mintsaga.resilience.guard import through

log = logging.getLogger(__name__)

SERVICE = "gateway"
DEFAULT_MAX_BYTES = 64 * 2**20


class GatewayReader:
    """Fetch content by CID from gateways in priority order, verifying every answer."""

    def __init__(
        self, urls: list[str], http: httpx.AsyncClient, *, breakers: BreakerRegistry | None = None
    ) -> None:
        if not urls:
            raise ValueError("GatewayReader needs at least one gateway URL (IPFS_GATEWAYS)")
        self.urls = [url.rstrip("/") for url in urls]
        self._http = http
        self._breakers = breakers

    def __repr__(self) -> str:
        return f"GatewayReader(urls={self.urls!r})"

    async def fetch_verified(self, cid: str, *, max_bytes: int) -> tuple[bytes, str]:
        """The content of ``cid`` and the gateway URL that served it.

        Raises:
            ServiceError: the last gateway's classified failure when none served the content
                (``GatewayContentMismatch`` when the bytes did not hash to ``cid``).
        """
        version = require_cid(cid, service=SERVICE)
        last: ServiceError | None = None
        for url in self.urls:
            if last is not None:
                record_failover(SERVICE)  # the previous gateway failed
            try:
                return await self._fetch_one(url, cid, version, max_bytes), url
            except ServiceError as exc:
                log.warning(
                    "gateway failed",
                    extra={"endpoint": url, "cid": cid, "code": exc.code, "kind": str(exc.kind)},
                )
                last = exc
        assert last is not None  # urls is never empty
        raise last

    async def check_all(self, cid: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, bool]:
        """For each gateway, whether it serves the verified content of ``cid`` now."""
        version = require_cid(cid, service=SERVICE)

        async def one(url: str) -> bool:
            try:
                await self._fetch_one(url, cid, version, max_bytes)
            except ServiceError as exc:
                log.info("gateway check failed", extra={"endpoint": url, "code": exc.code})
                return False
            return True

        results = await asyncio.gather(*(one(url) for url in self.urls))
        return dict(zip(self.urls, results, strict=True))

    async def _fetch_one(self, url: str, cid: str, version: int, max_bytes: int) -> bytes:
        """One gateway's verified answer, through that gateway's breaker."""
        breaker = self._breakers.get(redact_url(url), IPFS_BREAKER) if self._breakers else None
        return await through(
            breaker,
            SERVICE,
            lambda: self._fetch(url, cid, version, max_bytes),
            endpoint=redact_url(url),
            operation="fetch",
        )

    async def _fetch(self, url: str, cid: str, version: int, max_bytes: int) -> bytes:
        action = f"fetch {cid}"
        try:
            # Redirects are safe to follow here (subdomain gateways use them): the bytes are
            # checked against the CID whatever host they come from.
            async with self._http.stream(
                "GET", f"{url}/ipfs/{cid}", follow_redirects=True
            ) as response:
                if not response.is_success:
                    capped = await capped_error_answer(response)
                    raise status_error(capped, service=SERVICE, endpoint=url, action=action)
                data = await _read_capped(response, max_bytes)
        except httpx.RequestError as exc:
            raise transport_error(exc, service=SERVICE, endpoint=url, action=action) from exc
        if data is None:
            raise _mismatch(url, f"{cid}: gateway sent more than max_bytes={max_bytes}")
        actual = await compute_cid(data, version)
        if actual != cid:
            raise _mismatch(url, f"asked for {cid}, got {len(data)} bytes hashing to {actual}")
        return data


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes | None:
    """The body, or None as soon as it grows past ``max_bytes`` (the rest is not read)."""
    buffer = bytearray()
    async for chunk in response.aiter_bytes():
        buffer += chunk
        if len(buffer) > max_bytes:
            return None
    return bytes(buffer)


def _mismatch(url: str, message: str) -> ServiceError:
    # TRANSIENT: another gateway, or this one later, may well serve the right bytes.
    return ServiceError(
        message,
        service=SERVICE,
        kind=ErrorKind.TRANSIENT,
        code="GatewayContentMismatch",
        endpoint=url,
    )
