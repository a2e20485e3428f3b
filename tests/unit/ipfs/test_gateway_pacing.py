"""GatewayReader's order and pacing rules (ipfs/gateways.py) with fake gateways by host: the
dedicated gateway first, Retry-After honoured inside the budget and handed on beyond it, a
gateway without trustless formats remembered, wrong bytes never asked again, failovers counted
only when the read moves to another gateway."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from mintsaga.errors import ServiceError
from mintsaga.ipfs.cid import cid_sync
from mintsaga.ipfs.gateways import RAISED_RETRY_AFTER_MAX_S, RAW_TYPE, GatewayReader
from mintsaga.observability.metrics import sample_value
from mintsaga.setting_readers import SettingsError
from mintsaga.settings import Settings
from tests.unit.solana.settings_env import settings_env

DATA = b'{"name": "pacing"}'
CID = cid_sync(DATA)


def raw(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=DATA, headers={"Content-Type": RAW_TYPE})


def gateway_timeout(retry_after: str) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(504, text="timeout", headers={"Retry-After": retry_after})


class Gateways:
    def __init__(self, **answers: list[Callable[[httpx.Request], httpx.Response]]) -> None:
        self.answers = answers  # per host, in turn; the last one repeats
        self.calls: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.calls.append(f"{host}?{request.url.query.decode()}")
        queue = self.answers[host]
        return (queue.pop(0) if len(queue) > 1 else queue[0])(request)


def failovers() -> float:
    return sample_value("mintsaga_failovers_total", {"service": "gateway"}) or 0.0


async def test_the_dedicated_gateway_is_read_first() -> None:
    fakes = Gateways(ded=[raw], pub=[raw])
    async with httpx.AsyncClient(transport=httpx.MockTransport(fakes.handle)) as http:
        reader = GatewayReader(["http://pub", "http://ded"], http, dedicated="http://ded")
        assert reader.urls == ["http://ded", "http://pub"] and reader.public == ["http://pub"]
        assert await reader.fetch_verified(CID, max_bytes=100) == (DATA, "http://ded")
    assert fakes.calls == ["ded?format=raw"]


async def test_a_504_is_asked_again_after_its_retry_after_within_the_budget() -> None:
    fakes = Gateways(ded=[gateway_timeout("1"), gateway_timeout("1"), raw])
    before = failovers()
    async with httpx.AsyncClient(transport=httpx.MockTransport(fakes.handle)) as http:
        reader = GatewayReader([], http, dedicated="http://ded")
        started = time.monotonic()
        assert await reader.fetch_verified(CID, max_bytes=100, budget_s=10) == (DATA, "http://ded")
    assert time.monotonic() - started >= 1.9  # two Retry-After: 1 waits
    assert len(fakes.calls) == 3
    assert failovers() == before  # the same gateway asked again is no failover


async def test_a_retry_after_beyond_the_budget_is_raised_for_the_retry_policy() -> None:
    fakes = Gateways(ded=[gateway_timeout("20")])
    async with httpx.AsyncClient(transport=httpx.MockTransport(fakes.handle)) as http:
        reader = GatewayReader([], http, dedicated="http://ded")
        started = time.monotonic()
        with pytest.raises(ServiceError) as caught:
            await reader.fetch_verified(CID, max_bytes=100, budget_s=5)
    assert time.monotonic() - started < 2  # not waited
    assert caught.value.retryable and caught.value.retry_after == 20
    assert len(fakes.calls) == 1


async def test_an_hours_retry_after_holds_the_step_a_minute_at_most() -> None:
    fakes = Gateways(pub=[lambda request: httpx.Response(429, headers={"Retry-After": "3600"})])
    async with httpx.AsyncClient(transport=httpx.MockTransport(fakes.handle)) as http:
        with pytest.raises(ServiceError) as caught:
            await GatewayReader(["http://pub"], http).fetch_verified(CID, max_bytes=100)
    assert caught.value.code == "GatewayRateLimited"
    assert caught.value.retry_after == RAISED_RETRY_AFTER_MAX_S == 60


async def test_a_gateway_without_trustless_formats_is_read_the_old_way_and_remembered() -> None:
    def plain(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=DATA, headers={"Content-Type": "application/json"})

    fakes = Gateways(old=[plain])
    async with httpx.AsyncClient(transport=httpx.MockTransport(fakes.handle)) as http:
        reader = GatewayReader(["http://old"], http)
        served = await reader.read(CID, max_bytes=100)
        assert (served.data, served.trustless) == (DATA, False)
        await reader.read(CID, max_bytes=100)
    # Asked for a raw block once, then the file (its CID recomputed); then the file only.
    assert fakes.calls == ["old?format=raw", "old?", "old?"]


async def test_a_406_to_the_trustless_format_falls_back_to_the_file() -> None:
    fakes = Gateways(
        old=[
            lambda request: httpx.Response(406, text="no"),
            lambda request: httpx.Response(200, content=DATA),
        ]
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(fakes.handle)) as http:
        served = await GatewayReader(["http://old"], http).read(CID, max_bytes=100)
    assert (served.data, served.trustless) == (DATA, False)


async def test_wrong_bytes_are_not_asked_again_but_the_next_gateway_is() -> None:
    def wrong(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"not it", headers={"Content-Type": RAW_TYPE})

    fakes = Gateways(bad=[wrong], good=[gateway_timeout("1"), raw])
    before = failovers()
    async with httpx.AsyncClient(transport=httpx.MockTransport(fakes.handle)) as http:
        reader = GatewayReader(["http://bad", "http://good"], http)
        assert await reader.fetch_verified(CID, max_bytes=100, budget_s=10) == (DATA, "http://good")
    assert fakes.calls == ["bad?format=raw", "good?format=raw", "good?format=raw"]
    assert failovers() == before + 1  # bad -> good once; good asked again is no failover


async def test_a_gateway_urls_own_query_is_kept_on_every_request() -> None:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return raw(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        reader = GatewayReader([], http, dedicated="https://ded.example/?pinataGatewayToken=k3y")
        await reader.fetch_verified(CID, max_bytes=100)
    assert seen == [f"https://ded.example/ipfs/{CID}?pinataGatewayToken=k3y&format=raw"]


def test_ipfs_dedicated_gateway_setting(tmp_path: Path) -> None:
    assert Settings.from_env(settings_env(tmp_path)).ipfs_dedicated_gateway is None
    env = settings_env(tmp_path, IPFS_DEDICATED_GATEWAY="https://x.mypinata.cloud/")
    assert Settings.from_env(env).ipfs_dedicated_gateway == "https://x.mypinata.cloud"
    secret = tmp_path / "gateway"
    secret.write_text("https://x.mypinata.cloud/?pinataGatewayToken=k3y\n")
    env = settings_env(tmp_path, IPFS_DEDICATED_GATEWAY_FILE=str(secret))
    assert Settings.from_env(env).ipfs_dedicated_gateway.endswith("?pinataGatewayToken=k3y")
    with pytest.raises(SettingsError, match="IPFS_DEDICATED_GATEWAY"):
        Settings.from_env(settings_env(tmp_path, IPFS_DEDICATED_GATEWAY="ftp://x"))


def test_reads_and_probes_go_through_the_dedicated_gateway_first(tmp_path: Path) -> None:
    plain = Settings.from_env(settings_env(tmp_path, IPFS_GATEWAYS="https://a.example"))
    assert plain.gateways_in_order == ("https://a.example",)
    env = settings_env(
        tmp_path,
        IPFS_GATEWAYS="https://a.example,https://own.example",
        IPFS_DEDICATED_GATEWAY="https://own.example",
    )
    assert Settings.from_env(env).gateways_in_order == ("https://own.example", "https://a.example")
