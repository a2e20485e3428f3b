"""Helpers for the saga's tests: a real worker on the devstack, requests, and independent reads.

The worker is the product's own (`worker.mint_activities` and `MintSaga`) with real clients over
real sockets. A test can wrap one activity so that a real fault (through the devstack's admin
API) starts at the moment that activity runs: the failure is real, only its timing is chosen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiohttp import web
from solders.pubkey import Pubkey
from temporalio import activity
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.worker import Replayer

import mintsaga
from devstack.config import StackConfig
from devstack.supervisor import PROJECT_ROOT
from mintsaga.codec import data_converter_from_env
from mintsaga.resilience.breaker import BreakerRegistry
from mintsaga.settings import Settings
from mintsaga.solana.nft import associated_token_address
from mintsaga.temporal_client import connect
from mintsaga.worker import build_workers, mint_activities, running
from mintsaga.workflows.mint_saga import MintSaga
from mintsaga.workflows.models import StatusView


def settings_for(stack: StackConfig, **extra: str) -> Settings:
    return Settings.from_env({**stack.worker_env(), **extra})


async def temporal_client(stack: StackConfig, **env: str) -> Client:
    """A client with the worker's converter: the codec on when the stack's settings (or `env`,
    e.g. MINTSAGA_CODEC_KEYS=...) set keys."""
    settings = {**stack.worker_env(), **env}
    return await connect(data_converter=data_converter_from_env(settings), env=settings)


def activity_name(fn: Callable[..., Any]) -> str:
    definition = activity._Definition.from_callable(fn)
    assert definition is not None and definition.name is not None
    return definition.name


@contextlib.asynccontextmanager
async def running_worker(
    stack: StackConfig,
    client: Client,
    task_queue: str,
    *,
    wrap: dict[str, Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]]
    | None = None,
    solana_timeout_ms: int | None = None,
    breakers: BreakerRegistry | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[None]:
    """The product's workers in this process (the saga's queue and its Pinata queue, as
    `worker.py` runs them); `wrap` maps an activity name to a wrapper; `env` adds settings."""
    wrap = wrap or {}
    extra = {"SOLANA_TIMEOUT_MS": str(solana_timeout_ms)} if solana_timeout_ms else {}
    extra.update(env or {})
    settings = settings_for(stack, **extra)
    async with mint_activities(settings, breakers=breakers) as activities:
        wired = [wrap[activity_name(a)](a) if activity_name(a) in wrap else a for a in activities]
        async with running(build_workers(client, settings.tuning, task_queue, wired)):
            yield


def fault_first(stack: StackConfig, *specs: dict[str, Any]) -> Callable[..., Any]:
    """Wrapper: the first time the activity runs, add these faults, then run it for real."""

    def wrapper(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        done = False

        async def wrapped(arg: Any) -> Any:
            nonlocal done
            if not done:
                done = True
                for spec in specs:
                    add_fault(stack, **spec)
            return await original(arg)

        # The converter reads the input and result types from the annotations.
        hints = typing.get_type_hints(original)
        wrapped.__annotations__ = {"arg": next(iter(hints.values())), "return": hints["return"]}
        return activity.defn(name=activity_name(original))(wrapped)

    return wrapper


def add_fault(stack: StackConfig, **spec: Any) -> str:
    response = httpx.post(stack.url("admin") + "/faults", json=spec, timeout=10)
    response.raise_for_status()
    return str(response.json()["id"])


def faults_fired(stack: StackConfig, kind: str) -> int:
    """How often faults of `kind` ("<target>:<kind>", e.g. "postgres:error") fired so far."""
    stats = httpx.get(stack.url("admin") + "/stats", timeout=10).json()
    return int(stats["faults_fired"].get(kind, 0))


def clear_faults(stack: StackConfig) -> None:
    httpx.delete(stack.url("admin") + "/faults", timeout=10).raise_for_status()


def rpc(stack: StackConfig, method: str, params: list[Any], endpoint: str = "solana-3") -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    answer = httpx.post(stack.url(endpoint), json=body, timeout=10).json()
    assert "error" not in answer, answer
    return answer["result"]


def chain_nft(stack: StackConfig, mint_address: str) -> dict[str, Any] | None:
    """The mint account as the RPC's jsonParsed shows it (independent of our minter)."""
    params = [mint_address, {"encoding": "jsonParsed", "commitment": "confirmed"}]
    value = rpc(stack, "getAccountInfo", params)["value"]
    if value is None:
        return None
    info: dict[str, Any] = value["data"]["parsed"]["info"]
    return info


