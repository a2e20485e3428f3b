"""Fault injection shared by every devstack server.

A fault is ``{"target", "kind", "rate", "status", "delay_ms", "match"}``:

- ``target``  a service name from ``GET /services`` (``solana-1``, ``pinata``, ``postgres`` ...)
- ``kind``    ``error``         the service's own 500 answer
              ``status``        an HTTP answer with ``status`` (429 carries ``Retry-After``)
              ``latency``       wait ``delay_ms``, then answer normally
              ``hang``          accept the request and never answer (until ``delay_ms``, if set)
              ``drop_response`` do the work, then close the connection without answering
              ``down``          refuse connections: the port stops listening while the fault lives
              JSON-RPC endpoints (the Solana ones) only:
              ``rpc_error``     a JSON-RPC error body with HTTP 200: ``code``, ``message`` and
                                optional ``data`` (every call of a batch gets it)
              ``behind``        a node ``slots`` slots behind the cluster (Agave's answers):
                                getHealth and a preflighted sendTransaction answer -32005
                                "Node is behind by N slots" with data {"numSlotsBehind": N};
                                getSlot, getBlockHeight and getEpochInfo read N slots back;
                                ``GET /health`` answers "behind"
              ``drop_transaction`` sendTransaction answers the signature (after the usual
                                preflight) but the transaction is never executed: a node that
                                accepts transactions and drops them
- ``rate``    probability (0..1) that a matching request is hit; ``down`` ignores it
- ``match``   optional JSON-RPC method (exact) or path prefix the fault is limited to; for
              ``postgres``, ``statement``: only chunks that run a statement (not a connection's
              startup), so ``rate`` is the share of queries hit
- ``duration_ms`` optional lifetime: the fault removes itself after it (an outage that ends)
- ``retry_after_s`` the ``Retry-After`` a 429 carries (default 1)
- ``code``, ``message``, ``data`` the JSON-RPC error of ``rpc_error``; ``slots`` for ``behind``

For the Postgres proxy (a TCP byte pipe) ``error`` resets connections, ``latency`` delays
each chunk, ``hang`` stalls them, and ``down`` closes the port and every open connection.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from aiohttp import web

FaultKind = Literal[
    "error",
    "status",
    "latency",
    "hang",
    "drop_response",
    "down",
    "rpc_error",
    "behind",
    "drop_transaction",
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
# Kinds only a JSON-RPC endpoint can answer.
JSON_RPC_KINDS: tuple[str, ...] = ("rpc_error", "behind", "drop_transaction")
# Kinds applied to each call of a request by the RPC methods themselves (a batch's calls one by
# one), not to the HTTP request: the HTTP layer passes them by.
CALL_KINDS: tuple[str, ...] = ("behind", "drop_transaction")
HANG_FOREVER_S = 3600.0


class FaultSpecError(ValueError):
    """A fault request names an unknown target or kind, or a value out of range."""


@dataclass
class Fault:
    id: str
    target: str
    kind: FaultKind
    rate: float = 1.0
    status: int = 503
    delay_ms: int = 0
    match: str | None = None
    seed: int | None = None
    duration_ms: int | None = None
    retry_after_s: int = 1
    code: int | None = None
    message: str | None = None
    data: Any = None
    slots: int | None = None
    hits: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def matches(self, key: str | None) -> bool:
        if self.match is None:
            return True
        if key is None:
            return False
        return key == self.match or (self.match.startswith("/") and key.startswith(self.match))

    def fires(self) -> bool:
        return self.kind == "down" or self._rng.random() < self.rate

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "target": self.target,
            "kind": self.kind,
            "rate": self.rate,
            "status": self.status,
            "delay_ms": self.delay_ms,
            "match": self.match,
            "duration_ms": self.duration_ms,
            "retry_after_s": self.retry_after_s,
            **({"code": self.code, "message": self.message} if self.kind == "rpc_error" else {}),
            **({"data": self.data} if self.kind == "rpc_error" and self.data is not None else {}),
            **({"slots": self.slots} if self.kind == "behind" else {}),
            "hits": self.hits,
        }

    def rpc_error(self) -> dict[str, Any]:
        """The JSON-RPC ``error`` member of an ``rpc_error`` fault."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


DownListener = Callable[[str, bool], Awaitable[None]]


