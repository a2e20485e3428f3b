"""What a backend is told about its mint: the notice types, their statuses and their JSON.

A notice is one status change of a mint, recorded in Postgres (``mint_events`` rows with a
``type``, written by the saga's ``record_notices`` step) and then published two ways: pushed as
a Standard Webhooks message (``mintsaga.webhooks``) and served by the cursor feed
(``mintsaga.api.events.list_events``, ``mintsaga events``). Both carry the same JSON, the
body the Standard Webhooks specification recommends::

    {"type": "mint.minted", "timestamp": "2026-12-03T22:41:07.120Z",
     "data": {"mint_id": "...", "status": "MINTED", "stage": "MINTED", "mint_address": "...",
              "signature": "...", "image_cid": "...", "metadata_cid": "..."}}

The notice's id (``evt_<cursor>``, the ``webhook-id`` header) is unique and stable: a backend
de-duplicates deliveries by it. Kept free of third-party imports but pydantic, so workflow code
may use the names.
"""

from __future__ import annotations

import enum
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["NOTICE_ID_PREFIX", "MintNotice", "NoticeType", "notice_id", "status_of"]

NOTICE_ID_PREFIX = "evt_"


class NoticeType(enum.StrEnum):
    """The types of notice, in the order a mint may emit them."""

    IN_PROGRESS = "mint.in_progress"  # the mint started, or entered a stage
    QUEUED = "mint.queued"  # waiting at admission (MINT_ADMISSION_LIMIT), nothing claimed yet
    DELAYED = "mint.delayed"  # late (options.delay_notice_s) or waiting for an operator: once
    AWAITING_OPERATOR = "mint.awaiting_operator"  # a step spent its retries: retry or compensate
    RESUMED = "mint.resumed"  # an operator's decision (or the saga) moved it on again
    MINTED = "mint.minted"
    ROLLED_BACK = "mint.rolled_back"
    FAILED = "mint.failed"  # a compensation failed for good: an operator must look


# The mint's status after each notice (mints.status, and data.status of the notice).
_STATUS = {
    NoticeType.IN_PROGRESS: "IN_PROGRESS",
    NoticeType.QUEUED: "QUEUED",
    NoticeType.DELAYED: "DELAYED",
    NoticeType.AWAITING_OPERATOR: "AWAITING_OPERATOR",
    NoticeType.RESUMED: "IN_PROGRESS",
    NoticeType.MINTED: "MINTED",
    NoticeType.ROLLED_BACK: "ROLLED_BACK",
    NoticeType.FAILED: "FAILED",
}


def status_of(notice_type: NoticeType | str) -> str:
    """The mint's status once a notice of this type is recorded."""
    return _STATUS[NoticeType(notice_type)]


def notice_id(cursor: int) -> str:
    """The notice's id (``webhook-id``) from its feed cursor (the ``mint_events`` row id)."""
    return f"{NOTICE_ID_PREFIX}{cursor}"


class MintNotice(BaseModel):
    """One published status change: its id and cursor, and the body a backend receives."""

    model_config = ConfigDict(frozen=True)

    cursor: int  # the feed's position: list_events(after=cursor) returns what came next
    type: NoticeType
    timestamp: datetime  # when it was recorded (UTC)
    data: dict[str, Any]  # at least mint_id, status, stage; more where they apply

    @property
    def id(self) -> str:
        return notice_id(self.cursor)

    def body(self) -> dict[str, Any]:
        """The JSON object a webhook carries: ``{"type", "timestamp", "data"}``."""
        moment = self.timestamp.astimezone(UTC).isoformat(timespec="milliseconds")
        return {
            "type": self.type.value,
            "timestamp": moment.replace("+00:00", "Z"),
            "data": self.data,
        }

    def body_bytes(self) -> bytes:
        """The body as sent (and signed): compact JSON, keys in a stable order."""
        return json.dumps(self.body(), separators=(",", ":"), sort_keys=True).encode()

    def feed_line(self) -> dict[str, Any]:
        """The feed's JSON line: the body with its ``id`` and ``cursor``."""
        return {"id": self.id, "cursor": self.cursor, **self.body()}
