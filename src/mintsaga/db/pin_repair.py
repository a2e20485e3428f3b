"""What the pin repair reads and writes in ``mint_pins`` (migration 008).

Content a mint uploaded while Pinata was down landed on Kubo only. ``record_pins`` writes a row
for both providers *before* the upload decides where the content lands, so a row alone does not
say that a provider holds its CID: ``held_confirmed_at`` does (set from the upload's answer,
Pinata's pinList or the repair's own upload). The repair (activities/pin_repair.py) takes the
CIDs of live or minted mints whose Pinata row nobody has confirmed, asks Pinata, and pins the
missing ones there.

The repair is a pin like an upload, and must not race a compensation (``release_pins``): it
*holds* the CID first (:meth:`PinRepairMixin.hold_for_repair`, one statement under the CID's pin
lock, ``mintsaga_pin_repair_hold``): holder rows of its own (mint_id ``pin-repair:<cid>``, one
per provider, no ``mints`` row, so ``release_pins`` counts them as a live holder and leaves the
CID's pins alone), or nothing when the CID's mints were compensated meanwhile. After its
upload it gives the hold back with ``release_pins(holder)``, which unpins the CID itself when no
live holder is left (a mint compensated while the repair uploaded), on both providers, as that
compensation would have: a compensated mint's content is never left pinned by the repair.
"""

from __future__ import annotations

import functools
from typing import Literal, cast

import asyncpg

from mintsaga.db.executor import Executor
from mintsaga.stages import MintStage

__all__ = ["REPAIR_HOLDER_PREFIX", "HoldState", "PinRepairMixin", "repair_holder"]

# The mint_id of the repair's own holder row for a CID; no mint is ever called that.
REPAIR_HOLDER_PREFIX = "pin-repair:"
HoldState = Literal["held", "claimed", "released"]
# Mints whose content the repair keeps: not compensated (ROLLED_BACK) and not left for an
# operator after a compensation failed (FAILED: a person decides).
_NOT_REPAIRED = f"('{MintStage.ROLLED_BACK.value}', '{MintStage.FAILED.value}')"


def repair_holder(cid: str) -> str:
    """The mint_id of the repair's holder row for ``cid``."""
    return f"{REPAIR_HOLDER_PREFIX}{cid}"


