"""The devstack's Postgres: migrations applied once; proxy faults as a client sees them."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from devstack.config import StackConfig
from mintsaga.db.migrate import MigrationError, discover, migrate

pytestmark = pytest.mark.integration


def add_fault(stack: StackConfig, **spec: object) -> str:
    response = httpx.post(stack.url("admin") + "/faults", json=spec, timeout=10)
    response.raise_for_status()
    return str(response.json()["id"])


def remove_fault(stack: StackConfig, fault_id: str) -> None:
    httpx.delete(f"{stack.url('admin')}/faults/{fault_id}", timeout=10).raise_for_status()


async def test_migrations_are_recorded_and_applied_once(stack: StackConfig) -> None:
    conn = await asyncpg.connect(stack.database_url)
    try:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
        assert versions == [m.version for m in discover()]
        assert await migrate(conn) == []  # `up` already applied them all
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables")}
        assert {"mints", "mint_events", "mint_pins"} <= tables
    finally:
        await conn.close()


def test_a_misnamed_migration_is_refused(tmp_path: Path) -> None:
    (tmp_path / "001_ok.sql").write_text("SELECT 1;")
    (tmp_path / "two.sql").write_text("SELECT 2;")
    with pytest.raises(MigrationError, match=r"two\.sql"):
        discover(tmp_path)


async def test_a_failing_migration_leaves_nothing_behind(
    stack: StackConfig, tmp_path: Path
) -> None:
    table = f"t_{uuid.uuid4().hex[:8]}"
    (tmp_path / "001_half.sql").write_text(f"CREATE TABLE {table} (id int); SELECT * FROM nowhere;")
    conn = await asyncpg.connect(stack.database_url)
    try:
        await conn.execute("CREATE SCHEMA IF NOT EXISTS migrate_test")
        await conn.execute("SET search_path TO migrate_test")
        with pytest.raises(MigrationError, match=r"001_half\.sql"):
            await migrate(conn, tmp_path)
        assert await conn.fetchval("SELECT to_regclass($1)", f"migrate_test.{table}") is None
        assert await conn.fetchval("SELECT count(*) FROM migrate_test.schema_migrations") == 0
    finally:
        await conn.execute("DROP SCHEMA migrate_test CASCADE")
        await conn.close()


async def test_reset_fault_breaks_an_open_connection(stack: StackConfig) -> None:
    conn = await asyncpg.connect(stack.database_url)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        fault = add_fault(stack, target="postgres", kind="error")
        with pytest.raises((ConnectionError, asyncpg.exceptions.ConnectionDoesNotExistError)):
            await conn.fetchval("SELECT 1")
        remove_fault(stack, fault)
    finally:
        conn.terminate()
    fresh = await asyncpg.connect(stack.database_url)
    assert await fresh.fetchval("SELECT 2") == 2
    await fresh.close()


async def test_a_statement_fault_spares_connecting_and_hits_queries(stack: StackConfig) -> None:
    """`match: "statement"`: every connection still opens (startup and authentication pass),
    and the query is what fails: "n % of the queries fail", not n % of every packet."""
    fault = add_fault(stack, target="postgres", kind="error", match="statement")
    try:
        for _ in range(3):
            conn = await asyncpg.connect(stack.database_url)  # would fail on the startup packet
            with pytest.raises((ConnectionError, asyncpg.exceptions.ConnectionDoesNotExistError)):
                await conn.fetchval("SELECT 1")
            conn.terminate()
    finally:
        remove_fault(stack, fault)


async def test_drop_response_runs_the_write_but_loses_the_answer(stack: StackConfig) -> None:
    mint_id = f"drop-{uuid.uuid4()}"
    conn = await asyncpg.connect(stack.database_url)
    fault = add_fault(stack, target="postgres", kind="drop_response")
    try:
        with pytest.raises((ConnectionError, asyncpg.exceptions.ConnectionDoesNotExistError)):
            await conn.execute(
                "INSERT INTO mints (mint_id, user_id, wallet, stage)"
                " VALUES ($1, 'u', 'w', 'INITIATED')",
                mint_id,
            )
    finally:
        remove_fault(stack, fault)
        conn.terminate()
    direct = await asyncpg.connect(stack.direct_database_url)
    try:
        assert (
            await direct.fetchval("SELECT stage FROM mints WHERE mint_id = $1", mint_id)
            == "INITIATED"
        )
        await direct.execute("DELETE FROM mints WHERE mint_id = $1", mint_id)
    finally:
        await direct.close()


async def test_down_refuses_connections_until_the_fault_is_removed(stack: StackConfig) -> None:
    fault = add_fault(stack, target="postgres", kind="down")
    with pytest.raises(OSError):
        await asyncpg.connect(stack.database_url, timeout=5)
    remove_fault(stack, fault)
    conn = await asyncpg.connect(stack.database_url, timeout=5)
    assert await conn.fetchval("SELECT 3") == 3
    await conn.close()


async def test_latency_fault_delays_queries(stack: StackConfig) -> None:
    conn = await asyncpg.connect(stack.database_url)
    try:
        add_fault(stack, target="postgres", kind="latency", delay_ms=300)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await conn.fetchval("SELECT 1")
        assert loop.time() - started >= 0.3
    finally:
        await conn.close()  # the suite's autouse fixture clears the fault
