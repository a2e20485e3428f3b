"""Webhook deliveries in Postgres: one row per (notice, endpoint), from pending to delivered or
failed (given up), claimed fleet-wide by whichever worker's dispatcher gets there first.

    feed (mint_events, db/notices.py) --enqueue--> pending --claim--> (sending) --2xx--> delivered
                                                      ^                   |
                                                      +--- not 2xx, due --+--- past give_up_at,
                                                           again later        or 410 --> failed
                                                                                         |
                                                  `mintsaga webhooks retry` <-------------+

- ``enqueue`` reads each endpoint's cursor (``webhook_cursors``) and turns the notices after it
  into pending rows, with the notice feed's visibility rule (db/notices.py: only rows of
  transactions older than every running one), so no notice is passed over. Idempotent: two
  workers enqueueing at once insert the same rows once and move the cursor to the same place.
  An endpoint seen for the first time starts with the notices of the last ``start_window``.
- ``claim`` takes due rows with ``FOR UPDATE SKIP LOCKED`` (several dispatchers never take the
  same row) and moves each one's ``next_attempt_at`` on by a lease: a worker that dies while
  sending leaves the row to be claimed again after the lease (at least once).
- Order per mint and endpoint: a row is not claimed while an earlier notice of the same mint to
  the same endpoint is still pending (in flight counts: it stays pending until answered). Other
  mints are not held up. A given-up notice no longer holds the later ones back.
- ``record_attempt`` stores the answer: delivered on 2xx; otherwise pending again at the
  dispatcher's next time (never past ``give_up_at``), or failed when the time is up or the
  endpoint said 410 Gone. ``last_error`` is the dispatcher's redacted text (never a secret).

Endpoints are stored by ``endpoint_name`` (no key); the dispatcher maps them to URLs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from mintsaga.db.errors import endpoint_and_secrets
from mintsaga.db.executor import Executor, close_pool, create_pool
from mintsaga.notices import NOTICE_ID_PREFIX, MintNotice

__all__ = [
    "DELIVERY_STATES",
    "Backlog",
    "ClaimedDelivery",
    "DeliveryRow",
    "WebhookDeliveryStore",
    "notice_cursor",
]

DELIVERY_STATES = ("pending", "delivered", "failed")
# How far back an endpoint seen for the first time starts: the notices a delivery could still
# be attempted for (the dispatcher gives up a day after a notice).
DEFAULT_START_WINDOW = timedelta(days=1)


def notice_cursor(event_id: str) -> int:
    """``evt_123`` (or ``123``) -> 123; ValueError naming the id otherwise."""
    digits = event_id.strip().removeprefix(NOTICE_ID_PREFIX)
    if not digits.isdigit():
        raise ValueError(f"{event_id!r} is not an event id (evt_<number>, as `webhooks list`)")
    return int(digits)


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery a dispatcher took: the notice to send and where."""

    notice: MintNotice
    endpoint: str  # endpoint_name form
    attempt: int  # this attempt's number (1 for the first)
    give_up_at: datetime


@dataclass(frozen=True)
class DeliveryRow:
    """One row as operators see it (`mintsaga webhooks list`)."""

    event_id: str
    notice_id: int
    endpoint: str
    mint_id: str
    type: str | None
    state: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    give_up_at: datetime
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = value.isoformat() if isinstance(value, datetime) else value
        return out


@dataclass(frozen=True)
class Backlog:
    pending: int
    oldest_pending_s: float  # age of the oldest pending delivery; 0 when none
    failed: int


_ENQUEUE = """
WITH start AS (
    INSERT INTO webhook_cursors (endpoint, after_id)
    SELECT $1, COALESCE(
        (SELECT max(id) FROM mint_events
         WHERE type IS NOT NULL AND at < now() - $3 * interval '1 second'), 0)
    WHERE NOT EXISTS (SELECT 1 FROM webhook_cursors WHERE endpoint = $1)
    ON CONFLICT (endpoint) DO NOTHING
    RETURNING after_id
), cursor_now AS (
    SELECT after_id FROM start
    UNION ALL SELECT after_id FROM webhook_cursors WHERE endpoint = $1
), fresh AS (
    -- db/notices.py: notices commit in id order, so none with a smaller id can still appear.
    SELECT e.id, e.mint_id, e.at FROM mint_events e
    WHERE e.type IS NOT NULL AND e.id > (SELECT max(after_id) FROM cursor_now)
    ORDER BY e.id LIMIT $2
), added AS (
    INSERT INTO webhook_deliveries (notice_id, endpoint, mint_id, give_up_at)
    SELECT id, $1, mint_id, at + $4 * interval '1 second' FROM fresh
    ON CONFLICT (notice_id, endpoint) DO NOTHING
    RETURNING 1
), moved AS (
    UPDATE webhook_cursors SET after_id = GREATEST(after_id, (SELECT max(id) FROM fresh)),
                               updated_at = now()
    WHERE endpoint = $1 AND EXISTS (SELECT 1 FROM fresh)
    RETURNING 1
)
SELECT (SELECT count(*) FROM added) AS added, (SELECT count(*) FROM fresh) AS seen
"""

