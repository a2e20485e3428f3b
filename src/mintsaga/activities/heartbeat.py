"""Heartbeats for activities that can run longer than their heartbeat timeout.

A heartbeat tells Temporal the worker is alive (a dead worker's attempt is retried after the
heartbeat timeout, not the whole start-to-close timeout) and is how a cancellation reaches a
running activity.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from temporalio import activity

INTERVAL_S = 2.0


@contextlib.asynccontextmanager
async def heartbeating(interval_s: float = INTERVAL_S) -> AsyncIterator[None]:
    """Heartbeat every `interval_s` while the block runs."""

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
