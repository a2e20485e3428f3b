"""What a careless or hostile backend gets: a clear error naming the field, and nothing pinned,
written or sent.

Three tables, each case asserting both halves:

- static: refused by the starter before anything starts, through the CLI and the Python API
  (malformed JSON, missing fields, bad wallet, names and symbols over their byte limits,
  attributes too many or too long, image paths and URLs no worker may read);
- found by the worker: a real hostile HTTP server on 127.0.0.1 (a redirect to 169.254.169.254,
  an endless body, a body that is not an image, a stacked-gzip bomb) and paths escaping
  MINT_IMAGE_DIR; the mint ends ROLLED_BACK before its row is claimed (the bomb's with the
  worker's RSS measured while it runs);
- a duplicate `mint_id` with other content, refused and never merged (also when two starters
  race, and after the first mint finished).

"Nothing" is read independently of the product: the workflow (Temporal), the `mints`,
`mint_events`, `mint_pins` and `mint_submissions` rows (Postgres), the pins (Pinata's pinList,
Kubo's pin/ls), and the account at the mint address derived from `mint_id` (Solana RPC).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import threading
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiohttp import web
from solders.keypair import Keypair
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

import mintsaga
from devstack.config import StackConfig
from devstack.dev_identity import png
from devstack.requests import image_dir, new_image
from mintsaga.api.image_urls import check_image_url
from mintsaga.errors import ServiceError
from mintsaga.ipfs.cid import compute_cid
from mintsaga.ipfs.images import DEFAULT_MAX_BYTES, ImageLoader
from mintsaga.solana.mint_keys import derive_mint_keypair, parse_seed
from mintsaga.workflows.mint_saga import MintSaga
from mintsaga.workflows.models import (
    MAX_ATTRIBUTE_VALUE_CHARS,
    MAX_ATTRIBUTES,
    MAX_NAME_BYTES,
    MAX_SYMBOL_BYTES,
    MintRequest,
    MintResult,
    MintStatus,
)
from tests.saga_support import Ran, chain_nft, pinata_get, pinned_anywhere, run_starter

pytestmark = pytest.mark.integration

IDLE_QUEUE = "bad-input-no-worker"  # a mint started here waits: nothing of it ever runs
PNG = png(8, 8, seed=4242)


# ------------------------------------------------------------------------------- helpers


def b58encode(data: bytes) -> str:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    number, text = int.from_bytes(data, "big"), ""
    while number:
        number, digit = divmod(number, 58)
        text = alphabet[digit] + text
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + text


def request_fields(stack: StackConfig, **changes: Any) -> dict[str, Any]:
    """A request that would mint, as a backend sends it; `changes` replace (None: delete)."""
    tag = uuid.uuid4().hex[:10]
    fields: dict[str, Any] = {
        "mint_id": f"bad-{tag}",
        "user_id": f"user-{tag}",
        "wallet": str(Keypair().pubkey()),
        "name": f"Bad {tag[:6]}",
        "symbol": "BAD",
        "description": "a careless backend",
        "attributes": [{"trait_type": "tier", "value": "gold"}],
        "image": {"path": new_image(stack)},
    }
    for key, value in changes.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    return fields


async def cli(stack: StackConfig, *argv: str, allow_private_urls: bool = False) -> Ran:
    """`starter.py` as a backend's operator runs it; MINT_IMAGE_ALLOW_PRIVATE_URLS as given."""
    env = {
        **os.environ,
        **stack.worker_env(),
        "MINT_IMAGE_ALLOW_PRIVATE_URLS": "true" if allow_private_urls else "false",
    }
    return await run_starter(env, *argv)


async def pinata_pins(stack: StackConfig, **query: str) -> list[dict[str, Any]]:
    params = {"status": "all", "pageLimit": "1000", **query}
    answer = await pinata_get(stack, "/data/pinList", params)
    rows: list[dict[str, Any]] = answer.json()["rows"]
    return rows


def kubo_pins(stack: StackConfig) -> set[str]:
    answer = httpx.post(stack.url("kubo") + "/api/v0/pin/ls", timeout=10)
    answer.raise_for_status()
    return set(answer.json()["Keys"])