_CLAIM = """
WITH due AS (
    SELECT d.notice_id, d.endpoint FROM webhook_deliveries d
    WHERE d.state = 'pending' AND d.next_attempt_at <= now() AND d.endpoint = ANY($1::text[])
      AND NOT EXISTS (
          SELECT 1 FROM webhook_deliveries e
          WHERE e.mint_id = d.mint_id AND e.endpoint = d.endpoint AND e.state = 'pending'
            AND e.notice_id < d.notice_id)
    ORDER BY d.next_attempt_at, d.notice_id
    LIMIT $2
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE webhook_deliveries d
SET attempts = d.attempts + 1, last_attempt_at = now(),
    next_attempt_at = now() + $3 * interval '1 second'
FROM due LEFT JOIN mint_events m ON m.id = due.notice_id
WHERE d.notice_id = due.notice_id AND d.endpoint = due.endpoint
RETURNING d.notice_id, d.endpoint, d.attempts, d.give_up_at, m.type, m.detail::text AS detail,
          m.at
"""

_RECORD = """
UPDATE webhook_deliveries
SET state = CASE WHEN $4 THEN 'delivered'
                 WHEN $7 OR now() >= give_up_at THEN 'failed'
                 ELSE 'pending' END,
    last_status = $5, last_error = $6,
    delivered_at = CASE WHEN $4 THEN now() ELSE delivered_at END,
    next_attempt_at = CASE WHEN $4 OR $7 THEN next_attempt_at
                           ELSE LEAST(now() + $8 * interval '1 second', give_up_at) END
WHERE notice_id = $1 AND endpoint = $2 AND state = 'pending' AND attempts = $3
RETURNING state
"""

_SELECT = """
SELECT d.*, m.type FROM webhook_deliveries d LEFT JOIN mint_events m ON m.id = d.notice_id
"""


def _row(r: asyncpg.Record) -> DeliveryRow:
    return DeliveryRow(
        event_id=f"{NOTICE_ID_PREFIX}{r['notice_id']}",
        notice_id=r["notice_id"],
        endpoint=r["endpoint"],
        mint_id=r["mint_id"],
        type=r["type"],
        state=r["state"],
        attempts=r["attempts"],
        created_at=r["created_at"],
        next_attempt_at=r["next_attempt_at"],
        give_up_at=r["give_up_at"],
        last_attempt_at=r["last_attempt_at"],
        last_status=r["last_status"],
        last_error=r["last_error"],
        delivered_at=r["delivered_at"],
    )


