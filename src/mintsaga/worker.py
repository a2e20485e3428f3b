"""The MintSaga worker: one process polling the saga's task queue and the Pinata queue beside
it, its clients built once and shared.

    eval "$(python -m devstack env)"; mintsaga-worker   # or: python worker.py

Configuration comes from the environment (`mintsaga.settings` names every variable;
docs/configuration.md lists them); a missing
or malformed one stops the worker with a message naming it. SIGTERM or SIGINT drains: polling
stops, running activities get `WORKER_DRAIN_S` to finish, then the clients close.

Two `Worker`s share the process: one on `TEMPORAL_TASK_QUEUE` (the workflows, and every activity,
so mints started before the Pinata queue existed still find theirs), one on its Pinata queue
(`workflows.policies.provider_task_queue`) with only the activities that call Pinata and
Temporal's task-queue-wide rate limit, `PINATA_ACTIVITIES_PER_SECOND`, held for the whole fleet.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from typing import Any, cast

import httpx
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import (
    PollerBehavior,
    PollerBehaviorAutoscaling,
    PollerBehaviorSimpleMaximum,
    Worker,
)

from mintsaga import temporal_client
from mintsaga.activities.call_hooks import install_call_hooks
from mintsaga.activities.database import DatabaseActivities
from mintsaga.activities.health import HealthActivities
from mintsaga.activities.ipfs import METADATA_MAX_BYTES, IpfsActivities
from mintsaga.activities.pin_repair import PinRepairActivities
from mintsaga.activities.runtime import RuntimeActivities
from mintsaga.activities.solana import SolanaActivities
from mintsaga.activities.verification import VerificationActivities
from mintsaga.api.health import DEFAULT_INTERVAL as HEALTH_DEFAULT_INTERVAL
from mintsaga.api.health import interval_from_env as health_interval_from_env
from mintsaga.api.health import maintain_health_schedule
from mintsaga.api.health import upload_interval_from_env as health_upload_interval_from_env
from mintsaga.api.pin_repair import DEFAULT_INTERVAL as DEFAULT_REPAIR_EVERY
from mintsaga.api.pin_repair import batch_from_env as pin_repair_batch_from_env
from mintsaga.api.pin_repair import interval_from_env as pin_repair_interval_from_env
from mintsaga.api.pin_repair import maintain_pin_repair_schedule
from mintsaga.codec import data_converter_from_env
from mintsaga.db.fleet_gauges import FleetGauges
from mintsaga.db.mint_store import MintStore
from mintsaga.db.runtime_config import RuntimeConfigStore
from mintsaga.db.runtime_settings import RuntimeSettings, describe_changes, solana_endpoints_for
from mintsaga.db.runtime_watcher import RuntimeConfigWatcher
from mintsaga.errors import ErrorKind, ServiceError, redact_url
from mintsaga.ipfs.gateways import GatewayReader
from mintsaga.ipfs.images import ByteBudget, ImageLoader
from mintsaga.ipfs.kubo import KuboClient
from mintsaga.ipfs.kubo_import import check_kubo_import
from mintsaga.ipfs.metadata import ContentLinks, UriStyle
from mintsaga.ipfs.pinata import PinataClient
from mintsaga.ipfs.pinata_data import shared_budget
from mintsaga.ipfs.provider_cids import ProviderCids
from mintsaga.ipfs.uploads import IpfsUploader
from mintsaga.observability.logging import configure_logging
from mintsaga.observability.metrics import (
    record_breaker_transition,
    serve_metrics,
    serving,
    set_task_priorities_supported,
    set_task_queue_capacity,
    watch_pool,
)
from mintsaga.observability.readiness import READINESS, pool_answers, worker_polls
from mintsaga.observability.sampler import INTERVAL_S as SAMPLE_INTERVAL_S
from mintsaga.observability.sampler import every, sample_wallet, sampling_visibility
from mintsaga.observability.temporal_features import task_priorities
from mintsaga.observability.temporal_metrics import temporal_runtime
from mintsaga.observability.tracing import configure_tracing, interceptors, shutdown_tracing
from mintsaga.process_exit import exit_now
from mintsaga.resilience.breaker import BreakerRegistry, Override
from mintsaga.setting_readers import SettingsError
from mintsaga.settings import GROUP_AUTHORITY_SETTING, Settings, priority_fee_blind_warning
from mintsaga.solana.mint_keys import KeyMaterialError, load_keypair_file, parse_seed
from mintsaga.solana.minter import SolanaMinter
from mintsaga.solana.rpc import SolanaRpc
from mintsaga.webhooks.dispatcher import dispatching
from mintsaga.worker_tuning import Pollers, WorkerTuning
from mintsaga.workflows.health import HealthCheck, HealthPinCleanup
from mintsaga.workflows.mint_saga import MintSaga
from mintsaga.workflows.pin_repair import PIN_REPAIR_PINATA_STEPS, PinRepair
from mintsaga.workflows.policies import PINATA, PINATA_STEPS, provider_task_queue

log = logging.getLogger("mintsaga.worker")
HTTP_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# Every workflow a worker runs: the saga, the health probes and the pin repair (schedules).
WORKFLOWS = [MintSaga, HealthCheck, HealthPinCleanup, PinRepair]


@contextlib.asynccontextmanager
async def mint_activities(
    settings: Settings, *, breakers: BreakerRegistry | None = None
) -> AsyncIterator[list[Callable[..., Any]]]:
    """Every activity of the saga, wired to clients built from `settings`; closes them after.

    One circuit breaker per endpoint, shared by every activity of this worker (`breakers`).
    """
    install_call_hooks()
    payer = load_keypair_file(settings.mint_authority_keypair)
    if settings.mint_update_authority == str(payer.pubkey()):
        raise SettingsError(
            "MINT_UPDATE_AUTHORITY is the system wallet's own key (MINT_AUTHORITY_KEYPAIR): the"
            " NFTs' update authority must be a key kept off the workers, or none"
        )
    group_authority = (
        load_keypair_file(settings.mint_group_authority_keypair, setting=GROUP_AUTHORITY_SETTING)
        if settings.mint_group_authority_keypair is not None
        else None
    )
    if group_authority is not None and group_authority.pubkey() == payer.pubkey():
        raise SettingsError(
            f"{GROUP_AUTHORITY_SETTING} is the system wallet's own keypair"
            " (MINT_AUTHORITY_KEYPAIR): give the collections' group authority a key of its own"
        )
    if group_authority is not None and str(group_authority.pubkey()) == (
        settings.mint_update_authority
    ):
        raise SettingsError(
            f"{GROUP_AUTHORITY_SETTING} is MINT_UPDATE_AUTHORITY's keypair: that key must stay"
            " off the workers; give the group authority a key of its own"
        )
    seed = parse_seed(settings.mint_key_seed.get_secret_value())
    breakers = breakers or BreakerRegistry(on_transition=record_breaker_transition)
    async with (
        httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False) as http,
        SolanaRpc(
            settings.solana_rpc_endpoints,
            timeout=settings.solana_timeout_s,
            breakers=breakers,
            requests_per_s=settings.solana_requests_per_s,
            sends_per_s=settings.solana_sends_per_s,
            emergency=settings.solana_emergency_endpoints,
            max_slot_lag=settings.solana_max_slot_lag,
        ) as rpc,
    ):
        store = (
            await MintStore.connect(
                settings.database_url.get_secret_value(),
                min_size=settings.db_pool_min,
                max_size=settings.db_pool_max,
            )
        ).guard(breakers)
        watch_pool(store.pool)
        samplers = contextlib.AsyncExitStack()  # while /metrics is served (observability)
        samplers.callback(READINESS.add_check("postgres", lambda: pool_answers(store.pool)))
        runtime = RuntimeConfigStore(store.pool, dsn=settings.database_url.get_secret_value())
        watcher = RuntimeConfigWatcher(
            runtime,
            worker_id=f"{socket.gethostname()}:{os.getpid()}",
            on_change=lambda old, new: apply_runtime(old, new, settings, rpc, breakers),
            report=lambda: breaker_report(breakers, rpc),
        )
        watcher.start()
        # Start with the operator's settings; with the database down, go on with the env's.
        await watcher.wait_loaded(5.0)
        try:
            # One /data/* budget for the process, the health probes' client's too.
            shared_budget(settings.pinata_api_url).set_limit(
                settings.pinata_data_requests_per_minute
            )
            pinata = PinataClient(
                settings.pinata_api_url,
                settings.pinata_jwt.get_secret_value(),
                http,
                breakers=breakers,
            )
            kubo = KuboClient(settings.kubo_api_url, http, breakers=breakers)
            gateways = GatewayReader(
                list(settings.ipfs_gateways),
                http,
                breakers=breakers,
                dedicated=settings.ipfs_dedicated_gateway,
            )
            minter = SolanaMinter(
                rpc,
                payer,
                seed,
                priority_fee_cap=settings.solana_priority_fee_cap,
                priority_fee_percentile=settings.solana_priority_fee_percentile,
                operator_fee_cap=settings.solana_operator_priority_fee_cap,
                priority_fee_estimator=settings.solana_priority_fee_estimator,
                priority_fee_accounts=settings.solana_priority_fee_accounts,
                update_authority=settings.mint_update_authority,
                group_authority=group_authority,
            )
            images = ImageLoader(
                settings.mint_image_dir,
                http,
                max_bytes=settings.image_max_bytes,
                allow_private_hosts=settings.image_allow_private_urls,
                budget=ByteBudget(settings.image_memory_budget_bytes),
            )
            ipfs = IpfsActivities(
                pinata=pinata,
                kubo=kubo,
                uploader=IpfsUploader(
                    pinata,
                    kubo,
                    provider_cids=ProviderCids(
                        http, kubo_api_url=settings.kubo_api_url, gateways=gateways
                    ),
                ),
                gateways=gateways,
                images=images,
                store=store,
                links=ContentLinks(
                    cast(UriStyle, settings.metadata_uri_style), settings.metadata_gateway_url
                ),
            )
            database = DatabaseActivities(
                store=store,
                minter=minter,
                admission_limit=settings.admission_limit,
                maintenance=lambda: watcher.current.maintenance,
            )
            solana = SolanaActivities(
                minter=minter,
                store=store,
                spend_limit_lamports=settings.solana_spend_limit_lamports_per_hour,
                commitment=settings.solana_commitment,
            )
            verification = VerificationActivities(
                minter=minter,
                gateways=gateways,
                store=store,
                commitment=settings.solana_commitment,
                image_max_bytes=settings.image_max_bytes,
            )
            runtime_steps = RuntimeActivities(watcher=watcher)
            # Kubo-only content pinned to Pinata (activities/pin_repair.py), on its schedule.
            repair_every = pin_repair_interval_from_env()
            pin_repair = PinRepairActivities(
                pinata=PinataClient(
                    settings.pinata_api_url, settings.pinata_jwt.get_secret_value(), http
                ),
                kubo=KuboClient(settings.kubo_api_url, http),
                pinata_breaker=pinata.breaker,
                store=store,
                max_bytes=max(settings.image_max_bytes, METADATA_MAX_BYTES),
                batch=pin_repair_batch_from_env(),
                gauge_stale_s=2.5 * (repair_every or DEFAULT_REPAIR_EVERY).total_seconds(),
            )
            # Health probes: their own clients, around the breakers (activities/health.py).
            health = HealthActivities.build(
                settings,
                http=http,
                pool=store.pool,
                check_every=health_interval_from_env() or HEALTH_DEFAULT_INTERVAL,
                upload_every=health_upload_interval_from_env(),
                solana_urls=lambda: [
                    *settings.solana_rpc_endpoints,
                    *rpc.urls,
                    *settings.solana_emergency_endpoints,
                ],
            )
            if serving():
                wallet = str(payer.pubkey())
                await samplers.enter_async_context(
                    every(
                        SAMPLE_INTERVAL_S,
                        lambda: sample_wallet(lambda: minter.balance(wallet)),
                        name="system wallet",
                    )
                )
            if settings.webhook_urls:  # notices pushed beside the mints, never inside them
                await samplers.enter_async_context(dispatching(settings))  # stops before the store
            yield activities_of(
                ipfs, database, solana, verification, runtime_steps, health, pin_repair
            )
        finally:
            await samplers.aclose()
            await watcher.stop()  # before the store: it shares the pool
            await store.close()


def breaker_report(breakers: BreakerRegistry, rpc: SolanaRpc) -> list[dict[str, Any]]:
    """What a worker reports at each poll (`starter.py breaker list`): every breaker's snapshot,
    the Solana endpoints it uses now carrying their `solana_position` (1: the primary), so
    `starter.py endpoints list` shows what each worker uses."""
    positions = {name: place for place, name in enumerate(rpc.endpoints, start=1)}
    for index in [*range(len(positions)), *rpc.emergency_indices]:
        rpc.breaker(index)  # created now, so an endpoint not called yet is reported too
    return [
        breaker.snapshot()
        | ({"solana_position": positions[breaker.name]} if breaker.name in positions else {})
        for breaker in breakers.all()
    ]


async def apply_runtime(
    old: RuntimeSettings,
    new: RuntimeSettings,
    settings: Settings,
    rpc: SolanaRpc,
    breakers: BreakerRegistry,
) -> None:
    """Apply what an operator changed (starter.py) without a restart."""
    endpoints = solana_endpoints_for(new, settings.solana_rpc_endpoints)
    if endpoints != tuple(rpc.urls):
        await rpc.set_endpoints(endpoints)
        log.info("solana endpoints now %s", ", ".join(rpc.endpoints))
    overrides = dict(new.breaker_overrides)
    # Emergency mode sends IPFS traffic to the backup provider too (unless an operator set
    # Pinata's breaker by hand).
    overrides.setdefault(
        redact_url(settings.pinata_api_url), "force_open" if new.emergency else "none"
    )
    for name in old.breaker_overrides.keys() | overrides.keys():
        breakers.set_override(name, Override(overrides.get(name, "none")))
    for name, count in new.breaker_resets.items():
        breaker = breakers.find(name)
        if breaker is not None and count != old.breaker_resets.get(name, 0):
            breaker.reset("reset by an operator")
    for line in describe_changes(old, new):
        log.info("runtime setting %s", line)


async def connect_temporal(settings: Settings) -> Client:
    """The worker's client: `mintsaga.temporal_client.connect` with the tracing interceptor and,
    with METRICS_PORT set, the runtime that exports the SDK's metrics."""
    return await temporal_client.connect(
        data_converter=data_converter_from_env(),  # MINTSAGA_CODEC_KEYS: encrypted payloads
        target=settings.temporal,  # TEMPORAL_ADDRESS, TEMPORAL_API_KEY, TEMPORAL_TLS_*, ...
        interceptors=interceptors(),
        runtime=temporal_runtime() if settings.metrics_port else None,
    )


