"""One blockstore for every IPFS face: content on disk by CID, pins per provider in sqlite.

Pinata and Kubo are separate pin sets over the same bytes, so "unpinned from Pinata but still
pinned on Kubo" can be modelled; gateways serve only what some pin holds. Content is keyed by
multihash (like Kubo's blockstore), so ``Qm…`` and its ``bafybei…`` spelling resolve alike.
Everything survives a restart of the emulator process.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devstack.ipfs.cid import cid_of_async, dag_size, parse_cid

if TYPE_CHECKING:
    from devstack.ipfs.limits import PinataLimits

PROVIDERS = ("pinata", "kubo")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS content (
    key TEXT PRIMARY KEY,          -- multihash hex
    cid TEXT NOT NULL,             -- the CID it was added under first
    length INTEGER NOT NULL,
    dag_size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pins (
    id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    cid TEXT NOT NULL,
    key TEXT NOT NULL,
    name TEXT,
    keyvalues TEXT,                -- JSON object or NULL
    size INTEGER NOT NULL,
    date_pinned TEXT NOT NULL,
    date_unpinned TEXT,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS pins_lookup ON pins (provider, key, date_unpinned);
"""


def now_iso() -> str:
    """Pinata's timestamp style: ISO 8601, milliseconds, ``Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Added:
    cid: str
    length: int
    dag_size: int


@dataclass(frozen=True)
class Pin:
    id: str
    provider: str
    cid: str
    name: str | None
    keyvalues: dict[str, Any] | None
    size: int
    date_pinned: str
    date_unpinned: str | None

    @property
    def active(self) -> bool:
        return self.date_unpinned is None


class IpfsStore:
    """Content and pin records under ``state_dir``; not thread-safe, used from one loop."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self._blobs = self.state_dir / "blobs"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.state_dir / "pins.sqlite3", isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.executescript(_SCHEMA)
        # Set by build_pinata_app, so the admin API (which is handed the store) can reach it.
        self.pinata_limits: PinataLimits | None = None

    def close(self) -> None:
        self._db.close()

    # -- content -------------------------------------------------------------------------

    async def add(self, data: bytes, *, cid_version: int) -> Added:
        """Hash ``data`` as Kubo would and keep the bytes (idempotent)."""
        cid = await cid_of_async(data, cid_version)
        key = parse_cid(cid).key
        path = self._blobs / key
        if not path.exists():
            await asyncio.to_thread(_write_atomically, path, data)
        size = dag_size(len(data), cid_version)
        self._db.execute(
            "INSERT OR IGNORE INTO content (key, cid, length, dag_size) VALUES (?, ?, ?, ?)",
            (key, cid, len(data), size),
        )
        return Added(cid, len(data), size)

    def has_content(self, cid: str) -> bool:
        return (self._blobs / parse_cid(cid).key).exists()

    async def read(self, cid: str) -> bytes | None:
        """The bytes behind ``cid`` if they are on disk (pinned or not)."""
        path = self._blobs / parse_cid(cid).key
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None

    # -- pins ----------------------------------------------------------------------------

    def pin(
        self,
        provider: str,
        cid: str,
        *,
        size: int,
        name: str | None = None,
        keyvalues: dict[str, Any] | None = None,
    ) -> tuple[Pin, bool]:
        """Pin ``cid`` for ``provider``; returns (pin, was_already_pinned)."""
        existing = self.active_pins(provider, cid)
        if existing:
            return existing[0], True
        pin = Pin(str(uuid.uuid4()), provider, cid, name, keyvalues, size, now_iso(), None)
        self._db.execute(
            "INSERT INTO pins (id, provider, cid, key, name, keyvalues, size, date_pinned, seq)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM pins))",
            (
                pin.id,
                provider,
                cid,
                parse_cid(cid).key,
                name,
                None if keyvalues is None else json.dumps(keyvalues),
                size,
                pin.date_pinned,
            ),
        )
        return pin, False

    def unpin(self, provider: str, cid: str) -> int:
        """Mark ``provider``'s live pins of ``cid`` unpinned; returns how many there were."""
        cursor = self._db.execute(
            "UPDATE pins SET date_unpinned = ? WHERE provider = ? AND key = ?"
            " AND date_unpinned IS NULL",
            (now_iso(), provider, parse_cid(cid).key),
        )
        return cursor.rowcount

    def active_pins(self, provider: str, cid: str | None = None) -> list[Pin]:
        sql = "SELECT * FROM pins WHERE provider = ? AND date_unpinned IS NULL"
        args: list[Any] = [provider]
        if cid is not None:
            sql += " AND key = ?"
            args.append(parse_cid(cid).key)
        return [_pin(row) for row in self._db.execute(sql + " ORDER BY seq", args)]

    def pins(self, provider: str) -> list[Pin]:
        """Every pin record of ``provider``, newest first (what pinList pages through)."""
        rows = self._db.execute(
            "SELECT * FROM pins WHERE provider = ? ORDER BY seq DESC", (provider,)
        )
        return [_pin(row) for row in rows]

    def is_held(self, cid: str) -> bool:
        """Does any provider currently pin this content?"""
        row = self._db.execute(
            "SELECT 1 FROM pins WHERE key = ? AND date_unpinned IS NULL LIMIT 1",
            (parse_cid(cid).key,),
        ).fetchone()
        return row is not None


def _pin(row: sqlite3.Row) -> Pin:
    keyvalues = json.loads(row["keyvalues"]) if row["keyvalues"] is not None else None
    return Pin(
        row["id"],
        row["provider"],
        row["cid"],
        row["name"],
        keyvalues,
        row["size"],
        row["date_pinned"],
        row["date_unpinned"],
    )


def _write_atomically(path: Path, data: bytes) -> None:
    """A crash mid-write must not leave a truncated blob under a valid CID."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
