"""Steps that read the worker's runtime configuration (polled from Postgres)."""

from __future__ import annotations

import asyncio

from temporalio import activity

from mintsaga.db.runtime_watcher import RuntimeConfigWatcher
from mintsaga.workflows import activity_models as io
from mintsaga.workflows.policies import WAIT_OUT_MAINTENANCE

POLL_S = 1.0


class RuntimeActivities:
    def __init__(self, *, watcher: RuntimeConfigWatcher) -> None:
        self._watcher = watcher

    @activity.defn(name=WAIT_OUT_MAINTENANCE.name)
    async def wait_out_maintenance(self, ref: io.MintRef) -> io.StepOut:
        """Return at once, or once maintenance mode is switched off: new mints wait here
        instead of failing while the providers are being worked on."""
        announced = False
        while self._watcher.current.maintenance:
            if not announced:
                activity.logger.info("%s waits: maintenance mode is on", ref.mint_id)
                announced = True
            activity.heartbeat()
            await asyncio.sleep(POLL_S)
        return io.StepOut(attempt=activity.info().attempt)