class PinRepairMixin:
    """MintStore's pin-repair methods; the store supplies ``_db`` (its executor)."""

    _db: Executor

    async def confirm_held(self, cid: str, provider: str) -> int:
        """Note that ``provider`` holds ``cid``: every unreleased row of it there is confirmed
        (whichever mint recorded it: tier images are shared). Returns the rows changed."""
        return await self._db.run(functools.partial(self._confirm_held, cid, provider))

    @staticmethod
    async def _confirm_held(cid: str, provider: str, conn: asyncpg.Connection) -> int:
        status = await conn.execute(
            "UPDATE mint_pins SET held_confirmed_at = now()"
            " WHERE cid = $1 AND provider = $2 AND released_at IS NULL"
            " AND held_confirmed_at IS NULL",
            cid,
            provider,
        )
        return int(str(status).rsplit(" ", 1)[-1])

    async def pin_repair_candidates(
        self, limit: int, *, older_than_s: float, retry_after_s: float = 0.0
    ) -> list[tuple[str, bool]]:
        """Up to ``limit`` CIDs of live or minted mints that no one has seen Pinata hold; once
        the mint's row names its image and metadata, only those two (not a CID computed
        locally that a provider stored under another layout's CID, nor a metadata document the
        mint uploaded again: nothing links to them, and no provider may hold the first),
        each with whether its upload landed on Kubo (True: known to be Kubo's; False:
        unknown: the upload's note was lost, it predates migration 008, or the upload has not
        finished). An unknown one only once recorded over ``older_than_s`` ago (an upload
        running now notes its own). One the repair tried and could not confirm only
        ``retry_after_s`` after that try. Those the repair never tried first, then the known
        ones, oldest first."""
        return await self._db.run(
            functools.partial(self._candidates, limit, older_than_s, retry_after_s)
        )

    @staticmethod
    async def _candidates(
        limit: int, older_than_s: float, retry_after_s: float, conn: asyncpg.Connection
    ) -> list[tuple[str, bool]]:
        rows = await conn.fetch(
            f"""SELECT p.cid, bool_or(k.held_confirmed_at IS NOT NULL) AS on_kubo
                FROM mint_pins p JOIN mints m ON m.mint_id = p.mint_id
                LEFT JOIN mint_pins k ON k.mint_id = p.mint_id AND k.cid = p.cid
                    AND k.provider = 'kubo'
                WHERE p.provider = 'pinata' AND p.held_confirmed_at IS NULL
                  AND p.released_at IS NULL AND m.stage NOT IN {_NOT_REPAIRED}
                  AND (m.image_cid IS NULL OR p.cid IN (m.image_cid, m.metadata_cid))
                GROUP BY p.cid
                HAVING (bool_or(k.held_confirmed_at IS NOT NULL)
                        OR min(p.pinned_at) < now() - $2 * interval '1 second')
                   AND (max(p.repair_checked_at) IS NULL
                        OR max(p.repair_checked_at) < now() - $3 * interval '1 second')
                ORDER BY max(p.repair_checked_at) NULLS FIRST,
                         bool_or(k.held_confirmed_at IS NOT NULL) DESC, min(p.pinned_at), p.cid
                LIMIT $1""",
            limit,
            older_than_s,
            retry_after_s,
        )
        return [(str(row["cid"]), bool(row["on_kubo"])) for row in rows]

    async def note_repair_tried(self, cid: str) -> None:
        """The repair tried ``cid`` and could not confirm it: it goes to the queue's back."""
        await self._db.run(functools.partial(self._note_tried, cid))

    @staticmethod
    async def _note_tried(cid: str, conn: asyncpg.Connection) -> None:
        await conn.execute(
            "UPDATE mint_pins SET repair_checked_at = now()"
            " WHERE cid = $1 AND provider = 'pinata' AND released_at IS NULL",
            cid,
        )

    async def hold_for_repair(self, cid: str) -> HoldState:
        """Hold ``cid`` for the repair (module docstring): "held", or "claimed" (a release is
        unpinning it now: try later) or "released" (no live or minted mint holds it at Pinata:
        do not pin it). One statement (``mintsaga_pin_repair_hold``)."""
        return await self._db.run(functools.partial(self._hold, cid))

    @staticmethod
    async def _hold(cid: str, conn: asyncpg.Connection) -> HoldState:
        state = await conn.fetchval(
            "SELECT mintsaga_pin_repair_hold($1::text, $2::text)", cid, repair_holder(cid)
        )
        assert state in ("held", "claimed", "released"), state
        return cast(HoldState, state)

    async def stale_repair_holds(self, older_than_s: float, limit: int) -> list[str]:
        """Holder ids a repair left behind (its worker died between the hold and its
        release): live holds older than ``older_than_s``, and released ones whose CID no live
        holder keeps but that were never unpinned (their unpin failed). ``release_pins`` on
        each finishes the job; it is idempotent."""
        return await self._db.run(functools.partial(self._stale, older_than_s, limit))

    @staticmethod
    async def _stale(older_than_s: float, limit: int, conn: asyncpg.Connection) -> list[str]:
        rows = await conn.fetch(
            f"""SELECT h.mint_id FROM mint_pins h
                WHERE h.mint_id LIKE '{REPAIR_HOLDER_PREFIX}%' AND h.unpinned_at IS NULL
                  AND (h.unpin_claimed_until IS NULL OR h.unpin_claimed_until < now())
                  AND ((h.released_at IS NULL
                        AND h.pinned_at < now() - $1 * interval '1 second')
                    OR (h.released_at IS NOT NULL AND NOT EXISTS (
                        SELECT 1 FROM mint_pins o LEFT JOIN mints m ON m.mint_id = o.mint_id
                        WHERE o.cid = h.cid AND o.mint_id <> h.mint_id
                          AND o.released_at IS NULL
                          AND m.stage IS DISTINCT FROM '{MintStage.ROLLED_BACK.value}')))
                ORDER BY h.pinned_at LIMIT $2""",
            older_than_s,
            limit,
        )
        return [str(row["mint_id"]) for row in rows]

    async def single_provider_cids(self) -> int:
        """CIDs of live or minted mints held by Kubo only: confirmed there by the upload,
        not (yet) seen on Pinata. What the repair has to do, and the gauge it sets."""
        return await self._db.run(self._single_provider)

    @staticmethod
    async def _single_provider(conn: asyncpg.Connection) -> int:
        count = await conn.fetchval(
            f"""SELECT count(DISTINCT p.cid) FROM mint_pins p
                JOIN mints m ON m.mint_id = p.mint_id
                JOIN mint_pins k ON k.mint_id = p.mint_id AND k.cid = p.cid
                    AND k.provider = 'kubo'
                WHERE p.provider = 'pinata' AND p.held_confirmed_at IS NULL
                  AND p.released_at IS NULL AND k.held_confirmed_at IS NOT NULL
                  AND k.released_at IS NULL AND m.stage NOT IN {_NOT_REPAIRED}"""
        )
        return int(count or 0)
