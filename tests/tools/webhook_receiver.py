"""A backend's webhook endpoint for the tests: a real HTTP server on 127.0.0.1 that checks each
Standard Webhooks message with its own implementation of the scheme (hashlib, hmac, base64;
not the ``standardwebhooks`` package the product signs with), so a signing bug cannot hide
behind the same code on both sides.

    async with WebhookReceiver(["whsec_..."]) as receiver:   # a free loopback port
        env["WEBHOOK_URL"] = receiver.url                      # http://127.0.0.1:PORT/hooks/PID/N
        receiver.fail_with(500)                                # answer 500 (and record it)
        receiver.fail_with(500, only_mint=mint_id)             # ... to one mint's messages
        receiver.fail_with(None)                               # accept again (204)
        await receiver.wait_for(lambda r: len(r.for_mint(mint_id)) >= 8, timeout_s=120)
        receiver.for_mint(mint_id)                             # verified, de-duplicated by id,
                                                               # in the order they first arrived
        receiver.messages      # every verified, accepted message, duplicates included
        receiver.attempts      # every request, failed and refused ones too
        receiver.rejected      # requests whose signature or headers did not verify (answered 401)

Verification follows the specification (github.com/standard-webhooks/standard-webhooks,
spec/standard-webhooks.md, "Signature scheme", "Webhook headers", "Verifying signatures"):
the signed content is ``{webhook-id}.{webhook-timestamp}.{body}``, HMAC-SHA256 under the
base64-decoded key after ``whsec_``; ``webhook-signature`` is a space-separated list of
``v1,<base64>``, one of which must match (constant-time compare); the timestamp must be within
5 minutes of now. A message is accepted only if *every* secret the receiver holds signed it
when ``require_all`` is set (to see rotation: each secret's signature present).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["Attempt", "Received", "WebhookReceiver", "verify_message"]

TOLERANCE_S = 300


class VerificationError(ValueError):
    pass


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def verify_message(
    secret: str, headers: dict[str, str], body: bytes, *, now: float | None = None
) -> bool:
    """True when ``headers`` carry a valid v1 signature of ``body`` under ``secret``; raises
    VerificationError when a header is missing or the timestamp is out of tolerance."""
    low = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signatures = (
        low.get("webhook-id"),
        low.get("webhook-timestamp"),
        low.get("webhook-signature"),
    )
    if not (msg_id and stamp and signatures):
        raise VerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    if not stamp.isdigit() or abs((now or time.time()) - int(stamp)) > TOLERANCE_S:
        raise VerificationError(f"webhook-timestamp {stamp!r} is not within 5 minutes of now")
    signed = f"{msg_id}.{stamp}.".encode() + body
    expected = base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode()
    for entry in signatures.split(" "):
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


@dataclass(frozen=True)
class Received:
    """One accepted message."""

    id: str
    timestamp: int
    body: bytes
    headers: dict[str, str]
    arrived: float  # time.monotonic()

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def type(self) -> str:
        return str(self.json["type"])

    @property
    def mint_id(self) -> str | None:
        value = self.json.get("data", {}).get("mint_id")
        return None if value is None else str(value)


@dataclass(frozen=True)
class Attempt:
    """One request as it came, and what the receiver answered."""

    id: str | None
    status: int
    verified: bool
    arrived: float


# Each receiver's own path: endpoints are stored by URL (webhook_cursors, webhook_deliveries),
# and a port the kernel hands out again must not make a receiver inherit an earlier test's
# endpoint, its cursor and its undelivered rows, in the database the tests share.
_NUMBERS = itertools.count(1)


def _own_path() -> str:
    return f"/hooks/{os.getpid()}/{next(_NUMBERS)}"


@dataclass
class WebhookReceiver:
    """See the module docstring."""

    secrets: Sequence[str]
    require_all: bool = False
    path: str = field(default_factory=_own_path)
    messages: list[Received] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    _status: int | None = None
    _only_mint: str | None = None
    _retry_after: str | None = None
    _runner: web.AppRunner | None = None
    _port: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        assert self._port, "start() the receiver first"
        return f"http://127.0.0.1:{self._port}{self.path}"

    def fail_with(
        self,
        status: int | None,
        *,
        retry_after: str | None = None,
        only_mint: str | None = None,
    ) -> None:
        """Answer verified requests with ``status`` (None: accept, 204) from now on; with
        ``only_mint``, only those whose ``data.mint_id`` is that mint (others are accepted)."""
        self._status = status
        self._retry_after = retry_after
        self._only_mint = only_mint

    def _failing(self, body: bytes) -> int | None:
        if self._status is None or self._only_mint is None:
            return self._status
        try:
            mint_id = json.loads(body).get("data", {}).get("mint_id")
        except ValueError:
            return self._status
        return self._status if mint_id == self._only_mint else None

    def unique(self) -> list[Received]:
        """Accepted messages de-duplicated by ``webhook-id``, in the order they first came."""
        seen: dict[str, Received] = {}
        for message in self.messages:
            seen.setdefault(message.id, message)
        return list(seen.values())

    def for_mint(self, mint_id: str) -> list[Received]:
        return [m for m in self.unique() if m.mint_id == mint_id]

    async def wait_for(
        self, condition: Callable[[WebhookReceiver], bool], *, timeout_s: float
    ) -> None:
        """Until ``condition(self)`` holds; TimeoutError after ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            while not condition(self):
                self._changed.clear()
                await self._changed.wait()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        msg_id = request.headers.get("webhook-id")
        now = time.monotonic()
        try:
            results = [verify_message(secret, headers, body) for secret in self.secrets]
            verified = all(results) if self.require_all else any(results)
        except VerificationError as exc:
            verified = False
            self.rejected.append(f"{msg_id}: {exc}")
        else:
            if not verified:
                self.rejected.append(f"{msg_id}: no signature matched")
        try:
            if not verified:
                status = 401
            elif (failing := self._failing(body)) is not None:
                status = failing
            else:
                status = 204
                self.messages.append(
                    Received(
                        id=str(msg_id),
                        timestamp=int(request.headers["webhook-timestamp"]),
                        body=body,
                        headers=headers,
                        arrived=now,
                    )
                )
            self.attempts.append(Attempt(msg_id, status, verified, now))
        finally:
            self._changed.set()
        extra = {"Retry-After": self._retry_after} if self._retry_after and status != 204 else {}
        return web.Response(status=status, headers=extra)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post(self.path, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self._port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> WebhookReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
