"""The hot wallet's spend ledger (``wallet_spend``): the fleet-wide spend breaker's memory.

Before a worker signs a mint transaction it reserves the most that transaction can take from
the fee payer (rent + base fee + priority fee at its compute limit). A reservation is refused
when the payer's reservations of the last hour plus this one would pass the limit
(``SOLANA_SPEND_LIMIT_SOL_PER_HOUR``): every worker of the fleet sees the same sum, because the
check and the insert run in one transaction under one advisory lock per payer.

Counting is conservative on purpose: a reservation stays counted whether or not its transaction
lands, and a re-sign (or a retried prepare whose answer was lost) reserves again. The breaker
may stop signing a little early; it never lets the wallet be drained.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from mintsaga.db.executor import Executor
from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.settings import SPEND_LIMIT_SETTING

__all__ = ["SpendMixin", "SpendWindow", "spend_breaker_open"]

WINDOW = "1 hour"
KEEP = "1 day"  # reservations older than this are pruned


@dataclass(frozen=True)
class SpendWindow:
    """The payer's reservations in the last hour, and the limit they were checked against."""

    reserved_lamports: int  # including the one just made, when it was made
    limit_lamports: int
    granted: bool


def spend_breaker_open(
    mint_id: str, lamports: int, window: SpendWindow, *, endpoint: str | None
) -> ServiceError:
    """The error a refused reservation raises: only an operator can decide to spend more."""
    return ServiceError(
        f"spend breaker open: signing mint {mint_id} may cost {lamports} lamports, and the"
        f" system wallet's reservations of the last hour are {window.reserved_lamports}"
        f" lamports, over {SPEND_LIMIT_SETTING} ({window.limit_lamports} lamports an hour);"
        " nothing signed. Raise the limit if this spend is expected, else find what spends",
        service="solana",
        kind=ErrorKind.NEEDS_OPERATOR,
        code="SpendBreakerOpen",
        endpoint=endpoint,
    )


class SpendMixin:
    """MintStore's spend methods; the store supplies ``_db`` (its executor)."""

    _db: Executor

    async def reserve_spend(
        self, payer: str, mint_id: str, lamports: int, *, limit_lamports: int
    ) -> SpendWindow:
        """Reserve ``lamports`` of ``payer``'s hourly budget for ``mint_id``'s next signature.

        Returns the window (``granted`` False: nothing was reserved, the caller must not sign).
        """
        if lamports < 0 or limit_lamports < 0:
            raise ValueError("lamports and limit_lamports must not be negative")

        async def work(conn: asyncpg.Connection) -> SpendWindow:
            async with conn.transaction():
                # One signer at a time per payer, fleet-wide, for the length of this transaction.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended('wallet_spend:' || $1, 0))",
                    payer,
                )
                spent: int = await conn.fetchval(
                    f"""SELECT coalesce(sum(lamports), 0)::bigint FROM wallet_spend
                        WHERE payer = $1 AND reserved_at > now() - interval '{WINDOW}'""",
                    payer,
                )
                if spent + lamports > limit_lamports:
                    return SpendWindow(spent, limit_lamports, granted=False)
                await conn.execute(
                    "INSERT INTO wallet_spend (payer, mint_id, lamports) VALUES ($1, $2, $3)",
                    payer,
                    mint_id,
                    lamports,
                )
                await conn.execute(
                    f"DELETE FROM wallet_spend WHERE reserved_at < now() - interval '{KEEP}'"
                )
                return SpendWindow(spent + lamports, limit_lamports, granted=True)

        return await self._db.run(work)
