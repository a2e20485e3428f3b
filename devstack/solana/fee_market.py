"""The fee market: background load on busy slots, and which transaction a busy block includes.

What the real documentation says, and what this module adds where it is silent:

- ``getRecentPrioritizationFees`` (solana.com/docs/rpc/http/getrecentprioritizationfees; Agave
  ``runtime/src/prioritization_fee.rs``, ``prioritization_fee_cache.rs``): a node keeps, for up
  to 150 recent blocks, the lowest compute-unit price of the block's (non-vote) transactions
  and, per write-locked account, the lowest price of the transactions that write-locked it. It
  answers, per slot, the block's minimum raised to the highest of the given accounts' minimums:
  Agave's doc comment calls that "the minimum fee needed to land a transaction ... Max(
  min_compute_unit_price, min_writable_account_fees(key), ...)". Program ids are never
  write-locked (the runtime demotes them to read-only), so asking about the Token-2022 program
  answers the block's minimum. The ledger keeps these numbers (``SlotFees``).
- On mainnet that block minimum is most often 0 (Triton, "Improved Priority Fees API": it
  "only returns the minimum priority fee paid in recent blocks, which is often zero and not a
  useful indicator of the market rate required for a transaction to land"; Helius' guide to the
  method: a 0 "typically means no transaction in that slot ... paid an additional priority
  fee"). Blocks carry transactions that pay no compute-unit price and still land by another
  path: a Jito bundle paying a tip, a sender on a staked connection (stake-weighted QoS). This
  load models that with one zero-price transaction per busy block (``zero_fee_landings``), so
  an estimator that asks only about our own accounts (new, or written only by us) reads 0 on a
  busy chain, as on mainnet. ``zero_fee_landings: false`` is a chain where every transaction of
  a busy block paid, so the block minimum shows the clearing price.
- Inclusion: the scheduler of a congested leader orders transactions by priority (price per
  compute unit; solana.com/docs/core/fees: "the prioritization fee ... increases the
  likelihood that the current leader will process your transaction"), and a transaction that
  does not fit waits or is dropped. No document gives the rule a leader follows, so this one is
  our own simplification: on a busy slot a transaction that reaches the leader the ordinary way
  (unstaked RPC, no tip) is included only if its price is at least the slot's *clearing price*,
  the lowest price paid by the block's priority-paying transactions (Agave tracks exactly that
  number as ``min_compute_unit_price`` of "prioritized transactions" in its metrics; the RPC
  does not expose it). Below it the transaction waits for a later slot it clears, and when its
  blockhash expires first, it never lands. A quiet slot (no load) includes everything.
- ``getPriorityFeeEstimate`` is Helius' method (helius.dev/docs/priority-fee, the account-keys
  method; helius-labs/atlas-priority-fee-estimator): "considers both global and local fee
  markets", percentiles over the fees of recent transactions that touched the given accounts
  (read or written, so a program id counts), levels min 0th, low 25th, medium 50th, high 75th,
  veryHigh 95th, unsafeMax 100th, ``recommended`` the medium one, over ``lookbackSlots`` (at
  most 150). Ours: nearest-rank percentiles over the prices of every recorded transaction in the
  window that touched one of the accounts (every transaction of the window when none did),
  empty slots not counted. Helius' own weighting of the global and per-account samples is not
  documented and not copied.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from solders.pubkey import Pubkey

TOKEN_2022_PROGRAM_ID = Pubkey.from_string("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")


def _devstack_account(name: str) -> Pubkey:
    return Pubkey(hashlib.sha256(f"mintsaga devstack {name}".encode()).digest())


# Accounts every busy block's background transactions write-lock: a market's state, a fee
# vault, ... on mainnet (each operator knows which ones its traffic meets); made up here.
HOT_ACCOUNTS: tuple[Pubkey, ...] = tuple(_devstack_account(f"hot account {i}") for i in range(4))

# Helius' priority levels and the percentile each one is (helius.dev/docs/priority-fee).
HELIUS_LEVELS: dict[str, int] = {
    "min": 0,
    "low": 25,
    "medium": 50,
    "high": 75,
    "veryHigh": 95,
    "unsafeMax": 100,
}
HELIUS_RECOMMENDED = "medium"
MAX_LOOKBACK_SLOTS = 150


class FeeMarketError(ValueError):
    """A fee-market setting the admin API or ``up`` refuses."""


@dataclass(frozen=True)
class FeeMarketLoad:
    """The background load: which slots are busy, and what their transactions pay.

    ``busy_fraction`` of the slots (drawn per slot) carry ``transactions_per_slot`` background
    transactions, each write-locking one of ``hot_accounts`` and invoking Token-2022, at prices
    (micro-lamports per CU) drawn uniformly from ``min_fee``-``max_fee``. Off when
    ``busy_fraction`` is 0 (the default)."""

    busy_fraction: float = 0.0
    min_fee: int = 2_000
    max_fee: int = 20_000
    transactions_per_slot: int = 4
    zero_fee_landings: bool = True
    hot_accounts: tuple[Pubkey, ...] = HOT_ACCOUNTS
    seed: int | None = None  # the draws' seed; None: a fresh one each time the load is set

    FIELDS = (
        "busy_fraction",
        "min_fee",
        "max_fee",
        "transactions_per_slot",
        "zero_fee_landings",
        "hot_accounts",
        "seed",
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.busy_fraction <= 1.0:
            raise FeeMarketError("busy_fraction: must be within 0-1")
        if not 0 < self.min_fee <= self.max_fee:
            raise FeeMarketError("min_fee, max_fee: need 0 < min_fee <= max_fee")
        if not 1 <= self.transactions_per_slot <= 64:
            raise FeeMarketError("transactions_per_slot: must be within 1-64")
        if not self.hot_accounts:
            raise FeeMarketError("hot_accounts: name at least one account")

    @property
    def on(self) -> bool:
        return self.busy_fraction > 0

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> FeeMarketLoad:
        """The load an admin request or ``up`` names (fields left out keep their defaults)."""
        unknown = sorted(set(body) - set(cls.FIELDS))
        if unknown:
            raise FeeMarketError(f"unknown fields: {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name in ("busy_fraction",):
            if name in body:
                value = body[name]
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise FeeMarketError(f"{name}: must be a number")
                values[name] = float(value)
        for name in ("min_fee", "max_fee", "transactions_per_slot"):
            if name in body:
                value = body[name]
                if isinstance(value, bool) or not isinstance(value, int):
                    raise FeeMarketError(f"{name}: must be an integer")
                values[name] = value
        if "zero_fee_landings" in body:
            if not isinstance(body["zero_fee_landings"], bool):
                raise FeeMarketError("zero_fee_landings: must be true or false")
            values["zero_fee_landings"] = body["zero_fee_landings"]
        if "seed" in body:
            seed = body["seed"]
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                raise FeeMarketError("seed: must be an integer or null")
            values["seed"] = seed
        if "hot_accounts" in body:
            accounts = body["hot_accounts"]
            if not isinstance(accounts, list):
                raise FeeMarketError("hot_accounts: must be a list of base58 addresses")
            try:
                values["hot_accounts"] = tuple(Pubkey.from_string(str(a)) for a in accounts)
            except ValueError as exc:
                raise FeeMarketError(f"hot_accounts: {exc}") from None
        return cls(**values)

    def describe(self) -> dict[str, Any]:
        return {
            "busy_fraction": self.busy_fraction,
            "min_fee": self.min_fee,
            "max_fee": self.max_fee,
            "transactions_per_slot": self.transactions_per_slot,
            "zero_fee_landings": self.zero_fee_landings,
            "hot_accounts": [str(a) for a in self.hot_accounts],
            "seed": self.seed,
        }


def parse_fee_market_spec(spec: str) -> dict[str, Any]:
    """``up --fee-market`` / ``DEVSTACK_FEE_MARKET``: ``busy_fraction=0.8,min_fee=2000,...``
    (a bare number is the busy fraction; '' is off) -> the JSON body the admin API takes."""
    spec = spec.strip()
    if not spec:
        return {}
    body: dict[str, Any] = {}
    for part in spec.split(","):
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep:
            name, value = "busy_fraction", name
        try:
            if name == "busy_fraction":
                body[name] = float(value)
            elif name == "zero_fee_landings":
                body[name] = value.lower() in ("1", "true", "yes")
            elif name == "hot_accounts":
                body[name] = [a for a in value.split(";") if a]
            else:
                body[name] = int(value)
        except ValueError:
            raise FeeMarketError(f"{name}={value!r}: not a number") from None
    FeeMarketLoad.from_json(body)  # refuse a bad spec at `up`, not in the emulator process
    return body


@dataclass(frozen=True)
class Landed:
    """One transaction of a block, as the fee market sees it."""

    price: int  # micro-lamports per CU
    writable: frozenset[Pubkey]
    touched: frozenset[Pubkey]  # every account key, read-only ones (programs) included


@dataclass
class BackgroundBlock:
    """The load's transactions in one busy slot, and the price an ordinary one must clear."""

    clearing_price: int
    transactions: list[Landed] = field(default_factory=list)


