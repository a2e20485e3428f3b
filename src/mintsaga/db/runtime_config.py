"""The runtime settings' table in Postgres, and the breaker snapshots workers report.

``RuntimeConfigStore`` reads and writes ``runtime_settings`` (one row per key, with who changed
it and when; the settings themselves are ``db/runtime_settings.py``) and ``worker_breakers``;
``mintsaga.cli`` is its command line and ``db/runtime_watcher.py`` the worker's side.

Every call is one short statement or transaction, run by the shared executor
(``db/executor.py``) without a breaker: a database failure is a ``ServiceError`` classified as
for the mint store, and bad input to a setter a ``RuntimeConfigError`` whose message names the
field.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, ValidationError

from mintsaga.db.errors import SERVICE, endpoint_and_secrets
from mintsaga.db.executor import Executor, close_pool, create_pool
from mintsaga.db.runtime_settings import (
    EMERGENCY,
    ENDPOINTS,
    MAINTENANCE,
    OVERRIDE_PREFIX,
    RESET_PREFIX,
    RuntimeConfigError,
    RuntimeSettings,
    SettingChange,
    check_breaker_name,
    describe_validation,
)
from mintsaga.errors import ErrorKind, ServiceError

__all__ = ["BreakerReport", "RuntimeConfigStore", "SettingEntry"]

log = logging.getLogger("mintsaga.runtime_config")


class SettingEntry(BaseModel):
    """One row of ``runtime_settings``."""

    model_config = ConfigDict(frozen=True)

    key: str
    value: Any
    updated_at: datetime
    updated_by: str


class BreakerReport(BaseModel):
    """A worker's newest snapshot of one breaker."""

    model_config = ConfigDict(frozen=True)

    worker_id: str
    name: str
    snapshot: dict[str, Any]
    reported_at: datetime
    age_s: float


_DEFAULTS: dict[str, Any] = {MAINTENANCE: False, EMERGENCY: False, ENDPOINTS: None}


