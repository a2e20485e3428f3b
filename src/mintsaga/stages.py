"""The stages of a mint, as stored in ``mints.stage``.

Kept free of third-party imports so the deterministic workflow code can use the names without
pulling a database driver into the sandbox.
"""

from __future__ import annotations

import enum


class MintStage(enum.StrEnum):
    """Where a mint is. The first six are the happy path, in order; the rest end or pause it."""

    INITIATED = "INITIATED"
    IPFS_UPLOADED = "IPFS_UPLOADED"
    DATABASE_UPDATED = "DATABASE_UPDATED"
    BLOCKCHAIN_SUBMITTED = "BLOCKCHAIN_SUBMITTED"
    BLOCKCHAIN_CONFIRMED = "BLOCKCHAIN_CONFIRMED"
    VERIFIED = "VERIFIED"
    MINTED = "MINTED"
    AWAITING_OPERATOR = "AWAITING_OPERATOR"
    ROLLED_BACK = "ROLLED_BACK"
    FAILED = "FAILED"

    @property
    def in_progress(self) -> bool:
        """Whether the mint still holds its user's one in-progress slot."""
        return self not in NOT_IN_PROGRESS

    @property
    def finished(self) -> bool:
        """Whether the mint is settled for good and may not move to another stage."""
        return self in FINISHED


# A user may start a new mint once the last one is in one of these (the partial unique index
# ``mints_one_in_progress_per_user`` in db/migrations/002_mint_store.sql uses the same list).
NOT_IN_PROGRESS: frozenset[MintStage] = frozenset(
    {MintStage.MINTED, MintStage.ROLLED_BACK, MintStage.FAILED}
)
# FAILED is not here: it waits for an operator, who may still finish it either way.
FINISHED: frozenset[MintStage] = frozenset({MintStage.MINTED, MintStage.ROLLED_BACK})
