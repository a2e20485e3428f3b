"""One blockstore for every IPFS face: content on disk by CID, pins per provider in sqlite.

Pinata and Kubo are separate pin sets over the same bytes, so "unpinned from Pinata but still
pinned on Kubo" can be modelled; gateways serve only what some pin holds. Content is keyed by
multihash (like Kubo's blockstore), so ``Qm…`` and its ``bafybei…`` spelling resolve alike.
Everything survives a restart of the emulator process.

Each root remembers the layout it was added with (devstack.ipfs.unixfs.Layout), and every
block of its DAG is indexed to it, so a gateway can serve any block (``format=raw``) or the
whole DAG (``format=car``) by rebuilding it from the file's bytes.
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

from devstack.ipfs.cid import THREAD_THRESHOLD, parse_cid
from devstack.ipfs.unixfs import FileDag, Layout, Node, build_file, default_layout

if TYPE_CHECKING:
    from devstack.ipfs.limits import PinataLimits

PROVIDERS = ("pinata", "kubo")
DAG_CACHE = 16  # DAGs kept built in memory
DAG_CACHE_BYTES = 128 * 1024 * 1024  # ... holding at most this many file bytes (but one)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS content (
    key TEXT PRIMARY KEY,          -- multihash hex
    cid TEXT NOT NULL,             -- the CID it was added under first
    length INTEGER NOT NULL,
    dag_size INTEGER NOT NULL,
    layout TEXT                    -- JSON (Layout.describe()); NULL: Kubo's default for the CID
);
CREATE TABLE IF NOT EXISTS blocks (
    key TEXT NOT NULL,             -- a block's multihash hex (not the root's)
    root_key TEXT NOT NULL,        -- the root it belongs to (content.key)
    PRIMARY KEY (key, root_key)
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
CREATE INDEX IF NOT EXISTS pins_by_key ON pins (key);  -- every gateway read asks by key
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
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(content)")}
        if "layout" not in columns:  # a state folder from before layouts were kept
            self._db.execute("ALTER TABLE content ADD COLUMN layout TEXT")
        self._dags: dict[str, FileDag] = {}  # root key -> DAG, a few recent ones
        # Set by build_pinata_app, so the admin API (which is handed the store) can reach it.
        self.pinata_limits: PinataLimits | None = None

    def close(self) -> None:
        self._db.close()

    # -- content -------------------------------------------------------------------------

    async def add(
        self, data: bytes, *, cid_version: int | None = None, layout: Layout | None = None
    ) -> Added:
        """Build ``data``'s DAG as Kubo would (``layout``, else Kubo's default for
        ``cid_version``) and keep the bytes (idempotent)."""
        if layout is None:
            layout = default_layout(0 if cid_version is None else cid_version)
        dag = await build_dag(data, layout)
        key = parse_cid(dag.cid).key
        path = self._blobs / key
        if not path.exists():
            await asyncio.to_thread(_write_atomically, path, data)
        self._db.execute(
            "INSERT OR IGNORE INTO content (key, cid, length, dag_size, layout)"
            " VALUES (?, ?, ?, ?, ?)",
            (key, dag.cid, len(data), dag.dag_size, json.dumps(layout.describe())),
        )
        self._db.executemany(
            "INSERT OR IGNORE INTO blocks (key, root_key) VALUES (?, ?)",
            [(parse_cid(node.cid_str).key, key) for node in dag.walk() if node is not dag.root],
        )
        self._remember(key, dag)
        return Added(dag.cid, len(data), dag.dag_size)

    def layout_of(self, cid: str) -> Layout | None:
        """The layout the root ``cid`` was added with (None: not a root we hold)."""
        row = self._db.execute(
            "SELECT cid, layout FROM content WHERE key = ?", (parse_cid(cid).key,)
        ).fetchone()
        if row is None:
            return None
        if row["layout"] is None:
            return default_layout(parse_cid(row["cid"]).version)
        return Layout.from_json(json.loads(row["layout"]))

    async def dag(self, cid: str) -> tuple[FileDag, Node] | None:
        """The DAG holding block ``cid`` (a root or any block under one) and that block's
        node; None when no root we hold has it."""
        key = parse_cid(cid).key
        roots = [key] if self.layout_of(cid) is not None else []
        roots += [
            row["root_key"]
            for row in self._db.execute("SELECT root_key FROM blocks WHERE key = ?", (key,))
        ]
        for root_key in roots:
            dag = await self._dag_of_root(root_key)
            if dag is None:
                continue
            node = dag.root if root_key == key else dag.find(bytes.fromhex(key))
            if node is not None:
                return dag, node
        return None

    async def _dag_of_root(self, root_key: str) -> FileDag | None:
        cached = self._dags.get(root_key)
        if cached is not None:
            return cached
        row = self._db.execute("SELECT cid FROM content WHERE key = ?", (root_key,)).fetchone()
        if row is None:
            return None
        layout = self.layout_of(row["cid"])
        data = await self.read(row["cid"])
        if layout is None or data is None:
            return None
        dag = await build_dag(data, layout)
        self._remember(root_key, dag)
        return dag

    def _remember(self, key: str, dag: FileDag) -> None:
        """Keep the last few DAGs (a reader walking a DAG block by block asks for each)."""
        self._dags.pop(key, None)
        self._dags[key] = dag
        while len(self._dags) > DAG_CACHE or (
            len(self._dags) > 1
            and sum(d.root.length for d in self._dags.values()) > DAG_CACHE_BYTES
        ):
            del self._dags[next(iter(self._dags))]

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
        """Does any provider currently pin this content (or, for a block under a root,
        the root: Kubo's and Pinata's pins are recursive)?"""
        key = parse_cid(cid).key
        row = self._db.execute(
            "SELECT 1 FROM pins WHERE date_unpinned IS NULL AND (key = ? OR key IN"
            " (SELECT root_key FROM blocks WHERE key = ?)) LIMIT 1",
            (key, key),
        ).fetchone()
        return row is not None

    def pin_history(self, cid: str) -> PinHistory:
        """Every provider's pins of ``cid`` or of a root it is a block of."""
        key = parse_cid(cid).key
        rows = self._db.execute(
            "SELECT date_pinned, date_unpinned FROM pins WHERE key = ? OR key IN"
            " (SELECT root_key FROM blocks WHERE key = ?)",
            (key, key),
        ).fetchall()
        if not rows:
            return PinHistory(False, None, None)
        held = any(row["date_unpinned"] is None for row in rows)
        first = min(_epoch(row["date_pinned"]) for row in rows)
        last = None if held else max(_epoch(row["date_unpinned"]) for row in rows)
        return PinHistory(held, first, last)


@dataclass(frozen=True)
class PinHistory:
    """When the pins holding a block (its own, or its roots') came and went, in epoch seconds."""

    held: bool  # some provider pins it now
    first_pinned: float | None  # the earliest pin ever, by any provider
    last_unpinned: float | None  # the latest unpin, when none holds it now


def _epoch(iso: str) -> float:
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


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


async def build_dag(data: bytes, layout: Layout) -> FileDag:
    """``build_file`` off the event loop for big bodies (hashlib releases the GIL)."""
    if len(data) < THREAD_THRESHOLD:
        return build_file(data, layout)
    return await asyncio.to_thread(build_file, data, layout)


def _write_atomically(path: Path, data: bytes) -> None:
    """A crash mid-write must not leave a truncated blob under a valid CID."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