def token_metadata(info: dict[str, Any]) -> dict[str, Any]:
    for extension in info.get("extensions", []):
        if extension["extension"] == "tokenMetadata":
            state: dict[str, Any] = extension["state"]
            return state
    raise AssertionError(f"no tokenMetadata extension in {json.dumps(info)}")


def owner_balance(stack: StackConfig, owner: str, mint_address: str) -> int:
    """Tokens of this mint in the owner's associated token account (0 if it has none)."""
    ata = associated_token_address(Pubkey.from_string(owner), Pubkey.from_string(mint_address))
    params = [str(ata), {"encoding": "jsonParsed", "commitment": "confirmed"}]
    value = rpc(stack, "getAccountInfo", params)["value"]
    if value is None:
        return 0
    return int(value["data"]["parsed"]["info"]["tokenAmount"]["amount"])


# How long a test's own read of Pinata waits out its rate limit (the whole suite shares one
# Pinata account's 180 requests a minute, as a fleet would): a minute's window and a margin.
PINATA_PATIENCE_S = 75.0


async def pinata_call(
    stack: StackConfig, method: str, path: str, params: dict[str, str] | None = None
) -> httpx.Response:
    """A test's own request to Pinata, waiting out a 429 as its `Retry-After` asks (the
    emulator answers Pinata's documented limit to every caller, tests included); the answer
    after that, whatever it is."""
    headers = {"Authorization": f"Bearer {stack.pinata_jwt}"}
    deadline = time.monotonic() + PINATA_PATIENCE_S
    async with httpx.AsyncClient(timeout=10) as http:
        while True:
            answer = await http.request(
                method, stack.url("pinata") + path, params=params, headers=headers
            )
            if answer.status_code != 429 or time.monotonic() >= deadline:
                return answer
            await asyncio.sleep(min(float(answer.headers.get("Retry-After", "1")), 5.0))


async def pinata_get(stack: StackConfig, path: str, params: dict[str, str]) -> httpx.Response:
    """`pinata_call`'s GET, which must succeed."""
    answer = await pinata_call(stack, "GET", path, params)
    answer.raise_for_status()
    return answer


async def pinata_room(stack: StackConfig, requests: int, within_s: float = 70.0) -> None:
    """Wait until Pinata's sliding minute has room for `requests` more (a test that counts
    refusals must not pay for the requests earlier tests made)."""
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient(timeout=10) as http:
        while True:
            window = (await http.get(stack.url("admin") + "/stats")).json()["pinata_window"]
            limit, used = window["requests_per_minute"], window["requests_in_window"]
            if limit <= 0 or limit - used >= requests:
                return
            assert time.monotonic() < deadline, f"Pinata's window stayed full: {window}"
            await asyncio.sleep(1.0)


async def pinned_anywhere(stack: StackConfig, cid: str) -> bool:
    params = {"hashContains": cid, "status": "pinned"}
    rows = (await pinata_get(stack, "/data/pinList", params)).json()["rows"]
    async with httpx.AsyncClient(timeout=10) as http:
        kubo = await http.post(stack.url("kubo") + "/api/v0/pin/ls", params={"arg": cid})
    return any(r["ipfs_pin_hash"] == cid for r in rows) or kubo.status_code == 200


