"""The mint records in Postgres: one row per mint, its events, pins and signed submissions.

Every write is idempotent (an upsert, or guarded by the row's state and an event key), because
an activity whose answer was lost is retried by Temporal and must then do no harm. The
database enforces what matters under concurrency: one mint in progress per user is a partial
unique index, so a second claim is rejected at once rather than queued behind a lock.

Errors are classified here, once (see :func:`classify_error`), into the ``ServiceError`` every
client raises. The only retry inside a call is the spec's deadlock rule: one immediate retry
after a random 100-500 ms pause on ``deadlock_detected`` / ``serialization_failure``; every
other retry is Temporal's. A connection that failed is terminated, so the pool replaces it and
the retried call gets a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Literal, NamedTuple, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import asyncpg
import asyncpg.exceptions as pgexc
from pydantic import BaseModel, ConfigDict

from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.resilience.breaker import DB_BREAKER, BreakerRegistry, CircuitBreaker
from mintsaga.resilience.guard import QUEUE_MARGIN_S, attempt_time_left, through
from mintsaga.stages import FINISHED, NOT_IN_PROGRESS, MintStage

__all__ = [
    "IN_PROGRESS_INDEX",
    "Event",
    "MintRow",
    "MintStage",
    "MintStore",
    "Pin",
    "Submission",
    "classify_error",
    "endpoint_and_secrets",
]

SERVICE = "postgres"
IN_PROGRESS_INDEX = "mints_one_in_progress_per_user"
Phase = Literal["connect", "acquire", "query"]
T = TypeVar("T")

_MINT_COLUMNS = (
    "mint_id",
    "user_id",
    "wallet",
    "stage",
    "mint_address",
    "image_cid",
    "metadata_cid",
    "signature",
    "slot",
    "last_valid_block_height",
    "blockhash",
    "reason",
    "created_at",
    "updated_at",
)
_SELECT_MINT = ", ".join(_MINT_COLUMNS)
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


def _sql_list(stages: Iterable[MintStage]) -> str:
    return ", ".join(f"'{s.value}'" for s in sorted(stages))


_FINISHED_SQL = _sql_list(FINISHED)
_NOT_IN_PROGRESS_SQL = _sql_list(NOT_IN_PROGRESS)
# Two-int advisory lock keys live apart from db.migrate's one-bigint key.
_PIN_LOCK_CLASS = 0x70696E73  # "pins"
# release_pins' unpins hold the CIDs' locks: their time is bounded below the activity's 60 s,
# and the server drops a session idle in that transaction a little longer than that.
UNPIN_BUDGET_S = 40.0
_IDLE_MARGIN_S = 10.0


class _UnpinFailed(Exception):
    """An unpin inside release_pins failed: carried past the database's error handling."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


# -- models ------------------------------------------------------------------------------------


class MintRow(BaseModel):
    """One row of ``mints``, every column."""

    model_config = ConfigDict(frozen=True)

    mint_id: str
    user_id: str
    wallet: str
    stage: MintStage
    mint_address: str | None
    image_cid: str | None
    metadata_cid: str | None
    signature: str | None
    slot: int | None
    last_valid_block_height: int | None
    blockhash: str | None
    reason: str | None
    created_at: datetime
    updated_at: datetime


class Event(BaseModel):
    """One entry of a mint's story (``mint_events``)."""

    model_config = ConfigDict(frozen=True)

    id: int
    mint_id: str
    stage: str  # free text, not MintStage: rows older than the enum stay readable
    event_key: str | None
    detail: dict[str, Any]
    at: datetime


class Submission(BaseModel):
    """One signed mint transaction, recorded before its first send."""

    model_config = ConfigDict(frozen=True)

    id: int
    mint_id: str
    signature: str
    last_valid_block_height: int
    blockhash: str
    created_at: datetime


class Pin(NamedTuple):
    cid: str
    provider: str


# -- error classification ----------------------------------------------------------------------

