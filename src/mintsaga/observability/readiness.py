"""`/healthz` and `/readyz` beside `/metrics` on the worker's `METRICS_PORT`.

    GET /healthz   200 while the process answers and its event loop runs (liveness)
    GET /readyz    200 once the worker polls its task queue and its database pool answers,
                   503 before that, when a check fails, and from SIGTERM on (draining)

Both answer a small JSON object (`status`, and for `/readyz` each check's result); every other
path serves the Prometheus exposition as before. The checks are coroutines of the worker,
registered with `READINESS.add_check` (the worker's `temporal` and `postgres` checks:
`worker_polls`, `pool_answers`), and run on the worker's event loop, each bounded by
`CHECK_TIMEOUT_S`; until every one of `REQUIRED_CHECKS` is registered the worker is starting.

`python -m mintsaga.observability.probe [healthz|readyz]` asks them from the command line (the
container
image's HEALTHCHECK).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, make_wsgi_app
from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from mintsaga.observability.logging import redact

REQUIRED_CHECKS = ("temporal", "postgres")
CHECK_TIMEOUT_S = 3.0  # each readiness check
LOOP_TIMEOUT_S = 5.0  # liveness: the event loop must run a callback within this

Check = Callable[[], Awaitable[object]]


class NotReady(RuntimeError):
    """A readiness check's answer: not yet, and why (no secret in the message)."""


class Readiness:
    """The worker's liveness and readiness, asked from the HTTP server's threads."""

    def __init__(self, required: Iterable[str] = REQUIRED_CHECKS) -> None:
        self.required = tuple(required)
        self._checks: dict[str, tuple[Check, asyncio.AbstractEventLoop]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False
        self._lock = threading.Lock()

    def add_check(self, name: str, check: Check) -> Callable[[], None]:
        """Register `check` (called from the worker's event loop, which runs it); returns a
        callable that removes it again."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self._checks[name] = (check, loop)
            self._loop = loop

        def remove() -> None:
            with self._lock:
                if self._checks.get(name, (None,))[0] is check:
                    del self._checks[name]

        return remove

    def drain(self) -> None:
        """From now on not ready: SIGTERM arrived, polling stops, running work finishes."""
        self._draining = True

    def reset(self) -> None:
        with self._lock:
            self._checks.clear()
            self._loop = None
        self._draining = False

    @property
    def draining(self) -> bool:
        return self._draining

    def alive(self) -> tuple[bool, dict[str, Any]]:
        """Whether the event loop runs a callback within `LOOP_TIMEOUT_S` (before the worker
        registered a check, the process answering is enough)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return True, {"status": "alive"}
        ran = threading.Event()
        try:
            loop.call_soon_threadsafe(ran.set)
        except RuntimeError:  # the loop closed meanwhile: the process is on its way out
            return True, {"status": "alive"}
        if ran.wait(LOOP_TIMEOUT_S):
            return True, {"status": "alive"}
        return False, {"status": "stuck", "detail": f"event loop blocked over {LOOP_TIMEOUT_S:g} s"}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Run every check; ready only when each required one is registered and passes."""
        if self._draining:
            return False, {"status": "draining"}
        with self._lock:
            checks = dict(self._checks)
        missing = [name for name in self.required if name not in checks]
        if missing:
            return False, {"status": "starting", "waiting_for": missing}
        started = {name: _start(check, loop) for name, (check, loop) in checks.items()}
        results = {name: _result(future) for name, future in started.items()}  # concurrently
        ok = all(result == "ok" for result in results.values()) and not self._draining
        return ok, {"status": "ready" if ok else "not ready", "checks": results}


def _start(check: Check, loop: asyncio.AbstractEventLoop) -> concurrent.futures.Future[object]:
    async def bounded() -> object:
        return await asyncio.wait_for(check(), CHECK_TIMEOUT_S)

    try:
        return asyncio.run_coroutine_threadsafe(bounded(), loop)
    except RuntimeError:  # the loop is closed
        failed: concurrent.futures.Future[object] = concurrent.futures.Future()
        failed.set_exception(NotReady("the worker's event loop is closed"))
        return failed


def _result(future: concurrent.futures.Future[object]) -> str:
    """`ok`, or `failed: why` (never a secret: the guard's redaction applies)."""
    try:
        future.result(CHECK_TIMEOUT_S + 1.0)
    except (TimeoutError, concurrent.futures.TimeoutError):
        future.cancel()
        return f"failed: no answer within {CHECK_TIMEOUT_S:g} s"
    except NotReady as exc:
        return f"failed: {redact(str(exc))}"
    except Exception as exc:
        return f"failed: {type(exc).__name__}: {redact(str(exc))[:200]}"
    return "ok"


READINESS = Readiness()


# -- the worker's checks -------------------------------------------------------------------------


class _Running(Protocol):
    @property
    def is_running(self) -> bool: ...


async def worker_polls(client: Client, worker: _Running, task_queue: str, identity: str) -> None:
    """The worker runs, and the server lists `identity` among the task queue's workflow pollers
    (the server answering proves it is reachable; the poller list, that this worker polls)."""
    if not worker.is_running:
        raise NotReady("the worker is not running")
    answer = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    if not any(poller.identity == identity for poller in answer.pollers):
        raise NotReady(f"the server has no poll from {identity} on {task_queue} yet")


class _Pool(Protocol):
    async def fetchval(self, query: str, *args: object) -> object: ...


async def pool_answers(pool: _Pool) -> None:
    """The database pool answers `SELECT 1`."""
    if await pool.fetchval("SELECT 1") != 1:
        raise NotReady("the database answered SELECT 1 with something else")


# -- the HTTP server -----------------------------------------------------------------------------


def health_app(readiness: Readiness, metrics: Callable[..., Any] | None = None) -> Any:
    """A WSGI app: `/healthz`, `/readyz`, and the Prometheus exposition on every other path."""
    metrics = metrics or make_wsgi_app(REGISTRY)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            ok, body = readiness.alive() if path == "/healthz" else readiness.ready()
            data = json.dumps(body).encode()
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(data))),
                    ("Cache-Control", "no-store"),
                ],
            )
            return [data]
        answer: Iterable[bytes] = metrics(environ, start_response)
        return answer

    return app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _V6Server(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # no access log
        pass


def start_http_server(
    port: int, addr: str = "0.0.0.0", readiness: Readiness = READINESS
) -> tuple[WSGIServer, threading.Thread]:
    """Serve `health_app` on `addr:port` in a daemon thread (as prometheus_client's
    `start_http_server`, plus the two probes). Raises OSError when the port cannot be bound."""
    server_class = _V6Server if ":" in addr else _Server
    server = make_server(
        addr, port, health_app(readiness), server_class, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="metrics http", daemon=True)
    thread.start()
    return server, thread
