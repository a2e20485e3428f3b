"""What ``MintPreparer`` (solana/prepare.py) checks before it believes a node or signs.

A latest blockhash's ``lastValidBlockHeight`` against a block height, another node's when one
answers (``blockhash_window_is_plausible``); the rent against the rent-exempt minimum; a
simulation's answer (its failure classified as sending would be, its units the compute limit);
the transaction's size (``MAX_TRANSACTION_SIZE``). ``CheckedReads``, the base of
``MintPreparer``, makes those reads through its ``rpc``.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field
from typing import Any

from solders.hash import Hash
from solders.message import MessageV0
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.solana.fees import rent_exempt_minimum, rent_is_plausible
from mintsaga.solana.rpc import SolanaRpc
from mintsaga.solana.rpc_errors import PREFLIGHT_FAILURE, SERVICE, classify_rpc_error

# The checks' log lines keep the logger they had in solana/prepare.py.
log = logging.getLogger("mintsaga.solana.prepare")

COMMITMENT = "confirmed"  # what every read, simulation and send of the minter asks for
MAX_TRANSACTION_SIZE = 1232  # bytes on the wire (a packet minus headers)


# A blockhash can be used for 150 blocks (Agave's MAX_PROCESSING_AGE; solana.com/docs/advanced/
# confirmation: "the blockhash expires after 150 blocks"), so the latest one's
# lastValidBlockHeight is the block height plus at most 150; the slack covers the node moving on
# between the two answers, or the node asked for the height lagging (Agave calls a node more than
# 150 slots behind unhealthy): a lie can at most double the wait before a re-sign.
MAX_PROCESSING_AGE = 150
BLOCK_HEIGHT_SLACK = 150


def blockhash_window_is_plausible(last_valid_block_height: int, block_height: int) -> bool:
    """Whether a latest blockhash's ``lastValidBlockHeight`` fits the current block height: not
    expired already, and not further ahead than a blockhash ever lives (a node saying so would
    keep a transaction waiting past its real expiry, or get it re-signed while it can land)."""
    ahead = last_valid_block_height - block_height
    return 0 < ahead <= MAX_PROCESSING_AGE + BLOCK_HEIGHT_SLACK


@dataclass
class _LatestBlockhash:
    """A ``getLatestBlockhash`` answer, as kept for ``BLOCKHASH_REUSE_S``."""

    blockhash: Hash
    last_valid_block_height: int
    signed: set[str] = field(default_factory=set)  # the mint_ids prepare signed on it


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


class CheckedReads:
    """The chain reads ``MintPreparer`` makes through ``rpc``, each checked before it is
    believed."""

    rpc: SolanaRpc

    async def _fetch_rent(self, size: int) -> int:
        def believable(answer: Any) -> int:
            rent = int(answer)
            if not rent_is_plausible(rent, size):
                # A node's problem (raised per endpoint, so the next is asked); never kept.
                raise ValueError(
                    f"rent {rent} for {size} bytes is over the rent-exempt minimum"
                    f" {rent_exempt_minimum(size)} (+5 %)"
                )
            return rent

        rent: int = await self.rpc.call(
            "getMinimumBalanceForRentExemption",
            [size, {"commitment": COMMITMENT}],
            parse=believable,
        )
        return rent

    async def _fetch_blockhash(self) -> _LatestBlockhash:
        # From the node furthest ahead: its blockhash lives longest, and no lagging node's
        # stale one starts the transaction's clock early. Its lastValidBlockHeight is believed
        # only against a block height (another node's when one answers): else the next node
        # is asked.
        freshest = await self.rpc.highest_slot_index()
        order = list(range(len(self.rpc.urls))) if freshest is None else self.rpc.rotated(freshest)
        while True:
            index, latest = await self.rpc.call_answered(
                "getLatestBlockhash",
                [{"commitment": COMMITMENT}],
                parse=lambda r: _LatestBlockhash(
                    Hash.from_string(r["value"]["blockhash"]),
                    int(r["value"]["lastValidBlockHeight"]),
                ),
                only=order,
            )
            others = [i for i in order if i != index]
            # Another node's height first: a liar consistent with itself is caught too.
            height: int = await self.rpc.call(
                "getBlockHeight", [{"commitment": COMMITMENT}], parse=int, only=[*others, index]
            )
            if blockhash_window_is_plausible(latest.last_valid_block_height, height):
                answer: _LatestBlockhash = latest
                return answer
            log.warning(
                "endpoint %s answered lastValidBlockHeight %d at block height %d: not believed",
                self.rpc.name(index),
                latest.last_valid_block_height,
                height,
            )
            if not others:
                raise ServiceError(
                    f"lastValidBlockHeight {latest.last_valid_block_height} is implausible at"
                    f" block height {height} (a blockhash lives {MAX_PROCESSING_AGE} blocks)",
                    service=SERVICE,
                    kind=ErrorKind.TRANSIENT,
                    code="ImplausibleBlockhash",
                    endpoint=self.rpc.name(index),
                )
            order = others

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
            # Failed for now, or no endpoint serves the method (a send-only one): the fallback.
            if exc.retryable or exc.unusable is not None:
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