def background_block(load: FeeMarketLoad, rng: random.Random) -> BackgroundBlock | None:
    """One slot's background transactions, or None for a quiet slot."""
    if not load.on or rng.random() >= load.busy_fraction:
        return None
    transactions = []
    for i in range(load.transactions_per_slot):
        hot = load.hot_accounts[i % len(load.hot_accounts)]
        payer = _devstack_account(f"load payer {i}")
        price = rng.randint(load.min_fee, load.max_fee)
        transactions.append(
            Landed(price, frozenset({payer, hot}), frozenset({payer, hot, TOKEN_2022_PROGRAM_ID}))
        )
    block = BackgroundBlock(min(t.price for t in transactions), transactions)
    if load.zero_fee_landings:
        # A bundle (tip, no compute-unit price) or a staked sender: in the block, price 0.
        payer = _devstack_account("load bundle payer")
        block.transactions.append(Landed(0, frozenset({payer}), frozenset({payer})))
    return block


def includes(price: int, clearing_price: int) -> bool:
    """Whether a busy slot whose clearing price is ``clearing_price`` includes an ordinary
    transaction bidding ``price`` (0 for a quiet slot: everything fits)."""
    return price >= clearing_price


def nearest_rank(values: list[int], percentile: int) -> int:
    """The nearest-rank ``percentile`` of ``values`` (0 when empty; the 0th is the lowest)."""
    if not values:
        return 0
    ordered = sorted(values)
    rank = -(-percentile * len(ordered) // 100)
    return ordered[max(rank, 1) - 1]


def helius_estimate(
    blocks: Iterable[list[Landed]], accounts: Iterable[Pubkey], options: Mapping[str, Any]
) -> dict[str, Any]:
    """``getPriorityFeeEstimate``'s result over ``blocks`` (oldest first, the lookback's)."""
    keys = set(accounts)
    every = [t for block in blocks for t in block]
    touching = [t.price for t in every if t.touched & keys]
    prices = touching if touching else [t.price for t in every]
    if options.get("includeAllPriorityFeeLevels"):
        return {
            "priorityFeeLevels": {
                name: float(nearest_rank(prices, p)) for name, p in HELIUS_LEVELS.items()
            }
        }
    level = options.get("priorityLevel")
    if level is None:
        level = HELIUS_RECOMMENDED
    # Helius documents the levels case-insensitively in examples ("High", "high").
    by_lower = {name.lower(): p for name, p in HELIUS_LEVELS.items()}
    if not isinstance(level, str) or level.lower() not in by_lower:
        raise ValueError(f"unknown priorityLevel {level!r}; one of {', '.join(HELIUS_LEVELS)}")
    return {"priorityFeeEstimate": float(nearest_rank(prices, by_lower[level.lower()]))}
