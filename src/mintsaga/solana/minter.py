"""Build, sign, send and read back the one-transaction NFT (DESIGN.md, "The NFT").

The steps are separate on purpose: the workflow's activities decide when to prepare, send,
rebroadcast, poll and re-sign, with heartbeats in between. Nothing here sleeps or loops on
the chain; every method is one round of calls through the ``SolanaRpc`` pool.

The mint keypair comes from ``MINT_KEY_SEED`` and ``mint_id`` (clients/mint_keys.py), so the
same mint_id always targets the same address and a second NFT for it cannot exist. No key
material or seed appears in an exception, a repr or a log line.
"""

from __future__ import annotations

import base64
import binascii
import logging
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.settings import DEFAULT_PRIORITY_FEE_CAP, DEFAULT_PRIORITY_FEE_PERCENTILE
from mintsaga.solana.cache import SharedCache
from mintsaga.solana.fees import (
    FALLBACK_COMPUTE_UNIT_LIMIT,
    MAX_COMPUTE_UNIT_LIMIT,
    compute_unit_limit,
    parse_recent_fees,
    priority_fee_from_recent,
)
from mintsaga.solana.mint_keys import MIN_SEED_BYTES, SEED_SETTING, derive_mint_keypair
from mintsaga.solana.nft import (
    ACCOUNT_TYPE_OFFSET,
    MINT_BASE_SIZE,
    TLV_HEADER_SIZE,
    TOKEN_2022_PROGRAM_ID,
    associated_token_address,
    build_nft_instructions,
    nft_mint_account_size,
)
from mintsaga.solana.rpc import (
    PREFLIGHT_FAILURE,
    SERVICE,
    SolanaRpc,
    classify_rpc_error,
    redact_url,
)

log = logging.getLogger(__name__)

COMMITMENT = "confirmed"
MAX_TRANSACTION_SIZE = 1232  # bytes on the wire (a packet minus headers)
ACCOUNT_TYPE_MINT = 1
EXTENSION_METADATA_POINTER = 18
EXTENSION_TOKEN_METADATA = 19
TOKEN_ACCOUNT_MIN_SIZE = 165
# A blockhash lives 150 blocks (~60 s): reusing one for 2 s leaves a transaction almost all of
# its life. Rent changes only with a cluster feature change.
BLOCKHASH_REUSE_S = 2.0
RENT_TTL_S = 600.0


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


@dataclass
class _LatestBlockhash:
    """A ``getLatestBlockhash`` answer, as kept for ``BLOCKHASH_REUSE_S``."""

    blockhash: Hash
    last_valid_block_height: int
    signed: set[str] = field(default_factory=set)  # the mint_ids prepare signed on it


@dataclass(frozen=True)
class SigStatus:
    """What ``getSignatureStatuses`` knows about one signature (history searched)."""

    found: bool
    slot: int | None = None
    err: Any = None  # the transaction error as JSON, None when it succeeded
    confirmation_status: str | None = None  # "processed" | "confirmed" | "finalized"


@dataclass(frozen=True)
class NftState:
    """The mint as the chain has it, with the owner's token balance."""

    mint: str
    supply: int
    decimals: int
    is_initialized: bool
    mint_authority: str | None  # None once removed: the supply is fixed
    freeze_authority: str | None
    metadata_address: str | None  # where the MetadataPointer points (the mint itself)
    update_authority: str | None
    name: str | None  # None when there is no TokenMetadata extension
    symbol: str | None
    uri: str | None
    owner: str
    owner_balance: int  # tokens in the owner's associated token account (0 if none)
    slot: int  # the context slot both accounts were read at

    @property
    def is_fixed_supply_nft(self) -> bool:
        """One token, no decimals, nobody able to mint more."""
        return self.supply == 1 and self.decimals == 0 and self.mint_authority is None


# -- account decoding ------------------------------------------------------------------------


