"""At worker start: can the Kubo node's configuration change the CIDs we compute?

Every ``add`` sends ``import_params`` (mintsaga.ipfs.kubo), and Kubo lets each flag override
its ``Import`` key (docs/config.md "Import": "Note that using CLI flags will override the
options defined here"). What a flag cannot override is what this check is for:

- a node too old for a flag ignores it: ``--max-file-links`` came with Kubo 0.35
  (docs/changelogs/v0.35.md, with ``Import.UnixFSFileMaxLinks``), so a node before 0.35 whose
  config still names another fan-out would build files over 174 chunks (44.5 MiB) its way;
- anything else that makes the node build another DAG for our flags (a proxy that drops
  query parameters, a patched node): an ``only-hash`` add of a three-chunk probe must give the
  CID we compute locally (chunker, raw leaves, CID version and hash all show in it).

A mismatch refuses the start with a SettingsError naming the node's Import keys that differ
from our settings (the operator changes the node, or points KUBO_API_URL elsewhere). A node
that does not answer is not a reason to refuse: Kubo is the backup provider, and the upload
checks every CID it returns anyway; that is logged.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from mintsaga.errors import ServiceError, redact_url
from mintsaga.ipfs.cid import compute_cid
from mintsaga.ipfs.kubo import CHUNKER, HASH, MAX_FILE_LINKS, KuboClient, import_params
from mintsaga.setting_readers import SettingsError

log = logging.getLogger(__name__)

# Import key -> (the add flag that overrides it, our value in the key's JSON form).
OURS: dict[str, tuple[str, Any]] = {
    "CidVersion": ("cid-version", 1),
    "UnixFSRawLeaves": ("raw-leaves", True),
    "UnixFSChunker": ("chunker", CHUNKER),
    "HashFunction": ("hash", HASH),
    "UnixFSFileMaxLinks": ("max-file-links", MAX_FILE_LINKS),
    "UnixFSDAGLayout": ("trickle", "balanced"),
}
# The flags a node ignores before this version (docs/changelogs/v0.35.md).
FLAG_SINCE = {"max-file-links": (0, 35)}
# Three chunks and a byte: several raw leaves under a dag-pb root.
PROBE = (b"mintsaga kubo import probe\n" * 30_000)[: 3 * 262_144 + 1]


def differences(imports: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The Import keys set on the node to something other than ours: key -> (node's, ours)."""
    out = {}
    for key, (_, ours) in OURS.items():
        value = imports.get(key)
        if value is not None and value != ours:
            out[key] = (value, ours)
    return out


def version_tuple(version: str) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def unhonoured(diffs: dict[str, tuple[Any, Any]], version: str) -> list[str]:
    """The differing keys whose flag the node's version does not have."""
    have = version_tuple(version)
    out = []
    for key in diffs:
        since = FLAG_SINCE.get(OURS[key][0])
        if since is not None and have is not None and have < since:
            out.append(key)
    return out


def describe(diffs: dict[str, tuple[Any, Any]], keys: list[str] | None = None) -> str:
    return "; ".join(
        f"Import.{key} is {node!r} on the node, ours is {ours!r} (add --{OURS[key][0]})"
        for key, (node, ours) in diffs.items()
        if keys is None or key in keys
    )


async def check_kubo_import(kubo: KuboClient) -> None:
    """Refuse (SettingsError) a Kubo node that would give our files other CIDs; log and go on
    when it does not answer."""
    where = redact_url(kubo.api_url)
    try:
        version = await kubo.version()
        imports = await kubo.import_config()
    except ServiceError as exc:
        log.warning(
            "kubo at %s did not answer the import check at start (%s); starting anyway: it is"
            " the backup provider and every CID it returns is checked",
            where,
            exc.code,
        )
        return
    diffs = differences(imports)
    if diffs:
        log.info(
            "kubo's Import config differs from ours; every add overrides it: %s", describe(diffs)
        )
    stale = unhonoured(diffs, version)
    if stale:
        raise SettingsError(
            f"KUBO_API_URL: Kubo {version} at {where} has no add flag for "
            f"{describe(diffs, stale)}: files over {MAX_FILE_LINKS} chunks would get CIDs we do"
            " not compute; set it back to our value or upgrade the node to 0.35 or later"
        )
    try:
        got = await kubo.add(PROBE, filename="mintsaga-import-probe.bin", only_hash=True)
    except ServiceError as exc:
        log.warning(
            "kubo at %s did not hash the import probe (%s); starting anyway", where, exc.code
        )
        return
    want = await compute_cid(PROBE)
    if got != want:
        detail = describe(diffs) or "its Import config shows no difference"
        flags = ", ".join(f"{k}={v}" for k, v in import_params().items())
        raise SettingsError(
            f"KUBO_API_URL: Kubo {version} at {where} gives {got} for our import probe where we"
            f" compute {want} with {flags}: {detail}. Set the node's Import keys to our values or"
            " point KUBO_API_URL at a node that honours the add flags"
        )
    log.info("kubo at %s builds our CIDs (import probe %s)", where, got)