def activity_name(fn: Callable[..., Any]) -> str:
    return activity._Definition.must_from_callable(fn).name or fn.__name__


def activities_of(*instances: object) -> list[Callable[..., Any]]:
    """Every activity of `instances`: each method its class declares with `@activity.defn`,
    bound to it. A class's activities are listed once, there
    (tests/integration/test_steps.py checks that they are exactly the workflows' steps)."""
    return [
        getattr(instance, name)
        for instance in instances
        for name, member in vars(type(instance)).items()
        if activity._Definition.from_callable(member) is not None
    ]


def _pollers(pollers: Pollers) -> PollerBehavior:
    if pollers.minimum is None:
        return PollerBehaviorSimpleMaximum(maximum=pollers.maximum)
    initial = min(max(5, pollers.minimum), pollers.maximum)
    return PollerBehaviorAutoscaling(
        minimum=pollers.minimum, maximum=pollers.maximum, initial=initial
    )


def build_workers(
    client: Client,
    tuning: WorkerTuning,
    task_queue: str,
    activities: Sequence[Callable[..., Any]],
    *,
    workflows: Sequence[type] = WORKFLOWS,
    **options: Any,
) -> list[Worker]:
    """The saga's worker on `task_queue` and the Pinata worker on its queue (module docstring).

    `options` go to both `Worker`s (tests pass a workflow runner, say).
    """
    common: dict[str, Any] = {
        "max_concurrent_activities": tuning.max_concurrent_activities,
        "activity_task_poller_behavior": _pollers(tuning.activity_pollers),
        "graceful_shutdown_timeout": timedelta(seconds=tuning.drain_s),
        **options,
    }
    saga = Worker(
        client,
        task_queue=task_queue,
        workflows=workflows,
        activities=activities,
        max_concurrent_workflow_tasks=tuning.max_concurrent_workflow_tasks,
        max_concurrent_local_activities=tuning.max_concurrent_local_activities,
        max_cached_workflows=tuning.max_cached_workflows,
        workflow_task_poller_behavior=_pollers(tuning.workflow_pollers),
        **common,
    )
    pinata = Worker(
        client,
        task_queue=provider_task_queue(task_queue, PINATA),
        activities=[
            a for a in activities if activity_name(a) in PINATA_STEPS | PIN_REPAIR_PINATA_STEPS
        ],
        max_task_queue_activities_per_second=tuning.pinata_activities_per_second,
        **common,
    )
    return [saga, pinata]


