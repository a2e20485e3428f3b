"""Runtime settings in Postgres: the store, the worker's watcher, and the starter.py commands.

``runtime_settings`` is shared by the whole test session (a worker of another test may read
it), so every test that changes it puts the defaults back in a ``finally`` (the ``config``
fixture), through the direct connection so that a fault still in place cannot stop it. Tests
that need a table of their own (empty, or holding a bad row) get a private schema.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import ValidationError

from devstack.config import StackConfig
from mintsaga.db.migrate import MIGRATIONS_DIR
from mintsaga.db.runtime_config import RuntimeConfigStore
from mintsaga.db.runtime_settings import (
    OVERRIDES,
    RuntimeConfigError,
    RuntimeSettings,
    describe_changes,
    solana_endpoints_for,
)
from mintsaga.db.runtime_watcher import RuntimeConfigWatcher
from mintsaga.errors import ErrorKind, ServiceError, endpoint_name
from mintsaga.setting_readers import SettingsError
from mintsaga.settings import Settings
from tests.saga_support import Ran, run_starter

pytestmark = pytest.mark.integration

BY = "tests@runtime-config"
DEFAULTS = RuntimeSettings()
CLI_USER = "rc-tester"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def restore_defaults(stack: StackConfig) -> None:
    """Maintenance off, emergency off, endpoints from the setting, no breaker overrides."""
    store = await RuntimeConfigStore.connect(stack.direct_database_url)
    try:
        await store.set_maintenance(False, BY)
        await store.set_emergency(False, BY)
        await store.set_endpoints(None, BY)
        for entry in await store.entries():
            if entry.key.startswith("breaker_override:") and entry.value != "none":
                await store.set_breaker_override(
                    entry.key.removeprefix("breaker_override:"), "none", BY
                )
        conn = await asyncpg.connect(stack.direct_database_url)
        try:  # reset counters log operator resets; no setter takes them back
            await conn.execute("DELETE FROM runtime_settings WHERE key LIKE 'breaker_reset:%'")
        finally:
            await conn.close()
        assert await store.load() == DEFAULTS
    finally:
        await store.close()


@pytest.fixture
async def config(stack: StackConfig) -> AsyncIterator[RuntimeConfigStore]:
    """A store through the fault proxy, as a worker has; the defaults come back afterwards."""
    store = await RuntimeConfigStore.connect(stack.database_url)
    try:
        yield store
    finally:
        try:
            await store.close()
        finally:
            await restore_defaults(stack)


@pytest.fixture
async def direct(stack: StackConfig) -> AsyncIterator[RuntimeConfigStore]:
    """A store around the fault proxy: it changes settings while the proxy is down."""
    store = await RuntimeConfigStore.connect(stack.direct_database_url)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def private(stack: StackConfig) -> AsyncIterator[tuple[RuntimeConfigStore, asyncpg.Pool]]:
    """A store over a fresh schema migrated with 003 only: its table starts empty."""
    schema = f"rc_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(stack.direct_database_url)
    await admin.execute(f"CREATE SCHEMA {schema}")
    pool = None
    try:
        await admin.execute(f"SET search_path TO {schema}")
        await admin.execute((MIGRATIONS_DIR / "003_runtime_config.sql").read_text())
        pool = await asyncpg.create_pool(
            stack.direct_database_url,
            min_size=1,
            max_size=2,
            server_settings={"search_path": schema},
        )
        yield RuntimeConfigStore(pool, dsn=stack.direct_database_url), pool
    finally:
        if pool is not None:
            await pool.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


async def wait_until(predicate: Any, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within_s} s: {what}")
        await asyncio.sleep(0.02)


# -- the settings model ----------------------------------------------------------------------


def test_override_values_match_the_breaker() -> None:
    from mintsaga.resilience.breaker import Override

    assert set(OVERRIDES) == {o.value for o in Override}


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        (
            {"solana_endpoints": ["ftp://rpc.example"]},
            "solana_endpoints",
            "not an http(s) endpoint name",
        ),
        (
            {"solana_endpoints": ["rpc.example:8899"]},
            "solana_endpoints",
            "not an http(s) endpoint name",
        ),
        ({"solana_endpoints": []}, "solana_endpoints", "at least one"),
        ({"solana_endpoints": "http://a.example"}, "solana_endpoints", "a list"),
        (
            {"solana_endpoints": ["http://a.example", "http://a.example/"]},
            "solana_endpoints",
            "listed twice",
        ),
        ({"breaker_overrides": {"rpc-1": "sideways"}}, "breaker_overrides", "not an override"),
        ({"breaker_overrides": {"rpc 1": "force_open"}}, "breaker_overrides", "whitespace"),
        ({"maintenance": "yes"}, "maintenance", "boolean"),
        ({"emergency": 1}, "emergency", "boolean"),
    ],
)
def test_validation_names_the_field(fields: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RuntimeSettings(**fields)
    (error,) = caught.value.errors()
    assert error["loc"][0] == field
    assert words in error["msg"]


def test_endpoints_are_normalised_and_none_overrides_dropped() -> None:
    settings = RuntimeSettings(
        solana_endpoints=[" https://a.example/ ", "http://b.example:8899"],
        breaker_overrides={"x": "none", "y": "force_open"},
    )
    assert settings.solana_endpoints == ("https://a.example", "http://b.example:8899")
    assert settings.breaker_overrides == {"y": "force_open"}
    assert settings == RuntimeSettings(
        solana_endpoints=("https://a.example", "http://b.example:8899"),
        breaker_overrides={"y": "force_open"},
    )


def test_emergency_skips_the_primary_of_whichever_list_is_in_force() -> None:
    configured = ("http://primary", "http://backup", "http://emergency")
    assert solana_endpoints_for(DEFAULTS, configured) == configured
    assert solana_endpoints_for(RuntimeSettings(emergency=True), configured) == configured[1:]
    runtime = RuntimeSettings(solana_endpoints=["http://emergency", "http://backup"])
    assert solana_endpoints_for(runtime, configured) == ("http://emergency", "http://backup")
    both = RuntimeSettings(solana_endpoints=["http://emergency", "http://backup"], emergency=True)
    assert solana_endpoints_for(both, configured) == ("http://backup",)
    # With one endpoint there is no backup: keep it rather than have none.
    assert solana_endpoints_for(RuntimeSettings(emergency=True), ["http://only"]) == (
        "http://only",
    )


# The URL forms of two providers' docs: a key in the query (Helius) and in the path (Alchemy).
HELIUS = "https://mainnet.helius-rpc.com/?api-key=0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"
ALCHEMY = "https://solana-mainnet.g.alchemy.com/v2/Zk3eQ9xY2Lm8Pq4Rt6Uv1Wx5Yz7Ab0Cd"


def test_runtime_endpoints_are_names_never_keys_and_only_configured_ones_are_used() -> None:
    """An operator may paste a URL with its key: only its name is kept (what Postgres stores),
    and a worker maps names to the URLs of its own configuration, keys and all; a name it
    does not have is left out, so no run-time change can send traffic anywhere new."""
    runtime = RuntimeSettings(solana_endpoints=[ALCHEMY, HELIUS])
    assert runtime.solana_endpoints == (endpoint_name(ALCHEMY), endpoint_name(HELIUS))
    stored = json.dumps(runtime.model_dump(mode="json"))
    assert "0a1b2c3d" not in stored and "Zk3eQ9xY2Lm8" not in stored
    assert solana_endpoints_for(runtime, (HELIUS, ALCHEMY)) == (ALCHEMY, HELIUS)
    # An endpoint the configuration does not name (a typo, an attacker's node) is not used.
    elsewhere = RuntimeSettings(solana_endpoints=["https://evil.example", endpoint_name(HELIUS)])
    assert solana_endpoints_for(elsewhere, (HELIUS, ALCHEMY)) == (HELIUS,)
    nowhere = RuntimeSettings(solana_endpoints=["https://evil.example"])
    assert solana_endpoints_for(nowhere, (HELIUS, ALCHEMY)) == (HELIUS, ALCHEMY)
    in_emergency = RuntimeSettings(solana_endpoints=["https://evil.example"], emergency=True)
    assert solana_endpoints_for(in_emergency, (HELIUS, ALCHEMY)) == (ALCHEMY,)


def test_describe_changes_lists_each_difference() -> None:
    new = RuntimeSettings(
        maintenance=True, solana_endpoints=["http://x"], breaker_overrides={"b": "disabled"}
    )
    assert describe_changes(DEFAULTS, new) == [
        "maintenance: off -> on",
        "solana_endpoints: from SOLANA_RPC_ENDPOINTS -> http://x",
        "breaker b: none -> disabled",
    ]
    assert describe_changes(new, new) == []


# -- the store -------------------------------------------------------------------------------


async def test_an_empty_table_loads_the_defaults(
    private: tuple[RuntimeConfigStore, asyncpg.Pool],
) -> None:
    store, _ = private
    assert await store.entries() == []
    assert await store.load() == DEFAULTS


async def test_each_setter_round_trips(config: RuntimeConfigStore) -> None:
    assert await config.load() == DEFAULTS

    change = await config.set_maintenance(True, "alice@ops")
    assert (change.key, change.old, change.new, change.by) == (
        "maintenance",
        False,
        True,
        "alice@ops",
    )
    assert (await config.load()).maintenance is True

    change = await config.set_emergency(True, "bob@ops")
    assert (change.old, change.new, change.by) == (False, True, "bob@ops")
    assert (await config.load()).emergency is True

    change = await config.set_endpoints(["https://a.example/", "http://b.example:8899"], "carol")
    assert change.old is None
    assert (await config.load()).solana_endpoints == ("https://a.example", "http://b.example:8899")

    change = await config.set_breaker_override("rpc-a", "force_open", "dave")
    assert (change.old, change.new) == ("none", "force_open")
    await config.set_breaker_override("rpc-b", "disabled", "dave")
    assert (await config.load()).breaker_overrides == {"rpc-a": "force_open", "rpc-b": "disabled"}

    entries = {entry.key: entry for entry in await config.entries()}
    assert entries["maintenance"].updated_by == "alice@ops"
    assert entries["emergency"].updated_by == "bob@ops"
    assert entries["solana_endpoints"].updated_by == "carol"
    assert entries["breaker_override:rpc-a"].updated_by == "dave"

    # And back: each setter reports what it replaced and who had set it.
    change = await config.set_maintenance(False, "erin")
    assert (change.old, change.new, change.previous_by) == (True, False, "alice@ops")
    change = await config.set_endpoints(None, "erin")
    assert change.old == ["https://a.example", "http://b.example:8899"]
    change = await config.set_breaker_override("rpc-a", "none", "erin")
    assert (change.old, change.new, change.changed) == ("force_open", "none", True)
    again = await config.set_breaker_override("rpc-a", "none", "erin")
    assert not again.changed
    assert "(unchanged)" in again.describe()
    settings = await config.load()
    assert settings.maintenance is False
    assert settings.solana_endpoints is None
    assert settings.breaker_overrides == {"rpc-b": "disabled"}


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: s.set_endpoints(["ftp://rpc.example"], BY), "solana_endpoints"),
        (lambda s: s.set_endpoints([], BY), "solana_endpoints"),
        (lambda s: s.set_breaker_override("rpc-a", "sideways", BY), "breaker_overrides"),
        (lambda s: s.set_breaker_override("", "force_open", BY), "breaker_overrides"),
        (lambda s: s.set_maintenance("yes", BY), "maintenance"),
        (lambda s: s.set_emergency(True, " "), "by"),
    ],
)
async def test_a_refused_value_names_the_field_and_changes_nothing(
    config: RuntimeConfigStore, call: Any, field: str
) -> None:
    before = await config.entries()
    with pytest.raises(RuntimeConfigError, match=rf"^{field}"):
        await call(config)
    assert await config.entries() == before


async def test_a_bad_row_is_reported_not_applied(
    private: tuple[RuntimeConfigStore, asyncpg.Pool],
) -> None:
    store, pool = private
    await pool.execute(
        "INSERT INTO runtime_settings (key, value, updated_by) VALUES ($1, $2::jsonb, 'hand')",
        "maintenance",
        '"yes"',
    )
    with pytest.raises(ServiceError) as caught:
        await store.load()
    assert caught.value.code == "InvalidRuntimeSettings"
    assert caught.value.kind is ErrorKind.PERMANENT
    assert "maintenance" in caught.value.message


async def test_database_errors_are_classified_without_the_password() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dsn = f"postgresql://mint:s3cret-pw@127.0.0.1:{port}/mintsaga"
    with pytest.raises(ServiceError) as caught:
        await RuntimeConfigStore.connect(dsn, connect_timeout=2)
    assert caught.value.service == "postgres"
    assert caught.value.kind is ErrorKind.TRANSIENT
    assert "s3cret-pw" not in str(caught.value)


async def test_breaker_reports_round_trip(config: RuntimeConfigStore) -> None:
    worker = new_id("worker")
    first = {
        "name": "rpc-a",
        "state": "closed",
        "override": "none",
        "trips": 2,
        "success_rate": 0.75,
        "latency": {"count": 3, "p95_s": 0.12},
    }
    second = {"name": "rpc-b", "state": "open", "override": "none", "trips": 1}
    second["success_rate"] = math.nan  # no calls yet: JSON has no NaN, it becomes null
    try:
        await config.report_breakers(worker, [first, second])
        mine = [r for r in await config.breakers() if r["worker_id"] == worker]
        assert [r["name"] for r in mine] == ["rpc-a", "rpc-b"]
        assert mine[0]["snapshot"] == first
        assert mine[1]["snapshot"]["success_rate"] is None
        assert all(0 <= r["age_s"] < 30 for r in mine)

        # A later report replaces the earlier one; a breaker no longer reported goes.
        await config.report_breakers(worker, [{**first, "trips": 3, "state": "open"}])
        mine = [r for r in await config.breakers() if r["worker_id"] == worker]
        assert [(r["name"], r["snapshot"]["trips"]) for r in mine] == [("rpc-a", 3)]

        await asyncio.sleep(0.3)
        assert [r for r in await config.breakers(max_age_s=0.1) if r["worker_id"] == worker] == []
        assert [r for r in await config.breakers(max_age_s=60) if r["worker_id"] == worker]

        with pytest.raises(RuntimeConfigError, match="name"):
            await config.report_breakers(worker, [{"state": "open"}])
    finally:
        await config.forget_breakers(worker)
    assert [r for r in await config.breakers() if r["worker_id"] == worker] == []


# -- the watcher -----------------------------------------------------------------------------


@dataclass
class Recorder:
    """on_change that records each call; ``fail`` makes the next calls raise."""

    calls: asyncio.Queue[tuple[RuntimeSettings, RuntimeSettings]]
    fail: int = 0

    async def __call__(self, old: RuntimeSettings, new: RuntimeSettings) -> None:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("cannot apply")
        await self.calls.put((old, new))

    async def next(self, within_s: float) -> tuple[RuntimeSettings, RuntimeSettings]:
        return await asyncio.wait_for(self.calls.get(), within_s)


def recorder() -> Recorder:
    return Recorder(asyncio.Queue())


async def test_watcher_applies_at_start_and_then_only_changes(
    config: RuntimeConfigStore, direct: RuntimeConfigStore
) -> None:
    seen = recorder()
    watcher = RuntimeConfigWatcher(
        config, worker_id=new_id("worker"), interval_s=0.1, on_change=seen
    )
    watcher.start()
    try:
        assert await seen.next(2.0) == (DEFAULTS, DEFAULTS)  # once at start, even unchanged
        assert watcher.loaded

        changed_at = time.monotonic()
        await direct.set_maintenance(True, BY)
        old, new = await seen.next(1.0)
        took = time.monotonic() - changed_at
        assert (old.maintenance, new.maintenance) == (False, True)
        assert watcher.current.maintenance is True
        assert took < 1.0  # ~2 intervals of 0.1 s, with room for a busy machine

        polls = watcher.polls
        await wait_until(lambda: watcher.polls >= polls + 3, 2.0, "three more polls")
        assert seen.calls.empty()  # nothing changed: no call

        await direct.set_breaker_override("rpc-a", "force_open", BY)
        old, new = await seen.next(1.0)
        assert old.breaker_overrides == {}
        assert new.breaker_overrides == {"rpc-a": "force_open"}
        assert new.maintenance is True
    finally:
        await watcher.stop()
    assert not watcher.running


async def test_watcher_retries_an_on_change_that_failed(
    config: RuntimeConfigStore, direct: RuntimeConfigStore
) -> None:
    seen = recorder()
    watcher = RuntimeConfigWatcher(
        config, worker_id=new_id("worker"), interval_s=0.1, on_change=seen
    )
    watcher.start()
    try:
        await seen.next(2.0)
        seen.fail = 2
        await direct.set_emergency(True, BY)
        old, new = await seen.next(2.0)  # the third try is applied
        assert (old.emergency, new.emergency) == (False, True)
        assert seen.fail == 0
        assert watcher.current.emergency is True
        assert watcher.running
    finally:
        await watcher.stop()


async def test_watcher_survives_postgres_down_and_sees_a_later_change(
    stack: StackConfig, config: RuntimeConfigStore, direct: RuntimeConfigStore
) -> None:
    seen = recorder()
    worker = new_id("worker")
    watcher = RuntimeConfigWatcher(
        config,
        worker_id=worker,
        interval_s=0.1,
        timeout_s=1.0,
        on_change=seen,
        report=lambda: [{"name": "rpc-a", "state": "closed", "override": "none"}],
    )
    watcher.start()
    try:
        await seen.next(2.0)
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(
                stack.url("admin") + "/faults",
                json={"target": "postgres", "kind": "down", "duration_ms": 1000},
            )
            response.raise_for_status()
        await wait_until(lambda: watcher.load_failures > 0, 2.0, "a failed poll")
        with pytest.raises(ServiceError) as caught:
            await config.load()
        assert caught.value.kind is ErrorKind.TRANSIENT
        assert watcher.running
        assert watcher.current == DEFAULTS  # kept what it had

        # The outage ends by itself; once the proxy answers again, change a setting.
        deadline = time.monotonic() + 10
        while True:
            try:
                await config.load()
                break
            except ServiceError:
                assert time.monotonic() < deadline, "postgres did not come back"
                await asyncio.sleep(0.1)
        failures = watcher.load_failures
        await direct.set_endpoints(["http://after-outage.example:8899"], BY)
        old, new = await seen.next(3.0)
        assert old.solana_endpoints is None
        assert new.solana_endpoints == ("http://after-outage.example:8899",)
        assert watcher.running
        assert watcher.load_failures == failures  # polling normally again
        mine = [r for r in await direct.breakers() if r["worker_id"] == worker]
        assert [r["name"] for r in mine] == ["rpc-a"]  # reports resumed too
        assert mine[0]["age_s"] < 2
    finally:
        await watcher.stop()


async def test_watcher_reports_breakers_and_forgets_them_on_stop(
    config: RuntimeConfigStore,
) -> None:
    worker = new_id("worker")
    trips = iter(range(1000))

    def report() -> list[dict[str, Any]]:
        return [{"name": "rpc-a", "state": "closed", "override": "none", "trips": next(trips)}]

    watcher = RuntimeConfigWatcher(config, worker_id=worker, interval_s=0.1, report=report)
    watcher.start()
    try:
        latest: list[int] = []

        async def reported() -> list[int]:
            rows = await config.breakers()
            return [r["snapshot"]["trips"] for r in rows if r["worker_id"] == worker]

        deadline = time.monotonic() + 3
        while not (latest := await reported()) or latest[0] < 2:
            assert time.monotonic() < deadline, f"reports did not advance: {latest}"
            await asyncio.sleep(0.05)
    finally:
        await watcher.stop()
    assert await reported() == []


# -- starter.py --------------------------------------------------------------------------------


async def starter(stack: StackConfig, *argv: str, drop: tuple[str, ...] = ()) -> Ran:
    env = {**os.environ, **stack.worker_env(), "USER": CLI_USER}
    for name in drop:
        env.pop(name, None)
    return await run_starter(env, *argv)


CLI_BY = f"{CLI_USER}@{socket.gethostname()}"


@pytest.mark.parametrize("setting", ["maintenance", "emergency"])
async def test_cli_switches_a_mode_on_and_off(
    stack: StackConfig, config: RuntimeConfigStore, setting: str
) -> None:
    ran = await starter(stack, setting, "on")
    assert ran.returncode == 0, ran.stderr
    assert f"{setting}: off -> on, by {CLI_BY}" in ran.stdout
    assert getattr(await config.load(), setting) is True
    entry = {e.key: e for e in await config.entries()}[setting]
    assert entry.updated_by == CLI_BY

    ran = await starter(stack, setting, "off")
    assert ran.returncode == 0, ran.stderr
    assert f"{setting}: on -> off, by {CLI_BY}" in ran.stdout
    assert getattr(await config.load(), setting) is False


def test_two_configured_endpoints_told_apart_only_by_their_keys_are_refused(
    tmp_path: Path,
) -> None:
    keypair = tmp_path / "payer.json"
    keypair.write_text("[]")
    env = {
        "DATABASE_URL": "postgresql://x@localhost/db",
        "SOLANA_RPC_ENDPOINTS": f"{HELIUS},{HELIUS.replace('0a1b', 'ffff')}",
        "PINATA_JWT": "jwt",
        "KUBO_API_URL": "http://127.0.0.1:5001",
        "PINATA_REQUESTS_PER_MINUTE": "60",
        "IPFS_GATEWAYS": "http://127.0.0.1:8080",
        "MINT_KEY_SEED": "00" * 32,
        "MINT_AUTHORITY_KEYPAIR": str(keypair),
        "MINT_UPDATE_AUTHORITY": "none",
    }
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    message = str(raised.value)
    assert message.startswith("SOLANA_RPC_ENDPOINTS: ") and "listed twice" in message
    assert "0a1b2c3d" not in message and endpoint_name(HELIUS) in message


async def test_cli_endpoints_set_list_and_reset(
    stack: StackConfig, config: RuntimeConfigStore
) -> None:
    a, b, _c = stack.worker_env()["SOLANA_RPC_ENDPOINTS"].split(",")
    ran = await starter(stack, "endpoints", "set", f"{b},{a}/")
    assert ran.returncode == 0, ran.stderr
    assert f"solana_endpoints: from SOLANA_RPC_ENDPOINTS -> {b}, {a}, by {CLI_BY}" in ran.stdout
    assert (await config.load()).solana_endpoints == (b, a)

    await config.set_emergency(True, BY)
    ran = await starter(stack, "endpoints", "list")
    assert ran.returncode == 0, ran.stderr
    assert f"runtime override, set by {CLI_BY}" in ran.stdout
    assert f"1. {b}  primary  (skipped: emergency mode)" in ran.stdout
    assert f"2. {a}  backup\n" in ran.stdout
    assert "emergency mode is on" in ran.stdout

    ran = await starter(stack, "endpoints", "reset")
    assert ran.returncode == 0, ran.stderr
    assert "-> from SOLANA_RPC_ENDPOINTS" in ran.stdout
    assert (await config.load()).solana_endpoints is None

    await config.set_emergency(False, BY)
    ran = await starter(stack, "endpoints", "list")
    assert ran.returncode == 0, ran.stderr
    assert "from SOLANA_RPC_ENDPOINTS (no runtime override)" in ran.stdout
    assert f"1. {a}  primary\n" in ran.stdout


async def test_cli_endpoints_set_refuses_an_endpoint_the_configuration_does_not_name(
    stack: StackConfig, config: RuntimeConfigStore
) -> None:
    """Run-time changes reorder the configured endpoints; a new one (and its key) never gets
    in: refused naming it, with the configured names, and nothing stored."""
    before = await config.entries()
    a = stack.worker_env()["SOLANA_RPC_ENDPOINTS"].split(",")[0]
    key = "Zk3eQ9xY2Lm8Pq4Rt6Uv1Wx5Yz7Ab0Cd"
    new = f"https://solana-mainnet.g.alchemy.com/v2/{key}"
    ran = await starter(stack, "endpoints", "set", f"{new},{a}")
    assert ran.returncode != 0
    assert endpoint_name(new) in ran.stderr and "not a configured Solana endpoint" in ran.stderr
    assert a in ran.stderr and "nothing changed" in ran.stderr
    assert key not in ran.stderr + ran.stdout
    assert await config.entries() == before


async def test_cli_refuses_bad_input_with_exit_2(
    stack: StackConfig, config: RuntimeConfigStore
) -> None:
    before = await config.entries()
    ran = await starter(stack, "endpoints", "set", "ftp://a.example")
    assert ran.returncode == 2
    assert "solana_endpoints" in ran.stderr and "nothing changed" in ran.stderr
    ran = await starter(stack, "maintenance", "maybe")
    assert ran.returncode == 2
    assert "invalid choice" in ran.stderr
    ran = await starter(stack, "maintenance", "on", drop=("DATABASE_URL",))
    assert ran.returncode == 2
    assert "DATABASE_URL is not set" in ran.stderr
    assert await config.entries() == before


async def test_cli_breaker_list_and_overrides(
    stack: StackConfig, config: RuntimeConfigStore
) -> None:
    worker, name = new_id("worker"), new_id("rpc")
    snapshot = {
        "name": name,
        "state": "closed",
        "override": "none",
        "trips": 4,
        "recoveries": 3,
        "success_rate": 0.8,
    }
    await config.report_breakers(worker, [snapshot])
    try:
        ran = await starter(stack, "breaker", "list")
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.splitlines()[0].split() == [
            "WORKER",
            "NAME",
            "STATE",
            "OVERRIDE",
            "TRIPS",
            "SUCCESS",
            "AGE",
        ]
        (line,) = [line for line in ran.stdout.splitlines() if name in line]
        assert line.split()[:6] == [worker, name, "closed", "none", "4", "80%"]

        for action, override in [
            ("open", "force_open"),
            ("close", "force_closed"),
            ("disable", "disabled"),
        ]:
            ran = await starter(stack, "breaker", action, name)
            assert ran.returncode == 0, ran.stderr
            assert f"breaker {name} override:" in ran.stdout
            assert f"-> {override}, by {CLI_BY}" in ran.stdout
            assert (await config.load()).breaker_overrides == {name: override}

        ran = await starter(stack, "breaker", "list")
        assert "none (set: disabled)" in ran.stdout  # the worker has not applied it yet

        ran = await starter(stack, "breaker", "open", name + "-typo")
        assert ran.returncode == 2
        assert "no worker reports a breaker by that name" in ran.stderr
        assert (await config.load()).breaker_overrides == {name: "disabled"}
        ran = await starter(stack, "breaker", "open", name + "-typo", "--force")
        assert ran.returncode == 0, ran.stderr
        assert (await config.load()).breaker_overrides[name + "-typo"] == "force_open"

        ran = await starter(stack, "breaker", "reset", name)
        assert ran.returncode == 0, ran.stderr
        assert f"breaker {name} override: disabled -> none" in ran.stdout
        assert f"breaker {name} resets: " in ran.stdout  # and closed on every worker
        assert name not in (await config.load()).breaker_overrides
    finally:
        await config.forget_breakers(worker)
