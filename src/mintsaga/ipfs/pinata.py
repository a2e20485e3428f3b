"""Pinata's pinning API: the primary IPFS provider.

One request per call and no retries: the caller (a Temporal activity) owns the retry policy.
The JWT goes into the Authorization header and nowhere else: not in ``repr``, not in an
error message (bodies are scrubbed of it), not in a log line.
"""

from __future__ import annotations

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
    response_detail,
    status_error,
    transport_error,
)
from mintsaga.ipfs.cid import DEFAULT_CID_VERSION, require_cid
from mintsaga.resilience.breaker import IPFS_BREAKER, BreakerRegistry
from mintsaga.resilience.guard import admit, record_http

log = logging.getLogger(__name__)

SERVICE = "pinata"
JWT_SETTING = "PINATA_JWT"
_NOT_PINNED_REASON = "CURRENT_USER_HAS_NOT_PINNED_CID"
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what a bearer token can hold


class PinataClient:
    """Pin, unpin and look up files on Pinata (or anything speaking its API)."""

    def __init__(
        self,
        api_url: str,
        jwt: str,
        http: httpx.AsyncClient,
        *,
        breakers: BreakerRegistry | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.breaker = breakers.get(redact_url(self.api_url), IPFS_BREAKER) if breakers else None
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
        """Raise unless Pinata answers and accepts our JWT (the pre-mint health check).
        ``last_resort``: asked although its breaker opened by itself (Kubo failed)."""
        await self._call(
            "GET",
            "/data/testAuthentication",
            action="test authentication",
            last_resort=last_resort,
        )

    async def pin_file(
        self,
        data: bytes,
        *,
        filename: str,
        name: str,
        keyvalues: dict[str, str],
        cid_version: int = DEFAULT_CID_VERSION,
        last_resort: bool = False,
    ) -> str:
        """Upload and pin ``data``; returns the CID Pinata reports (the caller checks it).
        ``last_resort``: asked although its breaker opened by itself (the backup failed)."""
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
                files={"file": (filename, file, "application/octet-stream")},
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
        if response.status_code in (400, 404) and _NOT_PINNED_REASON in response.text:
            return False
        raise self._status_error(response, "unpin")

    async def is_pinned(self, cid: str) -> bool:
        """Whether our account holds a live pin on exactly ``cid``."""
        require_cid(cid, service=SERVICE)
        response = await self._call(
            "GET",
            "/data/pinList",
            action="list pins",
            params={"hashContains": cid, "status": "pinned", "pageLimit": 10},
        )
        body = json_body(response, service=SERVICE, endpoint=self.api_url)
        rows = body.get("rows") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise bad_answer(
                "pinList answered without rows", service=SERVICE, endpoint=self.api_url
            )
        # hashContains is a substring match: insist on the exact CID.
        return any(isinstance(r, dict) and r.get("ipfs_pin_hash") == cid for r in rows)

    # -- plumbing ------------------------------------------------------------------------

    async def _send(
        self, method: str, path: str, *, action: str, last_resort: bool = False, **kwargs: Any
    ) -> httpx.Response:
        admit(self.breaker, SERVICE, last_resort=last_resort)
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
            raise transport_error(
                exc, service=SERVICE, endpoint=self.api_url, action=action, scrub=self._scrub
            ) from exc
        record_http(
            self.breaker,
            response.status_code,
            time.monotonic() - started,
            service=SERVICE,
            endpoint=self.api_url,
            operation=action,
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
