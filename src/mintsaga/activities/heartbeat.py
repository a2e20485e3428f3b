"""Heartbeats for activities that can run longer than their heartbeat timeout.

A heartbeat tells Temporal the worker is alive (a dead worker's attempt is retried after the
heartbeat timeout, not the whole start-to-close timeout) and is how a cancellation reaches a
running activity.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from temporalio import activity

INTERVAL_S = 2.0


@contextlib.asynccontextmanager
async def heartbeating(interval_s: float = INTERVAL_S) -> AsyncIterator[None]:
    """Heartbeat every `interval_s` while the block runs."""

    if activity.info().is_local:  # a local activity has no heartbeat: its workflow task does
        yield
        return

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(interval_s)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def attempt_time_left() -> float:
    """Seconds the current activity attempt has before its start-to-close timeout (0 outside
    an activity, or without that timeout): the guard's `GuardHooks.time_left`."""
    if not activity.in_activity():
        return 0.0
    info = activity.info()
    if info.start_to_close_timeout is None:
        return 0.0
    elapsed = (datetime.now(UTC) - info.started_time).total_seconds()
    return info.start_to_close_timeout.total_seconds() - elapsed


def keep_alive() -> None:
    """Heartbeat when inside an activity (the guard's `GuardHooks.keep_alive`)."""
    if activity.in_activity() and not activity.info().is_local:
        activity.heartbeat()