@dataclass
class Pins:
    """Every pin on both providers when a case starts: afterwards there must be no new one."""

    pinata: set[tuple[str, str]] = field(default_factory=set)
    kubo: set[str] = field(default_factory=set)

    @classmethod
    async def now(cls, stack: StackConfig) -> Pins:
        pins = await pinata_pins(stack)
        pinata = {(r["ipfs_pin_hash"], r["metadata"]["name"] or "") for r in pins}
        return cls(pinata, kubo_pins(stack))


async def database_rows(stack: StackConfig, mint_id: str) -> dict[str, int]:
    """The mint's rows. Its notices (`mint_events` rows with a type: what its backend is told,
    e.g. that it was refused) are not the mint's state and are not counted."""
    conn = await asyncpg.connect(stack.database_url)
    try:
        return {
            table: await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE mint_id = $1"
                + (" AND type IS NULL" if table == "mint_events" else ""),
                mint_id,
            )
            for table in ("mints", "mint_events", "mint_pins", "mint_submissions")
        }
    finally:
        await conn.close()


def mint_address(stack: StackConfig, mint_id: str) -> str:
    seed = parse_seed(stack.worker_env()["MINT_KEY_SEED"])
    return str(derive_mint_keypair(seed, mint_id).pubkey())


async def workflow_exists(client: Client, mint_id: str) -> bool:
    try:
        await client.get_workflow_handle(f"mint-{mint_id}").describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def assert_nothing_left(
    stack: StackConfig,
    mint_id: str,
    before: Pins,
    *,
    cids: tuple[str, ...] = (),
) -> None:
    """Nothing written (rows), pinned (either provider, any new pin) or sent (the account)."""
    assert await database_rows(stack, mint_id) == {
        "mints": 0,
        "mint_events": 0,
        "mint_pins": 0,
        "mint_submissions": 0,
    }
    assert await pinata_pins(stack, **{"metadata[name]": mint_id}) == []
    after = await Pins.now(stack)
    assert after.pinata - before.pinata == set(), "new Pinata pins"
    assert after.kubo - before.kubo == set(), "new Kubo pins"
    for cid in cids:
        assert not await pinned_anywhere(stack, cid), f"{cid} is pinned"
    assert chain_nft(stack, mint_address(stack, mint_id)) is None, "an account exists"


def assert_names(message: str, needles: tuple[str, ...]) -> None:
    missing = [needle for needle in needles if needle not in message]
    assert not missing, f"{missing} not named in: {message}"


# ------------------------------------------------------------------------------- static cases


@dataclass(frozen=True)
class Static:
    """A request the starter refuses before anything starts. `names`: what the error says."""

    names: tuple[str, ...]
    changes: dict[str, Any] = field(default_factory=dict)
    text: Callable[[str], str] | None = None  # raw file content (from the mint_id), not JSON
    dev: bool = False  # MINT_IMAGE_ALLOW_PRIVATE_URLS on, as in the devstack


def _url(url: str) -> dict[str, Any]:
    return {"image": {"url": url}}


def _attributes(count: int, long_at: int | None = None) -> dict[str, Any]:
    values = ["x" * (MAX_ATTRIBUTE_VALUE_CHARS + 1) if i == long_at else i for i in range(count)]
    return {"attributes": [{"trait_type": f"t{i}", "value": v} for i, v in enumerate(values)]}


