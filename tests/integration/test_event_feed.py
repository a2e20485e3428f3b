"""The cursor feed (`mintsaga.list_events`, `mintsaga events`) over the devstack's Postgres:
notices recorded as the saga records them come back in order, each once, readable on from any
cursor, as JSON lines from the CLI, and `--follow` prints a notice recorded after it started.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

import mintsaga
from devstack.config import StackConfig
from mintsaga.db.mint_store import MintStore
from mintsaga.notices import MintNotice, NoticeType
from tests.paths import ROOT
from tests.saga_support import run_starter

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(stack: StackConfig) -> AsyncIterator[MintStore]:
    mint_store = await MintStore.connect(stack.database_url, min_size=1, max_size=2)
    try:
        yield mint_store
    finally:
        await mint_store.close()


async def _record(store: MintStore, mint_id: str, *kinds: NoticeType) -> list[int]:
    cursors = []
    for n, kind in enumerate(kinds):
        cursor = await store.record_notice(
            mint_id, kind, event_key=f"test-{n}-{kind.value}", data={"stage": "INITIATED"}
        )
        assert cursor is not None
        cursors.append(cursor)
    return cursors


def _env(stack: StackConfig) -> dict[str, str]:
    return {**os.environ, **stack.worker_env(), "DATABASE_URL": stack.database_url}


async def _feed_until(stack: StackConfig, after: int, last: int) -> list[MintNotice]:
    """The feed after `after`, read until `last` is served: a notice is served once every
    transaction that began before it ended, which other clients of the database may delay."""
    deadline = time.monotonic() + 15
    while True:
        notices = await mintsaga.list_events(after, 1000, database_url=stack.database_url)
        if any(notice.cursor == last for notice in notices) or time.monotonic() > deadline:
            return notices
        await asyncio.sleep(0.2)


async def test_notices_come_back_in_order_once_each_and_read_on_from_a_cursor(
    stack: StackConfig, store: MintStore
) -> None:
    mint_id = f"feed-{uuid.uuid4().hex[:12]}"
    kinds = (NoticeType.IN_PROGRESS, NoticeType.DELAYED, NoticeType.MINTED)
    cursors = await _record(store, mint_id, *kinds)
    assert cursors == sorted(cursors)
    # Recording the same event key again changes nothing: no second notice.
    again = await store.record_notice(
        mint_id, NoticeType.MINTED, event_key=f"test-2-{NoticeType.MINTED.value}", data={}
    )
    assert again is None

    notices = await _feed_until(stack, cursors[0] - 1, cursors[-1])
    ours = [notice for notice in notices if notice.data["mint_id"] == mint_id]
    assert [notice.cursor for notice in ours] == cursors
    assert [notice.type for notice in ours] == list(kinds)
    assert [notice.data["status"] for notice in ours] == ["IN_PROGRESS", "DELAYED", "MINTED"]
    assert [notice.id for notice in ours] == [f"evt_{cursor}" for cursor in cursors]
    assert all(notice.cursor > cursors[0] - 1 for notice in notices)  # nothing before `after`

    # Read one at a time from the first cursor: the same notices, none twice, none skipped.
    seen: list[int] = []
    after = cursors[0] - 1
    while after < cursors[-1]:
        page = await mintsaga.list_events(after, 1, database_url=stack.database_url)
        assert len(page) == 1
        after = page[0].cursor
        seen.append(after)
    assert [cursor for cursor in seen if cursor in cursors] == cursors
    assert len(seen) == len(set(seen))


async def test_the_cli_prints_one_json_line_per_notice(
    stack: StackConfig, store: MintStore
) -> None:
    mint_id = f"feed-{uuid.uuid4().hex[:12]}"
    cursors = await _record(store, mint_id, NoticeType.IN_PROGRESS, NoticeType.AWAITING_OPERATOR)
    expected = (await _feed_until(stack, cursors[0] - 1, cursors[-1]))[:2]

    ran = await run_starter(_env(stack), "events", "--after", str(cursors[0] - 1), "--limit", "2")
    assert ran.returncode == 0, ran.stderr
    lines = [json.loads(line) for line in ran.stdout.splitlines()]
    assert lines == [json.loads(json.dumps(n.feed_line(), default=str)) for n in expected]
    assert lines[0]["id"] == f"evt_{cursors[0]}"
    assert set(lines[0]) == {"id", "cursor", "type", "timestamp", "data"}
    assert lines[0]["type"] == "mint.in_progress"
    assert lines[0]["timestamp"].endswith("Z")


async def test_follow_prints_a_notice_recorded_after_it_started(
    stack: StackConfig, store: MintStore
) -> None:
    mint_id = f"feed-{uuid.uuid4().hex[:12]}"
    [first] = await _record(store, mint_id, NoticeType.IN_PROGRESS)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "starter.py",
        "events",
        "--after",
        str(first - 1),
        "--follow",
        env=_env(stack),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None

    async def next_line_of(mint: str) -> dict[str, Any]:
        assert process.stdout is not None
        while True:
            raw = await process.stdout.readline()
            assert raw, "events --follow ended"
            line: dict[str, Any] = json.loads(raw)
            if line["data"]["mint_id"] == mint:
                return line

    try:
        line = await asyncio.wait_for(next_line_of(mint_id), 30)
        assert line["cursor"] == first
        # Recorded while it follows: printed without a restart.
        later = await store.record_notice(
            mint_id, NoticeType.MINTED, event_key="test-later", data={"stage": "MINTED"}
        )
        assert later is not None
        line = await asyncio.wait_for(next_line_of(mint_id), 30)
        assert (line["cursor"], line["type"]) == (later, "mint.minted")
        # Ctrl-C ends it cleanly: no traceback.
        process.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, stderr.decode()
        assert b"Traceback" not in stderr
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


async def test_an_unreachable_database_is_named() -> None:
    env = {**os.environ, "DATABASE_URL": "postgresql://u:secret-pw@127.0.0.1:9/none"}
    ran = await run_starter(env, "events")
    assert ran.returncode == 2
    assert "DATABASE_URL" in ran.stderr
    assert "secret-pw" not in ran.stderr