def _jsonable(value: Any) -> Any:
    """Snapshot values as JSON Postgres accepts: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    return value


def _by(by: str) -> str:
    if not isinstance(by, str) or not by.strip():
        raise RuntimeConfigError("by: name who makes the change (e.g. user@host)")
    return by.strip()


class RuntimeConfigStore:
    """The runtime settings and breaker reports over an asyncpg pool; every call is one
    short statement or transaction, safe to retry."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        dsn: str | None = None,
        acquire_timeout: float = 10.0,
        owns_pool: bool = False,
    ) -> None:
        """Use ``pool`` (e.g. ``MintStore.pool``); ``dsn`` only tells what to scrub from errors.

        ``close()`` closes the pool only when ``owns_pool`` (as ``connect`` sets it).
        """
        endpoint, secrets = endpoint_and_secrets(dsn) if dsn else (None, ())
        self._endpoint: str | None = endpoint
        # One statement each, no breaker: the CLI answers at once, the worker polls again.
        self._db = Executor(
            pool,
            endpoint=endpoint,
            secrets=secrets,
            acquire_timeout=acquire_timeout,
            passthrough=(RuntimeConfigError,),
        )
        self._owns_pool = owns_pool

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 2,
        connect_timeout: float = 5.0,
        command_timeout: float | None = 10.0,
        acquire_timeout: float = 10.0,
    ) -> RuntimeConfigStore:
        """A store with a small pool of its own (for the CLI and tests)."""
        pool = await create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout,
            command_timeout=command_timeout,
        )
        return cls(pool, dsn=dsn, acquire_timeout=acquire_timeout, owns_pool=True)

    async def close(self) -> None:
        """Close the pool if it is this store's own (``connect``); a shared one stays open."""
        if self._owns_pool:
            await close_pool(self._db.pool, grace=10.0)

    # -- settings ------------------------------------------------------------------------------

    async def entries(self) -> list[SettingEntry]:
        """Every row of ``runtime_settings``, by key."""
        rows = await self._db.attempt(
            lambda conn: conn.fetch(
                """SELECT key, value::text AS value, updated_at, updated_by
                   FROM runtime_settings ORDER BY key"""
            )
        )
        return [
            SettingEntry.model_validate({**dict(r), "value": json.loads(r["value"])}) for r in rows
        ]

    async def load(self) -> RuntimeSettings:
        """The settings now in force; rows never written read as the defaults.

        Raises PERMANENT ``InvalidRuntimeSettings`` when a row holds a value the settings
        refuse (written by hand): the caller keeps what it had.
        """
        fields: dict[str, Any] = {}
        overrides: dict[str, Any] = {}
        resets: dict[str, Any] = {}
        for entry in await self.entries():
            if entry.key.startswith(OVERRIDE_PREFIX):
                overrides[entry.key.removeprefix(OVERRIDE_PREFIX)] = entry.value
            elif entry.key.startswith(RESET_PREFIX):
                resets[entry.key.removeprefix(RESET_PREFIX)] = entry.value
            elif entry.key in _DEFAULTS:
                fields[entry.key] = entry.value
            else:
                log.warning("runtime_settings: ignoring unknown key %r", entry.key)
        try:
            return RuntimeSettings(**fields, breaker_overrides=overrides, breaker_resets=resets)
        except ValidationError as exc:
            raise ServiceError(
                f"runtime_settings holds an invalid value: {describe_validation(exc)}",
                service=SERVICE,
                kind=ErrorKind.PERMANENT,
                code="InvalidRuntimeSettings",
                endpoint=self._endpoint,
            ) from exc

    async def set_maintenance(self, on: bool, by: str) -> SettingChange:
        """Maintenance mode on (new mints wait at the start) or off."""
        self._validate(maintenance=on)
        return await self._set(MAINTENANCE, on, by)

    async def set_emergency(self, on: bool, by: str) -> SettingChange:
        """Emergency mode on (Solana traffic goes to the backups only) or off."""
        self._validate(emergency=on)
        return await self._set(EMERGENCY, on, by)

    async def set_endpoints(self, urls: Sequence[str] | None, by: str) -> SettingChange:
        """Replace the Solana endpoints (primary first); None goes back to SOLANA_RPC_ENDPOINTS."""
        checked = self._validate(solana_endpoints=urls).solana_endpoints
        return await self._set(ENDPOINTS, None if checked is None else list(checked), by)

    async def set_breaker_override(self, name: str, override: str, by: str) -> SettingChange:
        """Force a breaker open or closed, disable it (metrics only), or ``none`` to release."""
        value = str(override) if isinstance(override, str) else override  # Override is a str
        self._validate(breaker_overrides={name: value})
        return await self._set(OVERRIDE_PREFIX + name, value, by, default="none")

    async def reset_breaker(self, name: str, by: str) -> list[SettingChange]:
        """Close a breaker on every worker now (the spec's manual reset, after the endpoint was
        verified) and release any override on it; returns both changes."""
        released = await self.set_breaker_override(name, "none", by)
        count = (await self.load()).breaker_resets.get(name, 0)
        return [released, await self._set(RESET_PREFIX + name, count + 1, by, default=0)]

    @staticmethod
    def _validate(**fields: Any) -> RuntimeSettings:
        try:
            return RuntimeSettings(**fields)
        except ValidationError as exc:
            raise RuntimeConfigError(describe_validation(exc)) from None

    async def _set(self, key: str, value: Any, by: str, *, default: Any = None) -> SettingChange:
        who = _by(by)
        default = _DEFAULTS.get(key, default)

        async def work(conn: asyncpg.Connection) -> SettingChange:
            async with conn.transaction():
                before = await conn.fetchrow(
                    """SELECT value::text AS value, updated_by FROM runtime_settings
                       WHERE key = $1 FOR UPDATE""",
                    key,
                )
                at = await conn.fetchval(
                    """INSERT INTO runtime_settings (key, value, updated_by)
                       VALUES ($1, $2::jsonb, $3)
                       ON CONFLICT (key) DO UPDATE
                       SET value = EXCLUDED.value, updated_at = now(),
                           updated_by = EXCLUDED.updated_by
                       RETURNING updated_at""",
                    key,
                    json.dumps(value),
                    who,
                )
            return SettingChange(
                key=key,
                old=default if before is None else json.loads(before["value"]),
                new=value,
                by=who,
                at=at,
                previous_by=None if before is None else before["updated_by"],
            )

        change = await self._db.attempt(work)
        log.info("runtime setting %s (by %s)", change.describe(), who)
        return change

    # -- breaker reports -----------------------------------------------------------------------

    async def report_breakers(self, worker_id: str, snapshots: Sequence[Mapping[str, Any]]) -> None:
        """Record this worker's breakers as they are now; breakers it no longer reports go.

        Each snapshot is ``CircuitBreaker.snapshot()``: a mapping with at least ``name``.
        """
        if not isinstance(worker_id, str) or not worker_id.strip():
            raise RuntimeConfigError("worker_id: a non-empty string")
        latest: dict[str, str] = {}
        for snapshot in snapshots:
            try:
                name = check_breaker_name(snapshot.get("name"))
            except ValueError as exc:
                raise RuntimeConfigError(f"snapshot name: {exc}") from None
            latest[name] = json.dumps(_jsonable(snapshot), default=str, allow_nan=False)
        names, payloads = list(latest), list(latest.values())
        await self._db.attempt(
            lambda conn: conn.execute(
                """WITH gone AS (
                       DELETE FROM worker_breakers
                       WHERE worker_id = $1 AND NOT (name = ANY($2::text[]))
                   )
                   INSERT INTO worker_breakers (worker_id, name, snapshot, reported_at)
                   SELECT $1, n, s::jsonb, now() FROM unnest($2::text[], $3::text[]) AS u(n, s)
                   ON CONFLICT (worker_id, name) DO UPDATE
                   SET snapshot = EXCLUDED.snapshot, reported_at = EXCLUDED.reported_at""",
                worker_id,
                names,
                payloads,
            )
        )

    async def forget_breakers(self, worker_id: str) -> None:
        """Drop a worker's reports (it stopped cleanly)."""
        await self._db.attempt(
            lambda conn: conn.execute("DELETE FROM worker_breakers WHERE worker_id = $1", worker_id)
        )

    async def breakers(self, *, max_age_s: float | None = None) -> list[dict[str, Any]]:
        """The newest snapshot per worker and breaker, by name then worker.

        Each item: ``worker_id``, ``name``, ``snapshot`` (dict), ``reported_at``, ``age_s``.
        ``max_age_s`` leaves out reports older than that (workers that died).
        """
        rows = await self._db.attempt(
            lambda conn: conn.fetch(
                """SELECT worker_id, name, snapshot::text AS snapshot, reported_at,
                          EXTRACT(EPOCH FROM now() - reported_at)::float8 AS age_s
                   FROM worker_breakers
                   WHERE $1::float8 IS NULL OR reported_at >= now() - make_interval(secs => $1)
                   ORDER BY name, worker_id""",
                max_age_s,
            )
        )
        return [
            BreakerReport.model_validate(
                {
                    **dict(r),
                    "snapshot": json.loads(r["snapshot"]),
                    "age_s": max(0.0, r["age_s"]),
                }
            ).model_dump()
            for r in rows
        ]