class WebhookDeliveryStore:
    """The deliveries over an asyncpg pool (the worker's, or one of its own for the CLI)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        dsn: str | None = None,
        acquire_timeout: float = 10.0,
        owns_pool: bool = False,
    ) -> None:
        """Use ``pool`` (e.g. ``MintStore.pool``); ``dsn`` only tells what to scrub from errors."""
        endpoint, secrets = endpoint_and_secrets(dsn) if dsn else (None, ())
        # No breaker: the dispatcher runs beside the mints and simply polls again.
        self._db = Executor(
            pool, endpoint=endpoint, secrets=secrets, acquire_timeout=acquire_timeout
        )
        self._owns_pool = owns_pool

    @classmethod
    async def connect(cls, dsn: str, *, max_size: int = 2) -> WebhookDeliveryStore:
        """A store with a small pool of its own (the CLI, tests)."""
        pool = await create_pool(
            dsn, min_size=1, max_size=max_size, timeout=5.0, command_timeout=30.0
        )
        return cls(pool, dsn=dsn, owns_pool=True)

    async def close(self) -> None:
        if self._owns_pool:
            await close_pool(self._db.pool, grace=10.0)

    # -- the dispatcher's side -----------------------------------------------------------------

    async def enqueue(
        self,
        endpoint: str,
        *,
        give_up_after: timedelta,
        start_window: timedelta = DEFAULT_START_WINDOW,
        limit: int = 500,
    ) -> int:
        """Turn the notices after ``endpoint``'s cursor into pending deliveries (at most
        ``limit``); returns how many notices were read (``limit``: call again)."""
        row = await self._db.attempt(
            lambda conn: conn.fetchrow(
                _ENQUEUE,
                endpoint,
                limit,
                start_window.total_seconds(),
                give_up_after.total_seconds(),
            )
        )
        assert row is not None
        return int(row["seen"])

    async def claim(
        self, endpoints: Sequence[str], *, limit: int, lease_s: float
    ) -> list[ClaimedDelivery]:
        """Due deliveries to ``endpoints``, each held for ``lease_s`` (see the module doc)."""
        rows = await self._db.attempt(
            lambda conn: conn.fetch(_CLAIM, list(endpoints), limit, lease_s)
        )
        claimed = []
        for r in sorted(rows, key=lambda r: r["notice_id"]):
            if r["type"] is None:  # its mint_events row is gone: nothing left to send
                await self._drop_orphan(r["notice_id"], r["endpoint"], r["attempts"])
                continue
            notice = MintNotice(
                cursor=r["notice_id"],
                type=r["type"],
                timestamp=r["at"],
                data=json.loads(r["detail"]),
            )
            claimed.append(ClaimedDelivery(notice, r["endpoint"], r["attempts"], r["give_up_at"]))
        return claimed

    async def _drop_orphan(self, notice_id: int, endpoint: str, attempt: int) -> None:
        await self._db.attempt(
            lambda conn: conn.execute(
                """UPDATE webhook_deliveries SET state = 'failed', last_error = $4
                   WHERE notice_id = $1 AND endpoint = $2 AND attempts = $3""",
                notice_id,
                endpoint,
                attempt,
                "the notice's mint_events row no longer exists",
            )
        )

    async def record_attempt(
        self,
        delivery: ClaimedDelivery,
        *,
        delivered: bool,
        status: int | None,
        error: str | None,
        retry_in_s: float,
        stop: bool = False,
    ) -> str | None:
        """Store an attempt's outcome; returns the row's state (None: the claim was lost,
        another worker took the delivery after the lease, and its answer counts)."""
        state: str | None = await self._db.attempt(
            lambda conn: conn.fetchval(
                _RECORD,
                delivery.notice.cursor,
                delivery.endpoint,
                delivery.attempt,
                delivered,
                status,
                error,
                stop,
                retry_in_s,
            )
        )
        return state

    async def backlog(self) -> Backlog:
        row = await self._db.attempt(
            lambda conn: conn.fetchrow(
                """SELECT count(*) FILTER (WHERE state = 'pending') AS pending,
                          COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)
                                   FILTER (WHERE state = 'pending')), 0) AS oldest,
                          count(*) FILTER (WHERE state = 'failed') AS failed
                   FROM webhook_deliveries WHERE state <> 'delivered'"""
            )
        )
        assert row is not None
        return Backlog(int(row["pending"]), float(row["oldest"]), int(row["failed"]))

    # -- the operators' side -------------------------------------------------------------------

    async def deliveries(
        self, *, state: str | None = None, mint_id: str | None = None, limit: int = 100
    ) -> list[DeliveryRow]:
        """Rows, newest notice first, optionally of one state and/or one mint."""
        if state is not None and state not in DELIVERY_STATES:
            raise ValueError(f"state: {state!r} is not one of {', '.join(DELIVERY_STATES)}")
        rows = await self._db.attempt(
            lambda conn: conn.fetch(
                _SELECT
                + """WHERE ($1::text IS NULL OR d.state = $1)
                       AND ($2::text IS NULL OR d.mint_id = $2)
                     ORDER BY d.notice_id DESC, d.endpoint LIMIT $3""",
                state,
                mint_id,
                limit,
            )
        )
        return [_row(r) for r in rows]

    async def retry(
        self, notice_ids: Sequence[int] | None, *, give_up_after: timedelta
    ) -> list[DeliveryRow]:
        """Failed deliveries (of ``notice_ids``; every failed one when None) back to pending,
        due now, with a fresh ``give_up_after`` and their attempts counted from 0 again."""
        rows = await self._db.attempt(
            lambda conn: conn.fetch(
                """WITH reset AS (
                       UPDATE webhook_deliveries
                       SET state = 'pending', attempts = 0, next_attempt_at = now(),
                           give_up_at = now() + $2 * interval '1 second'
                       WHERE state = 'failed'
                         AND ($1::bigint[] IS NULL OR notice_id = ANY($1::bigint[]))
                       RETURNING *)
                   SELECT d.*, m.type FROM reset d
                   LEFT JOIN mint_events m ON m.id = d.notice_id ORDER BY d.notice_id""",
                None if notice_ids is None else list(notice_ids),
                give_up_after.total_seconds(),
            )
        )
        return [_row(r) for r in rows]
