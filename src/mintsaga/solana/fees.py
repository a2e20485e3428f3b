"""Priority fee and compute-unit limit of the NFT transaction: the arithmetic, kept pure.

The fee is a price per compute unit (micro-lamports/CU), read from what recently landed
transactions paid: ``getRecentPrioritizationFees`` for the accounts the mint transaction
writes, the Token-2022 program and the busy accounts an operator names
(``SOLANA_PRIORITY_FEE_ACCOUNTS``), one sample per recent slot; or a provider's estimate
(Helius' ``getPriorityFeeEstimate``, ``SOLANA_PRIORITY_FEE_ESTIMATOR=helius``):

    base = the ``percentile``-th (nearest rank) of all the samples, zeros included
           (or the provider's estimate at the level nearest above ``percentile``)
    fee  = min(cap, ceil(base * 1.5 ** resign))

Zeros count: a slot whose sample is 0 is a slot where a zero bid landed next to those
accounts, and dropping them would make one expensive slot on a quiet chain the estimate. Our
own accounts alone are no estimate: they are new, or written only by us, so on mainnet the
node answers the block's minimum for them, which is most often 0 (see
devstack/solana/fee_market.py for what the documentation says).

``resign`` counts the re-signs after a blockhash expired unseen, so each re-sign bids higher.
A re-sign on a chain that shows no fees at all starts from ``RESIGN_FLOOR_MICRO_LAMPORTS``, so
it still bids something. ``cap`` (``SOLANA_PRIORITY_FEE_CAP``) bounds what a mint can cost.

The limit is what a simulation of the transaction consumed plus a margin
(``units * 1.2 + 1000``, rounded up), never above the runtime's maximum; when the simulation
cannot be had, ``FALLBACK_COMPUTE_UNIT_LIMIT`` (several times what the NFT needs).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

RESIGN_RAISE = (3, 2)  # x1.5 per re-sign, as a fraction so the arithmetic stays exact
RESIGN_FLOOR_MICRO_LAMPORTS = 1_000
MAX_COMPUTE_UNIT_LIMIT = 1_400_000  # the runtime's per-transaction maximum
FALLBACK_COMPUTE_UNIT_LIMIT = 200_000  # the NFT transaction consumes ~26-30k CU
CU_MARGIN_RATIO = (6, 5)  # x1.2
CU_MARGIN_UNITS = 1_000


def percentile_fee(fees: Iterable[int], percentile: int) -> int:
    """The nearest-rank ``percentile`` (0-100) of all ``fees``, zeros included; 0 for none."""
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be within 0-100, not {percentile}")
    paid = sorted(fees)
    if not paid:
        return 0
    rank = -(-percentile * len(paid) // 100)  # ceil(p/100 * n), 1-based
    return paid[max(rank, 1) - 1]


def raised_fee(base: int, *, resign: int, cap: int) -> int:
    """``base`` raised x1.5 per re-sign (rounded up), never above ``cap``."""
    if base < 0 or cap < 0:
        raise ValueError("fees must not be negative")
    if resign < 0:
        raise ValueError(f"resign must not be negative, not {resign}")
    if resign > 0:
        base = max(base, RESIGN_FLOOR_MICRO_LAMPORTS)
        num, den = RESIGN_RAISE
        # Once over the cap it stays over: stop early so a huge resign costs nothing.
        for _ in range(resign):
            base = -(-base * num // den)
            if base >= cap:
                break
    return min(base, cap)


def priority_fee_from_recent(
    recent: Iterable[int], *, percentile: int, cap: int, resign: int = 0
) -> int:
    """The fee to bid, from the recent per-slot fees (see the module's formula)."""
    return raised_fee(percentile_fee(recent, percentile), resign=resign, cap=cap)


# Helius' priority levels and the percentile each one is (helius.dev/docs/priority-fee:
# Min 0th, Low 25th, Medium 50th, High 75th, VeryHigh 95th, UnsafeMax 100th).
HELIUS_LEVELS = (
    ("Min", 0),
    ("Low", 25),
    ("Medium", 50),
    ("High", 75),
    ("VeryHigh", 95),
    ("UnsafeMax", 100),
)


def helius_priority_level(percentile: int) -> str:
    """The Helius ``priorityLevel`` for ``percentile``: the lowest level at or above it."""
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be within 0-100, not {percentile}")
    return next(name for name, level in HELIUS_LEVELS if level >= percentile)


def parse_priority_fee_estimate(result: Any) -> int:
    """``getPriorityFeeEstimate``'s answer -> the estimate, rounded up (Helius answers a float;
    raises on a wrong shape)."""
    if not isinstance(result, dict):
        raise TypeError("getPriorityFeeEstimate answered a non-object")
    estimate = result.get("priorityFeeEstimate")
    if isinstance(estimate, bool) or not isinstance(estimate, (int, float)) or estimate < 0:
        raise ValueError(f"priorityFeeEstimate {estimate!r} is not a non-negative number")
    if estimate != estimate or estimate == float("inf"):
        raise ValueError(f"priorityFeeEstimate {estimate!r} is not finite")
    return math.ceil(estimate)


def compute_unit_limit(units_consumed: int) -> int:
    """The limit to set for a transaction a simulation says consumes ``units_consumed``."""
    if units_consumed < 0:
        raise ValueError("units_consumed must not be negative")
    num, den = CU_MARGIN_RATIO
    return min(MAX_COMPUTE_UNIT_LIMIT, -(-units_consumed * num // den) + CU_MARGIN_UNITS)


def parse_recent_fees(result: Any) -> list[int]:
    """``getRecentPrioritizationFees``' answer -> the fees (raises on a wrong shape)."""
    if not isinstance(result, list):
        raise TypeError("getRecentPrioritizationFees answered a non-list")
    fees = []
    for entry in result:
        fee = entry["prioritizationFee"]
        if isinstance(fee, bool) or not isinstance(fee, int) or fee < 0:
            raise ValueError(f"prioritizationFee {fee!r} is not a non-negative integer")
        fees.append(fee)
    return fees


# -- what one mint may spend ------------------------------------------------------------------

# Solana's fee per signature (solana.com/docs/core/fees: 5,000 lamports); the mint's
# transaction carries two (the fee payer's and the new mint account's).
LAMPORTS_PER_SIGNATURE = 5_000
MINT_SIGNATURES = 2
# The rent-exempt minimum as Agave's default `Rent` computes it: (128 bytes of account overhead
# + data length) x 3,480 lamports per byte-year x 2 years (getMinimumBalanceForRentExemption
# answers the same on mainnet, devnet and the devstack).
ACCOUNT_STORAGE_OVERHEAD = 128
LAMPORTS_PER_BYTE_YEAR = 3_480
EXEMPTION_THRESHOLD_YEARS = 2
# The owner's Token-2022 token account, created by the associated-token program with the
# ImmutableOwner extension: 165 bytes of account + 1 account type + 4 TLV header (ImmutableOwner
# has no data): https://github.com/solana-program/token-2022 (extension sizes).
TOKEN_ACCOUNT_SIZE = 170
RENT_MARGIN = (21, 20)  # an RPC's rent more than 5 % above the formula is not believed


def rent_exempt_minimum(size: int) -> int:
    """The lamports an account of `size` data bytes needs to be rent-exempt."""
    return (ACCOUNT_STORAGE_OVERHEAD + size) * LAMPORTS_PER_BYTE_YEAR * EXEMPTION_THRESHOLD_YEARS


def rent_is_plausible(rent: int, size: int) -> bool:
    """Whether an RPC's rent for `size` is at most the formula's plus the margin (a lying or
    misconfigured node would lock SOL in every mint account)."""
    return 0 <= rent * RENT_MARGIN[1] <= rent_exempt_minimum(size) * RENT_MARGIN[0]


def priority_lamports(price_micro_lamports: int, compute_unit_limit: int) -> int:
    """What a price per CU costs at a limit, in lamports (rounded up, as the runtime does)."""
    return -(-price_micro_lamports * compute_unit_limit // 1_000_000)


def mint_cost(
    rent: int, price_micro_lamports: int, compute_unit_limit: int, signatures: int = MINT_SIGNATURES
) -> int:
    """Every lamport the mint's transaction takes from the hot wallet: the mint account's rent
    (``rent``, as the RPC answered it), the owner's token account's rent (the associated-token
    program computes it on chain from the account's size: the formula's), the signatures' base
    fee (``signatures``: the payer and the mint, and a collection member's group authority)
    and the priority fee."""
    base = LAMPORTS_PER_SIGNATURE * signatures
    return (
        rent
        + rent_exempt_minimum(TOKEN_ACCOUNT_SIZE)
        + base
        + priority_lamports(price_micro_lamports, compute_unit_limit)
    )


def mint_budget(size: int, fee_cap_micro_lamports: int, signatures: int = MINT_SIGNATURES) -> int:
    """The most one mint may cost: the formula's rent for its size (plus the margin), the
    base fee, and the highest allowed price at the fallback compute limit (the transaction
    needs ~30k CU; a simulation claiming more than 200k is not paid for)."""
    rent = rent_exempt_minimum(size) * RENT_MARGIN[0] // RENT_MARGIN[1]
    return mint_cost(rent, fee_cap_micro_lamports, FALLBACK_COMPUTE_UNIT_LIMIT, signatures)
