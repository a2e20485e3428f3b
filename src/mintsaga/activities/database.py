"""Database steps: the mint's row and its story, and the rollback compensation.

Every write is idempotent (the store upserts, and each event has a key), so a retry after a
lost answer changes nothing. The mint address is derived here, where the seed is, and only the
public address leaves the activity.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

from temporalio import activity

from mintsaga.activities.failures import classified
from mintsaga.db.mint_store import MintStore
from mintsaga.db.rows import MintRow
from mintsaga.notices import NoticeType
from mintsaga.solana.mint_keys import seed_mismatch
from mintsaga.solana.minter import SolanaMinter
from mintsaga.stages import MintStage
from mintsaga.workflows import activity_models as io
from mintsaga.workflows.policies import (
    ADMIT_MINT,
    CHECK_DATABASE,
    CLAIM_MINT,
    FINISH_MINT,
    LOOK_UP_MINT,
    OPEN_MINT,
    RECORD_MINTED,
    RECORD_NOTICES,
    RECORD_UPLOADS,
    ROLLBACK_MINT,
)

ADMISSION_POLL_S = 1.0  # how often a queued mint looks for a free slot (jittered)


class DatabaseActivities:
    def __init__(
        self,
        *,
        store: MintStore,
        minter: SolanaMinter,
        admission_limit: int | None = None,
        maintenance: Callable[[], bool] = lambda: False,
    ) -> None:
        self._store = store
        self._minter = minter
        self._admission_limit = admission_limit  # MINT_ADMISSION_LIMIT; None: no limit
        self._maintenance = maintenance  # whether maintenance mode is on (runtime config)

    @activity.defn(name=CHECK_DATABASE.name)
    async def check_database(self, ref: io.MintRef) -> io.StepOut:
        with classified():
            await self._store.health()
        return io.StepOut(attempt=activity.info().attempt)

    @activity.defn(name=CLAIM_MINT.name)
    async def claim_mint(self, arg: io.ClaimIn) -> io.ClaimOut:
        """The mint's row at INITIATED; rejects a second mint in progress for the same user."""
        address = self._minter.mint_address(arg.mint_id)
        with classified():
            await self._check_claimed_address(arg.mint_id, address)
            row = await self._store.claim(
                arg.mint_id, arg.user_id, arg.wallet, address, arg.collection
            )
        return io.ClaimOut(
            attempt=activity.info().attempt, mint_address=row.mint_address or address
        )

    @activity.defn(name=ADMIT_MINT.name)
    async def admit_mint(self, arg: io.AdmitIn) -> io.AdmitOut:
        """`claim_mint` behind the admission limit: claimed once a slot between claim and pivot
        is free (first come, first served), else queued after ``wait_s`` seconds of looking.

        Without MINT_ADMISSION_LIMIT every mint is admitted at once. Nothing is claimed, pinned
        or sent while a mint waits here.
        """
        limit = self._admission_limit
        if limit is None:
            with classified():
                ended = await self._ended(arg)
            if ended is not None:
                return io.AdmitOut(attempt=activity.info().attempt, ended=ended)
            claimed = await self.claim_mint(
                io.ClaimIn(
                    mint_id=arg.mint_id,
                    user_id=arg.user_id,
                    wallet=arg.wallet,
                    collection=arg.collection,
                )
            )
            return io.AdmitOut(attempt=claimed.attempt, mint_address=claimed.mint_address)
        address = self._minter.mint_address(arg.mint_id)
        deadline = time.monotonic() + arg.wait_s
        with classified():
            await self._check_claimed_address(arg.mint_id, address)
            ended = await self._ended(arg)
            if ended is not None:
                return io.AdmitOut(attempt=activity.info().attempt, ended=ended)
            while True:
                row = await self._store.claim_admitted(
                    arg.mint_id,
                    arg.user_id,
                    arg.wallet,
                    address,
                    limit=limit,
                    collection=arg.collection,
                )
                if row is not None:
                    return io.AdmitOut(
                        attempt=activity.info().attempt,
                        mint_address=row.mint_address or address,
                    )
                if time.monotonic() >= deadline:
                    return io.AdmitOut(attempt=activity.info().attempt, queued=True)
                activity.heartbeat()
                await asyncio.sleep(ADMISSION_POLL_S * random.uniform(0.5, 1.5))

    @activity.defn(name=LOOK_UP_MINT.name)
    async def look_up_mint(self, arg: io.ClaimIn) -> io.LookupOut:
        """The mint as its row recorded it, when it ended (MINTED or ROLLED_BACK) with this
        request: a start whose history is gone (retention) is answered from it, and nothing
        runs again. Another request's row is left to the claim, which refuses it."""
        with classified():
            ended = await self._ended(arg)
        return io.LookupOut(attempt=activity.info().attempt, ended=ended)

    async def _ended(self, arg: io.ClaimIn) -> io.RecordedMint | None:
        """The row, if it ended (MINTED or ROLLED_BACK) with this request."""
        row = await self._store.get(arg.mint_id)
        if row is None or (row.user_id, row.wallet) != (arg.user_id, arg.wallet):
            return None
        if row.stage not in (MintStage.MINTED, MintStage.ROLLED_BACK):
            return None
        return _recorded(row)

    @activity.defn(name=OPEN_MINT.name)
    async def open_mint(self, arg: io.ClaimIn) -> io.OpenOut:
        """The lean saga's first look, in one round trip: the database answers (the pre-mint
        database check), the row if the mint ended with this request (`look_up_mint`), and
        whether maintenance mode is on."""
        with classified():
            await self._store.health()
            ended = await self._ended(arg)
        return io.OpenOut(
            attempt=activity.info().attempt, ended=ended, maintenance=self._maintenance()
        )

    @activity.defn(name=RECORD_NOTICES.name)
    async def record_notices(self, arg: io.NoticesIn) -> io.StepOut:
        """Record the backend's notices in order, each once (its key); the mints row follows.

        A FAILED notice (a compensation failed for good) also moves the row to FAILED, which
        frees the user for another mint while an operator looks.
        """
        with classified():
            for notice in arg.notices:
                await self._store.record_notice(
                    arg.mint_id, notice.type, event_key=notice.event_key, data=notice.data
                )
                if notice.type == NoticeType.FAILED.value:
                    await self._mark_failed(arg.mint_id, notice.data)
        return io.StepOut(attempt=activity.info().attempt)

    async def _mark_failed(self, mint_id: str, data: dict[str, Any]) -> None:
        row = await self._store.get(mint_id)
        ours = row is not None and (row.user_id, row.wallet) == (
            data.get("user_id"),
            data.get("owner"),
        )
        if row is not None and ours and not row.stage.finished:
            reason = str(data.get("reason") or "a compensation failed")
            await self._store.mark_failed(mint_id, reason)

    async def _check_claimed_address(self, mint_id: str, address: str) -> None:
        # A row claimed by a worker with another MINT_KEY_SEED is an operator's problem,
        # not a conflicting request (the store would call it a Conflict and roll back).
        existing = await self._store.get(mint_id)
        if existing is not None and existing.mint_address:
            mismatch = seed_mismatch(mint_id, claimed=existing.mint_address, derived=address)
            if mismatch is not None:
                raise mismatch

    @activity.defn(name=RECORD_UPLOADS.name)
    async def record_uploads(self, arg: io.RecordUploadsIn) -> io.StepOut:
        with classified():
            await self._store.set_stage(
                arg.mint_id,
                MintStage.IPFS_UPLOADED,
                event_key="ipfs_uploaded",
                image_cid=arg.image_cid,
                metadata_cid=arg.metadata_cid,
            )
            await self._store.set_stage(
                arg.mint_id, MintStage.DATABASE_UPDATED, event_key="database_updated"
            )
        return io.StepOut(attempt=activity.info().attempt)

    @activity.defn(name=RECORD_MINTED.name)
    async def record_minted(self, arg: io.RecordMintedIn) -> io.StepOut:
        """After the pivot: the chain has the NFT; the row catches up (forward only)."""
        fields: dict[str, Any] = {"mint_address": arg.mint_address}
        if arg.signature is not None:
            fields["signature"] = arg.signature
        if arg.slot is not None:
            fields["slot"] = arg.slot
        with classified():
            await self._store.set_stage(
                arg.mint_id, MintStage.BLOCKCHAIN_CONFIRMED, event_key="confirmed", **fields
            )
        return io.StepOut(attempt=activity.info().attempt)

    @activity.defn(name=FINISH_MINT.name)
    async def finish_mint(self, arg: io.FinishIn) -> io.StepOut:
        with classified():
            await self._store.set_stage(arg.mint_id, MintStage.VERIFIED, event_key="verified")
            await self._store.set_stage(arg.mint_id, MintStage.MINTED, event_key="minted")
        return io.StepOut(attempt=activity.info().attempt)

    @activity.defn(name=ROLLBACK_MINT.name)
    async def rollback_mint(self, arg: io.RollbackIn) -> io.StepOut:
        """Compensation: the row ends ROLLED_BACK and the user is free; no history is deleted.

        Only this request's row: one claimed by another request with the same mint_id (the
        claim was refused as a Conflict) or already MINTED is left as it is.
        """
        with classified():
            row = await self._store.get(arg.mint_id)
            theirs = (
                row is not None
                and arg.user_id is not None
                and ((row.user_id, row.wallet) != (arg.user_id, arg.wallet))
            )
            if row is None:  # cancelled while queued at admission: give up its place
                await self._store.leave_admission_queue(arg.mint_id)
            if row is None or theirs or row.stage == MintStage.MINTED:
                activity.logger.info("nothing of %s to roll back", arg.mint_id)
            else:
                await self._store.mark_rolled_back(arg.mint_id, arg.reason)
        return io.StepOut(attempt=activity.info().attempt)


def _recorded(row: MintRow) -> io.RecordedMint:
    uri = row.metadata_uri or (f"ipfs://{row.metadata_cid}" if row.metadata_cid else None)
    minted = row.stage == MintStage.MINTED
    return io.RecordedMint(
        status="MINTED" if minted else "ROLLED_BACK",
        mint_address=row.mint_address,
        signature=row.signature if minted else None,
        slot=row.slot if minted else None,
        image_cid=row.image_cid,
        metadata_cid=row.metadata_cid,
        metadata_uri=uri if minted else None,
        reason=None if minted else row.reason,
    )