@contextlib.asynccontextmanager
async def running(workers: Sequence[Worker]) -> AsyncIterator[None]:
    """Run every worker; on the way out they drain together (each `graceful_shutdown_timeout`),
    not one after the other."""
    async with contextlib.AsyncExitStack() as stack:
        for one in workers:
            await stack.enter_async_context(one)
        try:
            yield
        finally:
            await asyncio.gather(*(one.shutdown() for one in workers))


async def check_pinata_jwt(settings: Settings) -> None:
    """Ask Pinata once whether it accepts PINATA_JWT (its testAuthentication) before the worker
    polls: a refusal (401/403) is a SettingsError naming PINATA_JWT; Pinata down, slow or
    rate-limited is logged and tolerated (the health schedule asks again; uploads fail over to
    Kubo meanwhile). Pre-mint checks do not ask per mint (activities/ipfs.py)."""
    shared_budget(settings.pinata_api_url).set_limit(settings.pinata_data_requests_per_minute)
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False) as http:
        pinata = PinataClient(settings.pinata_api_url, settings.pinata_jwt.get_secret_value(), http)
        try:
            await pinata.test_authentication()
        except ServiceError as exc:
            if exc.kind is ErrorKind.NEEDS_OPERATOR:
                raise SettingsError(
                    f"PINATA_JWT: Pinata refused it at {redact_url(settings.pinata_api_url)}"
                    f" ({exc.code}): set PINATA_JWT (or PINATA_JWT_FILE) to a valid API JWT"
                ) from None
            log.warning(
                "pinata did not confirm PINATA_JWT at start (%s); starting anyway, the health"
                " schedule checks it again",
                exc.code,
            )
        else:
            log.info("pinata accepted PINATA_JWT")


