"""The hot wallet's spend ledger (``wallet_spend``): the fleet-wide spend breaker's memory.

Before a worker signs a mint transaction it reserves the most that transaction can take from
the fee payer (rent + base fee + priority fee at its compute limit). A reservation is refused
when the payer's reservations of the last hour plus this one would pass the limit
(``SOLANA_SPEND_LIMIT_SOL_PER_HOUR``): every worker of the fleet sees the same sum, because the
check and the insert run in one statement's transaction under one advisory lock per payer
(``mintsaga_reserve_spend``, migration 007).

Counting is conservative on purpose: a reservation stays counted whether or not its transaction
lands, and a re-sign (or a retried prepare whose answer was lost) reserves again. The breaker
may stop signing a little early; it never lets the wallet be drained.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from mintsaga.db.executor import Executor
from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.settings import SPEND_LIMIT_SETTING

__all__ = ["SpendMixin", "SpendWindow", "spend_breaker_open"]

WINDOW_DELTA = timedelta(hours=1)
KEEP_DELTA = timedelta(days=1)  # reservations older than this are pruned


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
            # One statement (migration 007): the payer's lock, the sum, the reservation.
            row = await conn.fetchrow(
                "SELECT * FROM mintsaga_reserve_spend($1::text, $2::text, $3::bigint,"
                " $4::bigint, $5::interval, $6::interval)",
                payer,
                mint_id,
                lamports,
                limit_lamports,
                WINDOW_DELTA,
                KEEP_DELTA,
            )
            assert row is not None
            return SpendWindow(row["out_reserved"], limit_lamports, granted=row["out_granted"])

        return await self._db.run(work)
