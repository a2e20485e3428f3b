"""Verification: the NFT read back from the chain, as a wallet would see it, and as the database
records it. Each attempt of `verify_nft` reads from the next RPC endpoint, so a lagging or
lying node is outvoted by the retry policy rather than trusted.
"""

from __future__ import annotations

import asyncio
import json
import time

from temporalio import activity

from mintsaga.activities.failures import classified, permanent
from mintsaga.db.mint_store import MintStore
from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.ipfs.gateways import GatewayReader
from mintsaga.ipfs.metadata import ipfs_uri, links_of
from mintsaga.settings import DEFAULT_SOLANA_COMMITMENT
from mintsaga.solana.minter import SolanaMinter
from mintsaga.solana.nft_state import NftState
from mintsaga.stages import MintStage
from mintsaga.workflows import activity_models as io
from mintsaga.workflows.policies import CHECK_DB_CONSISTENCY, CHECK_PARTNER_VIEW, VERIFY_NFT

METADATA_MAX_BYTES = 1 * 2**20
IMAGE_MAX_BYTES = 64 * 2**20
# With one node answering, verify waits for it to show the NFT at finalized (Agave roots a
# block ~32 slots after it is confirmed: ~13 s), polling, within the step's 30 s timeout.
FINALIZED_WAIT_S = 20.0
SECOND_OPINION_S = 5.0  # the first read, this and the finalized wait fit the step's 30 s
FINALIZED_POLL_S = 1.0


def _not_visible(mint_address: str, seen_by: str = "") -> ServiceError:
    return ServiceError(
        f"mint {mint_address} is not visible yet{seen_by}",
        service="solana",
        kind=ErrorKind.TRANSIENT,
        code="NftNotVisible",
    )


def check_nft(state: NftState, *, owner: str, name: str, symbol: str, uri: str) -> list[str]:
    """Every way the on-chain NFT differs from what was requested (empty when it is right)."""
    problems = []
    if not state.is_fixed_supply_nft:
        problems.append(
            f"supply {state.supply}, decimals {state.decimals}, mint authority "
            f"{state.mint_authority}: not a fixed-supply NFT"
        )
    if (state.name, state.symbol, state.uri) != (name, symbol, uri):
        problems.append(f"metadata {state.name!r}/{state.symbol!r}/{state.uri!r}")
    if state.metadata_address != state.mint:
        problems.append(f"metadata pointer at {state.metadata_address}, not the mint")
    if state.owner != owner or state.owner_balance != 1:
        problems.append(f"{state.owner} holds {state.owner_balance}, not 1")
    return problems


