"""Verification: the NFT read back from the chain, as a wallet would see it, and as the database
records it. Each attempt of `verify_nft` reads from the next RPC endpoint, so a lagging or
lying node is outvoted by the retry policy rather than trusted.
"""

from __future__ import annotations

import json

from temporalio import activity

from mintsaga.activities.failures import classified, permanent
from mintsaga.db.mint_store import MintStore
from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.ipfs.gateways import GatewayReader
from mintsaga.solana.minter import SolanaMinter
from mintsaga.solana.nft_state import NftState
from mintsaga.stages import MintStage
from mintsaga.workflows import activity_models as io
from mintsaga.workflows.policies import CHECK_DB_CONSISTENCY, CHECK_PARTNER_VIEW, VERIFY_NFT

METADATA_MAX_BYTES = 1 * 2**20
IMAGE_MAX_BYTES = 64 * 2**20


def _not_visible(mint_address: str) -> ServiceError:
    return ServiceError(
        f"mint {mint_address} is not visible yet",
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
    def __init__(self, *, minter: SolanaMinter, gateways: GatewayReader, store: MintStore) -> None:
        self._minter = minter
        self._gateways = gateways
        self._store = store

    @activity.defn(name=VERIFY_NFT.name)
    async def verify_nft(self, arg: io.VerifyIn) -> io.StepOut:
        attempt = activity.info().attempt
        endpoint = (attempt - 1) % len(self._minter.rpc.endpoints)
        with classified():
            state = await self._minter.nft_state(arg.mint_address, arg.owner, start_at=endpoint)
            if state is None:
                raise _not_visible(arg.mint_address)
            problems = check_nft(
                state, owner=arg.owner, name=arg.name, symbol=arg.symbol, uri=arg.uri
            )
            if problems:
                raise permanent("; ".join(problems), "NftMismatch", "solana")
        return io.StepOut(attempt=attempt)

    @activity.defn(name=CHECK_PARTNER_VIEW.name)
    async def check_partner_view(self, arg: io.PartnerViewIn) -> io.StepOut:
        """What a wallet or marketplace does: chain -> uri -> metadata JSON -> image."""
        with classified():
            state = await self._minter.nft_state(arg.mint_address, arg.owner)
            if state is None:
                raise _not_visible(arg.mint_address)
            if state.uri != f"ipfs://{arg.metadata_cid}":
                raise permanent(f"uri is {state.uri!r}", "PartnerViewMismatch", "solana")
            document, _ = await self._gateways.fetch_verified(
                arg.metadata_cid, max_bytes=METADATA_MAX_BYTES
            )
            metadata = json.loads(document)
            if (
                metadata.get("image") != f"ipfs://{arg.image_cid}"
                or metadata.get("name") != state.name
            ):
                raise permanent(
                    "metadata names another image or name", "PartnerViewMismatch", "ipfs"
                )
            await self._gateways.fetch_verified(arg.image_cid, max_bytes=IMAGE_MAX_BYTES)
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