class FaultRegistry:
    """The live set of faults, shared by every server in the emulator process."""

    def __init__(self, targets: set[str], *, json_rpc_targets: set[str] | None = None) -> None:
        self._targets = targets
        self._json_rpc_targets = json_rpc_targets or set()
        self._faults: dict[str, Fault] = {}
        self._ids = itertools.count(1)
        self._down_listeners: list[DownListener] = []
        self._expiries: set[asyncio.Task[None]] = set()
        self.injected: dict[str, int] = {}  # "target:kind" -> times a fault fired
        # target -> {unix minute -> requests seen}, so rate limits can be checked from outside
        self.requests_per_minute: dict[str, dict[int, int]] = {}
        # target -> {JSON-RPC method -> calls}: what each request asked (the Solana endpoints)
        self.requests_by_method: dict[str, dict[str, int]] = {}

    def on_down_change(self, listener: DownListener) -> None:
        """Call ``listener(target, is_down)`` whenever a target goes down or comes back."""
        self._down_listeners.append(listener)

    def parse(self, spec: dict[str, Any]) -> Fault:
        target = spec.get("target")
        if target not in self._targets:
            raise FaultSpecError(
                f"target: unknown service {target!r}; known: {sorted(self._targets)}"
            )
        kind = spec.get("kind")
        if kind not in FAULT_KINDS:
            raise FaultSpecError(f"kind: {kind!r} is not one of {list(FAULT_KINDS)}")
        rate = float(spec.get("rate", 1.0))
        if not 0.0 <= rate <= 1.0:
            raise FaultSpecError(f"rate: {rate} is outside 0..1")
        status = int(spec.get("status", 503))
        if not 100 <= status <= 599:
            raise FaultSpecError(f"status: {status} is not an HTTP status")
        delay_ms = int(spec.get("delay_ms", 0))
        if delay_ms < 0:
            raise FaultSpecError(f"delay_ms: {delay_ms} is negative")
        if kind == "latency" and delay_ms == 0:
            raise FaultSpecError("delay_ms: a latency fault needs a positive delay_ms")
        seed = spec.get("seed")
        duration_ms = spec.get("duration_ms")
        if duration_ms is not None and (not isinstance(duration_ms, int) or duration_ms <= 0):
            raise FaultSpecError(f"duration_ms: {duration_ms!r} is not a positive integer")
        retry_after_s = spec.get("retry_after_s", 1)
        if not isinstance(retry_after_s, int) or retry_after_s < 0:
            raise FaultSpecError(f"retry_after_s: {retry_after_s!r} is not a whole number >= 0")
        extra = self._json_rpc_fields(target, kind, spec)
        fault = Fault(
            id=str(next(self._ids)),
            target=target,
            kind=kind,
            rate=rate,
            status=status,
            delay_ms=delay_ms,
            match=spec.get("match") or None,
            seed=seed,
            duration_ms=duration_ms,
            retry_after_s=retry_after_s,
            **extra,
        )
        fault._rng = random.Random(seed)
        return fault

    def _json_rpc_fields(self, target: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
        if kind not in JSON_RPC_KINDS:
            return {}
        if target not in self._json_rpc_targets:
            raise FaultSpecError(
                f"kind: {kind!r} is for JSON-RPC endpoints ({sorted(self._json_rpc_targets)}), "
                f"not {target!r}"
            )
        if kind == "rpc_error":
            code, message = spec.get("code"), spec.get("message")
            if isinstance(code, bool) or not isinstance(code, int):
                raise FaultSpecError(f"code: {code!r} is not an integer (a JSON-RPC error code)")
            if not isinstance(message, str):
                raise FaultSpecError(f"message: {message!r} is not a string")
            return {"code": code, "message": message, "data": spec.get("data")}
        if kind == "behind":
            slots = spec.get("slots")
            if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
                raise FaultSpecError(f"slots: {slots!r} is not a positive integer")
            return {"slots": slots}
        return {}

    async def add(self, spec: dict[str, Any]) -> Fault:
        fault = self.parse(spec)
        was_down = self.is_down(fault.target)
        self._faults[fault.id] = fault
        if fault.kind == "down" and not was_down:
            await self._notify(fault.target, True)
        if fault.duration_ms is not None:
            task = asyncio.get_running_loop().create_task(self._expire(fault))
            self._expiries.add(task)
            task.add_done_callback(self._expiries.discard)
        return fault

    async def _expire(self, fault: Fault) -> None:
        assert fault.duration_ms is not None
        await asyncio.sleep(fault.duration_ms / 1000)
        await self.remove(fault.id)

    async def remove(self, fault_id: str) -> bool:
        fault = self._faults.pop(fault_id, None)
        if fault is None:
            return False
        if fault.kind == "down" and not self.is_down(fault.target):
            await self._notify(fault.target, False)
        return True

    async def clear(self) -> int:
        down_targets = {f.target for f in self._faults.values() if f.kind == "down"}
        count = len(self._faults)
        self._faults.clear()
        for target in sorted(down_targets):
            await self._notify(target, False)
        return count

    def list(self) -> list[dict[str, Any]]:
        return [f.describe() for f in self._faults.values()]

    def is_down(self, target: str) -> bool:
        return any(f.target == target and f.kind == "down" for f in self._faults.values())

    def record_methods(self, target: str, methods: list[str]) -> None:
        per_method = self.requests_by_method.setdefault(target, {})
        for method in methods:
            per_method[method] = per_method.get(method, 0) + 1

    def record_request(self, target: str) -> None:
        minute = int(time.time() // 60)
        per_minute = self.requests_per_minute.setdefault(target, {})
        per_minute[minute] = per_minute.get(minute, 0) + 1

    def pick(
        self,
        target: str,
        key: str | None = None,
        *,
        skip_kinds: tuple[str, ...] = (),
        only_kinds: tuple[str, ...] | None = None,
    ) -> Fault | None:
        """The fault that hits this request, if any (first match in insertion order)."""
        for fault in self._faults.values():
            if fault.kind in skip_kinds:
                continue
            if only_kinds is not None and fault.kind not in only_kinds:
                continue
            if fault.target == target and fault.matches(key) and fault.fires():
                fault.hits += 1
                name = f"{target}:{fault.kind}"
                self.injected[name] = self.injected.get(name, 0) + 1
                return fault
        return None

    async def _notify(self, target: str, down: bool) -> None:
        for listener in self._down_listeners:
            await listener(target, down)


def drop_connection(request: web.Request) -> web.StreamResponse:
    """Close the client's connection without an answer (what a crashed server looks like)."""
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError


ErrorResponder = Callable[[], web.StreamResponse]
RpcErrorResponder = Callable[[Fault], web.StreamResponse]


def plain_error() -> web.StreamResponse:
    return web.json_response({"error": "injected fault"}, status=500)


async def serve_with_faults(
    registry: FaultRegistry,
    target: str,
    key: str | None,
    request: web.Request,
    produce: Callable[[], Awaitable[web.StreamResponse]],
    *,
    error_response: ErrorResponder = plain_error,
    rpc_error_response: RpcErrorResponder | None = None,
    record: bool = True,
) -> web.StreamResponse:
    """Answer ``request`` through ``produce``, unless a fault for (target, key) fires.

    Call-level kinds (``behind``, ``drop_transaction``) are left to ``produce``."""
    if record:
        registry.record_request(target)
    fault = registry.pick(target, key, skip_kinds=CALL_KINDS)
    if fault is None:
        return await produce()
    if fault.kind == "latency":
        await asyncio.sleep(fault.delay_ms / 1000)
        return await produce()
    if fault.kind == "hang":
        await asyncio.sleep(fault.delay_ms / 1000 if fault.delay_ms else HANG_FOREVER_S)
        return drop_connection(request)
    if fault.kind == "error":
        return error_response()
    if fault.kind == "status":
        headers = {"Retry-After": str(fault.retry_after_s)} if fault.status == 429 else None
        return web.json_response(
            {"error": f"injected HTTP {fault.status}"}, status=fault.status, headers=headers
        )
    if fault.kind == "drop_response":
        await produce()
        return drop_connection(request)
    if fault.kind == "rpc_error":
        if rpc_error_response is None:  # parse() allows it on JSON-RPC endpoints only
            return error_response()
        return rpc_error_response(fault)
    # "down": the listener is closed; a request already on a kept-alive connection is cut too.
    return drop_connection(request)


def fault_middleware(
    registry: FaultRegistry, target: str, *, error_response: ErrorResponder = plain_error
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """aiohttp middleware applying path-matched faults to every request of one service."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        return await serve_with_faults(
            registry,
            target,
            request.path,
            request,
            lambda: handler(request),
            error_response=error_response,
        )

    return middleware
