"""The worker's side of the runtime settings: a task that polls them and reports its breakers.

``RuntimeConfigWatcher`` loads the settings (``db/runtime_config.py``) every few seconds, hands
changes to a callback, and reports the worker's breaker snapshots. A database outage never
stops it: the worker keeps the last settings it applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from mintsaga.db.runtime_config import RuntimeConfigStore
from mintsaga.db.runtime_settings import RuntimeSettings, describe_changes

__all__ = ["OnChange", "Report", "RuntimeConfigWatcher"]

log = logging.getLogger("mintsaga.runtime_config")

OnChange = Callable[[RuntimeSettings, RuntimeSettings], Awaitable[None] | None]
Report = Callable[[], Sequence[Mapping[str, Any]] | Awaitable[Sequence[Mapping[str, Any]]]]


class RuntimeConfigWatcher:
    """Polls the runtime settings for one worker and reports its breakers.

    Every ``interval_s``: load the settings; if they differ from those last applied (or on the
    first successful load) call ``on_change(old, new)``; then report ``report()`` (breaker
    snapshots). Nothing that fails stops it: a failed load keeps the settings in force and is
    retried next poll, and an ``on_change`` that raises is called again next poll (the settings
    count as applied only once it returns).
    """

    def __init__(
        self,
        store: RuntimeConfigStore,
        *,
        worker_id: str,
        interval_s: float = 5.0,
        on_change: OnChange | None = None,
        report: Report | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """``timeout_s`` bounds each database call (default: the larger of 5 s and the
        interval), so a stalled database cannot stall the loop."""
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._store = store
        self._worker_id = worker_id
        self._interval = interval_s
        self._on_change = on_change
        self._report = report
        self._timeout = timeout_s if timeout_s is not None else max(5.0, interval_s)
        self._current = RuntimeSettings()
        self._loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.polls = 0
        self.load_failures = 0
        self.report_failures = 0
        self.last_error: BaseException | None = None

    @property
    def current(self) -> RuntimeSettings:
        """The settings last applied (the defaults until the first successful load)."""
        return self._current

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start polling (the first poll is immediate)."""
        if self.running:
            raise RuntimeError("the runtime config watcher is already running")
        self._task = asyncio.create_task(self._loop(), name=f"runtime-config {self._worker_id}")

    async def wait_loaded(self, within_s: float) -> bool:
        """Wait up to ``within_s`` for the first settings to be applied; False if not yet."""
        try:
            await asyncio.wait_for(self._loaded.wait(), within_s)
        except TimeoutError:
            return False
        return True

    async def stop(self, *, forget: bool = True) -> None:
        """Stop polling; with ``forget``, remove this worker's breaker reports (best effort)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if forget and self._report is not None:
            try:
                async with asyncio.timeout(self._timeout):
                    await self._store.forget_breakers(self._worker_id)
            except Exception as exc:
                log.warning("could not remove the breaker reports of %s: %s", self._worker_id, exc)

    async def _loop(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self._interval)

    async def poll_once(self) -> None:
        """Load and apply the settings, then report the breakers; never raises."""
        self.polls += 1
        await self._apply()
        await self._send_report()

    async def _apply(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                new = await self._store.load()
        except Exception as exc:
            self.load_failures += 1
            self.last_error = exc
            if not self._failing:
                log.warning("runtime settings unavailable, keeping those in force: %s", exc)
            self._failing = True
            return
        if self._failing:
            log.info("runtime settings readable again")
            self._failing = False
        if self.loaded and new == self._current:
            return
        old = self._current
        if self._on_change is not None:
            try:
                result = self._on_change(old, new)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("applying runtime settings failed; trying again next poll")
                return
        self._current = new
        self._loaded.set()
        for line in describe_changes(old, new):
            log.info("runtime setting applied: %s", line)

    async def _send_report(self) -> None:
        if self._report is None:
            return
        try:
            snapshots = self._report()
            if inspect.isawaitable(snapshots):
                snapshots = await snapshots
            async with asyncio.timeout(self._timeout):
                await self._store.report_breakers(self._worker_id, list(snapshots))
        except Exception as exc:
            self.report_failures += 1
            log.debug("breaker report failed: %s", exc)
