"""Collections in Postgres (migration 011): what `mintsaga collection create` made, and which
collection each mint joins.

A collection row is written before its transaction is sent (state ``creating``, with the
derived address: a second `create` finds the same account) and moved to ``created`` once the
chain shows the group. Only a created collection admits members; a mint takes one of its slots
at its claim (``MintStore._claim_on``) and gives it back by being rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from mintsaga.db.errors import permanent
from mintsaga.db.executor import Executor
from mintsaga.stages import MintStage

__all__ = ["CollectionRow", "CollectionSpec", "CollectionsMixin", "collection_holder"]


def collection_holder(key: str) -> str:
    """The holder name of a collection's pins: '/' is in no mint_id (MintRequest's pattern)."""
    return f"collection/{key}"


_FIELDS = (
    "key",
    "address",
    "name",
    "symbol",
    "uri",
    "max_size",
    "group_authority",
    "update_authority",
    "state",
    "signature",
    "created_at",
    "updated_at",
)
_COLUMNS = ", ".join(_FIELDS)


@dataclass(frozen=True)
class CollectionSpec:
    """What an operator asks for; a second `create` must ask for the same."""

    key: str
    address: str
    name: str
    symbol: str
    uri: str
    max_size: int
    group_authority: str
    update_authority: str | None


@dataclass(frozen=True)
class CollectionRow:
    key: str
    address: str
    name: str
    symbol: str
    uri: str
    max_size: int
    group_authority: str
    update_authority: str | None
    state: str
    signature: str | None
    created_at: datetime
    updated_at: datetime
    members: int = 0  # its mints not rolled back (minted, or minting)

    @property
    def created(self) -> bool:
        return self.state == "created"


def _row(record: asyncpg.Record, members: int = 0) -> CollectionRow:
    return CollectionRow(**{k: record[k] for k in _FIELDS}, members=members)


_MEMBERS = f"""(SELECT count(*) FROM mints m
               WHERE m.collection = c.key AND m.stage <> '{MintStage.ROLLED_BACK.value}')"""


class CollectionsMixin:
    _db: Executor
    _endpoint: str | None

    async def begin_collection(self, spec: CollectionSpec) -> CollectionRow:
        """The collection's row: inserted at ``creating``, or the existing one when it asks for
        the same; PERMANENT ``Conflict`` naming each field that differs otherwise."""

        async def work(conn: asyncpg.Connection) -> CollectionRow:
            record = await conn.fetchrow(
                f"""INSERT INTO collections (key, address, name, symbol, uri, max_size,
                                             group_authority, update_authority)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                    ON CONFLICT (key) DO NOTHING
                    RETURNING {_COLUMNS}""",
                spec.key,
                spec.address,
                spec.name,
                spec.symbol,
                spec.uri,
                spec.max_size,
                spec.group_authority,
                spec.update_authority,
            )
            if record is None:
                record = await conn.fetchrow(
                    f"SELECT {_COLUMNS} FROM collections WHERE key = $1", spec.key
                )
            assert record is not None
            return _row(record)

        row = await self._db.run(work)
        differing = [
            name
            for name in ("address", "name", "symbol", "max_size", "group_authority")
            if getattr(row, name) != getattr(spec, name)
        ]
        if row.update_authority != spec.update_authority:
            differing.append("update_authority")
        if not row.created and row.uri != spec.uri:
            differing.append("uri")
        if differing:
            raise permanent(
                "Conflict",
                f"collection {spec.key!r} exists with another {', '.join(differing)}"
                " (a collection is made once; choose another key)",
                self._endpoint,
            )
        return row

    async def hold_collection_pin(self, key: str, cid: str, providers: tuple[str, ...]) -> None:
        """Note that collection ``key`` holds ``cid`` for good: a row in ``mint_pins`` under
        ``collection_holder(key)`` (no mint has that id, none is ever rolled back), so a mint
        sharing the CID (a tier image) that is rolled back never unpins it."""
        await self._db.run(
            lambda conn: conn.execute(
                """INSERT INTO mint_pins (mint_id, cid, provider)
                   SELECT $1, $2, p FROM unnest($3::text[]) AS p
                   ON CONFLICT DO NOTHING""",
                collection_holder(key),
                cid,
                list(providers),
            )
        )

    async def mark_collection_created(self, key: str, signature: str | None) -> CollectionRow:
        """The chain shows the group: the collection admits members from now on."""
        record = await self._db.run(
            lambda conn: conn.fetchrow(
                f"""UPDATE collections
                    SET state = 'created', signature = COALESCE(signature, $2),
                        updated_at = now()
                    WHERE key = $1 RETURNING {_COLUMNS}""",
                key,
                signature,
            )
        )
        if record is None:
            raise permanent("UnknownCollection", f"collection {key!r} does not exist", None)
        return _row(record)

    async def set_group_authority(self, key: str, old: str, new: str) -> CollectionRow:
        """Record a rotated group authority (from ``old``; a second call finds ``new``)."""
        record = await self._db.run(
            lambda conn: conn.fetchrow(
                f"""UPDATE collections SET group_authority = $3, updated_at = now()
                    WHERE key = $1 AND group_authority IN ($2, $3) RETURNING {_COLUMNS}""",
                key,
                old,
                new,
            )
        )
        if record is None:
            raise permanent(
                "Conflict", f"collection {key!r}'s group authority is neither {old} nor {new}", None
            )
        return _row(record)

    async def collection(self, key: str) -> CollectionRow | None:
        """The collection ``key`` with its member count, or None."""
        record = await self._db.run(
            lambda conn: conn.fetchrow(
                f"SELECT {_COLUMNS}, {_MEMBERS} AS members FROM collections c WHERE key = $1", key
            )
        )
        return None if record is None else _row(record, record["members"])

    async def collections(self) -> list[CollectionRow]:
        """Every collection, by key, with its member counts."""
        records = await self._db.run(
            lambda conn: conn.fetch(
                f"SELECT {_COLUMNS}, {_MEMBERS} AS members FROM collections c ORDER BY key"
            )
        )
        return [_row(r, r["members"]) for r in records]

    async def collection_of(self, mint_id: str) -> CollectionRow | None:
        """The collection mint ``mint_id`` joins, or None (none named, or no such mint)."""
        record = await self._db.run(
            lambda conn: conn.fetchrow(
                f"""SELECT {", ".join("c." + c for c in _FIELDS)}
                    FROM mints m JOIN collections c ON c.key = m.collection
                    WHERE m.mint_id = $1""",
                mint_id,
            )
        )
        return None if record is None else _row(record)