STATIC = [
    pytest.param(
        Static(("not JSON",), text=lambda mint_id: f'{{"mint_id": "{mint_id}", "user_id": '),
        id="malformed-json",
    ),
    pytest.param(
        Static(("wallet", "image", "Field required"), {"wallet": None, "image": None}),
        id="missing-fields",
    ),
    pytest.param(
        Static(("wallet", "base58"), {"wallet": "0OIl+/not-base58"}), id="wallet-not-base58"
    ),
    pytest.param(
        Static(("wallet", "32 bytes"), {"wallet": b58encode(bytes(range(1, 32)))}),
        id="wallet-31-bytes",
    ),
    pytest.param(
        Static(("wallet", "32 bytes"), {"wallet": b58encode(bytes(range(1, 34)))}),
        id="wallet-33-bytes",
    ),
    pytest.param(
        Static(("name", f"{MAX_NAME_BYTES} bytes"), {"name": "é" * (MAX_NAME_BYTES // 2 + 1)}),
        id="name-over-its-bytes",
    ),
    pytest.param(
        Static(("symbol", f"{MAX_SYMBOL_BYTES} bytes"), {"symbol": "S" * (MAX_SYMBOL_BYTES + 1)}),
        id="symbol-over-its-bytes",
    ),
    pytest.param(
        Static(("attributes", f"at most {MAX_ATTRIBUTES}"), _attributes(MAX_ATTRIBUTES + 1)),
        id="too-many-attributes",
    ),
    pytest.param(
        Static(("attributes[3].value", f"at most {MAX_ATTRIBUTE_VALUE_CHARS}"), _attributes(5, 3)),
        id="attribute-value-too-long",
    ),
    pytest.param(
        Static(("image.path",), {"image": {"path": "/etc/passwd"}}), id="image-path-absolute"
    ),
    pytest.param(Static(("image.url",), _url("file:///etc/passwd")), id="image-url-file"),
    pytest.param(
        Static(("image.url", "https"), _url("http://cdn.example.com/a.png")), id="image-url-http"
    ),
    pytest.param(
        Static(("image.url", "127.0.0.1"), _url("https://127.0.0.1:8443/a.png")),
        id="image-url-loopback",
    ),
    pytest.param(
        Static(("image.url", "localhost"), _url("https://localhost/a.png")),
        id="image-url-localhost",
    ),
    pytest.param(
        Static(("image.url", "::1"), _url("https://[::1]/a.png")), id="image-url-ipv6-loopback"
    ),
    pytest.param(
        Static(("image.url", "10.1.2.3"), _url("https://10.1.2.3/a.png")), id="image-url-private-10"
    ),
    pytest.param(
        Static(("image.url", "192.168.7.9"), _url("https://192.168.7.9/a.png")),
        id="image-url-private-192",
    ),
    pytest.param(
        Static(("image.url", "169.254.169.254"), _url("https://169.254.169.254/latest/meta-data")),
        id="image-url-link-local",
    ),
    pytest.param(
        Static(
            ("image.url", "169.254.169.254", "link-local"),
            _url("http://169.254.169.254/latest/meta-data/iam"),
            dev=True,
        ),
        id="image-url-link-local-even-in-the-devstack",
    ),
    # Poison inputs (issue 14): values that would pass as numbers or text and break later.
    pytest.param(
        Static(
            ("attributes[0].value", "finite"),
            {"attributes": [{"trait_type": "tier", "value": float("nan")}]},
        ),
        id="attribute-nan",
    ),
    pytest.param(
        Static(
            ("options.operator_timeout_s", "finite"),
            {"options": {"operator_timeout_s": float("inf")}},
        ),
        id="operator-timeout-infinity",
    ),
    pytest.param(
        Static(("name", "U+202E"), {"name": "Saga \u202egnp.exe"}), id="name-bidi-override"
    ),
    pytest.param(Static(("symbol", "U+200B"), {"symbol": "SA\u200bGA"}), id="symbol-zero-width"),
    pytest.param(Static(("name", "U+0000"), {"name": "Saga\x00"}), id="name-nul"),
    pytest.param(
        Static(("description", "NUL"), {"description": "gold\x00tier"}), id="description-nul"
    ),
    pytest.param(
        Static(("wallet", "System Program"), {"wallet": "11111111111111111111111111111111"}),
        id="wallet-system-program",
    ),
    pytest.param(
        Static(
            ("wallet", "rent sysvar"), {"wallet": "SysvarRent111111111111111111111111111111111"}
        ),
        id="wallet-rent-sysvar",
    ),
    # The spend policy (issue 14): the hot wallet pays the fee a request names.
    pytest.param(
        Static(
            ("options.priority_fee_micro_lamports", "SOLANA_PRIORITY_FEE_CAP=100000"),
            {"options": {"priority_fee_micro_lamports": 500_000}},
        ),
        id="priority-fee-above-the-cap",
    ),
    pytest.param(
        Static(
            ("options.priority_fee_micro_lamports", "10000000"),
            {"options": {"priority_fee_micro_lamports": 10**18}},
        ),
        id="priority-fee-beyond-any-cap",
    ),
]


def write_static(stack: StackConfig, case: Static, folder: Path) -> tuple[str, Path]:
    fields = request_fields(stack, **case.changes)
    mint_id = fields["mint_id"]
    path = folder / f"{mint_id}.json"
    path.write_text(case.text(mint_id) if case.text else json.dumps(fields))
    return mint_id, path


@pytest.mark.parametrize("case", STATIC)
async def test_the_cli_refuses_a_bad_request_naming_the_field(
    stack: StackConfig, client: Client, tmp_path: Path, case: Static
) -> None:
    before = await Pins.now(stack)
    mint_id, path = write_static(stack, case, tmp_path)
    ran = await cli(stack, "mint", "--request", str(path), allow_private_urls=case.dev)
    assert ran.returncode == 2, ran
    assert_names(ran.stderr, case.names)
    assert "nothing started" in ran.stderr
    assert not await workflow_exists(client, mint_id)
    await assert_nothing_left(stack, mint_id, before)


@pytest.mark.parametrize("case", STATIC)
async def test_the_python_api_refuses_a_bad_request_naming_the_field(
    stack: StackConfig, client: Client, tmp_path: Path, case: Static
) -> None:
    """A backend's path: `request_from_json`, then `start_mint` (which checks the image URL)."""
    before = await Pins.now(stack)
    mint_id, path = write_static(stack, case, tmp_path)
    with pytest.raises(mintsaga.StarterError) as refused:
        request = mintsaga.request_from_json(path.read_text())
        await mintsaga.start_mint(client, request, queue=IDLE_QUEUE, allow_private_urls=case.dev)
    assert_names(str(refused.value), case.names)
    assert "nothing started" in str(refused.value)
    assert not await workflow_exists(client, mint_id)
    await assert_nothing_left(stack, mint_id, before)


# The cases a starter that is not ours (the README's TypeScript one, any JSON client) can send
# past our checks: the workflow itself refuses them.
NOT_OURS = [
    case
    for case in STATIC
    if case.id
    in {
        "missing-fields",
        "wallet-not-base58",
        "name-over-its-bytes",
        "attribute-value-too-long",
        "attribute-nan",
        "name-bidi-override",
        "symbol-zero-width",
        "name-nul",
        "description-nul",
        "wallet-system-program",
        "priority-fee-beyond-any-cap",
    }
]


@pytest.mark.parametrize("case", NOT_OURS)
async def test_a_bad_request_from_another_starter_fails_the_mint_naming_the_field(
    stack: StackConfig, client: Client, worker: str, case: Static
) -> None:
    """Started with the raw JSON, as a client in another language does: the mint fails at once
    (InvalidRequest, naming the field; it used to fail every workflow task on decode, for
    ever), and nothing is written, pinned or sent."""
    before = await Pins.now(stack)
    fields = request_fields(stack, **case.changes)
    mint_id = fields["mint_id"]
    handle = await client.start_workflow(
        "MintSaga", fields, id=f"mint-{mint_id}", task_queue=worker
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), 30)
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "InvalidRequest"
    assert_names(cause.message, case.names)
    assert "nothing started" in cause.message
    await assert_nothing_left(stack, mint_id, before)


@pytest.mark.parametrize("payload", [[1, 2], "a request", None, 42])
async def test_a_request_that_is_not_an_object_fails_the_mint_too(
    client: Client, worker: str, payload: Any
) -> None:
    mint_id = f"bad-{uuid.uuid4().hex[:10]}"
    handle = await client.start_workflow(
        "MintSaga", payload, id=f"mint-{mint_id}", task_queue=worker
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), 30)
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "InvalidRequest"
    assert "nothing started" in cause.message


def test_the_devstack_escape_lets_loopback_http_through_the_static_check(
    stack: StackConfig,
) -> None:
    """The other half of the URL cases: with the setting the worker gets them (next table)."""
    request = MintRequest.model_validate(
        request_fields(stack, image={"url": "http://127.0.0.1:9/a.png"})
    )
    check_image_url(request, allow_private_urls=True)
    with pytest.raises(mintsaga.StarterError, match=re.escape("image.url: must be https")):
        check_image_url(request, allow_private_urls=False)


# ------------------------------------------------------------------------------- worker cases


class HostileServer:
    """A real HTTP server on 127.0.0.1 answering image URLs the way an attacker would."""

    HTML = b"<html><body>not an image</body></html>"

    def __init__(self) -> None:
        self.base = ""
        self.hits: list[str] = []

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.count])
        app.router.add_get("/to-metadata.png", self.to_metadata)
        app.router.add_get("/endless.png", self.endless)
        app.router.add_get("/declared-huge.png", self.declared_huge)
        app.router.add_get("/html-as.png", self.html_as_png)
        app.router.add_get("/page.html", self.page)
        app.router.add_get("/nul-error.png", self.nul_error)
        app.router.add_get("/huge-error.png", self.huge_error)
        app.router.add_get("/stacked-gzip.png", self.stacked_gzip)
        return app

    @web.middleware
    async def count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.hits.append(request.path)
        return await handler(request)

    async def to_metadata(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/iam/credentials.png")

    async def endless(self, request: web.Request) -> web.StreamResponse:
        # Chunked, no Content-Length: only counting while reading stops it.
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        await response.prepare(request)
        await response.write(PNG)
        while True:  # until the worker stops reading and hangs up
            await response.write(bytes(64 * 1024))

    async def declared_huge(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.content_length = DEFAULT_MAX_BYTES + 1
        await response.prepare(request)
        await response.write(PNG)
        return response

    async def html_as_png(self, request: web.Request) -> web.Response:
        return web.Response(body=self.HTML, content_type="image/png")

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(body=self.HTML, content_type="text/html")

    async def nul_error(self, request: web.Request) -> web.Response:
        # A NUL in the body: quoted into the rollback reason, Postgres would refuse it.
        return web.Response(status=404, body=b"no such image\x00here", content_type="text/plain")

    # A PNG header and 256 MiB of zeros, gzipped twice: about 600 bytes on the wire. Built in
    # 1 MiB steps, so the test process never holds the inflated bytes itself.
    BOMB_INFLATES_TO = 256 * 2**20

    @staticmethod
    def stacked_gzip_bomb() -> bytes:
        inner = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        layer = [inner.compress(PNG[:8])]
        layer += [
            inner.compress(bytes(2**20)) for _ in range(HostileServer.BOMB_INFLATES_TO // 2**20)
        ]
        layer.append(inner.flush())
        return gzip.compress(b"".join(layer), 9)

    async def stacked_gzip(self, request: web.Request) -> web.Response:
        headers = {"Content-Type": "image/png", "Content-Encoding": "gzip, gzip"}
        return web.Response(body=self.bomb, headers=headers)

    bomb = b""
    HUGE_ERROR_BYTES = 100 * 1024 * 1024
    error_bytes_sent = 0

    async def huge_error(self, request: web.Request) -> web.StreamResponse:
        # A 100 MB error body: the worker reads a few KB of it, then hangs up.
        response = web.StreamResponse(status=404, headers={"Content-Type": "text/plain"})
        response.content_length = self.HUGE_ERROR_BYTES
        await response.prepare(request)
        chunk = b"x" * (64 * 1024)
        try:
            while self.error_bytes_sent < self.HUGE_ERROR_BYTES:
                await response.write(chunk)
                self.error_bytes_sent += len(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the worker hung up
        return response


@pytest.fixture(scope="module")
async def hostile() -> AsyncIterator[HostileServer]:
    server = HostileServer()
    server.bomb = HostileServer.stacked_gzip_bomb()
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield server
    await runner.cleanup()


@dataclass(frozen=True)
class Refused:
    """An image only the worker can find bad. `image` builds the reference; `names` as above."""

    names: tuple[str, ...]
    image: Callable[[StackConfig, HostileServer], dict[str, str]]
    bytes_seen: bytes | None = None  # what the bad reference holds, to check it is not pinned


def _outside(stack: StackConfig, name: str) -> Path:
    """A real PNG next to MINT_IMAGE_DIR, not in it."""
    target = image_dir(stack).parent / f"{name}-{uuid.uuid4().hex[:8]}.png"
    target.write_bytes(PNG)
    return target


def _dotdot(stack: StackConfig, server: HostileServer) -> dict[str, str]:
    return {"path": f"../{_outside(stack, 'dotdot').name}"}


def _symlink(stack: StackConfig, server: HostileServer) -> dict[str, str]:
    link = image_dir(stack) / f"link-{uuid.uuid4().hex[:8]}.png"
    link.symlink_to(_outside(stack, "symlinked"))
    return {"path": link.name}


def _text_file(stack: StackConfig, server: HostileServer) -> dict[str, str]:
    name = f"text-{uuid.uuid4().hex[:8]}.png"
    (image_dir(stack) / name).write_bytes(HostileServer.HTML)
    return {"path": name}


def _served(path: str) -> Callable[[StackConfig, HostileServer], dict[str, str]]:
    return lambda stack, server: {"url": server.base + path}


WORKER = [
    pytest.param(
        Refused(("image.url", "169.254.169.254"), _served("/to-metadata.png")),
        id="url-redirects-to-link-local",
    ),
    pytest.param(
        Refused(("image.url", f"larger than {DEFAULT_MAX_BYTES}"), _served("/endless.png")),
        id="url-body-over-the-cap",
    ),
    pytest.param(
        Refused(("image.url", f"larger than {DEFAULT_MAX_BYTES}"), _served("/declared-huge.png")),
        id="url-declares-a-body-over-the-cap",
    ),
    pytest.param(
        Refused(("image.url", "not a PNG"), _served("/html-as.png"), HostileServer.HTML),
        id="url-body-not-an-image",
    ),
    pytest.param(
        Refused(("image.url", "Content-Type", "text/html"), _served("/page.html")),
        id="url-content-type-not-an-image",
    ),
    pytest.param(
        Refused(("image.url", "404", "no such image"), _served("/nul-error.png")),
        id="url-error-body-with-nul",
    ),
    pytest.param(
        Refused(("image.url", "404"), _served("/huge-error.png")), id="url-error-body-100-mb"
    ),
    pytest.param(
        Refused(("image.path", "outside MINT_IMAGE_DIR"), _dotdot, PNG), id="path-dotdot-escape"
    ),
    pytest.param(
        Refused(("image.path", "outside MINT_IMAGE_DIR"), _symlink, PNG), id="path-symlink-escape"
    ),
    pytest.param(
        Refused(("image.path", "not a PNG"), _text_file, HostileServer.HTML),
        id="path-not-an-image",
    ),
]


async def finished(client: Client, request: MintRequest, within_s: float = 60) -> MintResult:
    """The mint's result; a mint still going after `within_s` (retrying, waiting for an
    operator) fails the test: a bad image must end it for good."""
    handle = client.get_workflow_handle_for(MintSaga.run, request.workflow_id)
    try:
        return await asyncio.wait_for(handle.result(), within_s)
    except TimeoutError:
        status = await mintsaga.get_status(client, request.mint_id)
        await handle.terminate("bad-input test: the mint did not end")
        raise AssertionError(f"the mint did not end on a bad image: {status}") from None


@pytest.mark.parametrize("case", WORKER)
async def test_the_worker_refuses_a_bad_image_before_anything_is_written(
    stack: StackConfig, client: Client, worker: str, hostile: HostileServer, case: Refused
) -> None:
    before = await Pins.now(stack)
    request = MintRequest.model_validate(request_fields(stack, image=case.image(stack, hostile)))
    # The devstack's setting lets the loopback server through the starter, as the worker does.
    await mintsaga.start_mint(client, request, queue=worker, allow_private_urls=True)
    result = await finished(client, request)

    cids = (await compute_cid(case.bytes_seen),) if case.bytes_seen else ()
    await assert_nothing_left(stack, request.mint_id, before, cids=cids)
    assert result.status == MintStatus.ROLLED_BACK  # nothing to compensate: nothing was done
    assert result.reason is not None
    assert_names(result.reason, ("compute_image_cid", *case.names))
    assert (result.mint_address, result.image_cid, result.signature) == (None, None, None)
    assert "\x00" not in result.reason
    # The user's slot is free again: the same user mints at once.
    again = MintRequest.model_validate(request_fields(stack, user_id=request.user_id))
    await mintsaga.start_mint(client, again, queue=worker)
    assert (await finished(client, again)).status == MintStatus.MINTED


class RssWatch:
    """This process's resident memory while a block runs: sampled every millisecond by a thread
    (the worker's event loop may be busy) and read from the kernel's high-water mark (VmHWM,
    reset first where Linux allows it), so a peak between samples is not missed."""

    def __init__(self) -> None:
        self.before_kb = 0
        self.peak_kb = 0
        self.samples = 0
        self.hwm_reset = False
        self._running = False

    @staticmethod
    def read_kb(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"/proc/self/status has no {field}")

    def _sample(self) -> None:
        while self._running:
            self.peak_kb = max(self.peak_kb, self.read_kb("VmRSS"))
            self.samples += 1
            time.sleep(0.001)

    def __enter__(self) -> RssWatch:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self.before_kb = self.peak_kb = self.read_kb("VmRSS")
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._running = False
        self._thread.join()
        if self.hwm_reset:
            self.peak_kb = max(self.peak_kb, self.read_kb("VmHWM"))

    @property
    def rise_mb(self) -> float:
        return (self.peak_kb - self.before_kb) / 1024


async def test_a_stacked_gzip_image_rolls_back_without_inflating(
    stack: StackConfig, client: Client, worker: str, hostile: HostileServer
) -> None:
    """Under 1 KB of `Content-Encoding: gzip, gzip` that would inflate to 256 MiB: the mint ends
    ROLLED_BACK naming image.url, and the worker (this process: the session's worker runs in
    it) grows by less than 20 MB meanwhile."""
    assert len(hostile.bomb) < 1024
    assert HostileServer.BOMB_INFLATES_TO > 10 * DEFAULT_MAX_BYTES
    before = await Pins.now(stack)
    url = hostile.base + "/stacked-gzip.png"
    request = MintRequest.model_validate(request_fields(stack, image={"url": url}))
    hostile.hits.clear()
    with RssWatch() as rss:
        await mintsaga.start_mint(client, request, queue=worker, allow_private_urls=True)
        result = await finished(client, request)
    print(
        f"stacked gzip ({len(hostile.bomb)} bytes, {HostileServer.BOMB_INFLATES_TO} inflated):"
        f" worker RSS {rss.before_kb / 1024:.1f} MB -> peak {rss.peak_kb / 1024:.1f} MB"
        f" (+{rss.rise_mb:.1f} MB; {rss.samples} samples, VmHWM reset: {rss.hwm_reset})"
    )
    assert result.status == MintStatus.ROLLED_BACK
    assert result.reason is not None
    assert_names(result.reason, ("compute_image_cid", "image.url", "gzip, gzip"))
    assert hostile.hits == ["/stacked-gzip.png"]  # refused, not retried
    await assert_nothing_left(stack, request.mint_id, before)
    assert rss.samples > 0
    assert rss.rise_mb < 20, f"the worker's RSS rose {rss.rise_mb:.1f} MB"


async def test_an_error_body_is_not_read_past_its_cap(hostile: HostileServer) -> None:
    """100 MB of error body offered; the loader reads a few KB and hangs up."""
    hostile.error_bytes_sent = 0
    async with httpx.AsyncClient(timeout=10) as http:
        loader = ImageLoader(None, http, allow_private_hosts=True)
        with pytest.raises(ServiceError, match="404") as refused:
            await loader.load({"url": hostile.base + "/huge-error.png"})
    assert not refused.value.retryable
    await asyncio.sleep(0.5)  # the server notices the hang-up
    # What the server got out before the hang-up: its socket buffers, not the body.
    assert hostile.error_bytes_sent < 16 * 1024 * 1024, hostile.error_bytes_sent


async def test_the_redirect_target_is_never_contacted(hostile: HostileServer) -> None:
    """Even the devstack's loader (private hosts allowed) stops at the link-local hop."""
    calls: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return [host] if host[0].isdigit() else ["127.0.0.1"]

    hostile.hits.clear()
    async with httpx.AsyncClient(timeout=10) as http:
        loader = ImageLoader(None, http, allow_private_hosts=True, resolver=resolver)
        expected = re.escape("image.url host 169.254.169.254: 169.254.169.254 is link-local")
        with pytest.raises(ServiceError, match=expected) as refused:
            await loader.load({"url": hostile.base + "/to-metadata.png"})
    assert refused.value.code == "ImageUrlPrivateAddress" and not refused.value.retryable
    assert hostile.hits == ["/to-metadata.png"]
    assert calls == ["127.0.0.1"]  # the link-local literal is refused before any lookup


# ------------------------------------------------------------------------------- duplicates


DUPLICATES = [
    pytest.param({"name": "Another name"}, ("name",), id="other-name"),
    pytest.param(
        {"name": "Another name", "image": {"path": "sample.png"}},
        ("name", "image"),
        id="other-name-and-image",
    ),
    pytest.param({"wallet": str(Keypair().pubkey())}, ("wallet",), id="other-wallet"),
    pytest.param(
        {"attributes": [{"trait_type": "tier", "value": "silver"}]},
        ("attributes",),
        id="other-attributes",
    ),
    pytest.param({"options": {"operator_timeout_s": 60}}, ("options",), id="other-options"),
]


async def started_input(client: Client, request: MintRequest) -> MintRequest:
    handle = client.get_workflow_handle(request.workflow_id)
    async for event in handle.fetch_history_events(page_size=1):
        payloads = event.workflow_execution_started_event_attributes.input.payloads
        [started] = await client.data_converter.decode(payloads, [MintRequest])
        assert isinstance(started, MintRequest)
        return started
    raise AssertionError("no history")


async def runs_of(client: Client, request: MintRequest) -> list[str]:
    query = f'WorkflowId="{request.workflow_id}"'
    for _ in range(50):  # visibility is eventually consistent
        runs = [e.run_id async for e in client.list_workflows(query)]
        if runs:
            return runs
        await asyncio.sleep(0.1)
    return []


@pytest.mark.parametrize(("changes", "differ"), DUPLICATES)
async def test_a_duplicate_mint_id_with_other_content_is_refused_not_merged(
    stack: StackConfig, client: Client, tmp_path: Path, changes: dict[str, Any], differ: tuple[str]
) -> None:
    before = await Pins.now(stack)
    fields = request_fields(stack)
    original = MintRequest.model_validate(fields)
    other = MintRequest.model_validate({**fields, **changes})
    first = await mintsaga.start_mint(client, original, queue=IDLE_QUEUE)
    expected = f"mint_id {original.mint_id} already exists with another {', '.join(differ)}"

    with pytest.raises(mintsaga.StarterError) as refused:
        await mintsaga.start_mint(client, other, queue=IDLE_QUEUE)
    assert expected in str(refused.value)
    path = tmp_path / "other.json"
    path.write_text(json.dumps({**fields, **changes}))
    ran = await cli(stack, "mint", "--request", str(path))
    assert ran.returncode == 2 and expected in ran.stderr, ran

    # The identical request is the same mint (idempotent), and the first one's content stands.
    again = await mintsaga.start_mint(client, original, queue=IDLE_QUEUE)
    assert (await again.describe()).run_id == (await first.describe()).run_id
    assert await started_input(client, original) == original
    assert len(await runs_of(client, original)) == 1

    # Finished (here: terminated) mints keep their id: still refused, still the same mint.
    await first.terminate("bad-input test")
    with pytest.raises(mintsaga.StarterError, match=re.escape(expected)):
        await mintsaga.start_mint(client, other, queue=IDLE_QUEUE)
    closed = await mintsaga.start_mint(client, original, queue=IDLE_QUEUE)
    assert (await closed.describe()).status == WorkflowExecutionStatus.TERMINATED
    assert len(await runs_of(client, original)) == 1
    await assert_nothing_left(stack, original.mint_id, before)  # no worker ever ran either


async def test_racing_starters_with_different_content_start_one_mint(
    stack: StackConfig, client: Client
) -> None:
    before = await Pins.now(stack)
    fields = request_fields(stack)
    requests = [MintRequest.model_validate({**fields, "name": f"Racer {i}"}) for i in range(4)]
    outcomes = await asyncio.gather(
        *(mintsaga.start_mint(client, r, queue=IDLE_QUEUE) for r in requests),
        return_exceptions=True,
    )
    won = [r for r, o in zip(requests, outcomes, strict=True) if not isinstance(o, Exception)]
    lost = [o for o in outcomes if isinstance(o, Exception)]
    assert len(won) == 1, outcomes
    assert len(lost) == 3 and all(isinstance(o, mintsaga.StarterError) for o in lost), lost
    assert all("already exists with another name" in str(o) for o in lost)
    assert await started_input(client, won[0]) == won[0]

    # Racing with the same content: one mint, every starter gets it.
    twins = await asyncio.gather(
        *(mintsaga.start_mint(client, won[0], queue=IDLE_QUEUE) for _ in range(4))
    )
    assert len({(await h.describe()).run_id for h in twins}) == 1
    assert len(await runs_of(client, won[0])) == 1
    await client.get_workflow_handle(won[0].workflow_id).terminate("bad-input test")
    await assert_nothing_left(stack, won[0].mint_id, before)
