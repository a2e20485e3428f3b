"""The emulator process: every HTTP face of the devstack, plus the Postgres fault proxy.

Run by the supervisor as ``python -m devstack.emulators --state-dir DIR``; it reads the
stack's ``stack.json`` there and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from dataclasses import dataclass

from aiohttp import web

from devstack.admin import build_admin_app
from devstack.config import GATEWAYS, LOOPBACK, SOLANA_ENDPOINTS, StackConfig
from devstack.faults import FaultRegistry
from devstack.ipfs import IpfsStore, build_gateway_app, build_kubo_app, build_pinata_app
from devstack.ipfs.kubo_config import KuboConfig
from devstack.ipfs.recursive import GatewayBehaviours
from devstack.pg_proxy import PostgresFaultProxy
from devstack.profiles import SolanaProfiles
from devstack.solana import SolanaLedger, build_rpc_app
from devstack.solana.fee_market import FeeMarketLoad

log = logging.getLogger("devstack.emulators")


@dataclass
class HttpService:
    name: str
    app: web.Application
    runner: web.AppRunner | None = None
    site: web.TCPSite | None = None


class EmulatorHost:
    """Starts each service on its port and closes or reopens a port when a ``down`` fault says."""

    def __init__(self, config: StackConfig, registry: FaultRegistry) -> None:
        self.config = config
        self.registry = registry
        self.services: dict[str, HttpService] = {}
        registry.on_down_change(self._on_down_change)

    async def add(self, name: str, app: web.Application) -> None:
        service = HttpService(name, app)
        # keepalive_timeout small: a client cut off by a fault reconnects quickly.
        service.runner = web.AppRunner(app, access_log=None, keepalive_timeout=15)
        await service.runner.setup()
        self.services[name] = service
        await self._listen(service)

    async def _listen(self, service: HttpService) -> None:
        assert service.runner is not None
        service.site = web.TCPSite(
            service.runner, LOOPBACK, self.config.ports[service.name], reuse_address=True
        )
        await service.site.start()

    async def _on_down_change(self, target: str, down: bool) -> None:
        service = self.services.get(target)
        if service is None:
            return
        if down and service.site is not None:
            await service.site.stop()
            service.site = None
            log.info("%s is down", target)
        elif not down and service.site is None:
            await self._listen(service)
            log.info("%s is back up", target)

    async def close(self) -> None:
        for service in self.services.values():
            if service.runner is not None:
                await service.runner.cleanup()


async def serve(config: StackConfig) -> None:
    targets = {*SOLANA_ENDPOINTS, "pinata", "kubo", *GATEWAYS, "postgres"}
    registry = FaultRegistry(targets, json_rpc_targets=set(SOLANA_ENDPOINTS))
    profiles = SolanaProfiles(SOLANA_ENDPOINTS, config.solana_profiles)
    host = EmulatorHost(config, registry)

    ledger = SolanaLedger(config.state_dir / "solana", slot_ms=config.slot_ms)
    await ledger.start()
    if config.fee_market:
        ledger.set_fee_market(FeeMarketLoad.from_json(config.fee_market))
    store = IpfsStore(config.state_dir / "ipfs")

    pg_proxy = None
    if not config.external_database_url:
        pg_proxy = PostgresFaultProxy(
            listen_port=config.ports["postgres"],
            upstream_port=config.ports["postgres-server"],
            registry=registry,
        )
        await pg_proxy.start()

    for name in SOLANA_ENDPOINTS:
        await host.add(name, build_rpc_app(ledger, registry, name, profiles))
    await host.add(
        "pinata",
        build_pinata_app(
            store,
            registry,
            jwt=config.pinata_jwt,
            requests_per_minute=config.pinata_requests_per_minute,
            plan=config.pinata_plan,
        ),
    )
    kubo_config = KuboConfig(config.kubo_profile)
    await host.add("kubo", build_kubo_app(store, registry, kubo_config))
    gateways = GatewayBehaviours(GATEWAYS, config.gateways)
    for name in GATEWAYS:
        await host.add(name, build_gateway_app(store, registry, name, gateways))
    await host.add(
        "admin",
        build_admin_app(
            config,
            registry,
            ledger,
            store.pinata_limits,
            pg_proxy,
            profiles,
            gateways=gateways,
            kubo_config=kubo_config,
        ),
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("emulators serving from %s", config.state_dir)
    await stop.wait()

    await host.close()
    if pg_proxy is not None:
        await pg_proxy.close()
    await ledger.stop()
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(StackConfig.load(args.state_dir)))


if __name__ == "__main__":
    main()
