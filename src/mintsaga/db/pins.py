"""The CIDs each mint holds at each pinning provider (``mint_pins``), and their safe release.

Tier images are shared between mints, so a rolled-back mint may unpin a CID only when no other
live mint holds it, and a pin recorded while a release is under way must not be undone by it.
Both methods take the CID's advisory lock (``_PIN_LOCK_CLASS``, hashtext(cid)) for that; see
:meth:`PinsMixin.release_pins` for the whole argument.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg

from mintsaga.db.errors import permanent
from mintsaga.db.executor import Executor
from mintsaga.db.rows import Pin, check_guarded_insert
from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.stages import MintStage

__all__ = ["UNPIN_BUDGET_S", "PinsMixin", "UnpinFailed"]

# Two-int advisory lock keys live apart from db.migrate's one-bigint key.
_PIN_LOCK_CLASS = 0x70696E73  # "pins"
# release_pins' unpins hold the CIDs' locks: their time is bounded below the activity's 60 s,
# and the server drops a session idle in that transaction a little longer than that.
UNPIN_BUDGET_S = 40.0
_IDLE_MARGIN_S = 10.0


class UnpinFailed(Exception):
    """An unpin inside release_pins failed: carried past the database's error handling."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class PinsMixin:
    """MintStore's pin methods; the store supplies ``_db`` (its executor, which must pass
    :class:`UnpinFailed` through)."""

    _db: Executor

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
                check_guarded_insert(result, mint_id, "pins", self._db.endpoint)

        await self._db.run(work)

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
                    raise permanent(
                        "MintAlreadyFinished",
                        f"mint {mint_id} is MINTED; its pins are not released",
                        self._db.endpoint,
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
                    raise UnpinFailed(timeout) from exc
                except Exception as exc:
                    raise UnpinFailed(exc) from exc
            return pins

        try:
            return await self._db.run(work)
        except UnpinFailed as failed:
            raise failed.error from failed.error.__cause__
