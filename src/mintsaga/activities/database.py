"""Database steps: the mint's row and its story, and the rollback compensation.

Every write is idempotent (the store upserts, and each event has a key), so a retry after a
lost answer changes nothing. The mint address is derived here, where the seed is, and only the
public address leaves the activity.
"""

from __future__ import annotations

from typing import Any

from temporalio import activity

from mintsaga.activities.failures import classified
from mintsaga.db.mint_store import MintStore
from mintsaga.solana.mint_keys import seed_mismatch
from mintsaga.solana.minter import SolanaMinter
from mintsaga.stages import MintStage
from mintsaga.workflows import activity_models as io
from mintsaga.workflows.policies import (
    CHECK_DATABASE,
    CLAIM_MINT,
    FINISH_MINT,
    RECORD_MINTED,
    RECORD_UPLOADS,
    ROLLBACK_MINT,
)


class DatabaseActivities:
    def __init__(self, *, store: MintStore, minter: SolanaMinter) -> None:
        self._store = store
        self._minter = minter

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
            # A row claimed by a worker with another MINT_KEY_SEED is an operator's problem,
            # not a conflicting request (the store would call it a Conflict and roll back).
            existing = await self._store.get(arg.mint_id)
            if existing is not None and existing.mint_address:
                mismatch = seed_mismatch(
                    arg.mint_id, claimed=existing.mint_address, derived=address
                )
                if mismatch is not None:
                    raise mismatch
            row = await self._store.claim(arg.mint_id, arg.user_id, arg.wallet, address)
        return io.ClaimOut(
            attempt=activity.info().attempt, mint_address=row.mint_address or address
        )

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
            if row is None or theirs or row.stage == MintStage.MINTED:
                activity.logger.info("nothing of %s to roll back", arg.mint_id)
            else:
                await self._store.mark_rolled_back(arg.mint_id, arg.reason)
        return io.StepOut(attempt=activity.info().attempt)