class VerificationActivities:
    def __init__(
        self,
        *,
        minter: SolanaMinter,
        gateways: GatewayReader,
        store: MintStore,
        commitment: str = DEFAULT_SOLANA_COMMITMENT,
        image_max_bytes: int = IMAGE_MAX_BYTES,
    ) -> None:
        self._minter = minter
        # MINT_IMAGE_MAX_BYTES: no mint's image is larger, so no read needs to take more.
        self._image_max_bytes = image_max_bytes
        self._gateways = gateways
        self._store = store
        # SOLANA_COMMITMENT: with ``finalized`` every read of verify_nft is at finalized.
        self._commitment = commitment

    @activity.defn(name=VERIFY_NFT.name)
    async def verify_nft(self, arg: io.VerifyIn) -> io.StepOut:
        """The NFT as requested, seen by two nodes: the one this attempt starts at and another
        (or, when no other answers, the same one at ``finalized``). One node's word is not
        enough before MINTED: a lying or forked node cannot get a mint recorded alone.
        With SOLANA_COMMITMENT=finalized both reads are at ``finalized`` (the first node's
        waited for, as when no other answers): only a rooted NFT is recorded."""
        attempt = activity.info().attempt
        first = (attempt - 1) % len(self._minter.rpc.endpoints)
        finalized = self._commitment == "finalized"
        async with classified(heartbeat=True):
            joins = await self._store.collection_of(arg.mint_id)
            group = None if joins is None else joins.address
            order = self._minter.rpc.rotated(first)
            index, state = await self._minter.nft_state_answered(
                arg.mint_address, arg.owner, only=order, commitment=self._commitment
            )
            if state is None and finalized:  # confirmed, maybe not rooted on this node yet
                await self._finalized(arg, index, group)
            else:
                self._check(state, arg, " at finalized" if finalized else "", group)
            others = [i for i in order if i != index]
            second = await self._second_opinion(arg, others, first=index, group=group)
            if second is None and not finalized:  # none other answered: the same, finalized
                await self._finalized(arg, index, group)
        return io.StepOut(attempt=attempt)

    def _check(
        self, state: NftState | None, arg: io.VerifyIn, seen_by: str, group: str | None
    ) -> None:
        if state is None:
            raise _not_visible(arg.mint_address, seen_by)
        problems = check_nft(state, owner=arg.owner, name=arg.name, symbol=arg.symbol, uri=arg.uri)
        member = state.member
        if group is not None and (
            member is None
            or member.group != group
            or member.mint != arg.mint_address
            or state.groups.member_address != arg.mint_address
        ):
            where = "none" if member is None else member.group
            problems.append(f"not a member of its collection {group} (member of: {where})")
        if problems:
            raise permanent("; ".join(problems) + seen_by, "NftMismatch", "solana")

    async def _second_opinion(
        self, arg: io.VerifyIn, others: list[int], *, first: int, group: str | None
    ) -> NftState | None:
        """The NFT as another node sees it (checked); None when no other node answered (the
        node that answered first, an emergency endpoint, is no second opinion)."""
        if not others:
            return None
        try:
            # Bounded: a backup that hangs must leave the attempt time to read at finalized.
            async with asyncio.timeout(SECOND_OPINION_S):
                index, state = await self._minter.nft_state_answered(
                    arg.mint_address, arg.owner, only=others, commitment=self._commitment
                )
        except TimeoutError:
            activity.logger.info("no second node answered in time: reading at finalized")
            return None
        except ServiceError as exc:
            # No other node could serve the read (a refused key, a send-only node): as if none
            # answered; an answer about the request is raised.
            if not exc.retryable and exc.unusable is None:
                raise
            activity.logger.info("no second node answered (%s): reading at finalized", exc.code)
            return None
        if index == first:  # every other failed: the emergency tier's same node answered
            activity.logger.info("no second node answered: reading at finalized")
            return None
        self._check(state, arg, f" (second opinion: {self._minter.rpc.name(index)})", group)
        return state

    async def _finalized(self, arg: io.VerifyIn, index: int, group: str | None) -> None:
        """Wait (heartbeating) for the node that answered to show the NFT at ``finalized``:
        ~32 slots, 13 s on mainnet; a transient failure when the attempt's time runs short."""
        deadline = time.monotonic() + FINALIZED_WAIT_S
        while True:
            try:
                _, state = await self._minter.nft_state_answered(
                    arg.mint_address, arg.owner, only=[index], commitment="finalized"
                )
            except ServiceError as exc:
                # One node, polled: a read that failed is asked again (a flaky node must not
                # cost the attempt), until the wait's end.
                if not exc.retryable or time.monotonic() >= deadline:
                    raise
                activity.logger.info("finalized read failed (%s): polling on", exc.code)
                state = None
            else:
                if state is not None or time.monotonic() >= deadline:
                    self._check(state, arg, " at finalized", group)
                    return
            await asyncio.sleep(FINALIZED_POLL_S)

    @activity.defn(name=CHECK_PARTNER_VIEW.name)
    async def check_partner_view(self, arg: io.PartnerViewIn) -> io.StepOut:
        """What a wallet or marketplace does: chain -> uri -> metadata JSON -> image."""
        with classified():
            state = await self._minter.nft_state(arg.mint_address, arg.owner)
            if state is None:
                raise _not_visible(arg.mint_address)
            expected_uri = arg.uri or ipfs_uri(arg.metadata_cid)
            links = links_of(expected_uri, arg.metadata_cid)
            if state.uri != expected_uri or links is None:
                raise permanent(f"uri is {state.uri!r}", "PartnerViewMismatch", "solana")
            # Pinned before this step was scheduled: a 404 until then is young (transient).
            pinned_by = activity.info().scheduled_time.timestamp()
            document, _ = await self._gateways.fetch_verified(
                arg.metadata_cid, max_bytes=METADATA_MAX_BYTES, pinned_at=pinned_by
            )
            metadata = json.loads(document)
            if (
                metadata.get("image") != links.uri(arg.image_cid)
                or metadata.get("name") != state.name
            ):
                raise permanent(
                    "metadata names another image or name", "PartnerViewMismatch", "ipfs"
                )
            # Checked block by block; the file is not reassembled (the CAR's body, at most
            # MINT_IMAGE_MAX_BYTES and its overhead, is held while it is checked).
            await self._gateways.read(
                arg.image_cid, max_bytes=self._image_max_bytes, keep=False, pinned_at=pinned_by
            )
        return io.StepOut(attempt=activity.info().attempt)

    @activity.defn(name=CHECK_DB_CONSISTENCY.name)
    async def check_db_consistency(self, arg: io.ConsistencyIn) -> io.StepOut:
        """The database row agrees with the chain (scenario 2 of the spec: repaired forward)."""
        with classified():
            row = await self._store.get(arg.mint_id)
            state = await self._minter.nft_state(arg.mint_address, arg.owner)
            if row is None or state is None:
                raise permanent("the row or the NFT is missing", "DatabaseChainMismatch", "db")
            if row.mint_address != state.mint or row.wallet != state.owner:
                raise permanent(
                    f"row says {row.mint_address} for {row.wallet}; the chain disagrees",
                    "DatabaseChainMismatch",
                    "db",
                )
            if MintStage(row.stage) not in (
                MintStage.BLOCKCHAIN_CONFIRMED,
                MintStage.VERIFIED,
                MintStage.MINTED,
            ):
                raise permanent(f"row is at {row.stage}", "DatabaseChainMismatch", "db")
        return io.StepOut(attempt=activity.info().attempt)
