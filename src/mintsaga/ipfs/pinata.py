"""Pinata's pinning API: the primary IPFS provider.

One request per call and no retries: the caller (a Temporal activity) owns the retry policy.
The JWT goes into the Authorization header and nowhere else: not in ``repr``, not in an
error message (bodies are scrubbed of it), not in a log line.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time
from typing import Any

import httpx

from mintsaga.errors import ErrorKind, ServiceError, redact_url
from mintsaga.http_errors import (
    bad_answer,
    json_body,
    parse_retry_after,
    response_detail,
    status_error,
    transport_error,
)
from mintsaga.ipfs.cid import DEFAULT_CID_VERSION, require_cid
from mintsaga.ipfs.pinata_data import (
    OUTSIDE_ATTEMPT_WAIT_S,
    DataBudget,
    is_data_route,
    shared_budget,
)
from mintsaga.resilience.breaker import IPFS_BREAKER, BreakerRegistry, BreakerState
from mintsaga.resilience.guard import admit, attempt_time_left, record_http

log = logging.getLogger(__name__)

SERVICE = "pinata"
JWT_SETTING = "PINATA_JWT"
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what a bearer token can hold
# A pre-mint check trusts an answer of Pinata this recent (any call: an upload, an unpin) and
# asks testAuthentication only when it has heard nothing newer (activities/ipfs.py).
FRESH_ANSWER_S = 60.0
# A /data/* call inside an attempt gives up waiting for the budget this long before its end.
DATA_WAIT_MARGIN_S = 1.0


def not_pinned(status: int, body: str) -> bool:
    """Whether an unpin's error answer says "this account holds no pin on that CID".

    Pinata documents no error answer for unpin (https://docs.pinata.cloud/api-reference/
    endpoint/ipfs/unpin-file). Reported forms: 400 ``{"error": {"reason":
    "CURRENT_USER_HAS_NOT_PINNED_CID", "details": "The current user has not pinned the cid:
    ..."}}`` (the common one; some answers add a ``message``), and 400 ``{"error": "Current
    user has not pinned hash: Qm..."}`` (github.com/dappnode/DAppNodeSDK/issues/136, 2021);
    clients in the wild also take a 404 for it. Accepted: a 400 or 404 whose reason, details,
    message or plain error text says the user has not pinned it (case and separators aside),
    never a 401/403 or a 5xx, whatever their text."""
    if status not in (400, 404):
        return False
    try:
        document: Any = json.loads(body)
    except ValueError:
        document = body
    texts: list[str] = []
    error = document.get("error") if isinstance(document, dict) else document
    if isinstance(error, dict):
        texts += [str(error.get(key, "")) for key in ("reason", "details", "message")]
    elif isinstance(error, str):
        texts.append(error)
    if isinstance(document, dict):
        texts += [str(document.get(key, "")) for key in ("reason", "details", "message")]
    words = [re.sub(r"[^a-z]+", " ", text.lower()).strip() for text in texts]
    return any("has not pinned" in text for text in words)


class PinataClient:
    """Pin, unpin and look up files on Pinata (or anything speaking its API)."""

    def __init__(
        self,
        api_url: str,
        jwt: str,
        http: httpx.AsyncClient,
        *,
        breakers: BreakerRegistry | None = None,
        data_budget: DataBudget | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.breaker = breakers.get(redact_url(self.api_url), IPFS_BREAKER) if breakers else None
        # /data/* calls (testAuthentication, pinList): this process's budget (pinata_data.py).
        self.data_budget = data_budget or shared_budget(self.api_url)
        # Pinata's last answer to any call: (monotonic time, the failure or None).
        self._last_answer: tuple[float, ServiceError | None] | None = None
        self._checking: asyncio.Future[None] | None = None  # the reachability call in flight
        jwt = jwt.strip()  # a trailing newline from a secrets file is common
        if not _HEADER_SAFE.fullmatch(jwt):
            # Checked here because httpx/h11 would quote the bad header value in its error.
            raise ServiceError(
                f"the {JWT_SETTING} setting is empty or holds characters a bearer token cannot",
                service=SERVICE,
                kind=ErrorKind.NEEDS_OPERATOR,
                code="PinataJwtInvalid",
                endpoint=self.api_url,
            )
        self._jwt = jwt
        self._http = http

    def __repr__(self) -> str:
        return f"PinataClient(api_url={self.api_url!r})"

    async def test_authentication(self, *, last_resort: bool = False) -> None:
        """Raise unless Pinata answers and accepts our JWT (worker start, the health schedule).
        ``last_resort``: asked although its breaker opened by itself (Kubo failed). A ``/data/``
        call: paced by this worker's ``data_budget``."""
        await self._call(
            "GET",
            "/data/testAuthentication",
            action="test authentication",
            last_resort=last_resort,
        )

    async def reachable(self, *, fresh_s: float = FRESH_ANSWER_S) -> None:
        """Raise unless Pinata is believed able to take an upload (the pre-mint check), asking
        it as little as possible: Pinata's own answer to any of this client's calls in the last
        ``fresh_s`` (an upload, an unpin) decides; with none that recent (or a breaker not
        closed, or a refused JWT) one ``testAuthentication`` asks, shared by every check in
        flight."""
        last = self._last_answer
        closed = self.breaker is None or self.breaker.state is BreakerState.CLOSED
        # A refused JWT is asked again rather than trusted: one 401 must not hold every mint of
        # the next minute for an operator (while refused, uploads cannot go to Pinata anyway).
        refused = last is not None and last[1] is not None and not last[1].retryable
        if closed and last is not None and not refused and time.monotonic() - last[0] <= fresh_s:
            if last[1] is not None:
                raise last[1].with_traceback(None)  # raised again later: no growing traceback
            return
        if self._checking is not None:
            await asyncio.shield(self._checking)
            return
        self._checking = asyncio.get_running_loop().create_future()
        try:
            await self.test_authentication()
        except BaseException as exc:
            # The check that asked was cancelled (its activity was): the others waiting on it
            # were not, and get a retryable answer rather than a cancellation of their own.
            shared = exc if isinstance(exc, Exception) else _check_abandoned(self.api_url)
            self._checking.set_exception(shared)
            self._checking.exception()  # retrieved: no "never retrieved" warning if none waits
            raise
        else:
            self._checking.set_result(None)
        finally:
            self._checking = None

    async def pin_file(
        self,
        data: bytes,
        *,
        filename: str,
        name: str,
        keyvalues: dict[str, str],
        cid_version: int = DEFAULT_CID_VERSION,
        content_type: str = "application/octet-stream",
        last_resort: bool = False,
    ) -> str:
        """Upload and pin ``data`` as a file of ``content_type`` (the form's file part says it:
        an image's own type, ``application/json`` for metadata); returns the CID Pinata reports
        (the caller checks it). ``last_resort``: asked although its breaker opened by itself
        (the backup failed)."""
        form = {
            "pinataMetadata": json.dumps({"name": name, "keyvalues": keyvalues}),
            "pinataOptions": json.dumps({"cidVersion": cid_version}),
        }
        # From a stream, closed after the call: a response keeps its request (httpx's response
        # and stream refer to each other, so until the cycle collector runs), and with it a
        # bytes body, an image's size for every upload (docs/deploy.md, "Memory").
        with io.BytesIO(data) as file:
            response = await self._call(
                "POST",
                "/pinning/pinFileToIPFS",
                action="pin a file",
                files={"file": (filename, file, content_type)},
                data=form,
                last_resort=last_resort,
            )
        body = json_body(response, service=SERVICE, endpoint=self.api_url)
        cid = body.get("IpfsHash") if isinstance(body, dict) else None
        if not isinstance(cid, str):
            raise bad_answer(
                "pinFileToIPFS answered without an IpfsHash", service=SERVICE, endpoint=self.api_url
            )
        log.info(
            "pinata pinned",
            extra={"endpoint": self.api_url, "cid": cid, "duplicate": body.get("isDuplicate")},
        )
        return cid

    async def unpin(self, cid: str) -> bool:
        """Unpin ``cid``; False when it was not pinned, so compensation can run twice."""
        require_cid(cid, service=SERVICE)
        response = await self._send("DELETE", f"/pinning/unpin/{cid}", action="unpin")
        if response.is_success:
            log.info("pinata unpinned", extra={"endpoint": self.api_url, "cid": cid})
            return True
        if not_pinned(response.status_code, response.text):
            return False
        raise self._status_error(response, "unpin")

    async def is_pinned(self, cid: str) -> bool:
        """Whether our account holds a live pin on exactly ``cid``."""
        require_cid(cid, service=SERVICE)
        response = await self._call(
            "GET",
            "/data/pinList",
            action="list pins",
            # `cid`: the current reference's filter (docs.pinata.cloud/api-reference/endpoint/
            # list-files; `hashContains` was the older guide's); it does not say whether it
            # matches exactly, so the rows are checked below.
            params={"cid": cid, "status": "pinned", "pageLimit": 10},
        )
        body = json_body(response, service=SERVICE, endpoint=self.api_url)
        rows = body.get("rows") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise bad_answer(
                "pinList answered without rows", service=SERVICE, endpoint=self.api_url
            )
        # Insist on the exact CID (the older filter matched substrings).
        return any(isinstance(r, dict) and r.get("ipfs_pin_hash") == cid for r in rows)

    # -- plumbing ------------------------------------------------------------------------

    async def _send(
        self, method: str, path: str, *, action: str, last_resort: bool = False, **kwargs: Any
    ) -> httpx.Response:
        admit(self.breaker, SERVICE, last_resort=last_resort)
        data = is_data_route(path)
        if data:
            left = attempt_time_left()
            most = left - DATA_WAIT_MARGIN_S if left > 0 else OUTSIDE_ATTEMPT_WAIT_S
            await self.data_budget.acquire(max(0.0, most), endpoint=self.api_url)
        started = time.monotonic()
        try:
            response = await self._http.request(
                method,
                self.api_url + path,
                headers={"Authorization": f"Bearer {self._jwt}"},
                **kwargs,
            )
        except httpx.RequestError as exc:
            record_http(
                self.breaker,
                None,
                time.monotonic() - started,
                service=SERVICE,
                endpoint=self.api_url,
                operation=action,
            )
            failure = transport_error(
                exc, service=SERVICE, endpoint=self.api_url, action=action, scrub=self._scrub
            )
            self._last_answer = (time.monotonic(), failure)
            raise failure from exc
        record_http(
            self.breaker,
            response.status_code,
            time.monotonic() - started,
            service=SERVICE,
            endpoint=self.api_url,
            operation=action,
        )
        status = response.status_code
        if data and status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            self.data_budget.hold(retry_after if retry_after is not None else 60.0)
        # What the answer says about Pinata taking uploads: any answer past authentication
        # that is not about availability (2xx, a 400/404 about the request) says it would.
        healthy = status < 500 and status not in (401, 403, 408, 429)
        self._last_answer = (
            time.monotonic(),
            None if healthy else self._status_error(response, action),
        )
        return response

    async def _call(self, method: str, path: str, *, action: str, **kwargs: Any) -> httpx.Response:
        response = await self._send(method, path, action=action, **kwargs)
        if not response.is_success:
            raise self._status_error(response, action)
        return response

    def _status_error(self, response: httpx.Response, action: str) -> ServiceError:
        return status_error(
            response,
            service=SERVICE,
            endpoint=self.api_url,
            action=action,
            credential_setting=JWT_SETTING,
            detail=self._scrub(response_detail(response)),
        )

    def _scrub(self, text: str) -> str:
        return text.replace(self._jwt, "[PINATA_JWT]")


def _check_abandoned(endpoint: str) -> ServiceError:
    return ServiceError(
        "the shared Pinata check was abandoned (the step that asked was cancelled)",
        service=SERVICE,
        kind=ErrorKind.TRANSIENT,
        code="PinataCheckAbandoned",
        endpoint=endpoint,
    )
