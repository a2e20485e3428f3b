"""What the worker's fleet gauges read from Postgres (observability/sampler.py sets them).

    mintsaga_admission_queued   rows of ``mint_admission_queue``: mints waiting at admission
    mintsaga_admission_held     mints between claim and pivot (what MINT_ADMISSION_LIMIT bounds)
    mintsaga_oldest_awaiting_operator_seconds
                                from ``mints.status_at`` of the rows AWAITING_OPERATOR: when
                                each wait began (``record_notice`` sets it with the status)

Read-only and outside the saga: its own pool of one connection, opened lazily (a database
that is down fails a sample, logged by the sampler, never the worker's start), and no circuit
breaker, so a slow gauge read never opens the breaker the mints' activities go through.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import asyncpg

from mintsaga.db.errors import endpoint_and_secrets
from mintsaga.db.executor import Executor, close_pool, create_pool
from mintsaga.stages import MintStage

__all__ = ["BEFORE_PIVOT_STAGES", "FleetGauges"]

# Between claim and pivot: the stages MINT_ADMISSION_LIMIT counts (as the admission does).
BEFORE_PIVOT_STAGES = (MintStage.INITIATED, MintStage.IPFS_UPLOADED, MintStage.DATABASE_UPDATED)
AWAITING_OPERATOR = "AWAITING_OPERATOR"


class FleetGauges:
    """The fleet-wide counts and waits the gauges show, read on demand."""

    def __init__(
        self, pool: asyncpg.Pool, *, endpoint: str | None = None, secrets: Sequence[str] = ()
    ) -> None:
        self._db = Executor(pool, endpoint=endpoint, secrets=secrets, acquire_timeout=10.0)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, dsn: str) -> AsyncIterator[FleetGauges]:
        """Its own pool (no connection until the first read; at most one), closed after."""
        endpoint, secrets = endpoint_and_secrets(dsn)
        pool = await create_pool(dsn, min_size=0, max_size=1, timeout=5.0, command_timeout=10.0)
        try:
            yield cls(pool, endpoint=endpoint, secrets=secrets)
        finally:
            await close_pool(pool, grace=5.0)

    async def admission_counts(self) -> tuple[int, int]:
        """(mints queued at admission, mints between claim and pivot)."""
        row = await self._db.attempt(
            lambda conn: conn.fetchrow(
                """SELECT (SELECT count(*) FROM mint_admission_queue) AS queued,
                          (SELECT count(*) FROM mints WHERE stage = ANY($1::text[])) AS held""",
                [stage.value for stage in BEFORE_PIVOT_STAGES],
            )
        )
        assert row is not None
        return int(row["queued"]), int(row["held"])

    async def collection_counts(self) -> list[tuple[str, int, int, int]]:
        """Per collection: (key, members minted, members minting, max size)."""
        rows = await self._db.attempt(
            lambda conn: conn.fetch(
                f"""SELECT c.key, c.max_size,
                           count(m.mint_id) FILTER (WHERE m.stage = '{MintStage.MINTED.value}')
                               AS minted,
                           count(m.mint_id) FILTER (WHERE m.stage NOT IN
                               ('{MintStage.MINTED.value}', '{MintStage.ROLLED_BACK.value}'))
                               AS minting
                    FROM collections c LEFT JOIN mints m ON m.collection = c.key
                    GROUP BY c.key, c.max_size ORDER BY c.key"""
            )
        )
        return [(r["key"], int(r["minted"]), int(r["minting"]), int(r["max_size"])) for r in rows]

    async def awaiting_since(self, mint_ids: Sequence[str]) -> dict[str, datetime]:
        """Of these mints, those whose row says AWAITING_OPERATOR, with when that began."""
        if not mint_ids:
            return {}
        rows = await self._db.attempt(
            lambda conn: conn.fetch(
                """SELECT mint_id, status_at FROM mints
                   WHERE mint_id = ANY($1::text[]) AND status = $2 AND status_at IS NOT NULL""",
                list(mint_ids),
                AWAITING_OPERATOR,
            )
        )
        return {row["mint_id"]: row["status_at"] for row in rows}
