"""The CIDs each mint holds at each pinning provider (``mint_pins``), and their safe release.

Tier images are shared between mints, so a rolled-back mint may unpin a CID only when no other
live mint holds it, and a pin recorded while a release is under way must not be undone by it.
A release runs in three steps, none holding a connection across a network call
(:meth:`PinsMixin.release_pins` has the whole argument):

1. one short transaction, under the CIDs' advisory locks (``_PIN_LOCK_CLASS``, hashtext(cid)):
   the mint's pins marked released, and those no live mint holds *claimed* for unpinning
   (``unpin_claimed_until``, a lease);
2. the unpins, with no connection held;
3. one short transaction recording them (``unpinned_at``) and giving the claims back.

:meth:`PinsMixin.record_pins` takes the same lock and waits while a live claim covers its CID,
so a pin recorded during a release is recorded, and uploaded, only after that release's unpins.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from mintsaga.db.errors import permanent
from mintsaga.db.executor import Executor
from mintsaga.db.rows import Pin
from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.resilience import guard
from mintsaga.stages import MintStage

__all__ = ["CLAIM_MARGIN_S", "UNPIN_BUDGET_S", "PinsMixin"]

# Two-int advisory lock keys live apart from db.migrate's one-bigint key.
_PIN_LOCK_CLASS = 0x70696E73  # "pins"
# release_pins' unpins together get this long (the activity has 60 s); a claim lasts that long
# and a margin more, for step 3 to record them, then lapses by itself (a worker that died).
UNPIN_BUDGET_S = 40.0
CLAIM_MARGIN_S = 10.0
# record_pin's polls while a claim covers its CID.
_CLAIM_POLL_S = 0.2
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Claim:
    """What step 1 decided: the pins to unpin, claimed until ``until``."""

    pins: list[Pin]
    until: datetime | None


class PinsMixin:
    """MintStore's pin methods; the store supplies ``_db`` (its executor)."""

    _db: Executor

    async def record_pin(self, mint_id: str, cid: str, provider: str) -> None:
        """:meth:`record_pins` for one provider."""
        await self.record_pins(mint_id, cid, (provider,))

    async def record_pins(self, mint_id: str, cid: str, providers: Sequence[str]) -> None:
        """Note that this mint holds ``cid`` at each of ``providers``; recording twice is
        harmless.

        Call it before pinning (register before you act). Under the CID's pin lock it first
        looks for a release's live claim on the CID: while one exists (that release decided to
        unpin it and may be unpinning now), it waits outside any transaction and asks again, so
        the pin made after this call returns is never undone by a release already under way. A
        claim lapses by itself (``UNPIN_BUDGET_S`` + ``CLAIM_MARGIN_S``), so the wait is bounded;
        past it, TRANSIENT ``PinBeingReleased``. Raises PERMANENT ``UnknownMint``, or
        ``MintAlreadyFinished`` for a new pin on a ROLLED_BACK mint (it would never be released).
        One statement per try (``mintsaga_record_pins``, migration 006), so a flaky network
        cuts few of them.
        """
        deadline = time.monotonic() + UNPIN_BUDGET_S + CLAIM_MARGIN_S + 5.0
        while True:
            claimed = await self._db.run(
                functools.partial(self._record_pins, mint_id, cid, list(providers))
            )
            if not claimed:
                return
            if time.monotonic() >= deadline:
                raise ServiceError(
                    f"{cid} is being unpinned by another mint's compensation; its pin for mint"
                    f" {mint_id} is recorded once that is done",
                    service="ipfs",
                    kind=ErrorKind.TRANSIENT,
                    code="PinBeingReleased",
                )
            guard.installed().keep_alive()  # an activity waiting here still heartbeats
            await asyncio.sleep(_CLAIM_POLL_S)

    async def _record_pins(
        self, mint_id: str, cid: str, providers: list[str], conn: asyncpg.Connection
    ) -> bool:
        """One try of :meth:`record_pins`: True when a live claim covers the CID (nothing
        done). The function takes the same pin lock as release_pins (``_PIN_LOCK_CLASS``)."""
        row = await conn.fetchrow(
            "SELECT * FROM mintsaga_record_pins($1::text, $2::text, $3::text[])",
            mint_id,
            cid,
            providers,
        )
        assert row is not None
        if row["out_claimed"]:
            return True
        if row["out_stage"] is None:
            raise permanent("UnknownMint", f"mint {mint_id} was never claimed", self._db.endpoint)
        if not row["out_all_present"]:
            raise permanent(
                "MintAlreadyFinished",
                f"mint {mint_id} is {row['out_stage']}; it takes no new pins",
                self._db.endpoint,
            )
        return False

    async def release_pins(
        self,
        mint_id: str,
        unpin: Callable[[str, str], Awaitable[object]],
        *,
        unpin_budget_s: float = UNPIN_BUDGET_S,
    ) -> list[Pin]:
        """Mark this mint's pins released and unpin, with ``unpin(cid, provider)``, those no
        other live mint holds; return them.

        A live holder is another mint, not ROLLED_BACK, whose pin is not released: tier images
        are shared, and unpinning one would break a mint that still needs it. Three steps, and
        no connection, transaction or lock is held while ``unpin`` talks to a provider:

        1. One transaction takes each CID's pin lock (in key order, so two releases cannot
           deadlock; :meth:`record_pin` takes the same lock), marks the pins released, and
           claims the pins with no live holder until now + ``unpin_budget_s`` +
           ``CLAIM_MARGIN_S``. Another mint's pin is therefore recorded either before (a live
           holder: the CID is not claimed) or after the claim, and then :meth:`record_pin`
           waits until the claim is given back, so its upload pins the CID again after our
           unpin. Pins recorded for this mint after step 1 (a late upload) are left for a
           retry.
        2. The unpins, together within ``unpin_budget_s`` (past it, TRANSIENT
           ``UnpinTimeout``); a failure of ``unpin`` is raised as is, after step 3.
        3. One transaction records the pins unpinned (``unpinned_at``) and gives back the
           claims this call made (those of the unpins that failed too, so nobody waits for a
           lease).

        Idempotent: a retry claims and unpins again every released pin that still has no live
        holder (``unpin`` must be idempotent), so an attempt that died between the steps loses
        no unpin; its claims lapse at their lease if no retry comes first. Rows are kept.
        Raises PERMANENT ``MintAlreadyFinished`` for a MINTED mint: its NFT needs them.
        """
        claim = await self._db.run(
            functools.partial(self._claim_release, mint_id, unpin_budget_s + CLAIM_MARGIN_S)
        )
        done: list[Pin] = []
        failure: BaseException | None = None
        try:
            async with asyncio.timeout(unpin_budget_s):
                for pin in claim.pins:
                    await unpin(pin.cid, pin.provider)
                    done.append(pin)
        except TimeoutError as exc:
            failure = ServiceError(
                f"unpinning mint {mint_id}'s CIDs took over {unpin_budget_s:g} s;"
                f" {len(done)} of {len(claim.pins)} unpinned, a retry unpins the rest again",
                service="ipfs",
                kind=ErrorKind.TRANSIENT,
                code="UnpinTimeout",
            )
            failure.__cause__ = exc
        except Exception as exc:
            failure = exc
        if claim.pins:
            try:
                await self._db.run(functools.partial(self._finish_release, mint_id, claim, done))
            except ServiceError:
                if failure is None:
                    raise
                # The unpin's failure is the one to report; the claims lapse at their lease.
                log.warning("recording the unpins of %s failed", mint_id, exc_info=True)
        if failure is not None:
            raise failure
        return claim.pins

    async def _claim_release(
        self, mint_id: str, lease_s: float, conn: asyncpg.Connection
    ) -> _Claim:
        """Step 1 of :meth:`release_pins`: mark released, claim what to unpin; commit."""
        async with conn.transaction():
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
                "SELECT DISTINCT cid, hashtext(cid) AS k FROM mint_pins WHERE mint_id = $1",
                mint_id,
            )
            cids = sorted({r["cid"] for r in keyed})
            # Locks in one order (by key) everywhere, so two releases cannot deadlock;
            # record_pin holds one lock at a time. Released at commit, a few statements on.
            for key in sorted({r["k"] for r in keyed}):
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1::int, $2::int)", _PIN_LOCK_CLASS, key
                )
            # The lease starts now, after the locks were had (not at the transaction's start,
            # which a wait for them would have eaten into); one value for every claim.
            until = await conn.fetchval(
                "SELECT clock_timestamp() + $1 * interval '1 second'", lease_s
            )
            await conn.execute(
                "UPDATE mint_pins SET released_at = now()"
                " WHERE mint_id = $1 AND cid = ANY($2::text[]) AND released_at IS NULL",
                mint_id,
                cids,
            )
            rows = await conn.fetch(
                f"""UPDATE mint_pins AS p
                    SET unpin_claimed_until = $3::timestamptz
                    WHERE p.mint_id = $1 AND p.cid = ANY($2::text[]) AND NOT EXISTS (
                        SELECT 1 FROM mint_pins AS o
                        LEFT JOIN mints AS m ON m.mint_id = o.mint_id
                        WHERE o.cid = p.cid AND o.mint_id <> p.mint_id
                          AND o.released_at IS NULL
                          AND m.stage IS DISTINCT FROM '{MintStage.ROLLED_BACK.value}')
                    RETURNING p.cid, p.provider, p.unpin_claimed_until""",
                mint_id,
                cids,
                until,
            )
        # Every claim of this call has the same `until`, which step 3 compares to give back
        # only its own claims.
        pins = sorted(Pin(r["cid"], r["provider"]) for r in rows)
        return _Claim(pins, rows[0]["unpin_claimed_until"] if rows else None)

    async def _finish_release(
        self, mint_id: str, claim: _Claim, done: list[Pin], conn: asyncpg.Connection
    ) -> None:
        """Step 3 of :meth:`release_pins`: record the unpins, give our claims back."""
        unpinned = set(done)
        await conn.execute(
            """UPDATE mint_pins AS p
               SET unpinned_at = CASE WHEN d.done THEN now() ELSE p.unpinned_at END,
                   unpin_claimed_until = CASE WHEN p.unpin_claimed_until = $5
                                              THEN NULL ELSE p.unpin_claimed_until END
               FROM unnest($2::text[], $3::text[], $4::bool[]) AS d(cid, provider, done)
               WHERE p.mint_id = $1 AND p.cid = d.cid AND p.provider = d.provider""",
            mint_id,
            [pin.cid for pin in claim.pins],
            [pin.provider for pin in claim.pins],
            [pin in unpinned for pin in claim.pins],
            claim.until,
        )
