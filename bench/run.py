"""One benchmark run: the engine baseline and the saga, on one devstack, one after the other.

`BenchRun.run`, top to bottom (issue 8's sections):
1. a devstack of its own, one mint worker (`worker.py`) and one baseline worker
   (`bench.shape_worker`), Pinata's limits off (the emulator's and the task queue's);
2. latency: baseline workflows, then mints, one at a time;
3. throughput: a batch of baseline workflows started at once, then a batch of mints;
4. the same batch with a share of every external service's calls failing (injected);
5. as many mints started one by one at 80 % of that rate, the primary RPC endpoint taken down
   40 % of the way in;
6. optionally more mints in waves (the memory figure); the worker's RSS after each section;
7. histories of the one-at-a-time runs: where a mint's time goes.

Everything is measured from the driver (start to result) or from Temporal's histories, and
every ratio is taken against the baseline (or the fault-free batch) of the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.service import RPCError

import mintsaga
from bench.figures import Flight, HistoryProfile, batch_rate, profile_history
from chaos.processes import StackControl, Workers
from devstack.config import GATEWAYS, SOLANA_ENDPOINTS, StackConfig
from devstack.requests import mint_request
from mintsaga.workflows.models import MintRequest, MintResult, MintStatus
from mintsaga.workflows.policies import STEPS

MINT_QUEUE = "bench"
SHAPE_QUEUE = "bench-shape"
# Every external service the saga calls; Postgres is reached through the devstack's TCP proxy.
EXTERNAL_SERVICES = (*SOLANA_ENDPOINTS, "pinata", "kubo", *GATEWAYS, "postgres")
PRIMARY_RPC = SOLANA_ENDPOINTS[0]
SOLANA_STEPS = frozenset(name for name, step in STEPS.items() if step.service == "solana")
# The engine's ceiling, not a Pinata plan's: no task-queue rate (the emulator's limit is off too).
WORKER_ENV = {"PINATA_ACTIVITIES_PER_SECOND": "0"}
# The failover section's mints arrive at this share of the saturated rate, so they flow.
STREAM_SHARE = 0.8
WARM_UP = 3  # workflows of each kind run first, outside every figure (imports, first connects)
HISTORY_FETCHES = 8  # at once
SETTLE_S = 600.0  # a faulted batch's stragglers, after the operator's retry
OPERATOR_EVERY_S = 3.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    batch: int = 200
    latency_samples: int = 40
    fault_rate: float = 0.2
    # The faulted batch is given this many times the fault-free batch's time to complete.
    fault_deadline_factor: float = 2.5
    failover_at_share: float = 0.4  # of the failover stream's time
    memory_mints: int = 0  # mints in all (the sections' and more in waves) for the RSS figure
    memory_wave: int = 200  # the batch's size: the same working set, many times over


@dataclass
class Batch:
    flights: list[Flight]
    results: dict[str, MintResult]  # mints only
    began_wall: datetime
    wall_s: float
    cpu_s: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds it used


class BenchRun:
    def __init__(self, config: StackConfig, options: BenchOptions, progress: Progress = print):
        self.config = config
        self.options = options
        self.progress = progress
        self.stack = StackControl(config)
        self.mint_worker = Workers(config, MINT_QUEUE, 1, env=WORKER_ENV, name="bench-worker")
        self.shape_worker = Workers(
            config,
            SHAPE_QUEUE,
            1,
            env=WORKER_ENV,
            name="bench-shape-worker",
            command=("-m", "bench.shape_worker"),
        )
        self.client: Client | None = None
        self.mints_run = 0
        self.raw: dict[str, Any] = {}
        self.rss: list[dict[str, Any]] = []  # the mint worker's RSS after each section

    def _note_rss(self, after: str) -> None:
        self.rss.append(
            {
                "after": after,
                "mints": self.mints_run,
                "rss_mb": round(worker_rss_mb(self.mint_worker.pid(0)), 1),
            }
        )

    @property
    def _client(self) -> Client:
        assert self.client is not None
        return self.client

    # ------------------------------------------------------------------ the run

    async def run(self) -> dict[str, Any]:
        began = time.monotonic()
        self.progress(f"devstack: starting in {self.config.state_dir}")
        await self.stack.up()
        await self._admin("post", "/pinata/limits", {"requests_per_minute": 0})
        await asyncio.gather(self.mint_worker.start_all(), self.shape_worker.start_all())
        self.client = await mintsaga.connect(self.config.temporal_address)
        self._note_rss("started")
        await self._warm_up()

        opts = self.options
        self.progress(f"latency: {opts.latency_samples} baseline workflows, one at a time")
        shape_latency, _ = await self._one_at_a_time(self._start_shape)
        self.progress(f"latency: {opts.latency_samples} mints, one at a time")
        before = await self._solana_requests()
        mint_latency, mint_stages = await self._one_at_a_time(self._start_mint)
        lone_requests = await self._solana_requests() - before
        self._note_rss("one at a time")

        self.progress(f"throughput: {opts.batch} baseline workflows at once")
        shape_batch = await self._batch(self._start_shape, worker=self.shape_worker)
        self.progress(f"throughput: {opts.batch} mints at once")
        before = await self._solana_requests()
        mint_batch = await self._batch(self._start_mint)
        batch_requests = await self._solana_requests() - before
        self._note_rss("batch")

        self.progress(
            f"faults: {opts.batch} mints, {opts.fault_rate:.0%} of the calls to "
            f"{', '.join(EXTERNAL_SERVICES)} failing"
        )
        faulted, completed_in_time = await self._faulted_batch(mint_batch.wall_s)
        self._note_rss("faulted batch")

        stream_rate = STREAM_SHARE * batch_rate(mint_batch.flights)
        self.progress(
            f"failover: {opts.batch} mints at {stream_rate:.2f} a second, {PRIMARY_RPC} taken "
            "down on the way"
        )
        failover, fault_at, fault_wall = await self._failover_stream(stream_rate)
        self._note_rss("failover")

        waves = await self._memory_waves()

        self.progress("profile: reading the histories of the one-at-a-time runs")
        shape_profiles = await self._profiles(shape_latency)
        mint_profiles = await self._profiles(mint_latency)

        self.raw = {
            "shape_latency": shape_latency,
            "mint_latency": mint_latency,
            "mint_stage_seconds": mint_stages,
            "shape_batch": shape_batch,
            "mint_batch": mint_batch,
            "faulted_batch": faulted,
            "faulted_completed_in_time": completed_in_time,
            # Requests the Solana endpoints received, a mint (the devstack counts every one).
            "rpc_requests_per_mint": {
                "one_at_a_time": lone_requests / len(mint_latency),
                "batch": batch_requests / len(mint_batch.flights),
            },
            "failover_batch": failover,
            "failover_at": fault_at,
            "failover_wall": fault_wall,
            "failover_rate": stream_rate,
            "memory_waves": waves,
            "rss": self.rss,
            "mints_run": self.mints_run,
            "shape_profiles": shape_profiles,
            "mint_profiles": mint_profiles,
            "failover_profiles": await self._profiles(failover.flights),
            "wall_s": time.monotonic() - began,
        }
        return self.raw

    async def close(self) -> None:
        await asyncio.to_thread(self.mint_worker.stop_all)
        await asyncio.to_thread(self.shape_worker.stop_all)

    # ------------------------------------------------------------------ starting workflows

    def _request(self) -> MintRequest:
        """A mint of its own: fresh wallet and user, an image no other mint uses."""
        return mint_request(self.config, symbol="BENCH", description="a benchmark mint")

    async def _start_mint(self) -> WorkflowHandle[Any, Any]:
        self.mints_run += 1
        return await mintsaga.start_mint(self._client, self._request(), queue=MINT_QUEUE)

    async def _start_shape(self) -> WorkflowHandle[Any, Any]:
        # The same input a mint gets, so payload sizes match too.
        request = self._request().model_dump(mode="json")
        return await self._client.start_workflow(
            "MintShape", request, id=f"shape-{uuid.uuid4().hex}", task_queue=SHAPE_QUEUE
        )

    async def _warm_up(self) -> None:
        for start in (self._start_shape, self._start_mint):
            for _ in range(WARM_UP):
                await (await start()).result()

    # ------------------------------------------------------------------ the sections

    async def _one_at_a_time(
        self, start: Callable[[], Awaitable[WorkflowHandle[Any, Any]]]
    ) -> tuple[list[Flight], list[dict[str, float]]]:
        """Workflows one after the other, each from its start call to its result; and for
        mints, the seconds each spent per stage (MintResult.stage_seconds)."""
        flights, results = [], {}
        for _ in range(self.options.latency_samples):
            began = time.monotonic()
            handle = await start()
            flight = Flight(handle.id, began)
            await self._land(handle, flight, results)
            flights.append(flight)
        return flights, [result.stage_seconds for result in results.values()]

    async def _land(
        self, handle: WorkflowHandle[Any, Any], flight: Flight, results: dict[str, MintResult]
    ) -> None:
        result = await handle.result()
        flight.closed = time.monotonic()
        if isinstance(result, MintResult):
            results[handle.id] = result
            flight.status = result.status.value
            flight.retries = sum(result.retries.values())
        else:
            flight.status = str(result.get("status"))

    async def _launch(
        self, start: Callable[[], Awaitable[WorkflowHandle[Any, Any]]], count: int
    ) -> tuple[list[Flight], list[asyncio.Task[None]], dict[str, MintResult]]:
        """Start `count` workflows at once; their landings run as tasks."""
        began = time.monotonic()
        handles = await asyncio.gather(*(start() for _ in range(count)))
        flights = [Flight(handle.id, began) for handle in handles]
        results: dict[str, MintResult] = {}
        tasks = [
            asyncio.create_task(self._land(handle, flight, results))
            for handle, flight in zip(handles, flights, strict=True)
        ]
        return flights, tasks, results

    async def _batch(
        self,
        start: Callable[[], Awaitable[WorkflowHandle[Any, Any]]],
        count: int | None = None,
        *,
        worker: Workers | None = None,
    ) -> Batch:
        worker = worker or self.mint_worker
        cpu_before = self._cpu(worker)
        began_wall, began = datetime.now(UTC), time.monotonic()
        flights, tasks, results = await self._launch(start, count or self.options.batch)
        await self._watch(tasks, flights)
        wall_s = time.monotonic() - began
        cpu_s = {name: used - cpu_before[name] for name, used in self._cpu(worker).items()}
        return Batch(flights, results, began_wall, wall_s, cpu_s)

    def _cpu(self, worker: Workers) -> dict[str, float]:
        """CPU seconds used so far by the worker serving a batch and by the Temporal server;
        and, to show where the rest of the machine goes, by the emulators, Postgres (its
        server and every backend) and this driver (which starts and awaits the workflows)."""
        supervisor = self.stack.supervisor
        temporal, emulators = supervisor.pid("temporal"), supervisor.pid("emulators")
        postgres = supervisor.postgres.pid() if supervisor.postgres is not None else None
        return {
            "worker": process_cpu_s(worker.pid(0)),
            "temporal": process_cpu_s(temporal) if temporal else 0.0,
            "emulators": process_cpu_s(emulators) if emulators else 0.0,
            "postgres": process_tree_cpu_s(postgres) if postgres else 0.0,
            "driver": process_cpu_s(os.getpid()),
        }

    async def _watch(self, tasks: list[asyncio.Task[None]], flights: list[Flight]) -> None:
        """Wait for every landing, saying how many closed every ten seconds."""
        pending = set(tasks)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=10.0)
            closed = sum(1 for f in flights if f.closed is not None)
            self.progress(f"  {closed}/{len(flights)} closed")
        for task in tasks:
            task.result()  # an error reaching a result is the benchmark's failure

    async def _faulted_batch(self, fault_free_s: float) -> tuple[Batch, int]:
        """The batch with faults on; a mint still open at the deadline counts as not completed,
        then the faults go, an operator retries it, and it is awaited (untimed)."""
        opts = self.options
        ids = []
        for service in EXTERNAL_SERVICES:
            ids.append(await self._admin("post", "/faults", fault_spec(service, opts.fault_rate)))
        began_wall, began = datetime.now(UTC), time.monotonic()
        try:
            flights, tasks, results = await self._launch(self._start_mint, opts.batch)
            deadline = max(30.0, fault_free_s * opts.fault_deadline_factor)
            pending = set(tasks)
            while pending and time.monotonic() - began < deadline:
                _, pending = await asyncio.wait(pending, timeout=10.0)
                closed = sum(1 for f in flights if f.closed is not None)
                self.progress(f"  {closed}/{len(flights)} closed")
        finally:
            await self._admin("delete", "/faults")
        wall_s = time.monotonic() - began
        completed = sum(1 for f in flights if f.closed is not None and f.status == "MINTED")
        if pending:
            self.progress(f"  {len(pending)} still open at {deadline:.0f} s: an operator retries")
            await asyncio.wait_for(self._operate(flights, pending), SETTLE_S)
        return Batch(flights, results, began_wall, wall_s), completed

    async def _operate(self, flights: list[Flight], pending: set[asyncio.Task[None]]) -> None:
        """Signal `retry` to every open mint (a mint not waiting ignores it) until all closed,
        so the next section starts on a quiet stack."""
        while pending:
            for flight in flights:
                if flight.closed is None:
                    handle = self._client.get_workflow_handle(flight.workflow_id)
                    with contextlib.suppress(RPCError):  # closed meanwhile
                        await handle.signal("retry")
            _, pending = await asyncio.wait(pending, timeout=OPERATOR_EVERY_S)

    async def _failover_stream(self, rate: float) -> tuple[Batch, float, datetime]:
        """`batch` mints started one by one at `rate` a second (below saturation, so they flow
        at that rate), the primary RPC endpoint taken down `failover_at_share` of the way in
        and kept down to the end: the mints before the fault are the fault-free reference."""
        opts = self.options
        count = opts.batch
        fault_after = count / rate * opts.failover_at_share
        began_wall, began = datetime.now(UTC), time.monotonic()
        flights: list[Flight] = []
        tasks: list[asyncio.Task[None]] = []
        results: dict[str, MintResult] = {}
        fault_at, fault_wall = 0.0, began_wall
        try:
            for n in range(count):
                await asyncio.sleep(max(0.0, began + n / rate - time.monotonic()))
                if not fault_at and time.monotonic() - began >= fault_after:
                    fault_at, fault_wall = time.monotonic(), datetime.now(UTC)
                    await self._admin("post", "/faults", {"target": PRIMARY_RPC, "kind": "down"})
                    self.progress(f"  {PRIMARY_RPC} down at {fault_at - began:.1f} s")
                started = time.monotonic()
                handle = await self._start_mint()
                flight = Flight(handle.id, started)
                flights.append(flight)
                tasks.append(asyncio.create_task(self._land(handle, flight, results)))
            await self._watch(tasks, flights)
        finally:
            await self._admin("delete", "/faults")
        return Batch(flights, results, began_wall, time.monotonic() - began), fault_at, fault_wall

    async def _memory_waves(self) -> list[Batch]:
        waves = []
        while self.mints_run < self.options.memory_mints:
            count = min(self.options.memory_wave, self.options.memory_mints - self.mints_run)
            self.progress(
                f"memory: a wave of {count} mints at once "
                f"({self.mints_run}/{self.options.memory_mints} run so far)"
            )
            waves.append(await self._batch(self._start_mint, count))
            self._note_rss(f"wave {len(waves)}")
        return waves

    # ------------------------------------------------------------------ reading back

    async def _profiles(self, flights: list[Flight]) -> list[HistoryProfile]:
        histories = await self._histories([f.workflow_id for f in flights])
        return [profile_history(history) for history in histories]

    async def _histories(self, workflow_ids: list[str]) -> list[WorkflowHistory]:
        gate = asyncio.Semaphore(HISTORY_FETCHES)

        async def fetch(workflow_id: str) -> WorkflowHistory:
            async with gate:
                return await self._client.get_workflow_handle(workflow_id).fetch_history()

        return await asyncio.gather(*(fetch(w) for w in workflow_ids))

    async def _solana_requests(self) -> int:
        """Every request the Solana endpoints received so far (the devstack's own count)."""
        stats = await self._admin("get", "/stats")
        per_target = stats["requests_per_minute"]
        return sum(sum(per_target.get(name, {}).values()) for name in SOLANA_ENDPOINTS)

    async def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.request(method, self.config.url("admin") + path, json=body)
            response.raise_for_status()
            return response.json() if response.content else None


def fault_spec(service: str, rate: float) -> dict[str, Any]:
    """`rate` of the calls to `service` answered with its own error. For Postgres a call is a
    statement (the proxy resets the connection as it runs): connecting is not a call."""
    spec: dict[str, Any] = {"target": service, "kind": "error", "rate": rate}
    if service == "postgres":
        spec["match"] = "statement"
    return spec


def _stat_fields(stat: Path) -> list[str]:
    """The fields of a /proc/<pid>/stat file after the command name (Linux): index 1 is the
    parent pid, 11 and 12 user and system clock ticks, 13 and 14 those of reaped children."""
    return stat.read_text().rsplit(")", 1)[1].split()


def process_cpu_s(pid: int) -> float:
    """User and system CPU seconds a process used so far, from /proc (Linux)."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree_cpu_s(pid: int) -> float:
    """A process's CPU seconds with its children's: the live ones' and the reaped ones' (which
    /proc adds to the parent), e.g. Postgres and its backends."""
    ticks = sum(int(f) for f in _stat_fields(Path(f"/proc/{pid}/stat"))[11:15])
    for child in Path("/proc").glob("[0-9]*"):
        try:
            fields = _stat_fields(child / "stat")
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def worker_rss_mb(pid: int) -> float:
    """A process's resident set size, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def solana_step_seconds(
    profiles: list[HistoryProfile], *, since: datetime | None = None, until: datetime | None = None
) -> list[float]:
    """How long each Solana step ran (activity start to close), optionally only those started
    at or after `since`, or before `until`."""
    return [
        run.ran_s
        for profile in profiles
        for run in profile.activities
        if run.name in SOLANA_STEPS
        and run.started is not None
        and run.closed is not None
        and (since is None or run.started.replace(tzinfo=UTC) >= since)
        and (until is None or run.started.replace(tzinfo=UTC) < until)
    ]


def statuses(batch: Batch) -> dict[str, int]:
    counts: dict[str, int] = {}
    for flight in batch.flights:
        key = flight.status or "open"
        counts[key] = counts.get(key, 0) + 1
    return counts


MINTED = MintStatus.MINTED.value
