"""Schema migrations: numbered plain SQL files in ``db/migrations``, each applied once.

Applied versions are recorded in ``schema_migrations``. A session-level advisory lock makes
concurrent callers (several workers starting at once) wait instead of racing; each file runs
in its own transaction, so a failing migration leaves nothing half-applied.

Two roles in production: the migrations run as the role that owns the schema (DDL), the workers
as a role that may only read and write rows. With ``DATABASE_WORKER_ROLE`` set, every run ends by
granting that role DML and nothing else, under the same lock (``grant_worker_role``): SELECT,
INSERT, UPDATE and DELETE on the schema's tables (SELECT only on ``schema_migrations``), USAGE and
SELECT on its sequences, and the same by default on whatever this role creates there later. It
runs every time, not once as a numbered file would: a role created after the schema, and tables
a later migration adds, are covered by the next run. GRANT and REVOKE are idempotent.

    python -m mintsaga.db.migrate            # uses DATABASE_URL (or DATABASE_URL_FILE)
    DATABASE_WORKER_ROLE=mintsaga_worker python -m mintsaga.db.migrate
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from mintsaga.setting_readers import SettingsError, secret_from_env

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_NAME = re.compile(r"^(\d{3,})_[a-z0-9_]+\.sql$")
_LOCK_KEY = 0x6D696E74  # "mint"
WORKER_ROLE_SETTING = "DATABASE_WORKER_ROLE"
_ROLE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")
DML = "SELECT, INSERT, UPDATE, DELETE"


class MigrationError(RuntimeError):
    """A migration file is misnamed, duplicated, or failed to apply."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNN_description.sql")
        version = int(match.group(1))
        if version in migrations:
            raise MigrationError(f"{path.name}: version {version} is used twice")
        migrations[version] = Migration(version, path.name, path.read_text())
    return [migrations[v] for v in sorted(migrations)]


async def grant_worker_role(conn: asyncpg.Connection, role: str) -> None:
    """Give `role` DML on the current schema's tables and sequences, now and by default for what
    this connection's role creates there later; no DDL (it owns nothing, may not CREATE in the
    schema, and TRUNCATE, REFERENCES and TRIGGER are revoked). Raises MigrationError when the
    role is missing, is (or is a member of) the role migrating, or is a superuser: grants would
    limit nothing."""
    if not _ROLE.fullmatch(role):
        raise MigrationError(f"{WORKER_ROLE_SETTING}: {role!r} is not a plain role name")
    found = await conn.fetchrow(
        "SELECT rolsuper, pg_has_role(rolname, current_user, 'MEMBER') AS is_me"
        " FROM pg_roles WHERE rolname = $1",
        role,
    )
    if found is None:
        raise MigrationError(
            f"{WORKER_ROLE_SETTING}: role {role!r} does not exist; create it first"
            " (CREATE ROLE ... LOGIN PASSWORD ..., docs/deploy.md)"
        )
    if found["rolsuper"]:
        raise MigrationError(
            f"{WORKER_ROLE_SETTING}: {role!r} is a superuser; grants cannot limit it"
        )
    if found["is_me"]:
        raise MigrationError(
            f"{WORKER_ROLE_SETTING}: {role!r} is the role running the migrations, or a member"
            " of it (and so owns what it owns); the workers need a role of their own, without DDL"
        )
    schema = await conn.fetchval("SELECT current_schema()")
    if schema is None:
        raise MigrationError("no current schema: check the role's search_path")
    q_role, q_schema = await conn.fetchrow("SELECT quote_ident($1), quote_ident($2)", role, schema)
    async with conn.transaction():
        for statement in (
            f"GRANT USAGE ON SCHEMA {q_schema} TO {q_role}",
            f"REVOKE CREATE ON SCHEMA {q_schema} FROM {q_role}",
            f"GRANT {DML} ON ALL TABLES IN SCHEMA {q_schema} TO {q_role}",
            f"REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA {q_schema}"
            f" FROM {q_role}",
            f"REVOKE INSERT, UPDATE, DELETE ON schema_migrations FROM {q_role}",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {q_schema} TO {q_role}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {q_schema} GRANT {DML} ON TABLES TO {q_role}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {q_schema}"
            f" GRANT USAGE, SELECT ON SEQUENCES TO {q_role}",
        ):
            await conn.execute(statement)
    # PostgreSQL before 15 lets every role (PUBLIC) create in the public schema; only its owner
    # can take that back, which the migrating role may not be.
    if await conn.fetchval("SELECT has_schema_privilege($1, $2, 'CREATE')", role, schema):
        raise MigrationError(
            f"{WORKER_ROLE_SETTING}: {role!r} may still CREATE in schema {schema!r} (through"
            f" PUBLIC, as before PostgreSQL 15): as its owner, REVOKE CREATE ON SCHEMA {q_schema}"
            " FROM PUBLIC"
        )


async def migrate(
    conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR, *, worker_role: str | None = None
) -> list[str]:
    """Apply every pending migration, then (with `worker_role`) grant that role DML on what they
    made; returns the names of those applied now."""
    pending = discover(directory)
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer     PRIMARY KEY,
                   name       text        NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in pending:
            if migration.version in done:
                continue
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{migration.name}: {exc}") from exc
            applied_now.append(migration.name)
        if worker_role:
            await grant_worker_role(conn, worker_role)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now


async def migrate_url(database_url: str, *, worker_role: str | None = None) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        return await migrate(conn, worker_role=worker_role)
    finally:
        await conn.close()


def main() -> None:
    try:  # DATABASE_URL, or DATABASE_URL_FILE: a file holding it (a mounted secret)
        url = secret_from_env(os.environ, "DATABASE_URL", "the Postgres database to migrate")
    except SettingsError as exc:
        sys.exit(str(exc))
    assert url is not None
    worker_role = os.environ.get(WORKER_ROLE_SETTING, "").strip() or None
    try:
        applied = asyncio.run(migrate_url(url, worker_role=worker_role))
    except MigrationError as exc:
        sys.exit(f"migrate: {exc}")
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    if worker_role:
        print(f"{worker_role}: DML on the schema's tables and sequences, no DDL")


if __name__ == "__main__":
    main()