def gateway_status(stack: StackConfig, gateway: str, cid: str) -> int:
    return httpx.get(f"{stack.url(gateway)}/ipfs/{cid}", timeout=10).status_code


async def wait_for(
    client: Client, mint_id: str, predicate: Callable[[StatusView], bool], within_s: float = 60
) -> None:
    async def poll() -> None:
        while True:
            with contextlib.suppress(RPCError):  # not started yet, or no worker to answer
                if predicate(await mintsaga.get_status(client, mint_id)):
                    return
            await asyncio.sleep(0.1)

    await asyncio.wait_for(poll(), within_s)


@dataclass(frozen=True)
class Ran:
    """What `python starter.py ...` did."""

    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """The last line printed (`--json` prints one JSON object there), once it succeeded."""
        assert self.returncode == 0, self.stderr
        return json.loads(self.stdout.strip().splitlines()[-1])


async def run_starter(env: dict[str, str], *argv: str, timeout_s: float = 60) -> Ran:
    """`python starter.py ARGV...` as an operator runs it, with exactly `env`. Asynchronous:
    a worker answering its queries may run on the caller's event loop."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "starter.py",
        *argv,
        env=env,
        cwd=PROJECT_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode is not None
    return Ran(process.returncode, stdout.decode(), stderr.decode())


async def replay_failures(histories: list[WorkflowHistory]) -> dict[str, str]:
    """Each history that does not replay on today's MintSaga, with why (none: {})."""
    replayer = Replayer(workflows=[MintSaga], data_converter=pydantic_data_converter)
    failures = {}
    for history in histories:
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        if result.replay_failure is not None:
            failures[history.workflow_id] = repr(result.replay_failure)
    return failures


@dataclass
class Lies:
    """What a lying Solana node changes in an honest node's answers (None: nothing)."""

    units: int | None = None  # simulateTransaction's unitsConsumed
    rent_factor: float | None = None  # getMinimumBalanceForRentExemption x this
    recent_fee: int | None = None  # every getRecentPrioritizationFees entry
    last_valid_shift: int | None = None  # added to getLatestBlockhash's lastValidBlockHeight
    hide_accounts: bool = False  # getMultipleAccounts: every account missing
    seen: list[tuple[str, str | None]] = field(default_factory=list)  # (method, commitment)


@contextlib.asynccontextmanager
async def lying_rpc(upstream: str) -> AsyncIterator[tuple[str, Lies]]:
    """A JSON-RPC server on 127.0.0.1 in front of `upstream` (a devstack node), telling the
    lies its `Lies` says (changed while it runs); yields its URL and the `Lies`."""
    lies = Lies()
    async with httpx.AsyncClient(timeout=30) as http:

        async def handle(request: web.Request) -> web.Response:
            body = await request.json()
            params = body.get("params") or []
            config = params[-1] if params and isinstance(params[-1], dict) else {}
            lies.seen.append((body.get("method"), config.get("commitment")))
            answer = (await http.post(upstream, json=body)).json()
            result, method = answer.get("result"), body.get("method")
            if method == "simulateTransaction" and lies.units is not None and result:
                result["value"]["unitsConsumed"] = lies.units
            elif method == "getMinimumBalanceForRentExemption" and lies.rent_factor:
                answer["result"] = int(result * lies.rent_factor)
            elif method == "getRecentPrioritizationFees" and lies.recent_fee is not None:
                answer["result"] = [
                    {"slot": 1 + i, "prioritizationFee": lies.recent_fee} for i in range(20)
                ]
            elif method == "getLatestBlockhash" and lies.last_valid_shift and result:
                result["value"]["lastValidBlockHeight"] += lies.last_valid_shift
            elif method == "getMultipleAccounts" and lies.hide_accounts and result:
                result["value"] = [None for _ in result["value"]]
            return web.json_response(answer)

        app = web.Application()
        app.router.add_post("/", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            yield f"http://127.0.0.1:{port}", lies
        finally:
            await runner.cleanup()
