"""The cursor feed of notices, for a backend that prefers pulling to webhooks.

    notices = await list_events(after=cursor, limit=100)   # oldest first
    cursor = notices[-1].cursor if notices else cursor     # where to read on from

Each notice is a `mintsaga.notices.MintNotice`: the same id, type, timestamp and data a webhook
carries (``feed_line()`` is its JSON line, ``mintsaga events`` prints them). The feed reads
the ``mint_events`` rows of Postgres (DATABASE_URL, or DATABASE_URL_FILE, like the
`maintenance` commands), never Temporal, so it answers for mints whose history is gone. It has
no gaps: a notice is served only once nothing with a smaller cursor can still be committed
(`mintsaga.db.notices`), so reading on from the last cursor seen never misses one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from mintsaga.api.errors import StarterError
from mintsaga.api.switches import database_url as database_url_from_env
from mintsaga.db.mint_store import MintStore
from mintsaga.db.notices import MAX_FEED_LIMIT
from mintsaga.errors import ServiceError
from mintsaga.notices import MintNotice

__all__ = ["DEFAULT_LIMIT", "FOLLOW_POLL_S", "event_feed", "follow_events", "list_events"]

DEFAULT_LIMIT = 100
# `--follow` asks again this often once it has read everything there is.
FOLLOW_POLL_S = 1.0


@contextlib.asynccontextmanager
async def event_feed(database_url: str | None = None) -> AsyncIterator[MintStore]:
    """A small store to read the feed from (closed after); DATABASE_URL when not given.

    A database that cannot be reached is a `StarterError` naming DATABASE_URL.
    """
    url = database_url or database_url_from_env()
    try:
        store = await MintStore.connect(url, min_size=1, max_size=2)
    except ServiceError as exc:
        raise StarterError(f"cannot reach the database (DATABASE_URL): {exc}") from exc
    try:
        yield store
    finally:
        await store.close()


async def _read(store: MintStore, after: int, limit: int) -> list[MintNotice]:
    try:
        return await store.notices_after(after, limit)
    except ServiceError as exc:
        raise StarterError(f"events: {exc}") from exc


async def list_events(
    after: int = 0, limit: int = DEFAULT_LIMIT, *, database_url: str | None = None
) -> list[MintNotice]:
    """The notices after cursor ``after`` (0: from the first), oldest first, at most ``limit``
    (1 to 1000: more reads 1000). Pass the last one's ``cursor`` as ``after`` to read on."""
    if after < 0:
        raise StarterError(f"events: after must be a cursor (0 or more), not {after}")
    if limit < 1:
        raise StarterError(f"events: limit must be at least 1, not {limit}")
    async with event_feed(database_url) as store:
        return await _read(store, after, limit)


async def follow_events(
    after: int = 0,
    *,
    limit: int = DEFAULT_LIMIT,
    poll_s: float = FOLLOW_POLL_S,
    database_url: str | None = None,
) -> AsyncIterator[MintNotice]:
    """Every notice after ``after``, then each new one as it is recorded, for good (one
    connection pool the whole time; a read that fails is a `StarterError`)."""
    if after < 0:
        raise StarterError(f"events: after must be a cursor (0 or more), not {after}")
    limit = max(1, min(limit, MAX_FEED_LIMIT))
    async with event_feed(database_url) as store:
        while True:
            notices = await _read(store, after, limit)
            for notice in notices:
                yield notice
                after = notice.cursor
            if len(notices) < limit:  # read up to now: wait for more
                await asyncio.sleep(poll_s)
