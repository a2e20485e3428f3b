"""Reading content back through IPFS gateways, trusting none of them.

A gateway's bytes count only when they hash to the CID asked for: a gateway that serves
something else (a stale cache, an error page with 200, a truncated body) has failed, and
the next one is tried. This is the spec's "progressive gateway fallback", plus verification.

The configured gateways are operator configuration and trusted as hosts (one may be a private
Kubo gateway), their answers are not: redirects are followed by hand, at most
``MAX_REDIRECTS``, and only to the same scheme, host and port as the configured gateway; a
redirect anywhere else (a subdomain gateway's `<cid>.ipfs.<host>` included: configure path
gateways) fails that gateway with ``GatewayRedirectRefused``, the target never contacted, and
the next one is tried. Bodies are read with `mintsaga.http_errors.read_bounded` (the size limit
on the wire and decoded, one encoding at most), error bodies with `capped_error_answer`.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from mintsaga.addresses import host_problem
from mintsaga.errors import ErrorKind, ServiceError, redact_url
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
from mintsaga.ipfs.cid import compute_cid, require_cid
from mintsaga.observability.metrics import record_failover
from mintsaga.resilience.breaker import IPFS_BREAKER, BreakerRegistry
from mintsaga.resilience.guard import admit, through

log = logging.getLogger(__name__)

SERVICE = "gateway"
DEFAULT_MAX_BYTES = 64 * 2**20
# A read goes over the gateways at most twice, this long apart (fetch_verified), when every
# failure was about availability (a refused redirect or wrong bytes would come back the same).
PASSES = 2
PASS_PAUSE_S = 0.5
_AVAILABILITY = ("Unavailable", "Unreachable", "RateLimited", "CircuitOpen")


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

        The gateways are asked in order, each skipped while its breaker is open; when none
        served the content and every failure was about availability (an error status, no
        answer, a rate limit, an open circuit), they are asked once more after
        ``PASS_PAUSE_S``, an open gateway too unless an operator forced it open (the Solana
        pool's last resort: our own breakers must not fail a read a gateway could serve).

        Raises:
            ServiceError: the last gateway's classified failure when none served the content
                (``GatewayContentMismatch`` when the bytes did not hash to ``cid``).
        """
        version = require_cid(cid, service=SERVICE)
        last: ServiceError | None = None
        for round_ in range(PASSES):
            if round_:
                await asyncio.sleep(PASS_PAUSE_S)
            retryable = True
            for url in self.urls:
                if last is not None:
                    record_failover(SERVICE)  # the previous gateway failed
                try:
                    fetched = await self._fetch_one(
                        url, cid, version, max_bytes, last_resort=round_ > 0
                    )
                    return fetched, url
                except ServiceError as exc:
                    log.warning(
                        "gateway failed",
                        extra={
                            "endpoint": url,
                            "cid": cid,
                            "code": exc.code,
                            "kind": str(exc.kind),
                        },
                    )
                    last = exc
                    retryable = retryable and exc.code.endswith(_AVAILABILITY)
            if not retryable:
                break
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

    async def _fetch_one(
        self, url: str, cid: str, version: int, max_bytes: int, *, last_resort: bool = False
    ) -> bytes:
        """One gateway's verified answer, through that gateway's breaker: refused at once
        while it is open (the next gateway is asked), unless ``last_resort`` and no operator
        forced it open."""
        breaker = self._breakers.get(redact_url(url), IPFS_BREAKER) if self._breakers else None
        admit(breaker, SERVICE, last_resort=last_resort)
        return await through(
            breaker,
            SERVICE,
            lambda: self._fetch(url, cid, version, max_bytes),
            admitted=True,
            endpoint=redact_url(url),
            operation="fetch",
        )

    async def _fetch(self, url: str, cid: str, version: int, max_bytes: int) -> bytes:
        action = f"fetch {cid}"
        gateway = httpx.URL(url)
        target = httpx.URL(f"{url}/ipfs/{cid}")
        try:
            for _hop in range(MAX_REDIRECTS + 1):
                async with self._http.stream(
                    "GET",
                    target,
                    headers={"Accept-Encoding": ACCEPT_ENCODING},
                    follow_redirects=False,
                ) as response:
                    if response.status_code in REDIRECT_STATUSES:
                        target = _same_origin_redirect(gateway, target, response, url)
                        continue
                    if not response.is_success:
                        capped = await capped_error_answer(response)
                        raise status_error(capped, service=SERVICE, endpoint=url, action=action)
                    try:
                        data = await read_bounded(response, max_bytes)
                    except BodyRefused as exc:
                        raise _mismatch(url, f"{cid}: the gateway's body {exc.reason}") from None
                    break
            else:
                raise _misbehaving(
                    url, f"{cid}: the gateway redirected more than {MAX_REDIRECTS} times"
                )
        except httpx.RequestError as exc:
            reason = bad_location(exc)
            if reason is not None:
                raise _misbehaving(
                    url, f"the gateway redirected to an invalid URL: {reason}"
                ) from exc
            raise transport_error(exc, service=SERVICE, endpoint=url, action=action) from exc
        actual = await compute_cid(data, version)
        if actual != cid:
            raise _mismatch(url, f"asked for {cid}, got {len(data)} bytes hashing to {actual}")
        return data


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return (url.scheme, url.host, url.port or default)


def _same_origin_redirect(
    gateway: httpx.URL, current: httpx.URL, response: httpx.Response, endpoint: str
) -> httpx.URL:
    """Where a gateway's redirect leads, when that is the gateway's own scheme, host and
    port; any other target is refused (never contacted), naming what the address policy
    thinks of it when its host is an address literal."""
    location = response.headers.get("Location", "")
    try:
        target = current.join(location) if location else None
    except httpx.InvalidURL:
        target = None
    if target is None:
        raise _misbehaving(endpoint, f"the gateway redirected to an invalid URL {location[:200]!r}")
    if _origin(target) != _origin(gateway) or target.userinfo:
        shown = str(target.copy_with(userinfo=b"", query=None, fragment=None))[:200]
        problem = host_problem(target.host) if target.host else "it has no host"
        said = f" ({problem})" if problem else ""
        raise _misbehaving(
            endpoint,
            f"the gateway redirected off its host to {shown}{said}; only redirects to "
            f"{gateway.scheme}://{gateway.netloc.decode('ascii')} are followed",
        )
    return target


def _misbehaving(url: str, message: str) -> ServiceError:
    # TRANSIENT, as a wrong body: the next gateway is tried, and this one's breaker counts it.
    return ServiceError(
        message,
        service=SERVICE,
        kind=ErrorKind.TRANSIENT,
        code="GatewayRedirectRefused",
        endpoint=url,
    )


def _mismatch(url: str, message: str) -> ServiceError:
    # TRANSIENT: another gateway, or this one later, may well serve the right bytes.
    return ServiceError(
        message,
        service=SERVICE,
        kind=ErrorKind.TRANSIENT,
        code="GatewayContentMismatch",
        endpoint=url,
    )