def _coption_pubkey(data: bytes, offset: int) -> str | None:
    (tag,) = struct.unpack_from("<I", data, offset)
    return str(Pubkey(data[offset + 4 : offset + 36])) if tag == 1 else None


def _nonzero_pubkey(raw: bytes) -> str | None:
    return None if raw == bytes(32) else str(Pubkey(raw))


def _borsh_string(data: bytes, offset: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<I", data, offset)
    start = offset + 4
    if start + length > len(data):
        raise ValueError("string runs past the end of the metadata")
    return data[start : start + length].decode("utf-8"), start + length


def _extensions(data: bytes) -> dict[int, bytes]:
    """Token-2022 TLV extensions of a mint: type -> value bytes."""
    if len(data) <= ACCOUNT_TYPE_OFFSET or data[ACCOUNT_TYPE_OFFSET] != ACCOUNT_TYPE_MINT:
        return {}
    found: dict[int, bytes] = {}
    offset = ACCOUNT_TYPE_OFFSET + 1
    while offset + TLV_HEADER_SIZE <= len(data):
        ext_type, length = struct.unpack_from("<HH", data, offset)
        if ext_type == 0:  # uninitialised: the rest is padding
            break
        start = offset + TLV_HEADER_SIZE
        found[ext_type] = data[start : start + length]
        offset = start + length
    return found


def decode_nft_mint(
    mint: str, data: bytes
) -> tuple[int, int, bool, str | None, str | None, dict[str, Any]]:
    """(supply, decimals, is_initialized, mint_authority, freeze_authority, metadata fields)."""
    if len(data) < MINT_BASE_SIZE:
        raise ValueError(f"mint account {mint} holds {len(data)} bytes, fewer than a mint")
    mint_authority = _coption_pubkey(data, 0)
    (supply,) = struct.unpack_from("<Q", data, 36)
    decimals = data[44]
    is_initialized = data[45] == 1
    freeze_authority = _coption_pubkey(data, 46)
    extensions = _extensions(data)
    meta: dict[str, Any] = {
        "metadata_address": None,
        "update_authority": None,
        "name": None,
        "symbol": None,
        "uri": None,
    }
    pointer = extensions.get(EXTENSION_METADATA_POINTER)
    if pointer is not None and len(pointer) >= 64:
        meta["metadata_address"] = _nonzero_pubkey(pointer[32:64])
    token_metadata = extensions.get(EXTENSION_TOKEN_METADATA)
    if token_metadata is not None and len(token_metadata) >= 64:
        meta["update_authority"] = _nonzero_pubkey(token_metadata[0:32])
        offset = 64
        meta["name"], offset = _borsh_string(token_metadata, offset)
        meta["symbol"], offset = _borsh_string(token_metadata, offset)
        meta["uri"], offset = _borsh_string(token_metadata, offset)
    return supply, decimals, is_initialized, mint_authority, freeze_authority, meta


def _with_budget(
    instructions: list[Instruction], limit: int, price: int, *, probe: bool = False
) -> list[Instruction]:
    """``instructions`` after the ComputeBudget ones (a probe bids price 0, same layout)."""
    budget = [set_compute_unit_limit(limit)]
    if price > 0:
        budget.append(set_compute_unit_price(0 if probe else price))
    return budget + instructions


def _unsigned(message: MessageV0) -> list[Signature]:
    return [Signature.default()] * message.header.num_required_signatures


def _check_size(size: int) -> None:
    if size > MAX_TRANSACTION_SIZE:
        raise ServiceError(
            f"the NFT transaction is {size} bytes, over Solana's {MAX_TRANSACTION_SIZE}; "
            "shorten name, symbol or uri",
            service=SERVICE,
            kind=ErrorKind.PERMANENT,
            code="TransactionTooLarge",
        )


def _parse_simulation(result: Any) -> dict[str, Any]:
    value = result["value"]
    if not isinstance(value, dict) or "err" not in value:
        raise ValueError("simulateTransaction answered no simulation result")
    units = value.get("unitsConsumed")
    if units is not None and (isinstance(units, bool) or not isinstance(units, int)):
        raise TypeError(f"unitsConsumed {units!r} is not an integer")
    return value


def _account_bytes(value: dict[str, Any]) -> bytes:
    data = value["data"]
    if not (isinstance(data, list) and len(data) == 2 and data[1] == "base64"):
        raise ValueError("expected base64 account data")
    return base64.b64decode(data[0])


# -- the minter ------------------------------------------------------------------------------


class SolanaMinter:
    """Mints DESIGN.md's NFT with ``payer`` as system wallet, fee payer and update authority."""

    def __init__(
        self,
        rpc: SolanaRpc,
        payer: Keypair,
        mint_key_seed: bytes,
        *,
        priority_fee_cap: int = DEFAULT_PRIORITY_FEE_CAP,
        priority_fee_percentile: int = DEFAULT_PRIORITY_FEE_PERCENTILE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``priority_fee_cap`` (micro-lamports per CU) and ``priority_fee_percentile`` are
        ``SOLANA_PRIORITY_FEE_CAP`` and ``SOLANA_PRIORITY_FEE_PERCENTILE``; ``clock`` ages the
        kept rent and blockhash (``time.monotonic``; a test's own to step past the windows)."""
        if len(mint_key_seed) < MIN_SEED_BYTES:
            raise ValueError(f"{SEED_SETTING} must hold at least {MIN_SEED_BYTES} bytes")
        if priority_fee_cap < 0:
            raise ValueError("SOLANA_PRIORITY_FEE_CAP must not be negative")
        if not 0 <= priority_fee_percentile <= 100:
            raise ValueError("SOLANA_PRIORITY_FEE_PERCENTILE must be within 0-100")
        self.rpc = rpc
        self._payer = payer
        self._seed = bytes(mint_key_seed)
        self.priority_fee_cap = priority_fee_cap
        self.priority_fee_percentile = priority_fee_percentile
        self._rent: SharedCache[int, int] = SharedCache(RENT_TTL_S, clock=clock)
        # Keyed by the pool's URLs: after ``SolanaRpc.set_endpoints`` none is reused.
        self._blockhash: SharedCache[tuple[str, ...], _LatestBlockhash] = SharedCache(
            BLOCKHASH_REUSE_S, clock=clock
        )

    def __repr__(self) -> str:
        return f"SolanaMinter(payer={self.payer}, endpoints={self.rpc.endpoints!r})"

    @property
    def payer(self) -> str:
        """The system wallet's public key."""
        return str(self._payer.pubkey())

    def mint_address(self, mint_id: str) -> str:
        """The mint account ``mint_id`` always targets."""
        return str(derive_mint_keypair(self._seed, mint_id).pubkey())

    # -- reads -------------------------------------------------------------------------------

    async def nft_state(
        self, mint_address: str, owner: str, *, start_at: int | None = None
    ) -> NftState | None:
        """The mint and the owner's balance, read together; None if the mint does not exist.

        ``start_at`` asks that endpoint first (failing over to the next ones, open circuits
        skipped), so a repeated verification can ask a node other than the one before.
        """
        mint_key = Pubkey.from_string(mint_address)
        owner_key = Pubkey.from_string(owner)
        ata = associated_token_address(owner_key, mint_key)

        def parse(result: Any) -> tuple[int, Any, Any]:
            values = result["value"]
            if not isinstance(values, list) or len(values) != 2:
                raise ValueError("getMultipleAccounts answered the wrong number of accounts")
            return int(result["context"]["slot"]), values[0], values[1]

        slot, mint_value, ata_value = await self.rpc.call(
            "getMultipleAccounts",
            [[str(mint_key), str(ata)], {"encoding": "base64", "commitment": COMMITMENT}],
            parse=parse,
            only=None if start_at is None else self.rpc.rotated(start_at),
        )
        if mint_value is None:
            return None
        if mint_value.get("owner") != str(TOKEN_2022_PROGRAM_ID):
            raise ServiceError(
                f"the account at mint address {mint_address} is owned by "
                f"{mint_value.get('owner')}, not Token-2022: it is not this service's mint",
                service=SERVICE,
                kind=ErrorKind.NEEDS_OPERATOR,
                code="MintAddressOccupied",
            )
        try:
            supply, decimals, initialized, mint_auth, freeze_auth, meta = decode_nft_mint(
                mint_address, _account_bytes(mint_value)
            )
            balance = 0
            if ata_value is not None and ata_value.get("owner") == str(TOKEN_2022_PROGRAM_ID):
                ata_data = _account_bytes(ata_value)
                if len(ata_data) >= TOKEN_ACCOUNT_MIN_SIZE and ata_data[0:32] == bytes(mint_key):
                    (balance,) = struct.unpack_from("<Q", ata_data, 64)
        except (ValueError, KeyError, struct.error, binascii.Error) as exc:
            raise ServiceError(
                f"the mint account {mint_address} could not be decoded ({exc})",
                service=SERVICE,
                kind=ErrorKind.PERMANENT,
                code="MintAccountUndecodable",
            ) from exc
        return NftState(
            mint=mint_address,
            supply=supply,
            decimals=decimals,
            is_initialized=initialized,
            mint_authority=mint_auth,
            freeze_authority=freeze_auth,
            metadata_address=meta["metadata_address"],
            update_authority=meta["update_authority"],
            name=meta["name"],
            symbol=meta["symbol"],
            uri=meta["uri"],
            owner=owner,
            owner_balance=balance,
            slot=slot,
        )

    async def signature_status(
        self, signature: str, *, endpoint_index: int | None = None
    ) -> SigStatus:
        """Where ``signature`` stands, searching the node's whole history."""

        def parse(result: Any) -> SigStatus:
            (value,) = result["value"]
            if value is None:
                return SigStatus(found=False)
            return SigStatus(
                found=True,
                slot=int(value["slot"]),
                err=value.get("err"),
                confirmation_status=value.get("confirmationStatus"),
            )

        return await self.rpc.call(
            "getSignatureStatuses",
            [[signature], {"searchTransactionHistory": True}],
            parse=parse,
            only=None if endpoint_index is None else [endpoint_index],
        )

    async def block_height(self) -> int:
        return await self.rpc.call("getBlockHeight", [{"commitment": COMMITMENT}], parse=int)

    async def slot(self) -> int:
        return await self.rpc.call("getSlot", [{"commitment": COMMITMENT}], parse=int)

    async def is_blockhash_valid(self, blockhash: str) -> bool:
        """Whether a transaction with ``blockhash`` can still land (at confirmed)."""

        def parse(result: Any) -> bool:
            value = result["value"]
            if not isinstance(value, bool):
                raise TypeError("isBlockhashValid answered a non-boolean")
            return value

        return await self.rpc.call(
            "isBlockhashValid", [blockhash, {"commitment": COMMITMENT}], parse=parse
        )

    async def balance(self, pubkey: str) -> int:
        """Lamports held by ``pubkey`` (at confirmed)."""
        return await self.rpc.call(
            "getBalance",
            [str(pubkey), {"commitment": COMMITMENT}],
            parse=lambda result: int(result["value"]),
        )

    async def health(self) -> None:
        """Raise unless some endpoint reports itself healthy (``getHealth`` = "ok")."""

        def parse(result: Any) -> None:
            if result != "ok":
                raise ValueError(f"getHealth answered {str(result)[:50]!r}")

        await self.rpc.call("getHealth", None, parse=parse)

    # -- writes ------------------------------------------------------------------------------

    async def priority_fee(
        self,
        *,
        percentile: int = DEFAULT_PRIORITY_FEE_PERCENTILE,
        cap_micro_lamports: int,
        resign: int = 0,
        accounts: Sequence[str] | None = None,
    ) -> int:
        """The price (micro-lamports per CU) to bid: clients/solana_fees.py's formula over
        ``getRecentPrioritizationFees`` for ``accounts`` (default: the system wallet; prepare
        passes every account the mint transaction writes).

        A node that cannot answer the method (a permanent error) leaves the fee to the
        formula's empty case; a transient failure of every endpoint is raised, like any read.
        """
        addresses = list(accounts) if accounts is not None else [self.payer]
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
    ) -> SignedMint:
        """Build and sign the NFT transaction for ``mint_id``; nothing is sent.

        The blockhash is the latest at ``confirmed`` (``_latest_blockhash``: shared by the
        mints prepared within ``BLOCKHASH_REUSE_S``); the transaction can land until the
        chain passes ``last_valid_block_height``. ``resign`` counts the re-signs after an
        expired blockhash (each bids a higher fee and gets a fresh blockhash);
        ``priority_fee_micro_lamports``, when given (an operator's override), is the price
        used as is, instead of ``priority_fee()``. The rent per account size is kept for
        ``RENT_TTL_S``.

        The transaction starts with SetComputeUnitLimit (a simulation's units plus a margin)
        and, for a non-zero fee, SetComputeUnitPrice. A simulation that shows the transaction
        would fail raises the ``ServiceError`` sending it would; one that cannot be had falls
        back to a fixed limit.
        """
        if priority_fee_micro_lamports is not None and priority_fee_micro_lamports < 0:
            raise ValueError("priority_fee_micro_lamports must not be negative")
        if resign < 0:
            raise ValueError("resign must not be negative")
        mint_keypair = derive_mint_keypair(self._seed, mint_id)
        payer = self._payer.pubkey()
        mint = mint_keypair.pubkey()
        owner_key = Pubkey.from_string(str(owner))
        fee = priority_fee_micro_lamports
        if fee is None:
            fee = await self.priority_fee(
                percentile=self.priority_fee_percentile,
                cap_micro_lamports=self.priority_fee_cap,
                resign=resign,
                accounts=[str(payer), str(mint), str(associated_token_address(owner_key, mint))],
            )
        size = nft_mint_account_size(name, symbol, uri)
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
            update_authority=payer,
        )
        # The simulated message has the final one's layout (so its size and the budget
        # instructions' own units match) but the largest limit and a zero price: the
        # simulation checks the fee payer can pay, and must not ask for the priority fee on
        # 1.4M units.
        probe = MessageV0.try_compile(
            payer, _with_budget(nft, MAX_COMPUTE_UNIT_LIMIT, fee, probe=True), [], blockhash
        )
        _check_size(len(bytes(VersionedTransaction.populate(probe, _unsigned(probe)))))
        units = await self._simulate_units(probe, fee_payer=str(payer))
        limit = FALLBACK_COMPUTE_UNIT_LIMIT if units is None else compute_unit_limit(units)
        message = MessageV0.try_compile(payer, _with_budget(nft, limit, fee), [], blockhash)
        tx = VersionedTransaction(message, [self._payer, mint_keypair])
        wire = bytes(tx)
        _check_size(len(wire))
        return SignedMint(
            signature=str(tx.signatures[0]),
            tx_base64=base64.b64encode(wire).decode("ascii"),
            blockhash=str(blockhash),
            last_valid_block_height=last_valid,
            mint_address=str(mint),
            priority_fee_micro_lamports=fee,
            compute_unit_limit=limit,
            simulated_units=units,
        )

    def forget_blockhash(self) -> None:
        """Drop the kept blockhash: the next ``prepare`` fetches one."""
        self._blockhash.forget()

    async def _fetch_rent(self, size: int) -> int:
        return await self.rpc.call(
            "getMinimumBalanceForRentExemption", [size, {"commitment": COMMITMENT}], parse=int
        )

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

    async def _fetch_blockhash(self) -> _LatestBlockhash:
        # From the node furthest ahead: its blockhash lives longest, and no lagging node's
        # stale one starts the transaction's clock early.
        freshest = await self.rpc.highest_slot_index()
        return await self.rpc.call(
            "getLatestBlockhash",
            [{"commitment": COMMITMENT}],
            parse=lambda r: _LatestBlockhash(
                Hash.from_string(r["value"]["blockhash"]),
                int(r["value"]["lastValidBlockHeight"]),
            ),
            only=None if freshest is None else self.rpc.rotated(freshest),
        )

    async def _simulate_units(self, message: MessageV0, *, fee_payer: str) -> int | None:
        """Units the unsigned ``message`` consumes in a simulation on the latest blockhash;
        None when no simulation can be had (transient failures). Raises the classified error
        when the simulation shows the transaction would fail for good."""
        tx = VersionedTransaction.populate(message, _unsigned(message))
        try:
            value = await self.rpc.call(
                "simulateTransaction",
                [
                    base64.b64encode(bytes(tx)).decode("ascii"),
                    {
                        "encoding": "base64",
                        "sigVerify": False,
                        "replaceRecentBlockhash": True,
                        "commitment": COMMITMENT,
                    },
                ],
                parse=_parse_simulation,
                fee_payer=fee_payer,
            )
        except ServiceError as exc:
            if exc.retryable:
                log.warning("simulateTransaction failed (%s): fallback compute limit", exc.code)
                return None
            raise
        err = value.get("err")
        if err is not None:
            error = classify_rpc_error(
                PREFLIGHT_FAILURE,
                f"Transaction simulation failed: {err}",
                value,
                endpoint=None,
                method="simulateTransaction",
                fee_payer=fee_payer,
            )
            if not error.retryable:
                raise error
            log.warning("simulation failed (%s): fallback compute limit", error.code)
            return None
        units = value.get("unitsConsumed")
        if not units:
            return None  # a node that does not report units
        return int(units)

    async def send(self, tx_base64: str, *, prefer: str | None = None) -> str:
        """Send the signed bytes (preflight at confirmed, no node retries); return the signature.

        The same bytes go to each endpoint in the pool's order until one takes them. An
        "already processed" answer means an earlier send landed: it counts as sent.
        """
        try:
            tx = VersionedTransaction.from_bytes(base64.b64decode(tx_base64, validate=True))
        except (ValueError, binascii.Error) as exc:
            raise ValueError("tx_base64 is not a base64 signed transaction") from exc
        signature = str(tx.signatures[0])
        fee_payer = str(tx.message.account_keys[0])

        def parse(result: Any) -> str:
            if result != signature:
                raise ValueError(f"sendTransaction answered another signature: {result!r}")
            return signature

        try:
            return await self.rpc.call(
                "sendTransaction",
                [
                    tx_base64,
                    {
                        "encoding": "base64",
                        "skipPreflight": False,
                        "preflightCommitment": COMMITMENT,
                        "maxRetries": 0,
                    },
                ],
                parse=parse,
                fee_payer=fee_payer,
                only=self._preferred_first(prefer),
            )
        except ServiceError as exc:
            if exc.code == "AlreadyProcessed":
                return signature
            raise

    def _preferred_first(self, prefer: str | None) -> list[int] | None:
        """The pool's order with the endpoint an operator named (as configured or as shown,
        redacted) moved to the front; None keeps the pool's own order."""
        if prefer is None:
            return None
        names = self.rpc.endpoints
        matches = [i for i, name in enumerate(names) if name in (prefer, redact_url(prefer))]
        if not matches:
            raise ServiceError(
                f"preferred endpoint {redact_url(prefer)} is not one of {', '.join(names)}",
                service=SERVICE,
                kind=ErrorKind.PERMANENT,
                code="UnknownEndpoint",
            )
        return [matches[0], *(i for i in range(len(names)) if i != matches[0])]
