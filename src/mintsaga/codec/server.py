"""The codec server: Temporal's remote codec protocol over HTTP, for the Temporal UI and CLI.

    export MINTSAGA_CODEC_KEYS=... MINTSAGA_CODEC_TOKEN=...
    MINTSAGA_CODEC_UI_ORIGIN=http://127.0.0.1:8233 python -m mintsaga.codec serve --port 8960

`POST .../encode` and `POST .../decode` take and return a `Payloads` message as protobuf JSON
(`{"payloads": [{"metadata": {"encoding": "<base64>"}, "data": "<base64>"}]}`); only the last
path segment picks the operation, so the endpoint can be mounted under any prefix. A body that
is not Payloads JSON, or a payload no key here decrypts, is answered 400. A payload that is not
encrypted at all is answered as it is, whatever `MINTSAGA_CODEC_ALLOW_PLAINTEXT` says: the server
only shows payloads to people, and the Temporal CLI and UI send it what the SDK writes without any
codec (every `workflow.patched` marker), so refusing those would fail `temporal workflow show`
for every mint. The workers and clients, which act on payloads, refuse plaintext (payloads.py).

Every encode or decode needs the token (`MINTSAGA_CODEC_TOKEN`), compared in constant time:
`Authorization: Bearer TOKEN` (the CLI's `--codec-auth "Bearer TOKEN"`), or, for the Temporal UI,
which cannot add a header of its own, as the path prefix: the UI's codec endpoint is then
`http://HOST:PORT/TOKEN/`. Anything else is 401.

Browsers: only `MINTSAGA_CODEC_UI_ORIGIN` is allowed. Its preflight (`OPTIONS`) is answered with
`Access-Control-Allow-Origin` set to exactly that origin, `POST`, the headers the UI sends
(`Authorization, Content-Type, X-Namespace`) and `Access-Control-Allow-Credentials: true`; a
request from any other origin gets no CORS headers and 403. Requests without an `Origin` (the
CLI, scripts) are not browsers and are judged by the token alone. `GET /health` answers 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import signal
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from mintsaga.codec.payloads import (
    KEYS_SETTING,
    CodecError,
    CodecKeys,
    EncryptionCodec,
    keys_from_env,
)
from mintsaga.observability.logging import add_secret
from mintsaga.setting_readers import SettingsError, secret_from_env

TOKEN_SETTING = "MINTSAGA_CODEC_TOKEN"
ORIGIN_SETTING = "MINTSAGA_CODEC_UI_ORIGIN"
MIN_TOKEN_CHARS = 16
DEFAULT_PORT = 8960
MAX_BODY_BYTES = 8 * 1024 * 1024  # a batch of payloads, each at most Temporal's 2 MB
ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"
OPERATIONS = ("encode", "decode")

log = logging.getLogger("mintsaga.codec_server")


@dataclass(frozen=True)
class ServerSettings:
    keys: CodecKeys
    token: str = field(repr=False)
    ui_origin: str | None


def _origin(raw: str) -> str:
    parts = urlsplit(raw)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise SettingsError(
            f"{ORIGIN_SETTING}: {raw!r} is not an origin (scheme://host[:port], as the browser"
            " shows the Temporal UI's address, e.g. http://127.0.0.1:8233)"
        )
    return f"{parts.scheme}://{parts.netloc}".lower()


def server_settings_from_env(env: Mapping[str, str] | None = None) -> ServerSettings:
    """The codec server's settings; SettingsError names a missing or malformed one."""
    env = os.environ if env is None else env
    keys = keys_from_env(env)
    if keys is None:
        raise SettingsError(f"{KEYS_SETTING} is not set: the codec server needs the keys")
    token = secret_from_env(env, TOKEN_SETTING, required=False) or ""  # or ..._TOKEN_FILE
    add_secret(token)
    if not token:
        raise SettingsError(
            f"{TOKEN_SETTING} is not set: encode and decode require it as a bearer token"
        )
    if len(token) < MIN_TOKEN_CHARS or not token.isascii() or "/" in token:
        raise SettingsError(
            f"{TOKEN_SETTING}: at least {MIN_TOKEN_CHARS} ASCII characters without '/'"
            " (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    raw_origin = env.get(ORIGIN_SETTING, "").strip()
    return ServerSettings(keys, token, _origin(raw_origin) if raw_origin else None)


def _authorized(request: web.Request, prefix: list[str], token: bytes) -> bool:
    candidates: list[str] = []
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        candidates.append(credentials.strip())
    if prefix:
        candidates.append("/".join(prefix))
    # Every candidate compared, each in constant time.
    matches = [hmac.compare_digest(c.encode(errors="replace"), token) for c in candidates]
    return any(matches)


def build_app(settings: ServerSettings) -> web.Application:
    # Plaintext answered as it is: the SDK's patch markers are never encrypted (module docstring).
    codec = EncryptionCodec(settings.keys, allow_plaintext=True)
    token = settings.token.encode()

    def cors(origin: str | None) -> dict[str, str]:
        if origin is None or origin != settings.ui_origin:
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }

    async def handle(request: web.Request) -> web.StreamResponse:
        segments = [part for part in request.path.split("/") if part]
        if request.method == "GET" and segments == ["health"]:
            return web.json_response({"ok": True})
        if not segments or segments[-1] not in OPERATIONS:
            return web.json_response({"error": "POST .../encode or .../decode"}, status=404)
        origin = request.headers.get("Origin")
        headers = cors(origin)
        if origin is not None and not headers:
            return web.json_response({"error": "origin not allowed"}, status=403)
        if request.method == "OPTIONS":  # the preflight: no credentials are sent with it
            headers |= {
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": "600",
            }
            return web.Response(status=204, headers=headers)
        if request.method != "POST":
            return web.json_response(
                {"error": "use POST"}, status=405, headers=headers | {"Allow": "POST, OPTIONS"}
            )
        if not _authorized(request, segments[:-1], token):
            return web.json_response(
                {"error": "a bearer token is required"},
                status=401,
                headers=headers | {"WWW-Authenticate": 'Bearer realm="mintsaga-codec"'},
            )
        try:
            body = json_format.Parse(await request.text(), Payloads())
        except (json_format.ParseError, ValueError, UnicodeDecodeError) as exc:
            return web.json_response(
                {"error": f"the body is not Payloads JSON: {exc}"}, status=400, headers=headers
            )
        try:
            if segments[-1] == "encode":
                out = await codec.encode(body.payloads)
            else:
                out = await codec.decode(body.payloads)
        except CodecError as exc:
            return web.json_response({"error": str(exc)}, status=400, headers=headers)
        return web.Response(
            text=json_format.MessageToJson(Payloads(payloads=out)),
            content_type="application/json",
            headers=headers,
        )

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@contextlib.asynccontextmanager
async def serving(settings: ServerSettings, host: str, port: int) -> AsyncIterator[None]:
    """Serve on host:port until the block ends (access log off: a path may carry the token)."""
    runner = web.AppRunner(build_app(settings), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        yield
    finally:
        await runner.cleanup()


async def serve(settings: ServerSettings, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serving(settings, host, port):
        log.info(
            "codec server on http://%s:%d (keys %s, encrypting with %s; browser origin %s)",
            host,
            port,
            ", ".join(settings.keys.ids),
            settings.keys.current,
            settings.ui_origin or "none",
        )
        await stop.wait()
    log.info("codec server stopped")
