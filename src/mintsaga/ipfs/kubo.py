"""Kubo's RPC API (``/api/v0``, POST only): the backup IPFS provider.

Kubo reports command failures as HTTP 500 with ``{"Message", "Code": 0, "Type": "error"}``;
the two that mean "not pinned" are answers, not failures, and are read as such.

Every ``add`` names the import parameters that decide the CID (``import_params``), so the
node's own ``Import.*`` config cannot change it: Kubo's docs/config.md "Import": "Note that
using CLI flags will override the options defined here", and core/commands/add.go falls back
to each ``Import`` key only when its flag is absent. The values are the layout
``mintsaga.ipfs.cid`` computes (aleph-cid: Kubo's CIDv1 defaults before the ``unixfs-v1-2025``
profile): ``cid-version=1``, ``raw-leaves=true`` (explicit: Kubo turns raw leaves on for CIDv1
only when neither the flag nor ``Import.UnixFSRawLeaves`` says otherwise, and the
``legacy-cid-v0`` profile sets it false), ``chunker=size-262144``, ``max-file-links=174``
(the flag exists since Kubo 0.35, docs/changelogs/v0.35.md), ``hash=sha2-256`` and
``trickle=false`` (``Import.UnixFSDAGLayout``).
"""

from __future__ import annotations

import io
import json
import logging
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

SERVICE = "kubo"
CHUNKER = "size-262144"  # aleph-cid's (and Kubo's historical) fixed 256 KiB chunks
MAX_FILE_LINKS = 174  # aleph-cid's balanced-layout fan-out (Kubo's historical default)
HASH = "sha2-256"


def import_params(cid_version: int = DEFAULT_CID_VERSION) -> dict[str, str]:
    """The ``add`` flags that make Kubo build ``mintsaga.ipfs.cid``'s layout, whatever the
    node's ``Import`` config says (module docstring)."""
    return {
        "cid-version": str(cid_version),
        "raw-leaves": "true" if cid_version == 1 else "false",
        "chunker": CHUNKER,
        "max-file-links": str(MAX_FILE_LINKS),
        "hash": HASH,
        "trickle": "false",
    }


