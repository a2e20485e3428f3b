"""The mint tables' rows as models, and the SQL pieces every part of the mint store shares.

``mints`` holds one row per mint (:class:`MintRow`); ``mint_events`` its story
(:class:`Event`); ``mint_pins`` the CIDs it holds (:class:`Pin`); ``mint_submissions`` its
signed transactions (:class:`Submission`). The helpers read a mint on a connection already
taken (inside another statement's work) and refuse what a guarded insert found.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg
from pydantic import BaseModel, ConfigDict, field_validator

from mintsaga.db.errors import permanent
from mintsaga.stages import FINISHED, NOT_IN_PROGRESS, MintStage

__all__ = [
    "FINISHED_SQL",
    "MINT_COLUMNS",
    "NOT_IN_PROGRESS_SQL",
    "SELECT_MINT",
    "Event",
    "MintRow",
    "Pin",
    "Submission",
    "check_guarded_insert",
    "fetch_in_progress",
    "fetch_mint",
    "to_stage",
]

MINT_COLUMNS = (
    "mint_id",
    "user_id",
    "wallet",
    "stage",
    "mint_address",
    "image_cid",
    "metadata_cid",
    "signature",
    "slot",
    "last_valid_block_height",
    "blockhash",
    "reason",
    "created_at",
    "updated_at",
    "status",
    "status_at",
    "status_detail",
    "metadata_uri",
    "collection",
)
SELECT_MINT = ", ".join(MINT_COLUMNS)


def _sql_list(stages: Iterable[MintStage]) -> str:
    return ", ".join(f"'{s.value}'" for s in sorted(stages))


FINISHED_SQL = _sql_list(FINISHED)
NOT_IN_PROGRESS_SQL = _sql_list(NOT_IN_PROGRESS)


class MintRow(BaseModel):
    """One row of ``mints``, every column."""

    model_config = ConfigDict(frozen=True)

    mint_id: str
    user_id: str
    wallet: str
    stage: MintStage
    mint_address: str | None
    image_cid: str | None
    metadata_cid: str | None
    signature: str | None
    slot: int | None
    last_valid_block_height: int | None
    blockhash: str | None
    reason: str | None
    created_at: datetime
    updated_at: datetime
    # What the backend is told (migration 009, db/notices.py): None before the first notice.
    status: str | None = None
    status_at: datetime | None = None
    status_detail: dict[str, Any] | None = None
    metadata_uri: str | None = None
    collection: str | None = None  # the collection's key (migration 011), if the request named one

    @field_validator("status_detail", mode="before")
    @classmethod
    def _json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value


class Event(BaseModel):
    """One entry of a mint's story (``mint_events``)."""

    model_config = ConfigDict(frozen=True)

    id: int
    mint_id: str
    stage: str  # free text, not MintStage: rows older than the enum stay readable
    event_key: str | None
    detail: dict[str, Any]
    at: datetime


class Submission(BaseModel):
    """One signed mint transaction, recorded before its first send."""

    model_config = ConfigDict(frozen=True)

    id: int
    mint_id: str
    signature: str
    last_valid_block_height: int
    blockhash: str
    created_at: datetime


class Pin(NamedTuple):
    cid: str
    provider: str


async def fetch_mint(conn: asyncpg.Connection, mint_id: str) -> MintRow | None:
    record = await conn.fetchrow(f"SELECT {SELECT_MINT} FROM mints WHERE mint_id = $1", mint_id)
    return None if record is None else MintRow.model_validate(dict(record))


async def fetch_in_progress(conn: asyncpg.Connection, user_id: str) -> MintRow | None:
    # The predicate repeats the partial index's, so the planner can use it.
    record = await conn.fetchrow(
        f"""SELECT {SELECT_MINT} FROM mints
            WHERE user_id = $1 AND stage NOT IN ({NOT_IN_PROGRESS_SQL})""",
        user_id,
    )
    return None if record is None else MintRow.model_validate(dict(record))


def check_guarded_insert(
    result: asyncpg.Record | None, mint_id: str, what: str, endpoint: str | None
) -> None:
    """An insert guarded by the mint's stage: refuse an unknown or a finished mint."""
    assert result is not None
    if result["stage"] is None:
        raise permanent("UnknownMint", f"mint {mint_id} was never claimed", endpoint)
    if not result["inserted"] and not result["existed"]:
        raise permanent(
            "MintAlreadyFinished",
            f"mint {mint_id} is {result['stage']}; it takes no new {what}",
            endpoint,
        )


def to_stage(stage: MintStage | str, endpoint: str | None) -> MintStage:
    """``stage`` as a MintStage, or PERMANENT ``UnknownStage`` naming the stages there are."""
    try:
        return MintStage(stage)
    except ValueError:
        raise permanent(
            "UnknownStage",
            f"{stage!r} is not a stage; stages: {[s.value for s in MintStage]}",
            endpoint,
        ) from None
