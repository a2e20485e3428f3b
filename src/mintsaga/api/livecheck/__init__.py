"""`mintsaga livecheck`: what the real providers answer, against what the devstack assumes.

With a worker's settings (the Solana endpoints, Pinata's JWT, the Kubo node, the gateways) it:

1. uploads a 1 KiB, a 300 KiB and a 5 MiB file (unique to the run) to Pinata and to Kubo
   (once with our import parameters, once with the node's own defaults) and records each CID
   next to the one computed locally;
2. records the answers to an unpin of a CID never pinned (both providers, and how our clients
   read them), and to `pinList` by that run's CID;
3. asks each gateway for a fresh CID (just uploaded: nothing cached) as a file, as a raw block
   and as a CAR, recording status, headers and time;
4. asks each RPC endpoint for a history search (`getSignatureStatuses` with
   `searchTransactionHistory`);
5. mints one NFT end to end through the fleet (when given a request);
6. unpins everything it pinned, and compares the report with the devstack's assumptions
   (`assumptions.differences`), naming every difference.

Nothing here writes to our database; the mint is an ordinary one (its request's mint_id).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client

from mintsaga.api.livecheck.assumptions import Difference, differences
from mintsaga.api.livecheck.probes import Probes, never_pinned_cid, sample_files
from mintsaga.api.mints import start_mint
from mintsaga.errors import ServiceError, endpoint_name, redact_url
from mintsaga.ipfs.cid import compute_cid
from mintsaga.ipfs.kubo import KuboClient, import_params
from mintsaga.ipfs.pinata import PinataClient
from mintsaga.settings import Settings
from mintsaga.workflows.models import MintRequest

__all__ = ["Difference", "differences", "run_livecheck", "write_report"]

# Kubo's add flags that fix the layout we compute locally (what every upload of ours sends).
EXPLICIT_IMPORT = import_params()
NODE_DEFAULTS = {"cid-version": "1"}  # an add that leaves the rest to the node's Import config
HTTP_TIMEOUT_S = 60.0
MINT_TIMEOUT_S = 600.0

Progress = Callable[[str], None]


async def run_livecheck(
    settings: Settings,
    *,
    client: Client | None = None,
    request: MintRequest | None = None,
    progress: Progress = lambda _line: None,
    mint_timeout_s: float = MINT_TIMEOUT_S,
) -> dict[str, Any]:
    """The report (see the module docstring); ``differences`` lists what the devstack's
    assumptions got wrong, each as one line."""
    started = datetime.now(UTC)
    nonce = secrets.token_bytes(12)
    files = sample_files(nonce)
    report: dict[str, Any] = {
        "started_at": started.isoformat(),
        "targets": {
            "pinata": redact_url(settings.pinata_api_url),
            "kubo": redact_url(settings.kubo_api_url),
            "gateways": [endpoint_name(g) for g in settings.gateways_in_order],
            "solana": [endpoint_name(u) for u in settings.solana_rpc_endpoints],
        },
        "local": {label: await compute_cid(data) for label, data in files.items()},
    }
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as http:
        probes = Probes(
            http=http,
            pinata_url=settings.pinata_api_url,
            pinata_jwt=settings.pinata_jwt.get_secret_value(),
            kubo_url=settings.kubo_api_url,
            gateways=settings.gateways_in_order,
            solana=settings.solana_rpc_endpoints,
        )
        try:
            await _ipfs(report, probes, files, nonce, http, settings, progress)
            await _gateways(report, probes, progress)
            report["solana"] = {}
            for url in settings.solana_rpc_endpoints:
                progress(f"solana {endpoint_name(url)}: a history search")
                seen = await probes.guarded(partial(probes.history_search, url))
                report["solana"][endpoint_name(url)] = {"history_search": seen}
        finally:
            progress("unpinning what the check pinned")
            report["cleanup"] = await probes.cleanup()
    report["mint"] = await _mint(client, request, progress, mint_timeout_s)
    report["finished_at"] = datetime.now(UTC).isoformat()
    report["differences"] = [d.describe() for d in differences(report)]
    return report


async def _ipfs(
    report: dict[str, Any],
    probes: Probes,
    files: dict[str, bytes],
    nonce: bytes,
    http: httpx.AsyncClient,
    settings: Settings,
    progress: Progress,
) -> None:
    pinata: dict[str, Any] = {"upload": {}}
    kubo: dict[str, Any] = {"upload_explicit": {}, "upload_node_defaults": {}}
    report["pinata"], report["kubo"] = pinata, kubo
    kubo["version"] = await probes.guarded(probes.kubo_version)
    kubo["import_config"] = await probes.guarded(probes.kubo_import_config)
    for label, data in files.items():
        progress(f"uploading {label} to Pinata and Kubo")
        pinata["upload"][label] = await probes.guarded(partial(probes.pinata_upload, label, data))
        kubo["upload_explicit"][label] = await probes.guarded(
            partial(probes.kubo_upload, label, data, EXPLICIT_IMPORT)
        )
        kubo["upload_node_defaults"][label] = await probes.guarded(
            partial(probes.kubo_upload, label, data, NODE_DEFAULTS)
        )
    first = report["local"]["1KiB"]
    pinata["pin_list"] = await probes.guarded(partial(probes.pinata_pin_list, first))
    unknown = await never_pinned_cid(nonce)
    progress("unpinning a CID never pinned, on both providers")
    pinata["unpin_never_pinned"] = await probes.guarded(partial(probes.pinata_unpin, unknown))
    kubo["unpin_never_pinned"] = await probes.guarded(partial(probes.kubo_unpin, unknown))
    jwt = settings.pinata_jwt.get_secret_value()
    pinata_client = PinataClient(settings.pinata_api_url, jwt, http)
    kubo_client = KuboClient(settings.kubo_api_url, http)
    pinata["unpin_never_pinned"]["reads_as"] = await _reads_as(pinata_client.unpin(unknown))
    kubo["unpin_never_pinned"]["reads_as"] = await _reads_as(kubo_client.pin_rm(unknown))


async def _reads_as(call: Any) -> str:
    """How our client reads an unpin's answer: "not pinned", "unpinned" or its error code."""
    try:
        return "unpinned" if await call else "not pinned"
    except ServiceError as exc:
        return f"error {exc.code}"
    except httpx.HTTPError as exc:
        return f"error {type(exc).__name__}"


