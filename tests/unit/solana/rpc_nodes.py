"""Small JSON-RPC servers on 127.0.0.1 standing in for Solana endpoints: each answers what a
test tells it to (a result, a JSON-RPC error, an HTTP status, or never), and records the calls
it got and when. The pool under test talks to them over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from mintsaga.errors import endpoint_name

Params = list[Any]
# What a node answers: an HTTP status and a JSON-RPC body (its id filled in) or a text body.
Answer = tuple[int, dict[str, Any] | str]
# (method, params) -> an answer, or None: never answer
Behaviour = Callable[[str, Params], Answer | None]


def result(value: Any) -> Behaviour:
    return lambda method, params: (200, {"result": value})


def rpc_error(code: int, message: str, data: Any = None) -> Behaviour:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return lambda method, params: (200, {"error": error})


def http(status: int, text: str = "") -> Behaviour:
    return lambda method, params: (status, text)


def hang(method: str, params: Params) -> None:
    return None


@dataclasses.dataclass
class Node:
    """One JSON-RPC server on 127.0.0.1; ``behave`` may be swapped while it runs."""

    behave: Behaviour
    url: str = ""
    seen: list[tuple[str, Params]] = dataclasses.field(default_factory=list)
    arrived: list[float] = dataclasses.field(default_factory=list)  # time.monotonic() per call

    @property
    def name(self) -> str:
        return endpoint_name(self.url)

    @property
    def methods(self) -> list[str]:
        return [method for method, _ in self.seen]

    async def start(self) -> web.AppRunner:
        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.json()
            method, params = body.get("method"), body.get("params") or []
            self.seen.append((method, params))
            self.arrived.append(time.monotonic())
            answer = self.behave(method, params)
            if answer is None:
                await asyncio.sleep(3600)  # hung: the client gives up first
                raise AssertionError("unreachable")
            status, payload = answer
            if isinstance(payload, str):
                return web.Response(status=status, text=payload)
            return web.json_response(
                {"jsonrpc": "2.0", "id": body.get("id"), **payload}, status=status
            )

        app = web.Application()
        app.router.add_post("/", handle)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return runner


@dataclasses.dataclass
class Nodes:
    nodes: list[Node]

    def __getitem__(self, index: int) -> Node:
        return self.nodes[index]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]


@contextlib.asynccontextmanager
async def serving(*behaviours: Behaviour) -> AsyncIterator[Nodes]:
    """One server per behaviour, in that order (the pool's priority order)."""
    started = Nodes([Node(b) for b in behaviours])
    runners: list[web.AppRunner] = []
    try:
        for node in started.nodes:
            runners.append(await node.start())
        yield started
    finally:
        for runner in runners:
            await runner.cleanup()
