"""The MintSaga worker: one process polling one task queue, its clients built once and shared.

    eval "$(python -m devstack env)"; python worker.py

Configuration comes from the environment (clients/settings.py names every variable); a missing
or malformed one stops the worker with a message naming it. SIGTERM or SIGINT drains: polling
stops, running activities get `WORKER_DRAIN_S` to finish, then the clients close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from activities.database import DatabaseActivities
from activities.ipfs import IpfsActivities
from activities.runtime import RuntimeActivities
from activities.solana import SolanaActivities
from activities.verification import VerificationActivities
from clients.errors import redact_url
from clients.gateways import GatewayReader
from clients.images import ImageLoader
from clients.ipfs import IpfsUploader
from clients.kubo import KuboClient
from clients.mint_keys import KeyMaterialError, load_keypair_file, parse_seed
from clients.mint_store import MintStore
from clients.pinata import PinataClient
from clients.process_exit import exit_now
from clients.runtime_config import (
    RuntimeConfigStore,
    RuntimeConfigWatcher,
    RuntimeSettings,
    describe_changes,
    solana_endpoints_for,
)
from clients.settings import Settings, SettingsError
from clients.solana_minter import SolanaMinter
from clients.solana_rpc import SolanaRpc
from resilience.breaker import BreakerRegistry, Override
from workflows.mint_saga import MintSaga

log = logging.getLogger("mintsaga.worker")
WORKER_DRAIN_S = 30.0
HTTP_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


@contextlib.asynccontextmanager
async def mint_activities(
    settings: Settings, *, breakers: BreakerRegistry | None = None
) -> AsyncIterator[list[Callable[..., Any]]]:
    """Every activity of the saga, wired to clients built from `settings`; closes them after.

    One circuit breaker per endpoint, shared by every activity of this worker (`breakers`).
    """
    payer = load_keypair_file(settings.mint_authority_keypair)
    seed = parse_seed(settings.mint_key_seed.get_secret_value())
    breakers = breakers or BreakerRegistry()
    async with (
        httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False) as http,
        SolanaRpc(
            settings.solana_rpc_endpoints, timeout=settings.solana_timeout_s, breakers=breakers
        ) as rpc,
    ):
        store = (
            await MintStore.connect(
                settings.database_url.get_secret_value(),
                min_size=settings.db_pool_min,
                max_size=settings.db_pool_max,
            )
        ).guard(breakers)
        runtime = RuntimeConfigStore(store.pool, dsn=settings.database_url.get_secret_value())
        watcher = RuntimeConfigWatcher(
            runtime,
            worker_id=f"{socket.gethostname()}:{os.getpid()}",
            on_change=lambda old, new: apply_runtime(old, new, settings, rpc, breakers),
            report=lambda: [breaker.snapshot() for breaker in breakers.all()],
        )
        watcher.start()
        # Start with the operator's settings; with the database down, go on with the env's.
        await watcher.wait_loaded(5.0)
        try:
            pinata = PinataClient(
                settings.pinata_api_url,
                settings.pinata_jwt.get_secret_value(),
                http,
                breakers=breakers,
            )
            kubo = KuboClient(settings.kubo_api_url, http, breakers=breakers)
            gateways = GatewayReader(list(settings.ipfs_gateways), http, breakers=breakers)
            minter = SolanaMinter(
                rpc,
                payer,
                seed,
                priority_fee_cap=settings.solana_priority_fee_cap,
                priority_fee_percentile=settings.solana_priority_fee_percentile,
            )
            images = ImageLoader(
                settings.mint_image_dir,
                http,
                max_bytes=settings.image_max_bytes,
                allow_private_hosts=settings.image_allow_private_urls,
            )
            ipfs = IpfsActivities(
                pinata=pinata,
                kubo=kubo,
                uploader=IpfsUploader(pinata, kubo),
                gateways=gateways,
                images=images,
                store=store,
            )
            database = DatabaseActivities(store=store, minter=minter)
            solana = SolanaActivities(minter=minter, store=store)
            verification = VerificationActivities(minter=minter, gateways=gateways, store=store)
            runtime_steps = RuntimeActivities(watcher=watcher)
            yield [
                ipfs.check_ipfs,
                ipfs.compute_image_cid,
                ipfs.upload_image,
                ipfs.upload_metadata,
                ipfs.check_gateways,
                ipfs.release_pins,
                database.check_database,
                database.claim_mint,
                database.record_uploads,
                database.record_minted,
                database.finish_mint,
                database.rollback_mint,
                solana.check_rpc,
                solana.prepare_transaction,
                solana.send_transaction,
                solana.await_confirmation,
                verification.verify_nft,
                verification.check_partner_view,
                verification.check_db_consistency,
                runtime_steps.wait_out_maintenance,
            ]
        finally:
            await watcher.stop()  # before the store: it shares the pool
            await store.close()


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
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
    )


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    client = await connect_temporal(settings)
    async with mint_activities(settings) as activities:
        worker = Worker(
            client,
            task_queue=settings.task_queue,
            workflows=[MintSaga],
            activities=activities,
            graceful_shutdown_timeout=timedelta(seconds=WORKER_DRAIN_S),
        )
        async with worker:
            log.info(
                "worker polling %s on %s (%s)",
                settings.task_queue,
                settings.temporal_address,
                settings.temporal_namespace,
            )
            await stop.wait()
            log.info("draining: no new tasks, running activities get %.0f s", WORKER_DRAIN_S)
    log.info("worker stopped")


async def _main() -> int:
    try:
        settings = Settings.from_env()
        load_keypair_file(settings.mint_authority_keypair)
        parse_seed(settings.mint_key_seed.get_secret_value())
    except (SettingsError, KeyMaterialError) as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_worker(settings, stop)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for chatty in ("httpx", "httpx2"):  # one INFO line per request: our own logs say more
        logging.getLogger(chatty).setLevel(logging.WARNING)
    exit_now(asyncio.run(_main()))