class KuboClient:
    """Add, unpin and look up pins on a Kubo node."""

    def __init__(
        self, api_url: str, http: httpx.AsyncClient, *, breakers: BreakerRegistry | None = None
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._http = http
        self.breaker = breakers.get(redact_url(self.api_url), IPFS_BREAKER) if breakers else None

    def __repr__(self) -> str:
        return f"KuboClient(api_url={self.api_url!r})"

    async def version(self, *, last_resort: bool = False) -> str:
        """Kubo's version string (the pre-mint health check). ``last_resort``: asked although
        its breaker opened by itself (Pinata failed)."""
        response = await self._call("version", action="read the version", last_resort=last_resort)
        body = json_body(response, service=SERVICE, endpoint=self.api_url)
        version = body.get("Version") if isinstance(body, dict) else None
        if not isinstance(version, str):
            raise bad_answer(
                "version answered without a Version", service=SERVICE, endpoint=self.api_url
            )
        return version

    async def add(
        self,
        data: bytes,
        *,
        filename: str,
        cid_version: int = DEFAULT_CID_VERSION,
        pin: bool = True,
        only_hash: bool = False,
        last_resort: bool = False,
    ) -> str:
        """Add (and by default pin) ``data`` as one file; returns Kubo's CID for it.

        With ``import_params`` (module docstring), so the CID is ``mintsaga.ipfs.cid``'s.
        ``only_hash``: compute the CID only, store nothing. ``last_resort``: asked although its
        breaker opened by itself (Pinata failed).
        """
        # From a stream, closed after the call: a response keeps its request (httpx's response
        # and stream refer to each other, so until the cycle collector runs), and with it a
        # bytes body, an image's size for every upload (docs/deploy.md, "Memory").
        with io.BytesIO(data) as file:
            response = await self._call(
                "add",
                action="add a file",
                params={
                    **import_params(cid_version),
                    "pin": "true" if pin and not only_hash else "false",
                    **({"only-hash": "true"} if only_hash else {}),
                },
                files={"file": (filename, file, "application/octet-stream")},
                last_resort=last_resort,
            )
        cid = None
        # Newline-delimited JSON, one object per added entry; the file is the last one.
        for line in response.text.splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("Hash"), str):
                cid = entry["Hash"]
        if cid is None:
            raise bad_answer("add answered without a Hash", service=SERVICE, endpoint=self.api_url)
        log.info("kubo added", extra={"endpoint": self.api_url, "cid": cid, "pinned": pin})
        return str(cid)

    async def import_config(self) -> dict[str, Any]:
        """The node's ``Import`` config section (``ipfs config Import``: ``{"Key", "Value"}``;
        a key left at its default is ``null``)."""
        response = await self._call(
            "config", action="read the Import config", params={"arg": "Import"}
        )
        body = json_body(response, service=SERVICE, endpoint=self.api_url)
        value = body.get("Value") if isinstance(body, dict) else None
        if not isinstance(value, dict):
            raise bad_answer(
                "config Import answered without a Value object",
                service=SERVICE,
                endpoint=self.api_url,
            )
        return value

    async def pin_rm(self, cid: str) -> bool:
        """Remove the recursive pin on ``cid``; False when it was not pinned (idempotent)."""
        require_cid(cid, service=SERVICE)
        response = await self._send("pin/rm", action="unpin", params={"arg": cid})
        if response.is_success:
            log.info("kubo unpinned", extra={"endpoint": self.api_url, "cid": cid})
            return True
        if _says_not_pinned(response):
            return False
        raise status_error(response, service=SERVICE, endpoint=self.api_url, action="unpin")

    async def is_pinned(self, cid: str) -> bool:
        """Whether ``cid`` is pinned recursively (the way ``add`` pins)."""
        require_cid(cid, service=SERVICE)
        response = await self._send(
            "pin/ls", action="list pins", params={"arg": cid, "type": "recursive"}
        )
        if _says_not_pinned(response):
            return False
        if not response.is_success:
            raise status_error(response, service=SERVICE, endpoint=self.api_url, action="list pins")
        body = json_body(response, service=SERVICE, endpoint=self.api_url)
        keys = body.get("Keys") if isinstance(body, dict) else None
        return isinstance(keys, dict) and cid in keys

    async def cat(self, cid: str, *, max_bytes: int) -> bytes:
        """The file ``cid`` names, as this node holds it (the pin repair re-uploads it to
        Pinata). At most ``max_bytes``: ``/api/v0/cat`` takes ``length``, "maximum number of
        bytes to read" (https://docs.ipfs.tech/reference/kubo/rpc/#api-v0-cat), so one byte
        more is asked to tell a larger file, which is PERMANENT ``ContentTooLarge``."""
        require_cid(cid, service=SERVICE)
        response = await self._call(
            "cat", action="read a file", params={"arg": cid, "length": str(max_bytes + 1)}
        )
        if len(response.content) > max_bytes:
            raise ServiceError(
                f"{cid} is over {max_bytes} bytes on kubo",
                service=SERVICE,
                kind=ErrorKind.PERMANENT,
                code="ContentTooLarge",
                endpoint=self.api_url,
            )
        return response.content

    # -- plumbing ------------------------------------------------------------------------

    async def _send(
        self, command: str, *, action: str, last_resort: bool = False, **kwargs: Any
    ) -> httpx.Response:
        admit(self.breaker, SERVICE, last_resort=last_resort)
        started = time.monotonic()
        try:
            response = await self._http.post(f"{self.api_url}/api/v0/{command}", **kwargs)
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
                exc, service=SERVICE, endpoint=self.api_url, action=action
            ) from exc
        # "not pinned" comes as a 500 but is an answer (an idempotent unpin's), not a fault:
        # it must not count against the breaker or show as a failure.
        answered = 200 if _says_not_pinned(response) else response.status_code
        record_http(
            self.breaker,
            answered,
            time.monotonic() - started,
            service=SERVICE,
            endpoint=self.api_url,
            operation=action,
        )
        return response

    async def _call(self, command: str, *, action: str, **kwargs: Any) -> httpx.Response:
        response = await self._send(command, action=action, **kwargs)
        if not response.is_success:
            raise status_error(response, service=SERVICE, endpoint=self.api_url, action=action)
        return response


def _says_not_pinned(response: httpx.Response) -> bool:
    """Kubo's 500 for ``pin rm``/``pin ls`` on a CID it does not pin."""
    if response.status_code != 500:
        return False
    message = response_detail(response)
    return "not pinned" in message
