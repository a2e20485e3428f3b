"""Two database roles (issue 14): the migrations run as the schema's owner (DDL), the workers as a
role `python -m mintsaga.db.migrate` grants DML and nothing else (DATABASE_WORKER_ROLE). On the
devstack's PostgreSQL, in a database of its own owned by a non-superuser role: the worker role
cannot create, drop, alter or truncate anything, yet a real mint (and a rolled-back one, which
releases its pins) runs through with it, and so do the operators' switches.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

import mintsaga
from devstack.config import LOOPBACK, SOLANA_ENDPOINTS, StackConfig
from devstack.requests import mint_request
from mintsaga.db.migrate import (
    MIGRATIONS_DIR,
    WORKER_ROLE_SETTING,
    MigrationError,
    discover,
    migrate,
)
from mintsaga.db.runtime_config import RuntimeConfigStore
from mintsaga.workflows.models import MintStatus
from tests.saga_support import add_fault, clear_faults, running_worker, temporal_client

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Roles:
    owner: str
    worker: str
    database: str
    port: int

    def url(self, role: str) -> str:
        return f"postgresql://{role}@{LOOPBACK}:{self.port}/{self.database}"


@pytest.fixture
async def roles(stack: StackConfig) -> AsyncIterator[Roles]:
    """A fresh database owned by a role without superuser powers, and a worker role; the
    devstack's server trusts loopback, so neither needs a password here."""
    tag = uuid.uuid4().hex[:8]
    made = Roles(f"owner_{tag}", f"worker_{tag}", f"roles_{tag}", stack.ports["postgres-server"])
    admin = await asyncpg.connect(stack.direct_database_url)
    try:
        await admin.execute(f"CREATE ROLE {made.owner} LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB")
        await admin.execute(f"CREATE ROLE {made.worker} LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB")
        await admin.execute(f"CREATE DATABASE {made.database} OWNER {made.owner}")
        yield made
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {made.database} WITH (FORCE)")
        await admin.execute(f"DROP ROLE IF EXISTS {made.worker}")
        await admin.execute(f"DROP ROLE IF EXISTS {made.owner}")
        await admin.close()


async def migrated(roles: Roles, directory: Path = MIGRATIONS_DIR) -> list[str]:
    conn = await asyncpg.connect(roles.url(roles.owner))
    try:
        return await migrate(conn, directory, worker_role=roles.worker)
    finally:
        await conn.close()


DDL = [
    "CREATE TABLE intruder (id int)",
    "CREATE INDEX intruder_idx ON mints (wallet)",
    "DROP TABLE mints",
    "DROP INDEX mints_user_id",
    "ALTER TABLE mints ADD COLUMN intruder text",
    "ALTER TABLE mint_events DROP COLUMN detail",
    "TRUNCATE mint_pins",
    "CREATE FUNCTION intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE SCHEMA intruder",
    "INSERT INTO schema_migrations (version, name) VALUES (999, '999_intruder.sql')",
    "DELETE FROM schema_migrations",
]


async def test_the_worker_role_can_run_no_ddl(roles: Roles) -> None:
    assert await migrated(roles) == [m.name for m in discover()]
    worker = await asyncpg.connect(roles.url(roles.worker))
    try:
        for statement in DDL:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match=r".+") as refused:
                await worker.execute(statement)
            assert "permission denied" in str(refused.value) or "owner" in str(refused.value)
        # Nor pass on what it was given (a warning, not an error: check the effect).
        await worker.execute("GRANT SELECT ON mints TO PUBLIC")
        assert not await worker.fetchval("SELECT has_table_privilege('public', 'mints', 'SELECT')")
        # It reads the schema's version, and the tables are still all there, unchanged.
        versions = await worker.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in versions] == [m.version for m in discover()]
    finally:
        await worker.close()
    owner = await asyncpg.connect(roles.url(roles.owner))
    try:
        assert await owner.fetchval("SELECT to_regclass('intruder')") is None
        owned = await owner.fetch(
            "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'"
        )
        assert owned and {r["tableowner"] for r in owned} == {roles.owner}
    finally:
        await owner.close()


