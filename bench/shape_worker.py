"""The baseline's worker process: `MintShape` and its do-nothing activities, built like worker.py.

    python -m bench.shape_worker        (the same environment as worker.py)

The same client (data converter, interceptors), the same two workers (the saga's queue and the
Pinata queue beside it) and the same tuning, so the only difference from a mint worker is the
work its activities do. SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import asyncio
import signal

from bench.shape import MintShape, noop_activities
from mintsaga.process_exit import exit_now
from mintsaga.settings import Settings
from mintsaga.worker import build_workers, connect_temporal, running


async def _main() -> int:
    settings = Settings.from_env()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    client = await connect_temporal(settings)
    workers = build_workers(
        client, settings.tuning, settings.task_queue, noop_activities(), workflows=[MintShape]
    )
    async with running(workers):
        print(f"worker polling {settings.task_queue} (MintShape baseline)", flush=True)
        await stop.wait()
    return 0


if __name__ == "__main__":
    exit_now(asyncio.run(_main()))