async def check_kubo(settings: Settings) -> None:
    """Refuse (SettingsError naming the Kubo Import key) a Kubo node whose configuration would
    give our files other CIDs; one that does not answer is logged, not refused (it is the
    backup): mintsaga.ipfs.kubo_import."""
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False) as http:
        await check_kubo_import(KuboClient(settings.kubo_api_url, http))


@contextlib.asynccontextmanager
async def sampling_fleet(client: Client, settings: Settings) -> AsyncIterator[None]:
    """The fleet's gauges while /metrics is served: visibility (mints, backlogs) and Postgres
    (admission, when each operator wait began) through a pool of its own (db/fleet_gauges.py)."""
    async with (
        FleetGauges.open(settings.database_url.get_secret_value()) as database,
        sampling_visibility(
            client,
            settings.task_queue,
            also=[provider_task_queue(settings.task_queue, PINATA)],
            database=database,
        ),
    ):
        yield


def warn_if_fee_estimate_blind(settings: Settings) -> None:
    """One warning line at start when the priority fee would read ~0 on a real cluster
    (mintsaga.settings.priority_fee_blind_warning; issue 15)."""
    warning = priority_fee_blind_warning(
        settings.solana_priority_fee_estimator,
        settings.solana_priority_fee_accounts,
        (*settings.solana_rpc_endpoints, *settings.solana_emergency_endpoints),
    )
    if warning:
        log.warning("%s", warning)


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    warn_if_fee_estimate_blind(settings)
    await check_pinata_jwt(settings)
    await check_kubo(settings)
    client = await connect_temporal(settings)
    metrics = serve_metrics(settings.metrics_port) if settings.metrics_port else None
    if metrics is not None:
        log.info("metrics on %s", metrics.url)
    set_task_queue_capacity(settings.task_queue_capacity)  # what the backlog alerts compare with
    priorities = await task_priorities(client)  # detected from the server, not assumed
    set_task_priorities_supported(priorities.supported)
    log.info(
        "temporal task priorities %s (%s)",
        "honoured" if priorities.supported else "not honoured",
        priorities.reason,
    )
    visibility = sampling_fleet(client, settings) if metrics else contextlib.nullcontext()
    tuning = settings.tuning
    async with mint_activities(settings) as activities, visibility:
        workers = build_workers(client, tuning, settings.task_queue, activities)
        async with running(workers):
            READINESS.add_check(  # /readyz: the server sees this worker poll (readiness.py)
                "temporal",
                lambda: worker_polls(client, workers[0], settings.task_queue, client.identity),
            )
            rate = tuning.pinata_activities_per_second
            log.info(
                "worker polling %s and %s (%s) on %s (%s)",
                settings.task_queue,
                provider_task_queue(settings.task_queue, PINATA),
                f"at most {rate:g} activities a second, fleet-wide" if rate else "no rate limit",
                settings.temporal.address,
                settings.temporal.namespace,
            )
            await maintain_health_schedule(client, settings.task_queue)
            await maintain_pin_repair_schedule(client, settings.task_queue)
            await stop.wait()
            READINESS.drain()  # /readyz answers 503 from now on
            log.info("draining: no new tasks, running activities get %d s", tuning.drain_s)
    log.info("worker stopped")