async def test_a_mint_and_a_rollback_run_with_only_dml(stack: StackConfig, roles: Roles) -> None:
    """The whole mint path as the worker role: claim, stages and events, pins, the signed
    submission, the spend ledger, MINTED, after a mint rolled back past its uploads, whose pins
    were released and whose user could mint again; the worker's runtime watcher reporting (and
    at the end deleting) its breakers; an operator's switch written with the same role."""
    await migrated(roles)
    queue = f"db-roles-{uuid.uuid4().hex[:6]}"
    client = await temporal_client(stack)
    worker_url = roles.url(roles.worker)
    async with running_worker(stack, client, queue, env={"DATABASE_URL": worker_url}):
        # First the rollback (a fresh worker holds no blockhash yet, so the fault bites).
        failing = mint_request(stack, options={"operator_timeout_s": 1})
        for endpoint in SOLANA_ENDPOINTS:
            add_fault(stack, target=endpoint, kind="status", status=503, match="getLatestBlockhash")
        try:
            rolled = await (await mintsaga.start_mint(client, failing, queue=queue)).result()
        finally:
            clear_faults(stack)
        assert rolled.status == MintStatus.ROLLED_BACK, rolled.reason
        assert rolled.image_cid and rolled.metadata_cid  # released after the uploads

        request = mint_request(stack, user_id=failing.user_id)  # the user is free again
        minted = await (await mintsaga.start_mint(client, request, queue=queue)).result()
        assert minted.status == MintStatus.MINTED, minted.reason

    owner = await asyncpg.connect(roles.url(roles.owner))
    try:
        stages = dict(await owner.fetch("SELECT mint_id, stage FROM mints"))
        assert stages == {request.mint_id: "MINTED", failing.mint_id: "ROLLED_BACK"}
        assert await owner.fetchval("SELECT count(*) FROM mint_submissions") >= 1
        assert (
            await owner.fetchval(
                "SELECT count(*) FROM mint_pins WHERE mint_id = $1 AND released_at IS NULL",
                failing.mint_id,
            )
            == 0
        )
    finally:
        await owner.close()

    switches = await RuntimeConfigStore.connect(worker_url)
    try:
        await switches.set_maintenance(True, by="test@db-roles")
        await switches.set_maintenance(False, by="test@db-roles")
    finally:
        await switches.close()


async def test_tables_a_later_migration_adds_are_granted_too(roles: Roles, tmp_path: Path) -> None:
    await migrated(roles)
    for path in MIGRATIONS_DIR.glob("*.sql"):
        shutil.copy(path, tmp_path / path.name)
    later = max(m.version for m in discover()) + 1
    (tmp_path / f"{later:03d}_later.sql").write_text(
        "CREATE TABLE later_things (id bigserial PRIMARY KEY, note text NOT NULL);"
    )
    assert await migrated(roles, tmp_path) == [f"{later:03d}_later.sql"]
    assert await migrated(roles, tmp_path) == []  # idempotent: nothing new, grants again
    worker = await asyncpg.connect(roles.url(roles.worker))
    try:
        await worker.execute("INSERT INTO later_things (note) VALUES ('x')")  # the sequence too
        await worker.execute("UPDATE later_things SET note = 'y'")
        assert await worker.fetchval("DELETE FROM later_things RETURNING note") == "y"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await worker.execute("DROP TABLE later_things")
    finally:
        await worker.close()


async def test_a_worker_role_that_could_not_be_limited_is_refused(
    stack: StackConfig, roles: Roles
) -> None:
    owner = await asyncpg.connect(roles.url(roles.owner))
    try:
        with pytest.raises(MigrationError, match=rf"{WORKER_ROLE_SETTING}.*does not exist"):
            await migrate(owner, worker_role=f"nobody_{uuid.uuid4().hex[:6]}")
        with pytest.raises(MigrationError, match="the role running the migrations"):
            await migrate(owner, worker_role=roles.owner)
        with pytest.raises(MigrationError, match="superuser"):
            await migrate(owner, worker_role="postgres")
        with pytest.raises(MigrationError, match="plain role name"):
            await migrate(owner, worker_role='x"; DROP TABLE mints; --')
        # Nothing was granted by the refused runs.
        assert not await owner.fetchval(
            "SELECT has_table_privilege($1, 'mints', 'SELECT')", roles.worker
        )
    finally:
        await owner.close()


def test_the_command_grants_the_role_it_is_given(roles: Roles) -> None:
    """`python -m mintsaga.db.migrate` as the migration container runs it: the owner's URL from
    DATABASE_URL_FILE, the worker role from DATABASE_WORKER_ROLE."""
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": roles.url(roles.owner)}
    done = subprocess.run(
        [sys.executable, "-m", "mintsaga.db.migrate"],
        env={**env, WORKER_ROLE_SETTING: roles.worker},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"{roles.worker}: DML" in done.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "mintsaga.db.migrate"],
        env={**env, WORKER_ROLE_SETTING: "no_such_role_here"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0 and "does not exist" in refused.stderr