# First match wins; subclasses come before their bases. TimeoutError (an OSError), unique
# violations and InterfaceError depend on more than the type and are handled before this table.
_TABLE: tuple[tuple[type[BaseException], ErrorKind, str], ...] = (
    (pgexc.DeadlockDetectedError, ErrorKind.TRANSIENT, "DeadlockDetected"),
    (pgexc.SerializationError, ErrorKind.TRANSIENT, "SerializationFailure"),
    (pgexc.TooManyConnectionsError, ErrorKind.TRANSIENT, "TooManyConnections"),
    (pgexc.CannotConnectNowError, ErrorKind.TRANSIENT, "CannotConnectNow"),
    (pgexc.AdminShutdownError, ErrorKind.TRANSIENT, "ServerShutdown"),
    (pgexc.CrashShutdownError, ErrorKind.TRANSIENT, "ServerShutdown"),
    (pgexc.QueryCanceledError, ErrorKind.TRANSIENT, "QueryCanceled"),
    (pgexc.ConnectionDoesNotExistError, ErrorKind.TRANSIENT, "ConnectionLost"),
    (pgexc.PostgresConnectionError, ErrorKind.TRANSIENT, "ConnectionFailure"),  # SQLSTATE 08
    (pgexc.InvalidAuthorizationSpecificationError, ErrorKind.NEEDS_OPERATOR, "DatabaseAuthFailed"),
    (pgexc.InvalidCatalogNameError, ErrorKind.NEEDS_OPERATOR, "DatabaseMissing"),
    (pgexc.UndefinedTableError, ErrorKind.NEEDS_OPERATOR, "SchemaNotMigrated"),
    (pgexc.UndefinedColumnError, ErrorKind.NEEDS_OPERATOR, "SchemaNotMigrated"),
    (ConnectionRefusedError, ErrorKind.TRANSIENT, "ConnectionRefused"),
    (ConnectionResetError, ErrorKind.TRANSIENT, "ConnectionReset"),
    (ConnectionError, ErrorKind.TRANSIENT, "ConnectionError"),
    (socket.gaierror, ErrorKind.TRANSIENT, "NameResolutionFailed"),
    (OSError, ErrorKind.TRANSIENT, "NetworkError"),
)
# A statement's connection went away under it: the operation may run again on a fresh one.
CONNECTION_LOST = frozenset(
    {"ConnectionLost", "ConnectionReset", "ConnectionClosed", "ConnectionError"}
)
CONNECTION_RETRY_PAUSES_S = (0.5, 1.0, 2.0)  # the spec's "exponential backoff (0.5s, 1s, 2s)"
log = logging.getLogger("mintsaga.mint_store")

_TIMEOUT_CODES: dict[Phase, str] = {
    "connect": "ConnectTimeout",
    "acquire": "PoolAcquireTimeout",
    "query": "QueryTimeout",
}


def classify_error(
    exc: BaseException,
    *,
    during: Phase = "query",
    endpoint: str | None = None,
    secrets: Sequence[str] = (),
) -> ServiceError:
    """Translate a driver or network failure into a ``ServiceError``.

    Args:
        exc: what asyncpg or the socket raised.
        during: "connect" (creating the pool), "acquire" (waiting for a pooled connection) or
            "query"; it only tells timeouts apart.
        endpoint: the database URL without credentials, for the error.
        secrets: strings that must not appear in the message (the DSN, its password).
    """
    if isinstance(exc, ServiceError):
        return exc
    kind, code = _kind_and_code(exc, during)
    detail = str(exc) or type(exc).__name__
    for secret in secrets:
        if secret:
            detail = detail.replace(secret, "***")
    return ServiceError(
        f"{during}: {type(exc).__name__}: {detail}",
        service=SERVICE,
        kind=kind,
        code=code,
        endpoint=endpoint,
        connected=during == "query",  # not a connection failure, for the breaker
    )


