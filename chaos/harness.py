"""One chaos run: mints through real worker processes while the seeded schedule breaks things.

Top to bottom, `ChaosRun.run`:
1. start a devstack of its own (fresh state, its own ports) and the worker processes, and
   create a collection (a fresh key per run) that a share of the mints name (issue 18);
2. at once: submit the mints (as a backend would: retrying the start until Temporal takes it),
   carry out the fault schedule, and act as the operator on every mint that waits for one;
3. clear the faults, let every mint settle (the operator keeps working);
4. read what happened (histories, logs, the emulators' fault counts) and run the invariant
   checker, which reads the chain, the database, the pin lists and the histories itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from solders.keypair import Keypair
from temporalio.client import Client
from temporalio.service import RPCError

import mintsaga
from chaos import measure, wallet
from chaos.checker import CheckResult, check
from chaos.processes import StackControl, Workers
from chaos.schedule import WARP_SLOTS, Action, build_schedule
from devstack.config import SOLANA_ENDPOINTS, StackConfig
from devstack.dev_identity import images_dir, png
from devstack.supervisor import PROJECT_ROOT
from mintsaga.api.collections import create_collection
from mintsaga.settings import Settings
from mintsaga.workflows.models import MintRequest, MintStatus

TASK_QUEUE = "chaos"
TIERS = ("gold", "silver", "bronze")  # shared images: one CID held by many mints
SHARED_IMAGE_SHARE = 0.4
DUPLICATE_START_SHARE = 0.05  # the backend sends the same request twice
COLLECTION_EVERY = 3  # every third mint names the run's collection (issue 18)
OPERATOR_POLL_S = 2.0
OPERATOR_DELAY_S = 2.0  # a person does not act within the same second
COMPENSATE_SHARE = 0.25  # of the waiting mints an operator may roll back, some are
PROGRESS_EVERY_S = 5.0
# Mints are started over this share of the run, so the last outages still meet traffic.
SUBMIT_SHARE = 0.97

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RunOptions:
    mints: int = 40
    seed: int = 1
    duration_s: float = 60.0
    workers: int = 1
    settle_timeout_s: float = 300.0


@dataclass
class Carried:
    """What the harness really did, when (wall clock), for the report."""

    faults: Counter[str] = field(default_factory=Counter)  # by kind
    actions: list[dict[str, Any]] = field(default_factory=list)
    outages: list[measure.Outage] = field(default_factory=list)
    operator: Counter[str] = field(default_factory=Counter)


@dataclass
class RunResult:
    options: RunOptions
    requests: list[MintRequest]
    carried: Carried
    checked: CheckResult
    histories: measure.HistoryFigures
    logs: measure.LogFigures
    recoveries: list[measure.Recovery]
    fault_hits: dict[str, int]
    wall_s: float
    settle_s: float


def build_requests(
    config: StackConfig, options: RunOptions, collection: str | None = None
) -> list[MintRequest]:
    """The run's mints, seeded: fresh wallets and users, a share of them on shared tier images,
    and every third one naming `collection` (when given)."""
    rng = random.Random(options.seed)
    folder = images_dir(config.state_dir)
    (folder / "tiers").mkdir(parents=True, exist_ok=True)
    for index, tier in enumerate(TIERS):
        (folder / "tiers" / f"{tier}.png").write_bytes(png(24, 24, seed=1000 + index))
    requests = []
    for n in range(options.mints):
        if rng.random() < SHARED_IMAGE_SHARE:
            tier = rng.choice(TIERS)
            image = f"tiers/{tier}.png"
        else:
            tier = "unique"
            image = f"chaos-{options.seed}-{n}.png"
            (folder / image).write_bytes(png(16, 16, seed=options.seed * 100_003 + n))
        owner = Keypair.from_seed(rng.randbytes(32)).pubkey()
        requests.append(
            MintRequest.model_validate(
                {
                    "mint_id": f"chaos-{options.seed}-{n}",
                    "user_id": f"chaos-user-{options.seed}-{n}",
                    "wallet": str(owner),
                    "name": f"Chaos #{n}",
                    "symbol": "CHAOS",
                    "description": f"chaos run {options.seed}, mint {n}",
                    "attributes": [{"trait_type": "tier", "value": tier}],
                    "image": {"path": image},
                    # A mint stuck for an operator the harness never reaches compensates alone.
                    "options": {"operator_timeout_s": 3600},
                    "collection": collection if n % COLLECTION_EVERY == 1 else None,
                }
            )
        )
    return requests


class ChaosRun:
    def __init__(self, config: StackConfig, options: RunOptions, progress: Progress = print):
        self.config = config
        self.options = options
        self.progress = progress
        self.stack = StackControl(config)
        self.workers = Workers(config, TASK_QUEUE, options.workers)
        self.rng = random.Random(options.seed ^ 0x5EED)
        self.carried = Carried()
        self.client: Client | None = None
        self._started: set[str] = set()
        self._handling: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wallet_drained = False
        self._operating = True
        self._t0 = 0.0

    # ------------------------------------------------------------------------- the run

    async def run(self) -> RunResult:
        began = time.monotonic()
        self.progress(f"devstack: starting in {self.config.state_dir}")
        await self.stack.up()
        collection = await self._create_collection()
        requests = build_requests(self.config, self.options, collection)
        await self.workers.start_all()
        self.client = await mintsaga.connect(self.config.temporal_address)
        schedule = build_schedule(self.options.seed, self.options.duration_s)
        self.progress(
            f"chaos: {len(requests)} mints over {self.options.duration_s:.0f} s, seed "
            f"{self.options.seed}, {len(schedule)} scheduled faults, "
            f"{self.options.workers} worker(s)"
        )
        self._t0 = time.monotonic()
        operator = asyncio.create_task(self._operate())
        ticker = asyncio.create_task(self._report_progress(len(requests)))
        try:
            await asyncio.gather(self._submit(requests), self._carry_out(schedule))
            settle_began = time.monotonic()
            await self._calm_down()
            await self._settle(len(requests))
            settle_s = time.monotonic() - settle_began
        finally:
            self._operating = False
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await operator
        self.progress("chaos: settled; reading histories, logs, chain, database and pins")
        return await self._measure(requests, began, settle_s)

    async def _create_collection(self) -> str:
        """A collection of the run's own (a fresh key: a run never finds another's members in
        it), created before any fault, with room for every mint: the checker then compares its
        group's size with its MINTED members."""
        key = f"chaos-{self.options.seed}-{secrets.token_hex(4)}"
        settings = Settings.from_env(self.config.worker_env())
        made = await create_collection(
            settings, key=key, name="Chaos collection", symbol="CHAOS", max_size=self.options.mints
        )
        self.progress(f"collection {key}: {made.collection.address}")
        return key

    async def close(self) -> None:
        await asyncio.to_thread(self.workers.stop_all)

    # ------------------------------------------------------------------------- the backend

    async def _submit(self, requests: list[MintRequest]) -> None:
        """Start the mints spread over most of the run, a few of them twice."""
        spread = self.options.duration_s * SUBMIT_SHARE
        for n, request in enumerate(requests):
            await self._until(spread * n / max(1, len(requests)))
            self._spawn(self._start(request))
            if self.rng.random() < DUPLICATE_START_SHARE:
                self._spawn(self._start(request))

    async def _start(self, request: MintRequest) -> None:
        assert self.client is not None
        while True:
            try:
                await mintsaga.start_mint(self.client, request, queue=TASK_QUEUE)
                self._started.add(request.mint_id)
                return
            except RPCError as exc:  # the server restarting: a backend retries the start
                self.carried.operator["start retried"] += 1
                self.progress(f"start {request.mint_id}: {exc.status.name}; retrying")
                await asyncio.sleep(1.0)

    # ------------------------------------------------------------------------- the faults

    async def _carry_out(self, schedule: list[Action]) -> None:
        pending = set()
        for action in schedule:
            await self._until(action.at_s)
            pending.add(asyncio.create_task(self._act(action)))
        await asyncio.gather(*pending)

    async def _act(self, action: Action) -> None:
        now = datetime.now(UTC)
        started = time.monotonic()
        self.carried.actions.append(
            {"at_s": round(time.monotonic() - self._t0, 2), "label": action.label}
        )
        try:
            # A restart says when the service was really gone (a fast shutdown takes a while).
            gone = await self._do(action)
        except Exception as exc:  # a fault that could not be injected is reported, not fatal
            self.carried.faults[f"{action.label} (not injected)"] += 1
            self.progress(f"fault {action.label}: could not inject: {exc!r}")
            return
        group = _outage_group(action)
        if group is not None:
            began, lasted = gone or (now, max(action.duration_s, time.monotonic() - started))
            self.carried.outages.append(measure.Outage(action.label, group, began, lasted))

    async def _do(self, action: Action) -> tuple[datetime, float] | None:
        admin = self.config.url("admin")
        if action.kind == "fault":
            async with httpx.AsyncClient(timeout=10) as http:
                (await http.post(admin + "/faults", json=action.spec)).raise_for_status()
            self.carried.faults[str(action.spec["kind"])] += 1
        elif action.kind == "warp":
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.post(admin + "/solana/warp", json={"slots": WARP_SLOTS})
                response.raise_for_status()
            self.carried.faults["blockhash expiry burst"] += 1
        elif action.kind == "postgres_reset":
            async with httpx.AsyncClient(timeout=10) as http:
                (await http.post(admin + "/postgres/reset-connections")).raise_for_status()
            self.carried.faults["postgres connection reset"] += 1
        elif action.kind == "postgres_restart":
            self.progress("fault: postgres stopping")
            gone = await self.stack.restart_postgres(action.duration_s)
            self.progress("fault: postgres started again")
            self.carried.faults["postgres restart"] += 1
            return gone
        elif action.kind == "wallet_underfunded":
            moved = await wallet.drain(self.config)
            self._wallet_drained = True
            self.progress(f"fault: system wallet drained ({moved / 1e9:.2f} SOL moved out)")
            self.carried.faults["system wallet underfunded"] += 1
            await asyncio.sleep(action.duration_s)
            await wallet.refill(self.config)
            self._wallet_drained = False
            self.progress("fault: system wallet refilled")
        elif action.kind == "worker_sigkill":
            slot = self.rng.randrange(self.options.workers)
            self.workers.sigkill(slot)
            self.progress(f"fault: worker {slot} SIGKILLed")
            self.carried.faults["worker SIGKILL"] += 1
            await asyncio.sleep(action.duration_s)
            await self.workers.start(slot)
            self.progress(f"fault: worker {slot} started again")
        elif action.kind == "temporal_restart":
            self.progress("fault: temporal restarting")
            gone = await self.stack.restart_temporal()
            self.progress(f"fault: temporal back after {gone[1]:.1f} s")
            self.carried.faults["temporal restart"] += 1
            return gone
        elif action.kind == "pinata_plan":
            # Put back by its numbers: the plan before may be custom limits (POST /pinata/limits).
            await self._for_a_while(
                action,
                ("PUT", "/pinata/plan", {"plan": action.spec["plan"]}),
                ("GET", "/pinata/plan"),
                lambda before: ("POST", "/pinata/limits", _pinata_limits(before)),
            )
        elif action.kind == "gateway_behaviour":
            path = f"/gateways/{action.spec['gateway']}"
            await self._for_a_while(
                action,
                ("PATCH", path, action.spec["behaviour"]),
                ("GET", path),
                lambda before: ("PUT", path, before),
            )
        else:
            raise ValueError(f"unknown action {action.kind}")
        return None

    async def _for_a_while(
        self,
        action: Action,
        change: tuple[str, str, dict[str, Any]],
        read: tuple[str, str],
        restore: Callable[[dict[str, Any]], tuple[str, str, dict[str, Any]]],
    ) -> None:
        """A devstack profile changed (admin API) for the action's duration, then put back as
        `read` answered before the change."""
        admin = self.config.url("admin")
        async with httpx.AsyncClient(timeout=10) as http:
            before = (await http.request(read[0], admin + read[1])).raise_for_status().json()
            method, path, body = change
            (await http.request(method, admin + path, json=body)).raise_for_status()
            self.progress(f"fault: {action.label}")
            self.carried.faults[action.label] += 1
            try:
                await asyncio.sleep(action.duration_s)
            finally:
                method, path, body = restore(before)
                (await http.request(method, admin + path, json=body)).raise_for_status()
                self.progress(f"fault: {action.label} over")

    async def _calm_down(self) -> None:
        """The schedule is over: no fault left, the wallet funded, every worker running."""
        async with httpx.AsyncClient(timeout=10) as http:
            (await http.delete(self.config.url("admin") + "/faults")).raise_for_status()
        await wallet.refill(self.config)
        self._wallet_drained = False
        await self.workers.ensure_running()

    # ------------------------------------------------------------------------- the operator

    async def _operate(self) -> None:
        """Every few seconds, find the mints waiting for a person and decide, as one would."""
        assert self.client is not None
        while self._operating:
            try:
                stuck = await mintsaga.list_mints(self.client, stuck=True)
            except RPCError:
                stuck = []
            for row in stuck:
                mint_id = row["mint_id"]
                if row["running"] and mint_id not in self._handling:
                    self._handling.add(mint_id)
                    self._spawn(self._decide(mint_id))
            await asyncio.sleep(OPERATOR_POLL_S)

    async def _decide(self, mint_id: str) -> None:
        assert self.client is not None
        try:
            await asyncio.sleep(OPERATOR_DELAY_S)
            try:
                view = await mintsaga.get_status(self.client, mint_id)
            except mintsaga.StarterError:
                return
            if not view.awaiting_operator:
                return
            waiting_for_funds = (
                view.last_error is not None and view.last_error.type == "SystemWalletUnderfunded"
            )
            if waiting_for_funds and self._wallet_drained:
                return  # a person funds the wallet first; the next poll comes back here
            action = "retry"
            if not view.past_pivot and self.rng.random() < COMPENSATE_SHARE:
                action = "compensate"
            done = await self._starter_cli(action, mint_id)
            self.carried.operator[action if done else f"{action} refused"] += 1
        finally:
            self._handling.discard(mint_id)

    async def _starter_cli(self, action: str, mint_id: str) -> bool:
        """`python starter.py retry|compensate MINT_ID`, as an operator types it."""
        env = {
            **os.environ,
            "TEMPORAL_ADDRESS": self.config.temporal_address,
            "TEMPORAL_TASK_QUEUE": TASK_QUEUE,
            "DATABASE_URL": self.config.database_url,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "starter.py",
            action,
            mint_id,
            cwd=PROJECT_ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            self.progress(f"operator: {action} {mint_id} refused: {err.decode().strip()[-200:]}")
        return proc.returncode == 0

    # ------------------------------------------------------------------------- waiting

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in the background, holding a reference until it is done."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _until(self, at_s: float) -> None:
        delay = self._t0 + at_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _count(self, status: MintStatus | None = None, running: bool = False) -> int:
        assert self.client is not None
        query = f'WorkflowType="MintSaga" AND TaskQueue="{TASK_QUEUE}"'
        if status is not None:
            query += f' AND MintStatus="{status.value}"'
        if running:
            query += ' AND ExecutionStatus="Running"'
        return (await self.client.count_workflows(query)).count

    async def _counts(self) -> dict[str, int]:
        return {s.value: await self._count(s) for s in MintStatus}

    async def _report_progress(self, total: int) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            with contextlib.suppress(RPCError):
                counts = await self._counts()
                shown = ", ".join(f"{k.lower()} {v}" for k, v in counts.items() if v)
                elapsed = time.monotonic() - self._t0
                self.progress(
                    f"t={elapsed:5.0f}s started {len(self._started)}/{total}: {shown or '-'}"
                )

    async def _settle(self, total: int) -> None:
        """Wait until every mint started and none is running (or the settle time is up)."""
        deadline = time.monotonic() + self.options.settle_timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(RPCError):
                awaiting = await self._count(MintStatus.AWAITING_OPERATOR, running=True)
                running = await self._count(running=True)
                if len(self._started) == total and running == 0:
                    return
                if len(self._started) == total and running == awaiting and awaiting > 0:
                    self.progress(f"settling: {awaiting} mint(s) wait for the operator")
            await asyncio.sleep(1.0)
        self.progress(f"settling: gave up after {self.options.settle_timeout_s:.0f} s")

    # ------------------------------------------------------------------------- the figures

    async def _measure(
        self, requests: list[MintRequest], began: float, settle_s: float
    ) -> RunResult:
        assert self.client is not None
        histories = await measure.fetch_histories(self.client, [r.workflow_id for r in requests])
        figures = measure.history_figures(histories)
        async with httpx.AsyncClient(timeout=10) as http:
            stats = (await http.get(self.config.url("admin") + "/stats")).json()
        checked = await check(self.config, self.client, requests, pins="all")
        return RunResult(
            options=self.options,
            requests=requests,
            carried=self.carried,
            checked=checked,
            histories=figures,
            logs=measure.log_figures(self.workers.logs),
            recoveries=measure.recoveries(self.carried.outages, figures.completions),
            fault_hits=dict(stats.get("faults_fired", {})),
            wall_s=time.monotonic() - began,
            settle_s=settle_s,
        )


def _pinata_limits(plan: dict[str, Any]) -> dict[str, Any]:
    """POST /pinata/limits's body for the limits GET /pinata/plan answered."""
    return {k: plan[k] for k in ("requests_per_minute", "data_requests_per_minute")}


def _outage_group(action: Action) -> str | None:
    """Which recovery this action's outage is measured by (None: not an outage)."""
    if not action.outage:
        return None
    if action.kind == "fault":
        target = str(action.spec["target"])
        if target in SOLANA_ENDPOINTS:
            return "solana endpoint"
        if target.startswith("gateway"):
            return "gateway"
        return "database" if target == "postgres" else target
    return {
        "postgres_restart": "database",
        "temporal_restart": "temporal",
        "worker_sigkill": "worker",
    }[action.kind]
