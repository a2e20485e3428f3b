"""The processes a chaos run starts and kills: workers, the Temporal server, PostgreSQL.

Workers are the product's own `worker.py`, run as separate processes so a SIGKILL is real.
The Temporal server and PostgreSQL are the devstack's, restarted through its supervisor the
way `python -m devstack up` starts them (state on disk, so nothing is lost but time).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from devstack.config import StackConfig
from devstack.supervisor import PROJECT_ROOT, Supervisor, terminate

READY_LINE = b"worker polling"
READY_TIMEOUT_S = 120.0


class Workers:
    """`count` worker processes on one task queue; each log goes to <state>/<name>-N.log.

    `env` adds to (or overrides) the stack's worker settings, e.g. PINATA_ACTIVITIES_PER_SECOND.
    `command` runs another worker program in the same way (the benchmark's baseline worker).
    """

    def __init__(
        self,
        config: StackConfig,
        task_queue: str,
        count: int,
        *,
        env: Mapping[str, str] | None = None,
        name: str = "chaos-worker",
        command: tuple[str, ...] = ("worker.py",),
    ) -> None:
        self.config = config
        self.task_queue = task_queue
        self.count = count
        self.env = dict(env or {})
        self.name = name
        self.command = command  # after the interpreter: a script, or "-m", "module"
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started = 0
        self.killed = 0
        self.crashed_at_start = 0  # exited before polling, and started again

    def log_path(self, slot: int) -> Path:
        return self.config.state_dir / f"{self.name}-{slot}.log"

    @property
    def logs(self) -> list[Path]:
        return [self.log_path(slot) for slot in range(self.count)]

    async def start_all(self) -> None:
        await asyncio.gather(*(self.start(slot) for slot in range(self.count)))

    async def start(self, slot: int) -> None:
        """Start worker `slot` and return once it polls its task queue. A worker that exits
        at startup (its database is down, say) is started again, as a process manager would."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if await self._start_once(slot, deadline):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"worker {slot} not polling after {READY_TIMEOUT_S:.0f} s; "
                    f"see {self.log_path(slot)}"
                )
            self.crashed_at_start += 1
            await asyncio.sleep(1.0)

    async def _start_once(self, slot: int, deadline: float) -> bool:
        log = self.log_path(slot)
        offset = log.stat().st_size if log.exists() else 0
        proc = self._spawn(log)
        self._procs[slot] = proc
        self.started += 1
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            if _logged_since(log, offset, READY_LINE):
                return True
            await asyncio.sleep(0.1)
        return False

    def _spawn(self, log: Path) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            **self.config.worker_env(),
            "TEMPORAL_TASK_QUEUE": self.task_queue,
            # No health schedule: its probe pins would be pins without a mint to the checker;
            # no pin repair schedule either (its holds are pin rows without a mint).
            "HEALTH_CHECK_INTERVAL_S": "0",
            "PIN_REPAIR_INTERVAL_S": "0",
            **self.env,
        }
        with open(log, "ab") as out:
            return subprocess.Popen(
                [sys.executable, *self.command],
                cwd=PROJECT_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def sigkill(self, slot: int) -> None:
        proc = self._procs.get(slot)
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self.killed += 1

    def pid(self, slot: int) -> int:
        """The process id of worker `slot` (its Temporal identity is `<pid>@<host>`)."""
        return self._procs[slot].pid

    def sigterm(self, slot: int) -> None:
        """SIGTERM worker `slot` (it drains); `wait` for it."""
        proc = self._procs.get(slot)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)

    async def wait(self, slot: int, timeout_s: float) -> int | None:
        """Worker `slot`'s exit code, once it exits within `timeout_s`; None: still running."""
        proc = self._procs[slot]
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(proc.wait, timeout_s)
        return proc.poll()

    async def ensure_running(self) -> None:
        """Start every worker slot whose process is gone."""
        for slot in range(self.count):
            proc = self._procs.get(slot)
            if proc is None or proc.poll() is not None:
                await self.start(slot)

    def stop_all(self) -> None:
        """SIGTERM: the worker drains, as in a deploy."""
        for proc in self._procs.values():
            if proc.poll() is None:
                terminate(proc.pid, grace_s=15.0)
                proc.wait()


def _logged_since(log: Path, offset: int, marker: bytes) -> bool:
    with open(log, "rb") as out:
        out.seek(offset)
        return marker in out.read()


class StackControl:
    """Restart the devstack's servers in place."""

    def __init__(self, config: StackConfig) -> None:
        self.supervisor = Supervisor(config, progress=lambda _: None)

    async def up(self) -> float:
        return await asyncio.to_thread(self.supervisor.up)

    async def restart_temporal(self) -> tuple[datetime, float]:
        """Stop the Temporal dev server and start it again; returns when it was gone and for
        how many seconds."""
        pid = self.supervisor.pid("temporal")
        if pid is not None:
            await asyncio.to_thread(terminate, pid)
        gone, started = datetime.now(UTC), time.monotonic()
        await asyncio.to_thread(self.supervisor.start_temporal)
        return gone, time.monotonic() - started

    async def restart_postgres(self, down_s: float) -> tuple[datetime, float]:
        """Stop PostgreSQL (fast shutdown: sessions are cut), keep it down, start it again;
        returns when it was gone and for how many seconds."""
        postgres = self.supervisor.postgres
        if postgres is None:
            raise RuntimeError("postgres: DATABASE_URL points outside the devstack")
        await asyncio.to_thread(postgres.stop)
        gone, started = datetime.now(UTC), time.monotonic()
        await asyncio.sleep(down_s)
        await asyncio.to_thread(postgres.start)
        return gone, time.monotonic() - started
