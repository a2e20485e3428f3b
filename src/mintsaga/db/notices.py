"""The notices a backend is told about (``mintsaga.notices``): recorded, then read as a feed.

``record_notice`` appends one ``mint_events`` row with a ``type`` and moves the ``mints`` row's
``status`` to match, in one transaction, once per event key (a retried activity changes
nothing). A notice may be recorded for a mint that has no row (one refused before its claim):
the backend still learns how it ended.

``notices_after`` is the cursor feed the webhook dispatcher and ``list_events`` read. Row ids
come from a sequence and transactions commit out of order, so a plain ``id > cursor`` read could
pass over a row whose transaction commits later with a smaller id. Every notice is therefore
written under one advisory lock (class "ntce"), taken just before its row's id and held until
its transaction commits: notices commit in the order of their ids, and whatever a reader sees,
nothing with a smaller id can still appear. (The lock is held for one insert: the ``mints`` row
is locked and updated before it is taken.)

A notice is not recorded for a mint whose row belongs to another request (the same mint_id
with another user or wallet: its claim is refused as a Conflict), and a MINTED row's status
stays MINTED whatever a later notice says.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from mintsaga.db.executor import Executor
from mintsaga.errors import without_nul
from mintsaga.notices import MintNotice, NoticeType, status_of

__all__ = ["NoticesMixin"]

# The most notices one feed read returns.
MAX_FEED_LIMIT = 1000
# Every notice is inserted under this transaction-level advisory lock ("ntce").
NOTICE_LOCK = 0x6E746365


def _notices(rows: list[asyncpg.Record]) -> list[MintNotice]:
    """Rows of ``id, type, detail::text, at`` as notices."""
    return [
        MintNotice(cursor=r["id"], type=r["type"], timestamp=r["at"], data=json.loads(r["detail"]))
        for r in rows
    ]


def _same_request(row: asyncpg.Record, body: dict[str, Any]) -> bool:
    """Whether the notice comes from the request that owns the row (a notice that does not
    say is trusted: the store's own callers)."""
    user, owner = body.get("user_id"), body.get("owner")
    return (user is None or user == row["user_id"]) and (owner is None or owner == row["wallet"])


def _clean(value: Any) -> Any:
    """Postgres refuses NUL in text and jsonb: a detail may quote what a remote host said."""
    if isinstance(value, str):
        return without_nul(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


class NoticesMixin:
    _db: Executor

    async def record_notice(
        self, mint_id: str, notice_type: NoticeType | str, *, event_key: str, data: dict[str, Any]
    ) -> int | None:
        """Record one notice and the row's status; idempotent per ``(mint_id, event_key)``.

        ``data`` becomes the notice's data (``mint_id`` and ``status`` are set here; ``stage``
        is the caller's). Returns the notice's cursor, or None when this key was recorded
        before (nothing changed).
        """
        kind = NoticeType(notice_type)
        status = status_of(kind)
        body = _clean({**data, "mint_id": mint_id, "status": status})
        stage = str(body.get("stage") or "")
        payload = json.dumps(body, default=str, sort_keys=True)
        detail = json.dumps(
            {k: v for k, v in body.items() if k in ("step", "error", "cause", "stage")},
            default=str,
            sort_keys=True,
        )

        async def work(conn: asyncpg.Connection) -> int | None:
            async with conn.transaction():
                row = await conn.fetchrow(
                    "SELECT user_id, wallet, stage FROM mints WHERE mint_id = $1 FOR UPDATE",
                    mint_id,
                )
                if row is not None and not _same_request(row, body):
                    return None  # another request's mint: not ours to tell about
                seen = await conn.fetchval(
                    "SELECT 1 FROM mint_events WHERE mint_id = $1 AND event_key = $2",
                    mint_id,
                    event_key,
                )
                if seen:
                    return None
                if row is not None and (row["stage"] != "MINTED" or status == "MINTED"):
                    await conn.execute(
                        """UPDATE mints SET status = $2,
                                  status_at = CASE WHEN status = $2 THEN status_at
                                                   ELSE now() END,
                                  status_detail = $3::jsonb,
                                  metadata_uri = COALESCE($4, metadata_uri)
                           WHERE mint_id = $1""",
                        mint_id,
                        status,
                        detail,
                        body.get("metadata_uri"),
                    )
                # Notices commit in the order of their ids (module docstring).
                await conn.execute("SELECT pg_advisory_xact_lock($1)", NOTICE_LOCK)
                cursor: int | None = await conn.fetchval(
                    """INSERT INTO mint_events (mint_id, stage, event_key, detail, type)
                       VALUES ($1, $2, $3, $4::jsonb, $5)
                       ON CONFLICT (mint_id, event_key) DO NOTHING
                       RETURNING id""",
                    mint_id,
                    stage,
                    event_key,
                    payload,
                    kind.value,
                )
                return cursor

        return await self._db.run(work)

    async def notices_after(self, after: int = 0, limit: int = 100) -> list[MintNotice]:
        """The notices after ``after`` (a cursor; 0: from the start), oldest first, at most
        ``limit`` (capped at 1000). Pass the last one's ``cursor`` to read on."""
        limit = max(1, min(limit, MAX_FEED_LIMIT))
        rows = await self._db.run(
            lambda conn: conn.fetch(
                """SELECT id, type, detail::text AS detail, at FROM mint_events
                   WHERE type IS NOT NULL AND id > $1
                   ORDER BY id LIMIT $2""",
                after,
                limit,
            )
        )
        return _notices(rows)

    async def mint_notices(self, mint_id: str) -> list[MintNotice]:
        """Every notice of one mint, oldest first (committed ones: no visibility wait)."""
        rows = await self._db.run(
            lambda conn: conn.fetch(
                """SELECT id, type, detail::text AS detail, at FROM mint_events
                   WHERE mint_id = $1 AND type IS NOT NULL ORDER BY id""",
                mint_id,
            )
        )
        return _notices(rows)
