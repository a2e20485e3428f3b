"""Building and signing the NFT's one transaction, not sending it (docs/design.md, "The NFT").

``MintPreparer.prepare`` bids a priority fee, fetches the rent and a blockhash, simulates the
transaction for its compute units, and signs it with the system wallet and the mint's keypair.
The rent (``RENT_TTL_S``) and the latest blockhash (``BLOCKHASH_REUSE_S``) are kept for a while,
so a burst of mints costs one fetch of each. The minter (``solana/minter.py``) adds sending and
reading back on top.

What prepare checks before it believes a node or signs (the blockhash's window, the rent, the
simulation, the size) is solana/prepare_checks.py's.

The mint keypair comes from ``MINT_KEY_SEED`` and ``mint_id`` (solana/mint_keys.py), so the
same mint_id always targets the same address and a second NFT for it cannot exist. No key
material or seed appears in an exception, a repr or a log line.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.settings import (
    DEFAULT_PRIORITY_FEE_CAP,
    DEFAULT_PRIORITY_FEE_PERCENTILE,
    GROUP_AUTHORITY_SETTING,
    UPDATE_AUTHORITY_SETTING,
)
from mintsaga.solana.cache import SharedCache
from mintsaga.solana.fees import (
    FALLBACK_COMPUTE_UNIT_LIMIT,
    MAX_COMPUTE_UNIT_LIMIT,
    compute_unit_limit,
    helius_priority_level,
    mint_budget,
    mint_cost,
    parse_priority_fee_estimate,
    parse_recent_fees,
    priority_fee_from_recent,
    raised_fee,
)
from mintsaga.solana.mint_keys import (
    KEYPAIR_SETTING,
    MIN_SEED_BYTES,
    SEED_SETTING,
    derive_mint_keypair,
)
from mintsaga.solana.nft import (
    TOKEN_2022_PROGRAM_ID,
    associated_token_address,
    build_collection_instructions,
    build_nft_instructions,
    collection_mint_account_size,
    nft_mint_account_size,
    update_group_authority_ix,
)
from mintsaga.solana.prepare_checks import (
    CheckedReads,
    _check_size,
    _LatestBlockhash,
    _unsigned,
)
from mintsaga.solana.rpc import SolanaRpc
from mintsaga.solana.rpc_errors import SERVICE

__all__ = [
    "BLOCKHASH_REUSE_S",
    "RENT_TTL_S",
    "CollectionTarget",
    "MintPreparer",
    "SignedMint",
]

log = logging.getLogger(__name__)

# A blockhash lives 150 blocks (~60 s): reusing one for 2 s leaves a transaction almost all of
# its life. Rent changes only with a cluster feature change.
BLOCKHASH_REUSE_S = 2.0
RENT_TTL_S = 600.0
# getRecentPrioritizationFees takes at most 128 addresses (solana.com's method page).
MAX_FEE_ACCOUNTS = 128


@dataclass(frozen=True)
class CollectionTarget:
    """The collection a mint joins: its key, group mint address and group update authority."""

    key: str
    address: str
    group_authority: str


@dataclass(frozen=True)
class SignedMint:
    """A signed NFT transaction, ready to send and re-send as the same bytes."""

    signature: str
    tx_base64: str
    blockhash: str
    last_valid_block_height: int
    mint_address: str
    priority_fee_micro_lamports: int = 0  # the SetComputeUnitPrice it carries (0: none)
    compute_unit_limit: int = 0  # the SetComputeUnitLimit it carries
    simulated_units: int | None = None  # what the simulation consumed (None: it fell back)


def _with_budget(
    instructions: list[Instruction], limit: int, price: int, *, probe: bool = False
) -> list[Instruction]:
    """``instructions`` after the ComputeBudget ones (a probe bids price 0, same layout)."""
    budget = [set_compute_unit_limit(limit)]
    if price > 0:
        budget.append(set_compute_unit_price(0 if probe else price))
    return budget + instructions


class MintPreparer(CheckedReads):
    """Builds and signs the NFT with ``payer`` as system wallet and fee payer, and
    ``update_authority`` (never ``payer``) as its metadata's update authority; nothing is sent."""

    def __init__(
        self,
        rpc: SolanaRpc,
        payer: Keypair,
        mint_key_seed: bytes,
        *,
        priority_fee_cap: int = DEFAULT_PRIORITY_FEE_CAP,
        priority_fee_percentile: int = DEFAULT_PRIORITY_FEE_PERCENTILE,
        operator_fee_cap: int | None = None,
        priority_fee_estimator: str = "rpc",
        priority_fee_accounts: Sequence[str] = (),
        update_authority: str | None = None,
        group_authority: Keypair | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``priority_fee_cap`` (micro-lamports per CU) and ``priority_fee_percentile`` are
        ``SOLANA_PRIORITY_FEE_CAP`` and ``SOLANA_PRIORITY_FEE_PERCENTILE``;
        ``priority_fee_estimator`` and ``priority_fee_accounts`` are
        ``SOLANA_PRIORITY_FEE_ESTIMATOR`` ("rpc" or "helius") and
        ``SOLANA_PRIORITY_FEE_ACCOUNTS`` (``priority_fee``); ``update_authority`` is
        ``MINT_UPDATE_AUTHORITY`` (a public key; None: immutable metadata), never ``payer``: a
        stolen worker key must not rewrite every NFT; ``group_authority``
        (``MINT_GROUP_AUTHORITY_KEYPAIR``) signs each member's joining of a collection;
        ``clock`` ages the kept rent and
        blockhash (``time.monotonic``; a test's own to step past the windows)."""
        if len(mint_key_seed) < MIN_SEED_BYTES:
            raise ValueError(f"{SEED_SETTING} must hold at least {MIN_SEED_BYTES} bytes")
        if priority_fee_cap < 0:
            raise ValueError("SOLANA_PRIORITY_FEE_CAP must not be negative")
        if not 0 <= priority_fee_percentile <= 100:
            raise ValueError("SOLANA_PRIORITY_FEE_PERCENTILE must be within 0-100")
        self.rpc = rpc
        self._payer = payer
        self.update_authority = (
            Pubkey.from_string(update_authority) if update_authority is not None else None
        )
        self._group_authority = group_authority
        if self.update_authority == payer.pubkey():
            raise ValueError(
                f"{UPDATE_AUTHORITY_SETTING} is the system wallet's own key"
                f" ({KEYPAIR_SETTING}): the update authority must be a key kept off the workers,"
                " or none"
            )
        self._seed = bytes(mint_key_seed)
        self.priority_fee_cap = priority_fee_cap
        # A fee given with the mint (an operator's retry, a request) is clamped to this.
        self.operator_fee_cap = max(priority_fee_cap, operator_fee_cap or 0)
        self.priority_fee_percentile = priority_fee_percentile
        if priority_fee_estimator not in ("rpc", "helius"):
            raise ValueError("SOLANA_PRIORITY_FEE_ESTIMATOR must be rpc or helius")
        self.priority_fee_estimator = priority_fee_estimator
        # Validated here too (a test or a caller may not come through the settings).
        self.priority_fee_accounts = tuple(
            str(Pubkey.from_string(a)) for a in priority_fee_accounts
        )
        self._rent: SharedCache[int, int] = SharedCache(RENT_TTL_S, clock=clock)
        # Keyed by the pool's URLs: after ``SolanaRpc.set_endpoints`` none is reused.
        self._blockhash: SharedCache[tuple[str, ...], _LatestBlockhash] = SharedCache(
            BLOCKHASH_REUSE_S, clock=clock
        )

    def __repr__(self) -> str:
        # The class's own name (SolanaMinter for the minter); never the seed or a key.
        return f"{type(self).__name__}(payer={self.payer}, endpoints={self.rpc.endpoints!r})"

    @property
    def payer(self) -> str:
        """The system wallet's public key."""
        return str(self._payer.pubkey())

    def mint_address(self, mint_id: str) -> str:
        """The mint account ``mint_id`` always targets."""
        return str(derive_mint_keypair(self._seed, mint_id).pubkey())

    # -- building and signing --------------------------------------------------------------------

    async def priority_fee(
        self,
        *,
        percentile: int = DEFAULT_PRIORITY_FEE_PERCENTILE,
        cap_micro_lamports: int,
        resign: int = 0,
        accounts: Sequence[str] | None = None,
    ) -> int:
        """The price (micro-lamports per CU) to bid: mintsaga.solana.fees's formula over the
        recent fees of ``accounts`` (default: the system wallet; prepare passes every account
        the mint transaction writes), the Token-2022 program and ``priority_fee_accounts``.

        With the ``helius`` estimator, Helius' ``getPriorityFeeEstimate`` for those accounts
        at the level nearest above the percentile; when no endpoint answers it,
        ``getRecentPrioritizationFees`` as with ``rpc``: one sample per recent slot (the node's
        minimum to land next to all of them), the percentile over every sample. A node that
        cannot answer that method either (a permanent error) leaves the fee to the formula's
        empty case; a transient failure of every endpoint is raised, like any read. The cap
        and the raise per re-sign apply to both.
        """
        own = list(accounts) if accounts is not None else [self.payer]
        addresses = list(
            dict.fromkeys([*own, str(TOKEN_2022_PROGRAM_ID), *self.priority_fee_accounts])
        )[:MAX_FEE_ACCOUNTS]
        if self.priority_fee_estimator == "helius":
            try:
                estimate = await self.rpc.call(
                    "getPriorityFeeEstimate",
                    [
                        {
                            "accountKeys": addresses,
                            "options": {"priorityLevel": helius_priority_level(percentile)},
                        }
                    ],
                    parse=parse_priority_fee_estimate,
                )
            except ServiceError as exc:
                log.warning(
                    "getPriorityFeeEstimate failed (%s): estimating from recent fees", exc.code
                )
            else:
                return raised_fee(estimate, resign=resign, cap=cap_micro_lamports)
        try:
            recent = await self.rpc.call(
                "getRecentPrioritizationFees", [addresses], parse=parse_recent_fees
            )
        except ServiceError as exc:
            if exc.retryable:
                raise
            log.warning("getRecentPrioritizationFees refused (%s): bidding no recent fee", exc.code)
            recent = []
        return priority_fee_from_recent(
            recent, percentile=percentile, cap=cap_micro_lamports, resign=resign
        )

    async def prepare(
        self,
        mint_id: str,
        *,
        owner: str,
        name: str,
        symbol: str,
        uri: str,
        priority_fee_micro_lamports: int | None = None,
        resign: int = 0,
        reserve: Callable[[int], Awaitable[None]] | None = None,
        fee_from_operator: bool = False,
        collection: CollectionTarget | None = None,
    ) -> SignedMint:
        """Build and sign the NFT transaction for ``mint_id``; nothing is sent.

        With ``collection`` the NFT joins that group in the same transaction, signed by this
        worker's group authority, which must be the collection's (NEEDS_OPERATOR
        ``GroupAuthorityMismatch`` otherwise: a configuration only a person can fix).

        The blockhash is the latest at ``confirmed`` (``_latest_blockhash``: shared by the
        mints prepared within ``BLOCKHASH_REUSE_S``); the transaction can land until the
        chain passes ``last_valid_block_height``. ``resign`` counts the re-signs after an
        expired blockhash (each bids a higher fee and gets a fresh blockhash);
        ``priority_fee_micro_lamports``, when given (a request's, or an operator's override
        with ``fee_from_operator``), is the price used instead of ``priority_fee()``, clamped to
        its cap (``SOLANA_PRIORITY_FEE_CAP``, or the operator's). The rent per account size is
        kept for ``RENT_TTL_S``.

        The transaction starts with SetComputeUnitLimit (a simulation's units plus a margin)
        and, for a non-zero fee, SetComputeUnitPrice. A simulation that shows the transaction
        would fail raises the ``ServiceError`` sending it would; one that cannot be had falls
        back to a fixed limit.

        Before signing, the transaction's cost (``mint_cost``) is checked against the mint's
        budget (``mint_budget``: NEEDS_OPERATOR ``SpendOverBudget`` above it), then handed to
        ``reserve`` (the fleet-wide spend breaker: it raises to refuse); nothing is signed
        unless both pass.
        """
        if priority_fee_micro_lamports is not None and priority_fee_micro_lamports < 0:
            raise ValueError("priority_fee_micro_lamports must not be negative")
        if resign < 0:
            raise ValueError("resign must not be negative")
        mint_keypair = derive_mint_keypair(self._seed, mint_id)
        payer = self._payer.pubkey()
        mint = mint_keypair.pubkey()
        owner_key = Pubkey.from_string(str(owner))
        # A given fee is clamped to its cap: an operator's to the operator's, a request's
        # (checked by start_mint, not by a starter that is not ours) to SOLANA_PRIORITY_FEE_CAP.
        cap = self.operator_fee_cap if fee_from_operator else self.priority_fee_cap
        fee = priority_fee_micro_lamports
        if fee is not None and fee > cap:
            log.warning(
                "priority fee %d for %s is above %s=%d: clamped",
                fee,
                mint_id,
                "SOLANA_OPERATOR_PRIORITY_FEE_CAP"
                if fee_from_operator
                else "SOLANA_PRIORITY_FEE_CAP",
                cap,
            )
            fee = cap
        if fee is None:
            fee = await self.priority_fee(
                percentile=self.priority_fee_percentile,
                cap_micro_lamports=self.priority_fee_cap,
                resign=resign,
                # A collection's group is written by each member's transaction: a hot account.
                accounts=[
                    str(payer),
                    str(mint),
                    str(associated_token_address(owner_key, mint)),
                    *([collection.address] if collection is not None else []),
                ],
            )
        signers = [self._payer, mint_keypair]
        member: tuple[Pubkey, Pubkey] | None = None
        if collection is not None:
            group_signer = self._group_signer(mint_id, collection)
            member = (Pubkey.from_string(collection.address), group_signer.pubkey())
            signers.append(group_signer)
        size = nft_mint_account_size(name, symbol, uri, member=member is not None)
        rent = await self._rent.get(size, lambda: self._fetch_rent(size))
        blockhash, last_valid = await self._latest_blockhash(mint_id, fresh=resign > 0)
        nft = build_nft_instructions(
            payer=payer,
            mint=mint,
            owner=owner_key,
            name=name,
            symbol=symbol,
            uri=uri,
            rent_lamports=rent,
            update_authority=self.update_authority,
            immutable_metadata=self.update_authority is None,
            collection=member,
        )
        return await self._sign(
            f"mint {mint_id}",
            nft,
            signers,
            rent=rent,
            size=size,
            fee=fee,
            cap=cap,
            blockhash=(blockhash, last_valid),
            reserve=reserve,
        )

    async def prepare_collection(
        self,
        key: str,
        collection: Keypair,
        *,
        name: str,
        symbol: str,
        uri: str,
        max_size: int,
        group_authority: Pubkey,
        reserve: Callable[[int], Awaitable[None]] | None = None,
    ) -> SignedMint:
        """Build and sign the transaction that makes collection ``key``: a one-token NFT at
        ``collection``'s address (derived from the seed and the key) holding the TokenGroup
        (``max_size``, ``group_authority``) and metadata under ``update_authority``, who holds
        its token (the system wallet when the metadata is immutable). Priced and budgeted as a
        mint (the same fee cap); nothing is sent."""
        payer = self._payer.pubkey()
        mint = collection.pubkey()
        fee = await self.priority_fee(
            percentile=self.priority_fee_percentile,
            cap_micro_lamports=self.priority_fee_cap,
            accounts=[str(payer), str(mint)],
        )
        size = collection_mint_account_size(name, symbol, uri)
        rent = await self._rent.get(size, lambda: self._fetch_rent(size))
        instructions = build_collection_instructions(
            payer=payer,
            mint=mint,
            # Its one token: with the update authority's cold key when there is one.
            owner=payer if self.update_authority is None else self.update_authority,
            name=name,
            symbol=symbol,
            uri=uri,
            rent_lamports=rent,
            group_update_authority=group_authority,
            max_size=max_size,
            update_authority=self.update_authority,
            immutable_metadata=self.update_authority is None,
        )
        return await self._sign(
            f"collection {key}",
            instructions,
            [self._payer, collection],
            rent=rent,
            size=size,
            fee=fee,
            cap=self.priority_fee_cap,
            blockhash=await self._latest_blockhash(f"collection:{key}", fresh=True),
            reserve=reserve,
        )

    async def prepare_group_authority_rotation(
        self,
        key: str,
        group: str,
        current: Keypair,
        new: Pubkey,
        *,
        reserve: Callable[[int], Awaitable[None]] | None = None,
    ) -> SignedMint:
        """Sign token-group ``UpdateGroupAuthority`` for collection ``key``'s ``group``: from
        ``current`` (who signs) to ``new``; the system wallet pays. Nothing is sent."""
        payer = self._payer.pubkey()
        fee = await self.priority_fee(
            percentile=self.priority_fee_percentile,
            cap_micro_lamports=self.priority_fee_cap,
            accounts=[str(payer), group],
        )
        instruction = update_group_authority_ix(
            group=Pubkey.from_string(group), current_authority=current.pubkey(), new_authority=new
        )
        return await self._sign(
            f"collection {key}'s group authority rotation",
            [instruction],
            [self._payer, current],
            rent=0,
            size=0,
            fee=fee,
            cap=self.priority_fee_cap,
            blockhash=await self._latest_blockhash(f"rotate:{key}", fresh=True),
            reserve=reserve,
        )

    async def _sign(
        self,
        what: str,
        instructions: list[Instruction],
        signers: list[Keypair],
        *,
        rent: int,
        size: int,
        fee: int,
        cap: int,
        blockhash: tuple[Hash, int],
        reserve: Callable[[int], Awaitable[None]] | None,
    ) -> SignedMint:
        """Simulate for the compute limit, check the cost against the budget, reserve it, sign.
        ``signers[1]`` is the new mint account (for a rotation: the current authority)."""
        payer = self._payer.pubkey()
        latest, last_valid = blockhash
        # The simulated message has the final one's layout (so its size and the budget
        # instructions' own units match) but the largest limit and a zero price: the
        # simulation checks the fee payer can pay, and must not ask for the priority fee on
        # 1.4M units.
        probe = MessageV0.try_compile(
            payer, _with_budget(instructions, MAX_COMPUTE_UNIT_LIMIT, fee, probe=True), [], latest
        )
        _check_size(len(bytes(VersionedTransaction.populate(probe, _unsigned(probe)))))
        units = await self._simulate_units(probe, fee_payer=str(payer))
        limit = FALLBACK_COMPUTE_UNIT_LIMIT if units is None else compute_unit_limit(units)
        # The spend policy, last thing before signing: nothing above the per-mint budget.
        cost = mint_cost(rent, fee, limit, len(signers))
        budget = mint_budget(size, cap, len(signers))
        if cost > budget:
            raise ServiceError(
                f"{what} would cost {cost} lamports (rent {rent}, price {fee}"
                f" micro-lamports per CU at {limit} CU), over its budget of {budget} lamports"
                " (set by SOLANA_OPERATOR_PRIORITY_FEE_CAP); nothing signed",
                service=SERVICE,
                kind=ErrorKind.NEEDS_OPERATOR,
                code="SpendOverBudget",
            )
        if reserve is not None:
            await reserve(cost)
        message = MessageV0.try_compile(payer, _with_budget(instructions, limit, fee), [], latest)
        tx = VersionedTransaction(message, signers)
        wire = bytes(tx)
        _check_size(len(wire))
        return SignedMint(
            signature=str(tx.signatures[0]),
            tx_base64=base64.b64encode(wire).decode("ascii"),
            blockhash=str(latest),
            last_valid_block_height=last_valid,
            mint_address=str(signers[1].pubkey()),
            priority_fee_micro_lamports=fee,
            compute_unit_limit=limit,
            simulated_units=units,
        )

    def _group_signer(self, mint_id: str, collection: CollectionTarget) -> Keypair:
        """This worker's group authority, when it is ``collection``'s."""
        held = self._group_authority
        if held is None or str(held.pubkey()) != collection.group_authority:
            have = "none" if held is None else str(held.pubkey())
            raise ServiceError(
                f"mint {mint_id} joins collection {collection.key!r}, whose group authority is"
                f" {collection.group_authority}; this worker's {GROUP_AUTHORITY_SETTING} is"
                f" {have}. Give the workers that keypair, then retry. Nothing signed",
                service=SERVICE,
                kind=ErrorKind.NEEDS_OPERATOR,
                code="GroupAuthorityMismatch",
            )
        return held

    def forget_blockhash(self) -> None:
        """Drop the kept blockhash: the next ``prepare`` fetches one."""
        self._blockhash.forget()

    async def _latest_blockhash(self, mint_id: str, *, fresh: bool) -> tuple[Hash, int]:
        """(blockhash, lastValidBlockHeight): the one kept if under ``BLOCKHASH_REUSE_S`` old
        (concurrent misses share one fetch), else a new one. ``fresh`` (a re-sign) and a
        mint_id already signed on the kept one get a new one: a second signing of a mint is
        a new transaction, never the first one's bytes again."""
        urls = tuple(self.rpc.urls)
        latest = await self._blockhash.get(urls, self._fetch_blockhash, fresh=fresh)
        if mint_id in latest.signed:
            latest = await self._blockhash.get(urls, self._fetch_blockhash, fresh=True)
        latest.signed.add(mint_id)
        return latest.blockhash, latest.last_valid_block_height
