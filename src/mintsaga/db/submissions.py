"""The signed transactions of each mint (``mint_submissions``), kept before their first send.

A transaction whose send answer was lost may still land: with every signature the mint ever
signed kept, a later attempt that finds the NFT on chain can tell which of them landed.
"""

from __future__ import annotations

import asyncpg

from mintsaga.db.executor import Executor
from mintsaga.db.rows import FINISHED_SQL, Submission, check_guarded_insert

__all__ = ["SubmissionsMixin"]


class SubmissionsMixin:
    """MintStore's submission methods; the store supplies ``_db`` (its executor)."""

    _db: Executor

    async def record_submission(
        self, mint_id: str, signature: str, last_valid_block_height: int, blockhash: str
    ) -> None:
        """Keep a signed transaction before its first send; recording it twice is harmless.

        The mint row also takes the newest signature and its validity window. Raises PERMANENT
        ``UnknownMint``, or ``MintAlreadyFinished`` for a new signature on a finished mint.
        """

        async def work(conn: asyncpg.Connection) -> None:
            result = await conn.fetchrow(
                f"""WITH m AS (
                        SELECT stage FROM mints WHERE mint_id = $1::text FOR UPDATE
                    ), ins AS (
                        INSERT INTO mint_submissions
                            (mint_id, signature, last_valid_block_height, blockhash)
                        SELECT $1::text, $2::text, $3::bigint, $4::text FROM m
                        WHERE m.stage NOT IN ({FINISHED_SQL})
                        ON CONFLICT (mint_id, signature) DO NOTHING
                        RETURNING 1
                    ), upd AS (
                        UPDATE mints SET signature = $2::text,
                                         last_valid_block_height = $3::bigint,
                                         blockhash = $4::text, updated_at = now()
                        WHERE mint_id = $1::text AND EXISTS (SELECT 1 FROM ins)
                        RETURNING 1
                    )
                    SELECT (SELECT stage FROM m) AS stage,
                           EXISTS (SELECT 1 FROM ins) AS inserted,
                           EXISTS (SELECT 1 FROM upd) AS updated,
                           EXISTS (SELECT 1 FROM mint_submissions WHERE mint_id = $1::text
                                   AND signature = $2::text) AS existed""",
                mint_id,
                signature,
                last_valid_block_height,
                blockhash,
            )
            check_guarded_insert(result, mint_id, "submission", self._db.endpoint)

        await self._db.run(work)

    async def submissions(self, mint_id: str) -> list[Submission]:
        """Every signed transaction of this mint, oldest first."""
        rows = await self._db.run(
            lambda conn: conn.fetch(
                """SELECT id, mint_id, signature, last_valid_block_height, blockhash, created_at
                   FROM mint_submissions WHERE mint_id = $1 ORDER BY id""",
                mint_id,
            )
        )
        return [Submission.model_validate(dict(r)) for r in rows]
