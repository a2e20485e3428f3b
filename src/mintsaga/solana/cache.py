"""Answers from the cluster that many mints share: kept for a while, fetched once at a time.

``SolanaMinter.prepare`` asks the same things for every mint (the rent of an account of one
size, the latest blockhash); under load those are the same answers over and over. A
``SharedCache`` keeps each answer for ``ttl_s`` seconds, and callers that miss while a fetch
for the key is under way wait for that fetch instead of starting their own.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SharedCache(Generic[K, V]):
    """Values per key, each reused for ``ttl_s`` seconds after its answer arrived.

    N concurrent misses for a key make one fetch (a task they all wait on; a waiter that is
    cancelled leaves it to the others). A failed fetch is not kept: each of its waiters gets
    the error, the next caller fetches again. ``fresh=True`` fetches anew whatever is kept,
    and its answer replaces the kept one. ``clock`` is ``time.monotonic`` (injectable).
    """

    def __init__(self, ttl_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s < 0:
            raise ValueError("ttl_s must not be negative")
        self.ttl_s = ttl_s
        self._clock = clock
        # key -> the fetch, kept or under way; its result is (value, when it arrived)
        self._entries: dict[K, asyncio.Task[tuple[V, float]]] = {}

    async def get(self, key: K, fetch: Callable[[], Awaitable[V]], *, fresh: bool = False) -> V:
        """The value kept for ``key``, or what ``fetch()`` answers (shared, then kept)."""
        task = None if fresh else self._entries.get(key)
        if task is None or not self._usable(task):
            self._drop_stale()
            task = asyncio.ensure_future(self._timed(fetch))
            task.add_done_callback(functools.partial(self._settled, key))
            self._entries[key] = task
        value, _ = await asyncio.shield(task)
        return value

    def forget(self) -> None:
        """Drop every kept value (a fetch under way still answers its waiters)."""
        self._entries.clear()

    async def _timed(self, fetch: Callable[[], Awaitable[V]]) -> tuple[V, float]:
        value = await fetch()
        return value, self._clock()

    def _usable(self, task: asyncio.Task[tuple[V, float]]) -> bool:
        """Under way, or answered less than ``ttl_s`` ago."""
        if not task.done():
            return True
        if task.cancelled() or task.exception() is not None:
            return False
        return self._clock() - task.result()[1] < self.ttl_s

    def _drop_stale(self) -> None:
        for key in [key for key, task in self._entries.items() if not self._usable(task)]:
            del self._entries[key]

    def _settled(self, key: K, task: asyncio.Task[tuple[V, float]]) -> None:
        """A failed fetch is forgotten (and its error counted as seen: the waiters got it)."""
        if (task.cancelled() or task.exception() is not None) and self._entries.get(key) is task:
            del self._entries[key]
