"""CIDs computed locally, the way Kubo computes them, so an upload's CID is known before it
happens (compensation can name it even when the provider's answer is lost).

CIDv0 is Kubo's default (dag-pb leaves, base58btc ``Qm...``); CIDv1 is ``--cid-version 1``
(raw leaves, base32 ``b...``). We upload with CIDv1.
"""

from __future__ import annotations

import asyncio
import re

from aleph_cid import CidHasher
from aleph_cid import compute_cid as _cid_v0

from mintsaga.errors import ErrorKind, ServiceError

DEFAULT_CID_VERSION = 1
# Below this size hashing takes well under a millisecond: not worth a thread hop.
_INLINE_LIMIT = 64 * 1024

_CID_V0 = re.compile(r"Qm[1-9A-HJ-NP-Za-km-z]{44}")
_CID_V1_BASE32 = re.compile(r"b[a-z2-7]{20,200}")


def cid_sync(data: bytes, cid_version: int = DEFAULT_CID_VERSION) -> str:
    """The CID Kubo assigns to ``data`` added as one file (256 KiB chunks, balanced layout)."""
    if cid_version == 0:
        return _cid_v0(data)
    if cid_version == 1:
        hasher = CidHasher.for_ipfs_v1_raw_leaves()
        hasher.update(data)
        return hasher.finalize()
    raise ValueError(f"cid_version must be 0 or 1, not {cid_version!r}")


async def compute_cid(data: bytes, cid_version: int = DEFAULT_CID_VERSION) -> str:
    """``cid_sync`` off the event loop for large data (the hasher releases the GIL)."""
    if len(data) <= _INLINE_LIMIT:
        return cid_sync(data, cid_version)
    return await asyncio.to_thread(cid_sync, data, cid_version)


def cid_version_of(cid: str) -> int | None:
    """0 or 1 for a CID in the forms we produce (base58 v0, base32 v1), else None.

    Checking the alphabet also keeps a CID safe to put in a URL path.
    """
    if _CID_V0.fullmatch(cid):
        return 0
    if _CID_V1_BASE32.fullmatch(cid):
        return 1
    return None


def require_cid(cid: str, *, service: str, field: str = "cid") -> int:
    """The CID's version, or a PERMANENT ``InvalidCid`` naming the field."""
    version = cid_version_of(cid) if isinstance(cid, str) else None
    if version is None:
        raise ServiceError(
            f"{field} {cid!r} is not a CIDv0 (Qm...) or base32 CIDv1 (b...)",
            service=service,
            kind=ErrorKind.PERMANENT,
            code="InvalidCid",
        )
    return version
