"""What each provider answers, recorded raw: status, the headers that matter, a bounded body.

The probes speak each provider's wire protocol directly (httpx, JSON-RPC by hand) rather than
through our clients: the point is to see what the provider says before our code interprets it,
so the report can be compared with what the devstack's emulators answer
(`mintsaga.api.livecheck.assumptions`). Where our clients' reading matters (is this unpin
answer "not pinned"?) the probe records that too, next to the raw answer.

Nothing secret is recorded: the Pinata JWT is scrubbed from every body, endpoint URLs are
recorded by their names (`endpoint_name`: no key), and bodies are cut to `BODY_EXCERPT`.
Everything a probe pins is unpinned again at the end (`cleanup`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx

from mintsaga.errors import url_secrets
from mintsaga.ipfs.cid import compute_cid

BODY_EXCERPT = 400  # characters of a body kept in the report
HEADERS_KEPT = (
    "content-type",
    "retry-after",
    "cache-control",
    "x-ipfs-path",
    "x-ipfs-roots",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
)
# The sizes issue 16 asks for: one chunk, a few chunks of the historical 256 KiB layout (one of
# the 1 MiB layout), and many chunks (several of either).
SIZES = {"1KiB": 1024, "300KiB": 300 * 1024, "5MiB": 5 * 2**20}
HISTORY_PROBE_SIGNATURE = "1" * 64  # a well-formed signature no transaction has
Observation = dict[str, Any]


def sample_files(nonce: bytes) -> dict[str, bytes]:
    """One file per size, unique to this run (so each CID is fresh: no gateway has it cached)."""
    files = {}
    for label, size in SIZES.items():
        seed = nonce + label.encode()
        files[label] = (seed * (size // len(seed) + 1))[:size]
    return files


def answer(response: httpx.Response, *, scrub: Callable[[str], str] = str) -> Observation:
    """A response as the report keeps it."""
    text = response.text
    return {
        "status": response.status_code,
        "headers": {k: response.headers[k] for k in HEADERS_KEPT if k in response.headers},
        "body": scrub(text[:BODY_EXCERPT]),
    }


def failed(exc: Exception, scrub: Callable[[str], str] = str) -> Observation:
    return {"status": None, "error": scrub(f"{type(exc).__name__}: {str(exc)[:200]}")}


async def guarded(
    call: Callable[[], Awaitable[Observation]], scrub: Callable[[str], str] = str
) -> Observation:
    """A probe's observation, or what went wrong on the way (no answer at all), scrubbed of
    secrets (an HTTP library's error may quote a header or a URL)."""
    try:
        return await call()
    except (httpx.HTTPError, ValueError) as exc:
        return failed(exc, scrub)


@dataclass
class Probes:
    """The providers of a worker's settings, probed with one HTTP client."""

    http: httpx.AsyncClient
    pinata_url: str
    pinata_jwt: str
    kubo_url: str
    gateways: tuple[str, ...]
    solana: tuple[str, ...]
    pinned: list[tuple[str, str]] = field(default_factory=list)  # (provider, cid) to unpin

    def scrub(self, text: str) -> str:
        """``text`` without the JWT (any line of it: a secret file may wrap it) or any secret
        part of a configured URL."""
        secrets = [line.strip() for line in self.pinata_jwt.splitlines() if line.strip()]
        for url in (self.pinata_url, self.kubo_url, *self.gateways, *self.solana):
            secrets += url_secrets(url)
        for secret in sorted(set(secrets), key=len, reverse=True):
            text = text.replace(secret, "[secret]")
        return text

    async def guarded(self, call: Callable[[], Awaitable[Observation]]) -> Observation:
        return await guarded(call, self.scrub)

    # -- Pinata --------------------------------------------------------------------------

    def _pinata_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.pinata_jwt}"}

    async def pinata_upload(self, label: str, data: bytes) -> Observation:
        form = {
            "pinataMetadata": json.dumps({"name": f"mintsaga-livecheck-{label}"}),
            "pinataOptions": json.dumps({"cidVersion": 1}),
        }
        response = await self.http.post(
            f"{self.pinata_url}/pinning/pinFileToIPFS",
            headers=self._pinata_headers(),
            files={"file": (f"livecheck-{label}.bin", data, "application/octet-stream")},
            data=form,
        )
        seen = answer(response, scrub=self.scrub)
        try:
            cid = response.json().get("IpfsHash") if response.is_success else None
        except ValueError:
            cid = None
        seen["cid"] = cid
        if isinstance(cid, str):
            self.pinned.append(("pinata", cid))
        return seen

    async def pinata_unpin(self, cid: str) -> Observation:
        response = await self.http.delete(
            f"{self.pinata_url}/pinning/unpin/{cid}", headers=self._pinata_headers()
        )
        return answer(response, scrub=self.scrub)

    async def pinata_pin_list(self, cid: str) -> Observation:
        response = await self.http.get(
            f"{self.pinata_url}/data/pinList",
            headers=self._pinata_headers(),
            params={"cid": cid, "status": "pinned"},
        )
        seen = answer(response, scrub=self.scrub)
        try:
            rows = response.json().get("rows") if response.is_success else None
        except ValueError:
            rows = None
        seen["lists_exactly"] = isinstance(rows, list) and any(
            isinstance(r, dict) and r.get("ipfs_pin_hash") == cid for r in rows
        )
        seen["rows"] = len(rows) if isinstance(rows, list) else None
        return seen

    # -- Kubo ----------------------------------------------------------------------------

    async def kubo(self, command: str, **kwargs: Any) -> httpx.Response:
        return await self.http.post(f"{self.kubo_url}/api/v0/{command}", **kwargs)

    async def kubo_version(self) -> Observation:
        response = await self.kubo("version")
        seen = answer(response)
        seen["version"] = response.json().get("Version") if response.is_success else None
        return seen

    async def kubo_import_config(self) -> Observation:
        """The node's ``Import`` section (what an add uses for what it does not say)."""
        response = await self.kubo("config", params={"arg": "Import"})
        seen = answer(response)
        seen["import"] = response.json().get("Value") if response.is_success else None
        return seen

    async def kubo_upload(self, label: str, data: bytes, params: dict[str, str]) -> Observation:
        response = await self.kubo(
            "add",
            params={"pin": "true", **params},
            files={"file": (f"livecheck-{label}.bin", data, "application/octet-stream")},
        )
        seen = answer(response)
        cid = None
        for line in response.text.splitlines() if response.is_success else []:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("Hash"), str):
                cid = entry["Hash"]
        seen["cid"] = cid
        if cid is not None:
            self.pinned.append(("kubo", cid))
        return seen

    async def kubo_unpin(self, cid: str) -> Observation:
        return answer(await self.kubo("pin/rm", params={"arg": cid}))

    # -- gateways ------------------------------------------------------------------------

    async def gateway_get(self, gateway: str, cid: str, fmt: str | None = None) -> Observation:
        """One GET of ``cid``; ``fmt`` asks for a trustless response (raw or car)."""
        headers = {}
        if fmt == "raw":
            headers["Accept"] = "application/vnd.ipld.raw"
        elif fmt == "car":
            headers["Accept"] = "application/vnd.ipld.car"
        params = {"format": fmt} if fmt else None
        started = time.monotonic()
        async with self.http.stream(
            "GET", f"{gateway}/ipfs/{cid}", headers=headers, params=params
        ) as response:
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > 16 * 2**20:
                    break
        seen = {
            "status": response.status_code,
            "headers": {k: response.headers[k] for k in HEADERS_KEPT if k in response.headers},
            "seconds": round(time.monotonic() - started, 3),
            "bytes": len(body),
        }
        if response.is_success and fmt is None:
            seen["verifies"] = await compute_cid(body) == cid
        return seen

    # -- Solana --------------------------------------------------------------------------

    async def history_search(self, url: str) -> Observation:
        """``getSignatureStatuses`` with ``searchTransactionHistory``: a node without history
        answers -32011 (Agave's TransactionHistoryNotAvailable)."""
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "getSignatureStatuses",
            "params": [[HISTORY_PROBE_SIGNATURE], {"searchTransactionHistory": True}],
        }
        response = await self.http.post(url, json=body)
        seen: Observation = {"status": response.status_code}
        try:
            reply = response.json()
        except ValueError:
            seen["answer"] = "not json"
            return seen
        if isinstance(reply, dict) and isinstance(reply.get("error"), dict):
            seen["answer"] = "error"
            seen["code"] = reply["error"].get("code")
            seen["message"] = str(reply["error"].get("message"))[:200]
        elif isinstance(reply, dict) and "result" in reply:
            seen["answer"] = "result"
        else:
            seen["answer"] = "other"
        return seen

    async def cleanup(self) -> list[Observation]:
        """Unpin what the probes pinned; each provider's answer."""
        done = []
        for provider, cid in dict.fromkeys(self.pinned):  # once each, in order
            unpin = self.pinata_unpin if provider == "pinata" else self.kubo_unpin
            seen = await self.guarded(partial(unpin, cid))
            done.append({"provider": provider, "cid": cid, **seen})
        self.pinned.clear()
        return done


async def never_pinned_cid(nonce: bytes) -> str:
    """A CID nobody pins: the hash of bytes made up for this run."""
    return await compute_cid(b"mintsaga livecheck, never pinned " + nonce)
