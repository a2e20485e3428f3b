"""The mint records in Postgres: one row per mint, its events, pins and signed submissions.

Every write is idempotent (an upsert, or guarded by the row's state and an event key), because
an activity whose answer was lost is retried by Temporal and must then do no harm. The
database enforces what matters under concurrency: one mint in progress per user is a partial
unique index, so a second claim is rejected at once rather than queued behind a lock.

``MintStore`` holds the claims, stages, events and reads; its pin, pin repair,
submission and spend methods come from ``db/pins.py``, ``db/pin_repair.py``,
``db/submissions.py``, ``db/wallet_spend.py`` and its notices from ``db/notices.py``, its rows from
``db/rows.py``. Every call goes
through the shared executor (``db/executor.py``): errors classified once into the
``ServiceError`` every client raises, and the only retries inside a call the spec's (a
deadlock, a lost connection); every other retry is Temporal's.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import asyncpg.exceptions as pgexc

from mintsaga.db.collections import CollectionsMixin
from mintsaga.db.errors import IN_PROGRESS_INDEX, SERVICE, endpoint_and_secrets, permanent
from mintsaga.db.executor import Executor, close_pool, create_pool
from mintsaga.db.notices import NoticesMixin
from mintsaga.db.pin_repair import PinRepairMixin
from mintsaga.db.pins import PinsMixin
from mintsaga.db.rows import (
    FINISHED_SQL,
    MINT_COLUMNS,
    SELECT_MINT,
    Event,
    MintRow,
    fetch_in_progress,
    fetch_mint,
    to_stage,
)
from mintsaga.db.submissions import SubmissionsMixin
from mintsaga.db.wallet_spend import SpendMixin
from mintsaga.errors import ErrorKind, ServiceError, without_nul
from mintsaga.resilience.breaker import DB_BREAKER, BreakerRegistry, CircuitBreaker
from mintsaga.stages import FINISHED, MintStage

__all__ = ["SETTABLE_FIELDS", "MintStore"]

# The admission queue's advisory lock (class "admt"), and how long a waiting mint that stopped
# polling (its workflow terminated) keeps its place.
ADMISSION_LOCK = 0x61646D74
ADMISSION_QUEUE_STALE_S = 120.0
# Between claim and pivot: what MINT_ADMISSION_LIMIT counts.
BEFORE_PIVOT_SQL = ", ".join(
    f"'{stage.value}'"
    for stage in (MintStage.INITIATED, MintStage.IPFS_UPLOADED, MintStage.DATABASE_UPDATED)
)

# Columns set_stage may write besides the stage; anything else is a caller's bug.
SETTABLE_FIELDS = frozenset(
    {
        "mint_address",
        "image_cid",
        "metadata_cid",
        "signature",
        "slot",
        "last_valid_block_height",
        "blockhash",
        "reason",
    }
)


class MintStore(
    PinsMixin, PinRepairMixin, SubmissionsMixin, SpendMixin, NoticesMixin, CollectionsMixin
):
    """Mint records over an asyncpg pool; every method is safe to retry."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        endpoint: str | None = None,
        secrets: Sequence[str] = (),
        acquire_timeout: float = 30.0,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        """Wrap a pool; ``sleep`` and ``rng`` drive the retry pauses (tests pass fakes)."""
        self._db = Executor(
            pool,
            endpoint=endpoint,
            secrets=secrets,
            acquire_timeout=acquire_timeout,
            sleep=sleep,
            rng=rng,
        )
        self._endpoint = endpoint

    @property
    def breaker(self) -> CircuitBreaker | None:
        """The database's breaker every call goes through (attached by the worker: `guard`)."""
        return self._db.breaker

    def guard(self, breakers: BreakerRegistry) -> MintStore:
        """Send every call through this database's breaker in `breakers` (named by the
        redacted URL, as `mintsaga breaker list` shows it)."""
        self._db.breaker = breakers.get(self._endpoint or SERVICE, DB_BREAKER)
        return self

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        min_size: int = 5,
        max_size: int = 20,
        idle_timeout: float = 10.0,
        acquire_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        command_timeout: float | None = 30.0,
    ) -> MintStore:
        """Open the pool with the spec's settings (min 5, max 20, idle 10 s, acquire 30 s).

        ``connect_timeout`` bounds each new connection, so a database that accepts and then
        stalls fails fast instead of using up the whole acquire budget; ``command_timeout``
        bounds each statement (the spec's 30 s degradation threshold).
        """
        endpoint, secrets = endpoint_and_secrets(dsn)
        pool = await create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            max_inactive_connection_lifetime=idle_timeout,
            timeout=connect_timeout,
            command_timeout=command_timeout,
        )
        return cls(pool, endpoint=endpoint, secrets=secrets, acquire_timeout=acquire_timeout)

    @property
    def pool(self) -> asyncpg.Pool:
        """The pool, for another store to share (it must not close it)."""
        return self._db.pool

    async def close(self, *, grace: float = 10.0) -> None:
        """Close gracefully; connections still busy after ``grace`` seconds are cut."""
        await close_pool(self._db.pool, grace=grace)

    async def health(self) -> None:
        """Raise a ``ServiceError`` unless a pooled connection answers ``SELECT 1``."""
        await self._db.run(lambda conn: conn.fetchval("SELECT 1"))

    # -- claims and stages ---------------------------------------------------------------------

    async def claim(
        self,
        mint_id: str,
        user_id: str,
        wallet: str,
        mint_address: str | None,
        collection: str | None = None,
    ) -> MintRow:
        """Create the mint at INITIATED, or return the row a previous call created.

        Raises PERMANENT ``UserMintInProgress`` (naming the other mint) when the user already
        has another mint in progress, and PERMANENT ``Conflict`` when ``mint_id`` is taken by
        another request (another user or wallet or mint address or collection). A mint naming
        a ``collection`` takes one of its slots (``_claim_on``): PERMANENT ``UnknownCollection``
        or ``CollectionFull`` when it cannot.
        """

        return await self._db.run(
            lambda conn: self._claim_on(conn, mint_id, user_id, wallet, mint_address, collection)
        )

    async def _claim_on(
        self,
        conn: asyncpg.Connection,
        mint_id: str,
        user_id: str,
        wallet: str,
        mint_address: str | None,
        collection: str | None = None,
    ) -> MintRow:
        if collection is None:
            return await self._insert_claim(conn, mint_id, user_id, wallet, mint_address, None)
        # A slot in the collection: its members not rolled back, counted under the collection
        # row's lock (two claims never both take the last one), in one transaction (a savepoint
        # inside claim_admitted's) with the insert that holds it.
        async with conn.transaction():
            if await fetch_mint(conn, mint_id) is None:
                await self._check_room(conn, mint_id, collection)
            return await self._insert_claim(
                conn, mint_id, user_id, wallet, mint_address, collection
            )

    async def _check_room(self, conn: asyncpg.Connection, mint_id: str, collection: str) -> None:
        found = await conn.fetchrow(
            "SELECT state, max_size FROM collections WHERE key = $1 FOR UPDATE", collection
        )
        if found is None or found["state"] != "created":
            what = "does not exist" if found is None else "is still being created"
            raise permanent(
                "UnknownCollection",
                f"collection {collection!r} {what} (`mintsaga collection create --key"
                f" {collection} ...`); mint {mint_id} was not started",
                self._endpoint,
            )
        # Not this mint: a retried claim whose first attempt committed meanwhile holds its slot.
        members = await conn.fetchval(
            f"""SELECT count(*) FROM mints
                WHERE collection = $1 AND stage <> '{MintStage.ROLLED_BACK.value}'
                  AND mint_id <> $2""",
            collection,
            mint_id,
        )
        if members >= found["max_size"]:
            raise permanent(
                "CollectionFull",
                f"collection {collection!r} is full: {members} of its {found['max_size']}"
                f" members (its max size) are minted or minting; mint {mint_id} was not"
                " started, nothing pinned or sent",
                self._endpoint,
            )

    async def _insert_claim(
        self,
        conn: asyncpg.Connection,
        mint_id: str,
        user_id: str,
        wallet: str,
        mint_address: str | None,
        collection: str | None,
    ) -> MintRow:
        # One statement (a lost answer: all of it happened or none), with the claim's event
        # at the moment it took effect (clock_timestamp: not its transaction's start, which
        # may precede an admission wait for the lock). Inside a caller's transaction
        # (claim_admitted) it gets its own savepoint: a refused insert must not abort that.
        statement = f"""
            WITH ins AS (
                INSERT INTO mints (mint_id, user_id, wallet, stage, mint_address,
                                   status, status_at, collection)
                VALUES ($1, $2, $3, '{MintStage.INITIATED.value}', $4,
                        'IN_PROGRESS', clock_timestamp(), $5)
                ON CONFLICT (mint_id) DO NOTHING
                RETURNING {SELECT_MINT}
            ), ev AS (
                INSERT INTO mint_events (mint_id, stage, event_key, at)
                SELECT mint_id, '{MintStage.INITIATED.value}', 'claimed', clock_timestamp()
                FROM ins
                ON CONFLICT (mint_id, event_key) DO NOTHING
            )
            SELECT * FROM ins"""
        args = (mint_id, user_id, wallet, mint_address, collection)
        try:
            if conn.is_in_transaction():
                async with conn.transaction():
                    record = await conn.fetchrow(statement, *args)
            else:
                record = await conn.fetchrow(statement, *args)
        except pgexc.UniqueViolationError as exc:
            if exc.constraint_name != IN_PROGRESS_INDEX:
                raise
            other = await fetch_in_progress(conn, user_id)
            if other is None:  # it finished between our insert and this look
                raise ServiceError(
                    f"user {user_id}'s other mint finished while mint {mint_id} was"
                    " claimed; claim again",
                    service=SERVICE,
                    kind=ErrorKind.TRANSIENT,
                    code="ClaimRace",
                    endpoint=self._endpoint,
                ) from exc
            raise permanent(
                "UserMintInProgress",
                f"user {user_id} already has mint {other.mint_id} in progress"
                f" (stage {other.stage}); mint {mint_id} was not started",
                self._endpoint,
            ) from exc
        if record is not None:
            return MintRow.model_validate(dict(record))
        existing = await fetch_mint(conn, mint_id)
        if existing is None:  # deleted between the two statements: only by hand
            raise ServiceError(
                f"mint {mint_id} vanished while being claimed",
                service=SERVICE,
                kind=ErrorKind.TRANSIENT,
                code="ClaimRace",
                endpoint=self._endpoint,
            )
        mismatched = [
            name
            for name, ours, theirs in (
                ("user_id", user_id, existing.user_id),
                ("wallet", wallet, existing.wallet),
                ("mint_address", mint_address, existing.mint_address),
                ("collection", collection or "", existing.collection or ""),
            )
            if ours is not None and theirs is not None and ours != theirs
        ]
        if mismatched:
            raise permanent(
                "Conflict",
                f"mint {mint_id} exists with another {', '.join(mismatched)}",
                self._endpoint,
            )
        return existing

    async def claim_admitted(
        self,
        mint_id: str,
        user_id: str,
        wallet: str,
        mint_address: str | None,
        *,
        limit: int,
        collection: str | None = None,
    ) -> MintRow | None:
        """`claim`, once fewer than ``limit`` mints are between claim and pivot fleet-wide;
        None while this mint must wait (it keeps its place in the admission queue).

        First come, first served: a waiting mint is admitted only when the mints queued before
        it fit too. Under one advisory lock, so two workers never both take the last slot. A
        mint already claimed (a retry whose answer was lost) is answered at once.
        """

        async def work(conn: asyncpg.Connection) -> MintRow | None:
            failure: ServiceError | None = None
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1, 0)", ADMISSION_LOCK)
                if await fetch_mint(conn, mint_id) is None:
                    await conn.execute(
                        """DELETE FROM mint_admission_queue
                           WHERE polled_at < now() - make_interval(secs => $1)""",
                        ADMISSION_QUEUE_STALE_S,
                    )
                    queued_at = await conn.fetchval(
                        """INSERT INTO mint_admission_queue (mint_id) VALUES ($1)
                           ON CONFLICT (mint_id) DO UPDATE SET polled_at = now()
                           RETURNING queued_at""",
                        mint_id,
                    )
                    taken = await conn.fetchval(
                        f"""SELECT (SELECT count(*) FROM mints WHERE stage IN ({BEFORE_PIVOT_SQL}))
                                 + (SELECT count(*) FROM mint_admission_queue
                                    WHERE (queued_at, mint_id) < ($1, $2))""",
                        queued_at,
                        mint_id,
                    )
                    if taken >= limit:
                        return None
                await conn.execute("DELETE FROM mint_admission_queue WHERE mint_id = $1", mint_id)
                try:
                    return await self._claim_on(
                        conn, mint_id, user_id, wallet, mint_address, collection
                    )
                except ServiceError as exc:  # refused: it leaves the queue all the same
                    failure = exc
            raise failure

        return await self._db.run(work)

    async def leave_admission_queue(self, mint_id: str) -> None:
        """Give up a mint's place in the admission queue (it was cancelled while waiting)."""
        await self._db.run(
            lambda conn: conn.execute(
                "DELETE FROM mint_admission_queue WHERE mint_id = $1", mint_id
            )
        )

    async def set_stage(
        self,
        mint_id: str,
        stage: MintStage | str,
        *,
        event_key: str,
        detail: dict[str, Any] | None = None,
        **fields: Any,
    ) -> MintRow:
        """Move the mint to ``stage``, set ``fields`` and append one event, atomically.

        A call whose ``event_key`` was already recorded for this mint changes nothing and
        returns the current row, so a stale retry cannot move a mint back. The event's detail is
        ``fields`` merged with ``detail``. Raises PERMANENT ``UnknownMint``, ``UnknownField``
        or ``MintAlreadyFinished`` (a MINTED or ROLLED_BACK mint moved to another stage).
        """
        row = await self._set_stage(mint_id, stage, event_key=event_key, detail=detail, **fields)
        if row is None:
            raise permanent("UnknownMint", f"mint {mint_id} was never claimed", self._endpoint)
        return row

    async def record_event(
        self,
        mint_id: str,
        stage: MintStage | str,
        *,
        event_key: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append an event without moving the mint (e.g. AWAITING_OPERATOR); idempotent."""
        stage_value = to_stage(stage, self._endpoint).value
        payload = json.dumps(detail or {}, default=str, sort_keys=True)

        async def work(conn: asyncpg.Connection) -> bool:
            exists: bool = await conn.fetchval(
                """WITH ins AS (
                       INSERT INTO mint_events (mint_id, stage, event_key, detail)
                       SELECT mint_id, $2::text, $3::text, $4::jsonb FROM mints
                       WHERE mint_id = $1::text
                       ON CONFLICT (mint_id, event_key) DO NOTHING
                   )
                   SELECT EXISTS (SELECT 1 FROM mints WHERE mint_id = $1::text)""",
                mint_id,
                stage_value,
                event_key,
                payload,
            )
            return exists

        if not await self._db.run(work):
            raise permanent("UnknownMint", f"mint {mint_id} was never claimed", self._endpoint)

    async def mark_minted(
        self,
        mint_id: str,
        *,
        signature: str,
        slot: int,
        mint_address: str,
        event_key: str = "minted",
    ) -> MintRow:
        """Record the confirmed mint: stage MINTED with its signature, slot and address."""
        return await self.set_stage(
            mint_id,
            MintStage.MINTED,
            event_key=event_key,
            signature=signature,
            slot=slot,
            mint_address=mint_address,
        )

    async def mark_rolled_back(
        self, mint_id: str, reason: str, *, event_key: str = "rolled_back"
    ) -> bool:
        """Compensate the claim: stage ROLLED_BACK frees the user; history is kept.

        Returns False when the mint was never claimed (nothing to undo). A MINTED mint is never
        rolled back: raises PERMANENT ``MintAlreadyFinished``.
        """
        row = await self._set_stage(
            mint_id, MintStage.ROLLED_BACK, event_key=event_key, reason=reason
        )
        return row is not None

    async def mark_failed(self, mint_id: str, reason: str, *, event_key: str = "failed") -> bool:
        """Record that compensation itself failed and an operator is needed; frees the user.

        Returns False when the mint was never claimed.
        """
        row = await self._set_stage(mint_id, MintStage.FAILED, event_key=event_key, reason=reason)
        return row is not None

    async def _set_stage(
        self,
        mint_id: str,
        stage: MintStage | str,
        *,
        event_key: str,
        detail: dict[str, Any] | None = None,
        **fields: Any,
    ) -> MintRow | None:
        target = to_stage(stage, self._endpoint)
        # Postgres refuses NUL in text; a reason may quote what a remote host answered.
        fields = {k: without_nul(v) if isinstance(v, str) else v for k, v in fields.items()}
        unknown = sorted(set(fields) - SETTABLE_FIELDS)
        if unknown:
            raise permanent(
                "UnknownField",
                f"set_stage cannot set {', '.join(unknown)}; settable: {sorted(SETTABLE_FIELDS)}",
                self._endpoint,
            )
        columns = sorted(fields)
        assignments = ", ".join(
            ["stage = $2::text", "updated_at = now()"]
            + [f"{col} = ${i}" for i, col in enumerate(columns, start=5)]
        )
        payload = json.dumps({**fields, **(detail or {})}, default=str, sort_keys=True)
        # One statement, so it commits on its own: a lost answer means all of it happened or
        # none of it did. ``seen`` makes a retry a no-op; ``cur`` locks the row so two calls
        # for one mint take turns.
        sql = f"""
            WITH cur AS (
                SELECT stage FROM mints WHERE mint_id = $1::text FOR UPDATE
            ), seen AS (
                SELECT 1 FROM mint_events WHERE mint_id = $1::text AND event_key = $3::text
            ), ev AS (
                INSERT INTO mint_events (mint_id, stage, event_key, detail)
                SELECT $1::text, $2::text, $3::text, $4::jsonb FROM cur
                WHERE NOT EXISTS (SELECT 1 FROM seen)
                  AND (cur.stage NOT IN ({FINISHED_SQL}) OR cur.stage = $2::text)
                ON CONFLICT (mint_id, event_key) DO NOTHING
                RETURNING 1
            ), upd AS (
                UPDATE mints SET {assignments}
                WHERE mint_id = $1::text AND EXISTS (SELECT 1 FROM ev)
                RETURNING {SELECT_MINT}
            )
            SELECT (SELECT stage FROM cur) AS current_stage,
                   EXISTS (SELECT 1 FROM seen) AS seen,
                   upd.*
            FROM (SELECT 1) AS one LEFT JOIN upd ON true"""
        args = [mint_id, target.value, event_key, payload, *(fields[c] for c in columns)]

        async def work(conn: asyncpg.Connection) -> MintRow | None:
            result = await conn.fetchrow(sql, *args)
            assert result is not None  # the outer SELECT always yields one row
            current = result["current_stage"]
            if current is None:
                return None
            if result["mint_id"] is not None:
                return MintRow.model_validate({c: result[c] for c in MINT_COLUMNS})
            if not result["seen"] and current in FINISHED and current != target:
                raise permanent(
                    "MintAlreadyFinished",
                    f"mint {mint_id} is {current}; it cannot move to {target}",
                    self._endpoint,
                )
            # The event exists: this call already happened (its answer was lost) or raced.
            return await fetch_mint(conn, mint_id)

        return await self._db.run(work)

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, mint_id: str) -> MintRow | None:
        return await self._db.run(lambda conn: fetch_mint(conn, mint_id))

    async def events(self, mint_id: str) -> list[Event]:
        """The mint's events in the order they were appended."""
        rows = await self._db.run(
            lambda conn: conn.fetch(
                """SELECT id, mint_id, stage, event_key, detail::text AS detail, at
                   FROM mint_events WHERE mint_id = $1 ORDER BY id""",
                mint_id,
            )
        )
        return [Event.model_validate({**dict(r), "detail": json.loads(r["detail"])}) for r in rows]

    async def in_progress(self, user_id: str) -> MintRow | None:
        """The user's mint that is neither MINTED, ROLLED_BACK nor FAILED, if any."""
        return await self._db.run(lambda conn: fetch_in_progress(conn, user_id))