def _kind_and_code(exc: BaseException, during: Phase) -> tuple[ErrorKind, str]:
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is TimeoutError on 3.11
        return ErrorKind.TRANSIENT, _TIMEOUT_CODES[during]
    if isinstance(exc, pgexc.UniqueViolationError):
        if exc.constraint_name == IN_PROGRESS_INDEX:
            return ErrorKind.PERMANENT, "UserMintInProgress"
        return ErrorKind.PERMANENT, "Conflict"
    if isinstance(exc, pgexc.InterfaceError):
        text = str(exc)
        if "pool is clos" in text:  # "pool is closing" / "pool is closed": worker shutting down
            return ErrorKind.TRANSIENT, "PoolClosed"
        if "connection is closed" in text or "connection was closed" in text:
            return ErrorKind.TRANSIENT, "ConnectionClosed"
        return ErrorKind.PERMANENT, "InterfaceError"
    for exc_type, kind, code in _TABLE:
        if isinstance(exc, exc_type):
            return kind, code
    return ErrorKind.PERMANENT, type(exc).__name__


def endpoint_and_secrets(dsn: str) -> tuple[str, tuple[str, ...]]:
    """The DSN without user, password or query, and the strings to scrub from messages."""
    parts = urlsplit(dsn)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    endpoint = urlunsplit((parts.scheme, hostport, parts.path, "", ""))
    secrets = [dsn]
    if ":" in userinfo:
        raw = userinfo.split(":", 1)[1]
        secrets += [raw, unquote(raw)]
    for value in parse_qs(parts.query).get("password", []):
        secrets.append(value)
    # Longest first, so a password inside the DSN does not break the DSN's own replacement.
    return endpoint, tuple(sorted({s for s in secrets if s}, key=len, reverse=True))


def _permanent(code: str, message: str, endpoint: str | None) -> ServiceError:
    return ServiceError(
        message, service=SERVICE, kind=ErrorKind.PERMANENT, code=code, endpoint=endpoint
    )


# -- the store ---------------------------------------------------------------------------------


async def create_pool(dsn: str, **options: Any) -> asyncpg.Pool:
    """An asyncpg pool, or the classified failure to open one (the password never shown)."""
    endpoint, secrets = endpoint_and_secrets(dsn)
    try:
        return await asyncpg.create_pool(dsn, **options)
    except Exception as exc:
        raise classify_error(exc, during="connect", endpoint=endpoint, secrets=secrets) from exc