async def _main() -> int:
    try:
        configure_logging()  # LOG_FORMAT; secrets from the environment kept out of every line
        configure_tracing("mintsaga-worker")
        settings = Settings.from_env()
        load_keypair_file(settings.mint_authority_keypair)
        parse_seed(settings.mint_key_seed.get_secret_value())
        health_interval_from_env()  # HEALTH_CHECK_INTERVAL_S, checked before anything starts
        health_upload_interval_from_env()  # HEALTH_UPLOAD_PROBE_INTERVAL_S, likewise
        pin_repair_interval_from_env()  # PIN_REPAIR_INTERVAL_S and PIN_REPAIR_BATCH, likewise
        pin_repair_batch_from_env()
        data_converter_from_env()  # MINTSAGA_CODEC_KEYS, likewise
    except (SettingsError, KeyMaterialError) as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run_worker(settings, stop)
    except SettingsError as exc:  # METRICS_PORT taken, PINATA_JWT refused, Kubo's Import
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    return 0


def parser() -> argparse.ArgumentParser:
    """`mintsaga-worker --help`: the worker takes no arguments; its settings are environment
    variables (docs/configuration.md)."""
    return argparse.ArgumentParser(
        prog="mintsaga-worker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """The `mintsaga-worker` console script (and `python worker.py`)."""
    parser().parse_args(argv)
    code = asyncio.run(_main())
    shutdown_tracing()  # flush spans: exit_now skips atexit
    exit_now(code)


if __name__ == "__main__":
    main()
