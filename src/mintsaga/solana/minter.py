"""The Solana minter the activities use: prepare, send and read back the one-transaction NFT
(docs/design.md, "The NFT").

The steps are separate on purpose: the workflow's activities decide when to prepare, send,
rebroadcast, poll and re-sign, with heartbeats in between. Nothing here sleeps or loops on
the chain; every method is one round of calls through the ``SolanaRpc`` pool.

``SolanaMinter`` is a ``MintPreparer`` (solana/prepare.py: fees, simulation, signing) that can
also send what it signed and read the chain: signature statuses, block height, balances, and
the NFT itself (decoded by solana/nft_state.py). No key material or seed appears in an
exception, a repr or a log line.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from mintsaga.errors import ErrorKind, ServiceError, endpoint_name, redact_url
from mintsaga.solana.nft import associated_token_address
from mintsaga.solana.nft_state import NftState, nft_state_from_accounts
from mintsaga.solana.prepare import COMMITMENT, MintPreparer
from mintsaga.solana.rpc import SERVICE

__all__ = ["SigStatus", "SolanaMinter"]


@dataclass(frozen=True)
class SigStatus:
    """What ``getSignatureStatuses`` knows about one signature (history searched)."""

    found: bool
    slot: int | None = None
    err: Any = None  # the transaction error as JSON, None when it succeeded
    confirmation_status: str | None = None  # "processed" | "confirmed" | "finalized"


class SolanaMinter(MintPreparer):
    """Mints the NFT (docs/design.md, "The NFT") with ``payer`` as system wallet, fee payer and
    update authority: ``prepare`` (inherited) signs it, ``send`` sends it, the reads follow it on
    the chain."""

    # -- reads -------------------------------------------------------------------------------

    async def nft_state(
        self, mint_address: str, owner: str, *, start_at: int | None = None
    ) -> NftState | None:
        """The mint and the owner's balance, read together; None if the mint does not exist.

        ``start_at`` asks that endpoint first (failing over to the next ones, open circuits
        skipped), so a repeated verification can ask a node other than the one before.
        """
        only = None if start_at is None else self.rpc.rotated(start_at)
        _index, state = await self.nft_state_answered(mint_address, owner, only=only)
        return state

    async def nft_state_answered(
        self,
        mint_address: str,
        owner: str,
        *,
        only: list[int] | None = None,
        commitment: str = COMMITMENT,
    ) -> tuple[int, NftState | None]:
        """``nft_state`` from the endpoints ``only`` names (in that order), at ``commitment``,
        with the index of the endpoint that answered: to ask another node for a second opinion,
        or the same one at ``finalized``."""
        mint_key = Pubkey.from_string(mint_address)
        owner_key = Pubkey.from_string(owner)
        ata = associated_token_address(owner_key, mint_key)

        def parse(result: Any) -> tuple[int, Any, Any]:
            values = result["value"]
            if not isinstance(values, list) or len(values) != 2:
                raise ValueError("getMultipleAccounts answered the wrong number of accounts")
            return int(result["context"]["slot"]), values[0], values[1]

        index, (slot, mint_value, ata_value) = await self.rpc.call_answered(
            "getMultipleAccounts",
            [[str(mint_key), str(ata)], {"encoding": "base64", "commitment": commitment}],
            parse=parse,
            only=only,
        )
        return index, nft_state_from_accounts(mint_address, owner, slot, mint_value, ata_value)

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

        status: SigStatus = await self.rpc.call(
            "getSignatureStatuses",
            [[signature], {"searchTransactionHistory": True}],
            parse=parse,
            only=None if endpoint_index is None else [endpoint_index],
        )
        return status

    async def block_height(self) -> int:
        height: int = await self.rpc.call("getBlockHeight", [{"commitment": COMMITMENT}], parse=int)
        return height

    async def slot(self) -> int:
        slot: int = await self.rpc.call("getSlot", [{"commitment": COMMITMENT}], parse=int)
        return slot

    async def is_blockhash_valid(self, blockhash: str) -> bool:
        """Whether a transaction with ``blockhash`` can still land (at confirmed)."""

        def parse(result: Any) -> bool:
            value = result["value"]
            if not isinstance(value, bool):
                raise TypeError("isBlockhashValid answered a non-boolean")
            return value

        valid: bool = await self.rpc.call(
            "isBlockhashValid", [blockhash, {"commitment": COMMITMENT}], parse=parse
        )
        return valid

    async def balance(self, pubkey: str) -> int:
        """Lamports held by ``pubkey`` (at confirmed)."""
        lamports: int = await self.rpc.call(
            "getBalance",
            [str(pubkey), {"commitment": COMMITMENT}],
            parse=lambda result: int(result["value"]),
        )
        return lamports

    async def health(self) -> None:
        """Raise unless some endpoint reports itself healthy (``getHealth`` = "ok")."""

        def parse(result: Any) -> None:
            if result != "ok":
                raise ValueError(f"getHealth answered {str(result)[:50]!r}")

        await self.rpc.call("getHealth", None, parse=parse)

    # -- sending ---------------------------------------------------------------------------------

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
            sent: str = await self.rpc.call(
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
        return sent

    def _preferred_first(self, prefer: str | None) -> list[int] | None:
        """The pool's order with the endpoint an operator named (as configured or as shown,
        redacted) moved to the front; None keeps the pool's own order."""
        if prefer is None:
            return None
        names = self.rpc.endpoints
        matches = [i for i, name in enumerate(names) if name in (prefer, endpoint_name(prefer))]
        if not matches:
            raise ServiceError(
                f"preferred endpoint {redact_url(prefer)} is not one of {', '.join(names)}",
                service=SERVICE,
                kind=ErrorKind.PERMANENT,
                code="UnknownEndpoint",
            )
        return [matches[0], *(i for i in range(len(names)) if i != matches[0])]
