"""Reading content back through IPFS gateways, trusting none of them.

A gateway's bytes count only when they prove the CID asked for. They are asked for in the
Trustless Gateway's verifiable formats (specs.ipfs.tech/http-gateways/trustless-gateway/),
so the proof does not depend on how the uploader chunked the file (`mintsaga.ipfs.car`):

- a raw-codec CID (one block: our metadata, small images) as ``?format=raw`` with
  ``Accept: application/vnd.ipld.raw``, its bytes hashed against the CID's multihash;
- any other CID (a dag-pb file DAG) as ``?format=car`` with
  ``Accept: application/vnd.ipld.car; version=1``, every block hashed against its CID and
  the file reassembled from the CID asked for (the spec: a client "SHOULD include the `format`
  query parameter ... in addition to the `Accept` header"; "A Client MUST verify
  `Content-Type` returned with CAR response before processing the payload").

A gateway that does not serve those formats (the spec lets one answer "400 Bad Request or 406
Not Acceptable" to a variant it does not support; an older one ignores ``format`` and sends
the file with its own content type) is read the old way, for `UNSUPPORTED_MEMORY_S` without
asking again: the deserialized file, whose CID is recomputed locally with our layout (256 KiB
chunks, raw leaves). That proves content we uploaded; content another layout produced (a Kubo
node on the ``unixfs-v1-2025`` profile) then fails as ``GatewayContentMismatch``: configure
gateways with trustless responses (Kubo's and Pinata's dedicated gateways have them).

Gateways as they behave (specs.ipfs.tech/http-gateways/path-gateway/, "Response Status Codes"):
a recursive gateway answers 502 when it found no provider and 504 when it could not fetch the
data in time, both "can be retried and [are] not a permanent failure" and "SHOULD include
`Retry-After`"; 404 means the gateway could not retrieve the content. So within one read
(`fetch_verified`) a 502/503/504, a 429, no answer, an incomplete CAR and a 404 are transient:
that gateway is asked again after its ``Retry-After`` (bounded to `RETRY_AFTER_MAX_S`) or a
backoff, inside the activity attempt's time (`resilience.guard.attempt_time_left`,
heartbeating while waiting), the others meanwhile; what did not fit is raised retryable, with
``retry_after`` (at most `RAISED_RETRY_AFTER_MAX_S`), for the step's retry policy. A 404
stays transient only while the content is young (``pinned_at`` less than `NOT_FOUND_GRACE_S`
ago: it was pinned moments ago and the gateway may not have found a provider yet), then it is
a PERMANENT ``GatewayNotFound``. A 404,
or a 502/504 that carries ``Retry-After``, is the gateway answering about the content, not
failing: its breaker counts a success (``endpoint_healthy``).

The dedicated gateway (IPFS_DEDICATED_GATEWAY: the team's own, a Pinata dedicated gateway or a
private Kubo gateway) is read first; the public ones after it. `check_dedicated` and
`report_public` split the post-mint check: the first blocks (paced), the second asks each
public gateway once and only reports.

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
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
    parse_retry_after,
    read_bounded,
    status_error,
    transport_error,
)
from mintsaga.ipfs.car import (
    MAX_BLOCK_BYTES,
    RAW,
    BlockError,
    Cid,
    IncompleteDag,
    car_allowance,
    file_from_car,
    file_from_raw_block,
)
from mintsaga.ipfs.cid import compute_cid, require_cid
from mintsaga.observability.metrics import record_failover, record_gateway_check
from mintsaga.resilience.breaker import IPFS_BREAKER, BreakerRegistry
from mintsaga.resilience.guard import admit, attempt_time_left, keep_alive, through

log = logging.getLogger(__name__)

SERVICE = "gateway"
DEFAULT_MAX_BYTES = 64 * 2**20
# Outside an activity (no attempt deadline) a read still goes over the gateways twice, this
# long apart, when every failure was about availability.
PASS_PAUSE_S = 0.5
BACKOFF_CAP_S = 8.0
RETRY_AFTER_MAX_S = 30.0  # a longer Retry-After is left to the step's retry policy
# ...which waits at most this long for it: its next attempt asks the dedicated gateway first,
# and a public gateway's rate limit (an hour's Retry-After) must not hold a mint that long.
RAISED_RETRY_AFTER_MAX_S = 60.0
WAIT_MARGIN_S = 3.0  # kept free at the end of an attempt: the last answer and the return
NOT_FOUND_GRACE_S = 600.0  # a 404 for content pinned less than this long ago is transient
# A recursive gateway still finding content holds the request up to its retrieval timeout and
# then answers 504 (Kubo's Gateway.RetrievalTimeout, "Default: `30s`": "Returns 504 Gateway
# Timeout if the gateway cannot start writing within this duration", docs/config.md): a read
# waits a little longer, so the gateway's answer (and its Retry-After) arrives, not our timeout.
GATEWAY_TIMEOUT = httpx.Timeout(35.0, connect=5.0)
UNSUPPORTED_MEMORY_S = 600.0  # a gateway without trustless formats is not asked for them
PUBLIC_CHECK_TIMEOUT_S = 15.0
INLINE_VERIFY_BYTES = 256 * 1024  # larger CARs are verified in a thread
RAW_TYPE = "application/vnd.ipld.raw"
CAR_TYPE = "application/vnd.ipld.car"
# Availability: asked again later in the same read. Anything else (wrong bytes, a refused
# redirect, a 4xx) would come back the same.
_PACED = (
    "Unavailable",
    "Unreachable",
    "RateLimited",
    "CircuitOpen",
    "NotFound",
    "IncompleteContent",
)


@dataclass(frozen=True)
class Served:
    """A gateway served the verified content of a CID: which, how many bytes, and the bytes
    when the caller kept them."""

    url: str
    size: int
    data: bytes | None = None
    trustless: bool = True


class _Unsupported(Exception):
    """The gateway does not answer in the trustless format asked for."""


class GatewayReader:
    """Fetch content by CID from gateways in priority order (the dedicated one first),
    verifying every answer."""

    def __init__(
        self,
        urls: Sequence[str],
        http: httpx.AsyncClient,
        *,
        breakers: BreakerRegistry | None = None,
        dedicated: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not urls and not dedicated:
            raise ValueError("GatewayReader needs at least one gateway URL (IPFS_GATEWAYS)")
        self.dedicated = dedicated.rstrip("/") if dedicated else None
        public = [url.rstrip("/") for url in urls]
        self.public = [url for url in dict.fromkeys(public) if url != self.dedicated]
        self.urls = ([self.dedicated] if self.dedicated else []) + self.public
        self._http = http
        self._breakers = breakers
        self._clock = clock
        self._wall_clock = wall_clock
        self._unsupported_until: dict[str, float] = {}

    def __repr__(self) -> str:
        # Redacted: a gateway URL may carry its access key (IPFS_DEDICATED_GATEWAY).
        urls = [redact_url(url) for url in self.urls]
        dedicated = redact_url(self.dedicated) if self.dedicated else None
        return f"GatewayReader(urls={urls!r}, dedicated={dedicated!r})"

    # -- reads ---------------------------------------------------------------------------------

    async def fetch_verified(
        self,
        cid: str,
        *,
        max_bytes: int,
        pinned_at: float | None = None,
        budget_s: float | None = None,
    ) -> tuple[bytes, str]:
        """The content of ``cid`` and the gateway URL that served it (see `read`)."""
        served = await self.read(
            cid, max_bytes=max_bytes, keep=True, pinned_at=pinned_at, budget_s=budget_s
        )
        assert served.data is not None
        return served.data, served.url

    async def read(
        self,
        cid: str,
        *,
        max_bytes: int,
        keep: bool = True,
        urls: Sequence[str] | None = None,
        pinned_at: float | None = None,
        budget_s: float | None = None,
    ) -> Served:
        """The verified content of ``cid`` from the first of ``urls`` (default: every gateway,
        the dedicated one first) that serves it, each gateway asked again after a transient
        failure (the module docstring) while the time allows.

        Args:
            keep: keep the bytes (``Served.data``); else only check them (a CAR's file is
                then never reassembled).
            pinned_at: Unix time the content was pinned (or a time after it); a 404 is
                transient until `NOT_FOUND_GRACE_S` after it. None: transient.
            budget_s: how long the read may wait between tries; default: the activity
                attempt's time left less `WAIT_MARGIN_S` (outside an activity, one more pass
                after `PASS_PAUSE_S`).

        Raises:
            ServiceError: the last classified failure when no gateway served the content
                (``GatewayContentMismatch`` when its bytes did not prove ``cid``).
        """
        version = require_cid(cid, service=SERVICE)
        order = list(urls) if urls is not None else self.urls
        if not order:
            raise ValueError("no gateway to read from")
        started = self._clock()
        if budget_s is None:
            budget_s = max(PASS_PAUSE_S + 0.1, attempt_time_left() - WAIT_MARGIN_S)
        deadline = started + budget_s
        next_try = dict.fromkeys(order, started)
        tries = dict.fromkeys(order, 0)
        last: ServiceError | None = None
        failed: str | None = None  # the gateway that failed last
        while True:
            for url in order:
                if next_try[url] > self._clock():
                    continue
                if failed is not None and failed != url:
                    record_failover(SERVICE)  # moved on from a failed gateway to another
                try:
                    return await self._fetch_one(
                        url, cid, version, max_bytes, keep=keep, last_resort=tries[url] > 0
                    )
                except ServiceError as exc:
                    exc = self._judge_not_found(exc, pinned_at)
                    log.warning(
                        "gateway failed",
                        extra={
                            "endpoint": redact_url(url),
                            "cid": cid,
                            "code": exc.code,
                            "kind": str(exc.kind),
                        },
                    )
                    last, failed = exc, url
                    tries[url] += 1
                    if exc.retryable and exc.code.endswith(_PACED):
                        next_try[url] = self._clock() + _pause(exc, tries[url])
                    else:
                        next_try[url] = math.inf
            assert last is not None
            wake = min(next_try.values())
            if wake == math.inf or wake > deadline:
                if wake != math.inf and last.retry_after is None:
                    last.retry_after = max(0.0, wake - self._clock())
                if last.retry_after is not None:
                    last.retry_after = min(last.retry_after, RAISED_RETRY_AFTER_MAX_S)
                raise last
            await _sleep_until(wake, self._clock)

    async def check_dedicated(
        self, cid: str, *, max_bytes: int, pinned_at: float | None = None
    ) -> Served:
        """The blocking post-mint check: the dedicated gateway serves ``cid``'s verified
        content (paced, as `read`); without a dedicated gateway, any configured one."""
        urls = [self.dedicated] if self.dedicated else self.urls
        return await self.read(cid, max_bytes=max_bytes, keep=False, urls=urls, pinned_at=pinned_at)

    async def report_public(
        self, cid: str, *, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> dict[str, bool]:
        """Whether each public gateway serves ``cid``'s verified content now: each asked once,
        at most `PUBLIC_CHECK_TIMEOUT_S`, never waiting on its rate limit. Logged and counted
        (``mintsaga_gateway_checks_total``); never raises."""
        version = require_cid(cid, service=SERVICE)

        async def one(url: str) -> bool:
            try:
                async with asyncio.timeout(PUBLIC_CHECK_TIMEOUT_S):
                    await self._fetch_one(url, cid, version, max_bytes, keep=False)
            except ServiceError as exc:
                log.info(
                    "public gateway check failed",
                    extra={"endpoint": redact_url(url), "code": exc.code},
                )
                record_gateway_check(redact_url(url), served=False)
                return False
            except TimeoutError:
                log.info("public gateway check timed out", extra={"endpoint": redact_url(url)})
                record_gateway_check(redact_url(url), served=False)
                return False
            record_gateway_check(redact_url(url), served=True)
            return True

        results = await asyncio.gather(*(one(url) for url in self.public))
        return dict(zip(self.public, results, strict=True))

    async def check_all(self, cid: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, bool]:
        """For each gateway, the dedicated one included, whether it serves the verified
        content of ``cid`` now (one request each)."""
        version = require_cid(cid, service=SERVICE)

        async def one(url: str) -> bool:
            try:
                await self._fetch_one(url, cid, version, max_bytes, keep=False)
            except ServiceError as exc:
                log.info(
                    "gateway check failed", extra={"endpoint": redact_url(url), "code": exc.code}
                )
                return False
            return True

        results = await asyncio.gather(*(one(url) for url in self.urls))
        return dict(zip(self.urls, results, strict=True))

    def _judge_not_found(self, exc: ServiceError, pinned_at: float | None) -> ServiceError:
        if exc.code != "GatewayNotFound" or pinned_at is None:
            return exc
        age = self._wall_clock() - pinned_at
        if age < NOT_FOUND_GRACE_S:
            return exc
        return ServiceError(
            f"{exc.message}; pinned {age:.0f} s ago, longer than {NOT_FOUND_GRACE_S:.0f} s",
            service=SERVICE,
            kind=ErrorKind.PERMANENT,
            code="GatewayNotFound",
            endpoint=exc.endpoint,
            endpoint_healthy=True,
        )

    # -- one gateway ---------------------------------------------------------------------------

    async def _fetch_one(
        self,
        url: str,
        cid: str,
        version: int,
        max_bytes: int,
        *,
        keep: bool,
        last_resort: bool = False,
    ) -> Served:
        """One gateway's verified answer, through that gateway's breaker: refused at once
        while it is open (the next gateway is asked), unless ``last_resort`` and no operator
        forced it open."""
        breaker = self._breakers.get(redact_url(url), IPFS_BREAKER) if self._breakers else None
        admit(breaker, SERVICE, last_resort=last_resort)
        return await through(
            breaker,
            SERVICE,
            lambda: self._fetch(url, cid, version, max_bytes, keep),
            admitted=True,
            endpoint=redact_url(url),
            operation="fetch",
        )

    async def _fetch(self, url: str, cid: str, version: int, max_bytes: int, keep: bool) -> Served:
        if self._unsupported_until.get(url, 0.0) <= self._clock():
            try:
                return await self._fetch_trustless(url, cid, max_bytes, keep)
            except _Unsupported as exc:
                log.info(
                    "gateway without trustless responses: reading the file and its local CID",
                    extra={"endpoint": redact_url(url), "reason": str(exc)},
                )
                self._unsupported_until[url] = self._clock() + UNSUPPORTED_MEMORY_S
        data = await self._fetch_file(url, cid, max_bytes)
        actual = await compute_cid(data, version)
        if actual != cid:
            raise _mismatch(
                url,
                f"asked for {cid}, got {len(data)} bytes hashing to {actual} with our layout "
                "(this gateway serves no trustless format to check another layout with)",
            )
        return Served(url, len(data), data if keep else None, trustless=False)

    async def _fetch_trustless(self, url: str, cid: str, max_bytes: int, keep: bool) -> Served:
        try:
            root = Cid.parse(cid)
        except BlockError as exc:
            raise ServiceError(
                str(exc), service=SERVICE, kind=ErrorKind.PERMANENT, code="InvalidCid"
            ) from None
        raw = root.codec == RAW
        media = RAW_TYPE if raw else CAR_TYPE
        limit = min(max_bytes, MAX_BLOCK_BYTES) if raw else car_allowance(max_bytes)
        content_type, body = await self._get(
            url,
            f"/ipfs/{cid}",
            cid,
            max_bytes=limit,
            accept=f"{media}; version=1" if not raw else media,
            fmt="raw" if raw else "car",
        )
        _require_format(content_type, media)
        try:
            if raw:
                data: bytes | None = file_from_raw_block(body, root, max_bytes=max_bytes)
                size = len(body)
            elif len(body) <= INLINE_VERIFY_BYTES:
                data, size = file_from_car(body, root, max_bytes=max_bytes, keep=keep)
            else:
                data, size = await asyncio.to_thread(
                    file_from_car, body, root, max_bytes=max_bytes, keep=keep
                )
        except IncompleteDag as exc:
            raise _incomplete(url, f"{cid}: {exc}") from None
        except BlockError as exc:
            raise _mismatch(url, f"{cid}: {exc}") from None
        return Served(url, size, data if keep else None)

    async def _fetch_file(self, url: str, cid: str, max_bytes: int) -> bytes:
        _, body = await self._get(url, f"/ipfs/{cid}", cid, max_bytes=max_bytes, accept=None)
        return body

    async def _get(
        self,
        url: str,
        path: str,
        cid: str,
        *,
        max_bytes: int,
        accept: str | None,
        fmt: str | None = None,
    ) -> tuple[str, bytes]:
        """(Content-Type, body) of a 2xx answer, redirects followed on the gateway's own
        origin only. A trustless request (``accept``) the gateway refuses as a client error it
        would not make for a valid CID (400, 406, 501) raises `_Unsupported`. The gateway URL's
        own query (a gateway key, say) is kept on every request."""
        action = f"fetch {cid}"
        gateway = httpx.URL(url)
        target = gateway.copy_with(path=gateway.path.rstrip("/") + path)
        if fmt is not None:
            target = target.copy_add_param("format", fmt)
        headers = {"Accept-Encoding": ACCEPT_ENCODING}
        if accept:
            headers["Accept"] = accept
        try:
            for _hop in range(MAX_REDIRECTS + 1):
                async with self._http.stream(
                    "GET",
                    target,
                    headers=headers,
                    follow_redirects=False,
                    timeout=GATEWAY_TIMEOUT,
                ) as response:
                    if response.status_code in REDIRECT_STATUSES:
                        target = _same_origin_redirect(gateway, target, response, url)
                        continue
                    if not response.is_success:
                        status = response.status_code
                        if accept and status in (400, 406, 501):
                            raise _Unsupported(f"HTTP {status} to Accept: {accept}")
                        capped = await capped_error_answer(response)
                        raise _status_error(capped, url, action)
                    try:
                        data = await read_bounded(response, max_bytes)
                    except BodyRefused as exc:
                        raise _mismatch(url, f"{cid}: the gateway's body {exc.reason}") from None
                    return response.headers.get("Content-Type", ""), data
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


def _require_format(content_type: str, media: str) -> None:
    """`_Unsupported` unless the answer is in the trustless format asked for (a gateway that
    ignores ``format`` sends the file with the file's own type)."""
    parts = [p.strip().lower() for p in content_type.split(";")]
    if parts[0] != media:
        raise _Unsupported(f"answered Content-Type {content_type[:100]!r} to {media}")
    params = {}
    for part in parts[1:]:
        key, _, value = part.partition("=")
        params[key.strip()] = value.strip().strip('"')
    if media == CAR_TYPE and params.get("version", "1") != "1":
        raise _Unsupported(f"answered CAR version {params['version']!r}, not 1")


def _pause(exc: ServiceError, tries: int) -> float:
    """How long a gateway rests after its ``tries``-th transient failure: its Retry-After
    (bounded), else a backoff from `PASS_PAUSE_S`. Our own breaker's refusal waits no longer
    than a pass: the next try asks that gateway as the last resort."""
    if exc.code.endswith("CircuitOpen"):
        return PASS_PAUSE_S
    if exc.retry_after is not None:
        return min(max(exc.retry_after, PASS_PAUSE_S), RETRY_AFTER_MAX_S)
    return min(PASS_PAUSE_S * 2.0 ** (tries - 1), BACKOFF_CAP_S)


async def _sleep_until(wake: float, clock: Callable[[], float]) -> None:
    while (left := wake - clock()) > 0:
        keep_alive()  # a heartbeat inside an activity
        await asyncio.sleep(min(left, 2.0))


def _status_error(response: httpx.Response, url: str, action: str) -> ServiceError:
    """A gateway's error status, as the Path Gateway spec defines them (module docstring)."""
    status = response.status_code
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status == 404:
        return ServiceError(
            f"{action}: HTTP 404, the gateway could not retrieve it (yet)",
            service=SERVICE,
            kind=ErrorKind.TRANSIENT,
            code="GatewayNotFound",
            endpoint=url,
            retry_after=retry_after,
            endpoint_healthy=True,
        )
    error = status_error(response, service=SERVICE, endpoint=url, action=action)
    if status in (502, 503, 504) and retry_after is not None:
        # A recursive gateway still looking for the content: it answered, as the spec says.
        error.retry_after = retry_after
        error.endpoint_healthy = True
    return error


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


def _incomplete(url: str, message: str) -> ServiceError:
    # Every block it sent verified, but not all came (the spec: a gateway that meets a missing
    # child block mid-stream ends the CAR early): asked again later, like a 504.
    return ServiceError(
        message,
        service=SERVICE,
        kind=ErrorKind.TRANSIENT,
        code="GatewayIncompleteContent",
        endpoint=url,
    )