async def _gateways(report: dict[str, Any], probes: Probes, progress: Progress) -> None:
    """Each gateway: the 1 KiB file (one raw block) fresh, then as a raw block; the 300 KiB
    one (a DAG) as a CAR. Uploaded to Pinata and Kubo moments ago: a recursive gateway may
    still be finding it (504 with Retry-After)."""
    block, dag = report["local"]["1KiB"], report["local"]["300KiB"]
    report["gateways"] = {}
    for url in probes.gateways:
        name = endpoint_name(url)
        progress(f"gateway {name}: a fresh CID, then format=raw and format=car")
        report["gateways"][name] = {
            "fresh": await probes.guarded(partial(probes.gateway_get, url, block)),
            "raw": await probes.guarded(partial(probes.gateway_get, url, block, "raw")),
            "car": await probes.guarded(partial(probes.gateway_get, url, dag, "car")),
        }


async def _mint(
    client: Client | None, request: MintRequest | None, progress: Progress, timeout_s: float
) -> dict[str, Any]:
    if client is None or request is None:
        return {"skipped": "no mint request given (--request)"}
    progress(f"minting {request.mint_id} end to end (up to {timeout_s:.0f} s)")
    started = time.monotonic()
    handle = await start_mint(client, request)
    try:
        result = await asyncio.wait_for(handle.result(), timeout_s)
    except TimeoutError:
        return {"mint_id": request.mint_id, "status": "not finished", "seconds": timeout_s}
    return {
        "mint_id": request.mint_id,
        "status": result.status.value,
        "mint_address": result.mint_address,
        "metadata_uri": result.metadata_uri,
        "seconds": round(time.monotonic() - started, 2),
    }


def write_report(path: Path, report: dict[str, Any]) -> None:
    """The report as JSON at ``path``, whole or not at all (written beside it, then renamed)."""
    path = Path(path)
    partial_path = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial_path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    os.replace(partial_path, path)
