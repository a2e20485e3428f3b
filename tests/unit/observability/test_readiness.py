"""`/healthz` and `/readyz` (observability/readiness.py) over HTTP, with checks made here.

No devstack: the server is the worker's own (`start_http_server`), the checks stand-ins whose
answers each test chooses. tests/deploy/test_deploy_runtime.py asks a real worker process.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mintsaga.observability import readiness
from mintsaga.observability.logging import add_secret
from mintsaga.observability.readiness import NotReady, Readiness, start_http_server


@pytest.fixture
def served() -> Iterator[tuple[Readiness, str]]:
    state = Readiness()
    server, _thread = start_http_server(0, "127.0.0.1", readiness=state)
    try:
        yield state, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


async def get(url: str) -> tuple[int, Any]:
    async with httpx.AsyncClient(timeout=15) as http:
        answer = await http.get(url)
    kind = answer.headers.get("content-type", "")
    return answer.status_code, answer.json() if kind == "application/json" else answer.text


async def ok() -> None:
    return None


async def test_starting_until_every_required_check_is_registered(
    served: tuple[Readiness, str],
) -> None:
    state, url = served
    assert await get(url + "/healthz") == (200, {"status": "alive"})
    assert await get(url + "/readyz") == (
        503,
        {"status": "starting", "waiting_for": ["temporal", "postgres"]},
    )
    state.add_check("postgres", ok)
    assert (await get(url + "/readyz"))[1]["waiting_for"] == ["temporal"]
    state.add_check("temporal", ok)
    assert await get(url + "/readyz") == (
        200,
        {"status": "ready", "checks": {"postgres": "ok", "temporal": "ok"}},
    )
    status, text = await get(url + "/metrics")  # every other path: the exposition
    assert status == 200 and "# TYPE" in text


async def test_a_failing_or_slow_check_makes_it_unready_and_says_why(
    served: tuple[Readiness, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readiness, "CHECK_TIMEOUT_S", 0.5)
    state, url = served
    add_secret("hunter2-secret-password")

    async def refuses() -> None:
        raise ConnectionRefusedError("password=hunter2-secret-password refused")

    async def hangs() -> None:
        await asyncio.sleep(30)

    state.add_check("temporal", hangs)
    remove = state.add_check("postgres", refuses)
    started = time.monotonic()
    status, body = await get(url + "/readyz")
    assert time.monotonic() - started < 3  # the checks ran together, each bounded
    assert status == 503
    assert body["status"] == "not ready"
    assert body["checks"]["temporal"] == "failed: no answer within 0.5 s"
    assert body["checks"]["postgres"].startswith("failed: ConnectionRefusedError: password=***")
    assert "hunter2" not in str(body)
    remove()
    state.add_check("temporal", ok)
    state.add_check("postgres", ok)
    assert (await get(url + "/readyz"))[0] == 200

    async def not_yet() -> None:
        raise NotReady("the server has no poll from w1 yet")

    state.add_check("temporal", not_yet)
    assert (await get(url + "/readyz"))[1]["checks"]["temporal"] == (
        "failed: the server has no poll from w1 yet"
    )


async def test_draining_is_unready_whatever_the_checks_say(
    served: tuple[Readiness, str],
) -> None:
    state, url = served
    state.add_check("temporal", ok)
    state.add_check("postgres", ok)
    assert (await get(url + "/readyz"))[0] == 200
    state.drain()
    assert await get(url + "/readyz") == (503, {"status": "draining"})
    assert (await get(url + "/healthz"))[0] == 200  # alive: it is finishing its work


async def test_liveness_fails_while_the_event_loop_is_blocked(
    served: tuple[Readiness, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readiness, "LOOP_TIMEOUT_S", 0.5)
    state, url = served
    state.add_check("postgres", ok)  # attaches this loop

    def later() -> httpx.Response:
        time.sleep(0.3)  # asked while the loop below is blocked
        return httpx.get(url + "/healthz", timeout=10)

    blocked = asyncio.get_running_loop().run_in_executor(None, later)
    threading.Event().wait(1.5)  # the loop is stuck (a blocking call in a coroutine, say)
    answer = await blocked
    assert answer.status_code == 503
    assert answer.json()["status"] == "stuck"
    assert (await get(url + "/healthz"))[0] == 200  # free again