class MintStore:
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
        """Wrap a pool; ``sleep`` and ``rng`` drive the deadlock pause (tests pass fakes)."""
        self._pool = pool
        self._endpoint = endpoint
        self._secrets = tuple(secrets)
        self._acquire_timeout = acquire_timeout
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.breaker: CircuitBreaker | None = None  # attached by the worker (`guard`)

    def guard(self, breakers: BreakerRegistry) -> MintStore:
        """Send every call through this database's breaker in `breakers` (named by the
        redacted URL, as `starter.py breaker list` shows it)."""
        self.breaker = breakers.get(self._endpoint or SERVICE, DB_BREAKER)
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
        return self._pool

    async def close(self, *, grace: float = 10.0) -> None:
        """Close gracefully; connections still busy after ``grace`` seconds are cut."""
        try:
            await asyncio.wait_for(self._pool.close(), grace)
        except TimeoutError:
            self._pool.terminate()

    async def health(self) -> None:
        """Raise a ``ServiceError`` unless a pooled connection answers ``SELECT 1``."""
        await self._run(lambda conn: conn.fetchval("SELECT 1"))

    # -- claims and stages ---------------------------------------------------------------------

    async def claim(
        self, mint_id: str, user_id: str, wallet: str, mint_address: str | None
    ) -> MintRow:
        """Create the mint at INITIATED, or return the row a previous call created.

        Raises PERMANENT ``UserMintInProgress`` (naming the other mint) when the user already
        has another mint in progress, and PERMANENT ``Conflict`` when ``mint_id`` is taken by
        another request (another user or wallet or mint address).
        """

        async def work(conn: asyncpg.Connection) -> MintRow:
            try:
                record = await conn.fetchrow(
                    f"""INSERT INTO mints (mint_id, user_id, wallet, stage, mint_address)
                        VALUES ($1, $2, $3, '{MintStage.INITIATED.value}', $4)
                        ON CONFLICT (mint_id) DO NOTHING
                        RETURNING {_SELECT_MINT}""",
                    mint_id,
                    user_id,
                    wallet,
                    mint_address,
                )
            except pgexc.UniqueViolationError as exc:
                if exc.constraint_name != IN_PROGRESS_INDEX:
                    raise
                other = await self._fetch_in_progress(conn, user_id)
                if other is None:  # it finished between our insert and this look
                    raise ServiceError(
                        f"user {user_id}'s other mint finished while mint {mint_id} was"
                        " claimed; claim again",
                        service=SERVICE,
                        kind=ErrorKind.TRANSIENT,
                        code="ClaimRace",
                        endpoint=self._endpoint,
                    ) from exc
                raise _permanent(
                    "UserMintInProgress",
                    f"user {user_id} already has mint {other.mint_id} in progress"
                    f" (stage {other.stage}); mint {mint_id} was not started",
                    self._endpoint,
                ) from exc
            if record is not None:
                return MintRow.model_validate(dict(record))
            existing = await self._fetch_mint(conn, mint_id)
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
                )
                if ours is not None and theirs is not None and ours != theirs
            ]
            if mismatched:
                raise _permanent(
                    "Conflict",
                    f"mint {mint_id} exists with another {', '.join(mismatched)}",
                    self._endpoint,
                )
            return existing

        return await self._run(work)

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
            raise _permanent("UnknownMint", f"mint {mint_id} was never claimed", self._endpoint)
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
        stage_value = _stage(stage, self._endpoint).value
        payload = json.dumps(detail or {}, default=str, sort_keys=True)

        async def work(conn: asyncpg.Connection) -> bool:
            return await conn.fetchval(
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

        if not await self._run(work):
            raise _permanent("UnknownMint", f"mint {mint_id} was never claimed", self._endpoint)

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
        target = _stage(stage, self._endpoint)
        unknown = sorted(set(fields) - SETTABLE_FIELDS)
        if unknown:
            raise _permanent(
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
                  AND (cur.stage NOT IN ({_FINISHED_SQL}) OR cur.stage = $2::text)
                ON CONFLICT (mint_id, event_key) DO NOTHING
                RETURNING 1
            ), upd AS (
                UPDATE mints SET {assignments}
                WHERE mint_id = $1::text AND EXISTS (SELECT 1 FROM ev)
                RETURNING {_SELECT_MINT}
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
                return MintRow.model_validate({c: result[c] for c in _MINT_COLUMNS})
            if not result["seen"] and current in FINISHED and current != target:
                raise _permanent(
                    "MintAlreadyFinished",
                    f"mint {mint_id} is {current}; it cannot move to {target}",
                    self._endpoint,
                )
            # The event exists: this call already happened (its answer was lost) or raced.
            return await self._fetch_mint(conn, mint_id)

        return await self._run(work)

    # -- pins ----------------------------------------------------------------------------------

    async def record_pin(self, mint_id: str, cid: str, provider: str) -> None:
        """Note that this mint holds ``cid`` at ``provider``; recording it twice is harmless.

        Call it before pinning (register before you act). It takes the CID's pin lock, so it
        waits while a :meth:`release_pins` holding that CID checks and unpins it: the pin made
        after this call returns is never undone by a release that was already under way.
        Raises PERMANENT ``UnknownMint``, or ``MintAlreadyFinished`` for a new pin on a
        ROLLED_BACK mint (it would never be released).
        """

        async def work(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                # Held until commit: a release of this CID either finished (and unpinned)
                # before, or starts after and sees this pin as a live holder.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1::int, hashtext($2::text))",
                    _PIN_LOCK_CLASS,
                    cid,
                )
                result = await conn.fetchrow(
                    f"""WITH m AS (
                            SELECT stage FROM mints WHERE mint_id = $1::text
                        ), ins AS (
                            INSERT INTO mint_pins (mint_id, cid, provider)
                            SELECT $1::text, $2::text, $3::text FROM m
                            WHERE m.stage <> '{MintStage.ROLLED_BACK.value}'
                            ON CONFLICT (mint_id, cid, provider) DO NOTHING
                            RETURNING 1
                        )
                        SELECT (SELECT stage FROM m) AS stage,
                               EXISTS (SELECT 1 FROM ins) AS inserted,
                               EXISTS (SELECT 1 FROM mint_pins WHERE mint_id = $1::text
                                       AND cid = $2::text AND provider = $3::text) AS existed""",
                    mint_id,
                    cid,
                    provider,
                )
                self._check_guarded_insert(result, mint_id, "pins")

        await self._run(work)

    async def release_pins(
        self,
        mint_id: str,
        unpin: Callable[[str, str], Awaitable[object]],
        *,
        unpin_budget_s: float = UNPIN_BUDGET_S,
    ) -> list[Pin]:
        """Mark this mint's pins released and unpin, with ``unpin(cid, provider)``, those no
        other live mint holds; return what was unpinned.

        A live holder is another mint, not ROLLED_BACK, whose pin is not released: tier images
        are shared, and unpinning one would break a mint that still needs it. The check and the
        unpins happen in one transaction holding each CID's pin lock (taken in key order, so
        two releases cannot deadlock), the lock :meth:`record_pin` takes too: another mint's
        pin is either recorded before (so the CID is not unpinned) or after the unpin (so its
        upload, which follows its record, pins the CID again). Pins recorded for this mint
        after its locks were taken (a late upload) are left for a retry.

        The unpins together get ``unpin_budget_s`` seconds (and the server ends the session if
        the worker goes silent for longer), so a hung provider cannot hold the locks: past it,
        TRANSIENT ``UnpinTimeout``. A failure of ``unpin`` rolls everything back and is raised
        as is. A retry unpins the same CIDs again (``unpin`` must be idempotent: already
        released pins of this mint that still have no live holder are included), so an attempt
        that died between marking and unpinning loses no unpin. Rows are kept. Raises
        PERMANENT ``MintAlreadyFinished`` for a MINTED mint: its NFT needs them.
        """

        async def work(conn: asyncpg.Connection) -> list[Pin]:
            async with conn.transaction():
                # A worker that stops talking mid-unpin must not keep the CIDs locked.
                await conn.execute(
                    "SELECT set_config('idle_in_transaction_session_timeout', $1, true)",
                    str(int((unpin_budget_s + _IDLE_MARGIN_S) * 1000)),
                )
                stage = await conn.fetchval(
                    "SELECT stage FROM mints WHERE mint_id = $1 FOR UPDATE", mint_id
                )
                if stage == MintStage.MINTED:
                    raise _permanent(
                        "MintAlreadyFinished",
                        f"mint {mint_id} is MINTED; its pins are not released",
                        self._endpoint,
                    )
                keyed = await conn.fetch(
                    """SELECT DISTINCT cid, hashtext(cid) AS k FROM mint_pins
                       WHERE mint_id = $1""",
                    mint_id,
                )
                cids = sorted({r["cid"] for r in keyed})
                # Locks in one order (by key) everywhere, so two releases cannot deadlock;
                # record_pin holds one lock at a time.
                for key in sorted({r["k"] for r in keyed}):
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock($1::int, $2::int)", _PIN_LOCK_CLASS, key
                    )
                await conn.execute(
                    "UPDATE mint_pins SET released_at = now()"
                    " WHERE mint_id = $1 AND cid = ANY($2::text[]) AND released_at IS NULL",
                    mint_id,
                    cids,
                )
                rows = await conn.fetch(
                    f"""SELECT DISTINCT p.cid, p.provider FROM mint_pins AS p
                        WHERE p.mint_id = $1 AND p.cid = ANY($2::text[]) AND NOT EXISTS (
                            SELECT 1 FROM mint_pins AS o
                            LEFT JOIN mints AS m ON m.mint_id = o.mint_id
                            WHERE o.cid = p.cid AND o.mint_id <> p.mint_id
                              AND o.released_at IS NULL
                              AND m.stage IS DISTINCT FROM '{MintStage.ROLLED_BACK.value}')
                        ORDER BY p.cid, p.provider""",
                    mint_id,
                    cids,
                )
                pins = [Pin(r["cid"], r["provider"]) for r in rows]
                # Still inside the transaction: the locks stay held until the unpins are done.
                try:
                    async with asyncio.timeout(unpin_budget_s):
                        for pin in pins:
                            await unpin(pin.cid, pin.provider)
                except TimeoutError as exc:
                    timeout = ServiceError(
                        f"unpinning mint {mint_id}'s CIDs took over {unpin_budget_s:g} s;"
                        " nothing was released, a retry unpins them again",
                        service="ipfs",
                        kind=ErrorKind.TRANSIENT,
                        code="UnpinTimeout",
                    )
                    timeout.__cause__ = exc
                    raise _UnpinFailed(timeout) from exc
                except Exception as exc:
                    raise _UnpinFailed(exc) from exc
            return pins

        try:
            return await self._run(work)
        except _UnpinFailed as failed:
            raise failed.error from failed.error.__cause__

    # -- submissions ---------------------------------------------------------------------------

    async def record_submission(
        self, mint_id: str, signature: str, last_valid_block_height: int, blockhash: str
    ) -> None:
        """Keep a signed transaction before its first send; recording it twice is harmless.

        The mint row also takes the newest signature and its validity window. Raises PERMANENT
        ``UnknownMint``, or ``MintAlreadyFinished`` for a new signature on a finished mint.
        """

        async def work(conn: asyncpg.Connection) -> None:
            result = await conn.fetchrow(
                f"""WITH m AS (
                        SELECT stage FROM mints WHERE mint_id = $1::text FOR UPDATE
                    ), ins AS (
                        INSERT INTO mint_submissions
                            (mint_id, signature, last_valid_block_height, blockhash)
                        SELECT $1::text, $2::text, $3::bigint, $4::text FROM m
                        WHERE m.stage NOT IN ({_FINISHED_SQL})
                        ON CONFLICT (mint_id, signature) DO NOTHING
                        RETURNING 1
                    ), upd AS (
                        UPDATE mints SET signature = $2::text,
                                         last_valid_block_height = $3::bigint,
                                         blockhash = $4::text, updated_at = now()
                        WHERE mint_id = $1::text AND EXISTS (SELECT 1 FROM ins)
                        RETURNING 1
                    )
                    SELECT (SELECT stage FROM m) AS stage,
                           EXISTS (SELECT 1 FROM ins) AS inserted,
                           EXISTS (SELECT 1 FROM upd) AS updated,
                           EXISTS (SELECT 1 FROM mint_submissions WHERE mint_id = $1::text
                                   AND signature = $2::text) AS existed""",
                mint_id,
                signature,
                last_valid_block_height,
                blockhash,
            )
            self._check_guarded_insert(result, mint_id, "submission")

        await self._run(work)

    def _check_guarded_insert(self, result: asyncpg.Record | None, mint_id: str, what: str) -> None:
        """An insert guarded by the mint's stage: refuse an unknown or a finished mint."""
        assert result is not None
        if result["stage"] is None:
            raise _permanent("UnknownMint", f"mint {mint_id} was never claimed", self._endpoint)
        if not result["inserted"] and not result["existed"]:
            raise _permanent(
                "MintAlreadyFinished",
                f"mint {mint_id} is {result['stage']}; it takes no new {what}",
                self._endpoint,
            )

    async def submissions(self, mint_id: str) -> list[Submission]:
        """Every signed transaction of this mint, oldest first."""
        rows = await self._run(
            lambda conn: conn.fetch(
                """SELECT id, mint_id, signature, last_valid_block_height, blockhash, created_at
                   FROM mint_submissions WHERE mint_id = $1 ORDER BY id""",
                mint_id,
            )
        )
        return [Submission.model_validate(dict(r)) for r in rows]

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, mint_id: str) -> MintRow | None:
        return await self._run(lambda conn: self._fetch_mint(conn, mint_id))

    async def events(self, mint_id: str) -> list[Event]:
        """The mint's events in the order they were appended."""
        rows = await self._run(
            lambda conn: conn.fetch(
                """SELECT id, mint_id, stage, event_key, detail::text AS detail, at
                   FROM mint_events WHERE mint_id = $1 ORDER BY id""",
                mint_id,
            )
        )
        return [Event.model_validate({**dict(r), "detail": json.loads(r["detail"])}) for r in rows]

    async def in_progress(self, user_id: str) -> MintRow | None:
        """The user's mint that is neither MINTED, ROLLED_BACK nor FAILED, if any."""
        return await self._run(lambda conn: self._fetch_in_progress(conn, user_id))

    @staticmethod
    async def _fetch_mint(conn: asyncpg.Connection, mint_id: str) -> MintRow | None:
        record = await conn.fetchrow(
            f"SELECT {_SELECT_MINT} FROM mints WHERE mint_id = $1", mint_id
        )
        return None if record is None else MintRow.model_validate(dict(record))

    @staticmethod
    async def _fetch_in_progress(conn: asyncpg.Connection, user_id: str) -> MintRow | None:
        # The predicate repeats the partial index's, so the planner can use it.
        record = await conn.fetchrow(
            f"""SELECT {_SELECT_MINT} FROM mints
                WHERE user_id = $1 AND stage NOT IN ({_NOT_IN_PROGRESS_SQL})""",
            user_id,
        )
        return None if record is None else MintRow.model_validate(dict(record))

    # -- the one place errors are classified ---------------------------------------------------

    async def _run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """`_attempt` through the database's circuit breaker, when one is attached: after 3
        connection failures in a row calls fail at once for 10 s (the spec's DB breaker).

        A connection lost under a statement is the spec's "connection error → exponential
        backoff (0.5 s, 1 s, 2 s)": inside an activity attempt with the time, the operation
        runs again on a fresh connection after each pause (every operation is idempotent, as
        Temporal's own retries already require), each try passing the breaker. Outside an
        activity, or without the time, the error goes up at once.
        """
        for pause in (*CONNECTION_RETRY_PAUSES_S, None):
            try:
                return await through(
                    self.breaker, SERVICE, lambda: self._attempt(work), endpoint=self._endpoint
                )
            except ServiceError as exc:
                if pause is None or not exc.connected or exc.code not in CONNECTION_LOST:
                    raise
                pause *= self._rng.uniform(0.8, 1.2)
                if pause + QUEUE_MARGIN_S > attempt_time_left():
                    raise
                log.info("%s; trying again on a fresh connection in %.1f s", exc.code, pause)
                await self._sleep(pause)
        raise AssertionError("unreachable: the last try returns or raises")

    async def _attempt(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``work`` on a pooled connection; classify what fails.

        Deadlocks and serialization failures get the spec's single immediate retry after a
        random 100-500 ms pause. A connection that failed is terminated before it goes back,
        so the pool opens a fresh one for the next call instead of handing out a broken one.
        """
        for attempt in (1, 2):
            try:
                conn = await self._pool.acquire(timeout=self._acquire_timeout)
            except Exception as exc:
                raise self._classify(exc, "acquire") from exc
            try:
                return await work(conn)
            except (ServiceError, _UnpinFailed):
                raise  # already classified; an unpin's failure is not the database's
            except (pgexc.DeadlockDetectedError, pgexc.SerializationError) as exc:
                if attempt == 2:
                    raise self._classify(exc, "query") from exc
            except Exception as exc:
                error = self._classify(exc, "query")
                if error.kind is ErrorKind.TRANSIENT:
                    # Already gone back to the pool if the socket died; then nothing to do.
                    with contextlib.suppress(pgexc.InterfaceError):
                        conn.terminate()
                raise error from exc
            finally:
                # The pool terminates a connection it cannot reset; our answer stands anyway.
                with contextlib.suppress(Exception):
                    await self._pool.release(conn)
            await self._sleep(self._rng.uniform(0.1, 0.5))
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _classify(self, exc: BaseException, during: Phase) -> ServiceError:
        return classify_error(exc, during=during, endpoint=self._endpoint, secrets=self._secrets)


def _stage(stage: MintStage | str, endpoint: str | None) -> MintStage:
    try:
        return MintStage(stage)
    except ValueError:
        raise _permanent(
            "UnknownStage",
            f"{stage!r} is not a stage; stages: {[s.value for s in MintStage]}",
            endpoint,
        ) from None
