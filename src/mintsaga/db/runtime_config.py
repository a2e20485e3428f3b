"""Settings operators change without a restart, kept in Postgres and polled by every worker.

    maintenance        new mints wait at the start instead of failing; running ones finish
    emergency          all Solana traffic goes to the backups (the primary is skipped)
    solana_endpoints   replaces SOLANA_RPC_ENDPOINTS (None: use the setting)
    breaker_overrides  breaker name -> force_open | force_closed | disabled

``RuntimeConfigStore`` reads and writes the ``runtime_settings`` table (one row per key, with
who changed it and when) and the breaker snapshots workers report (``worker_breakers``);
``starter.py`` is its command line. ``RuntimeConfigWatcher`` is the worker's side: a task that
loads the settings every few seconds, hands changes to a callback, and reports the worker's
breakers. A database outage never stops it: the worker keeps the last settings it applied.

Database failures are ``ServiceError``s classified as in ``clients.mint_store``; bad input to a
setter is a ``RuntimeConfigError`` whose message names the field.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from mintsaga.db.mint_store import SERVICE, Phase, classify_error, create_pool, endpoint_and_secrets
from mintsaga.errors import ErrorKind, ServiceError, redact_url

__all__ = [
    "OVERRIDES",
    "BreakerReport",
    "RuntimeConfigError",
    "RuntimeConfigStore",
    "RuntimeConfigWatcher",
    "RuntimeSettings",
    "SettingChange",
    "describe_changes",
    "solana_endpoints_for",
]

log = logging.getLogger("mintsaga.runtime_config")
T = TypeVar("T")

# The values of resilience.breaker.Override (a test keeps them equal; spelled out here so this
# module does not depend on the breaker's); "none" removes an override.
OVERRIDES: tuple[str, ...] = ("none", "force_open", "force_closed", "disabled")
MAINTENANCE = "maintenance"
EMERGENCY = "emergency"
ENDPOINTS = "solana_endpoints"
OVERRIDE_PREFIX = "breaker_override:"
RESET_PREFIX = "breaker_reset:"  # a counter per breaker: each bump closes it on every worker
MAX_NAME = 200


class RuntimeConfigError(ValueError):
    """A runtime setting was given a value it cannot take; the message names the field."""


def _describe_validation(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'settings'}: "
        f"{str(error['msg']).removeprefix('Value error, ')}"
        for error in exc.errors()
    )


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a breaker name is a non-empty string")
    if name != name.strip() or any(c.isspace() for c in name):
        raise ValueError(f"breaker name {name!r} contains whitespace")
    if len(name) > MAX_NAME:
        raise ValueError(f"breaker name is longer than {MAX_NAME} characters")
    return name


class RuntimeSettings(BaseModel):
    """What the operators set; the defaults are "nothing special"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    maintenance: StrictBool = False
    emergency: StrictBool = False
    solana_endpoints: tuple[str, ...] | None = None
    breaker_overrides: dict[str, str] = Field(default_factory=dict)
    breaker_resets: dict[str, int] = Field(default_factory=dict)

    @field_validator("solana_endpoints", mode="before")
    @classmethod
    def _endpoints(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ValueError("a list of http(s) URLs, primary first (or null for the setting)")
        urls: list[str] = []
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"{item!r} is not a URL")
            url = item.strip()
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{item!r} is not an http(s) URL")
            url = url.rstrip("/")
            if url in urls:
                raise ValueError(f"{url} is listed twice")
            urls.append(url)
        if not urls:
            raise ValueError("at least one endpoint is needed (reset it to use the setting)")
        return tuple(urls)

    @field_validator("breaker_overrides", mode="before")
    @classmethod
    def _overrides(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise ValueError("a mapping of breaker name to override")
        out: dict[str, str] = {}
        for name, override in value.items():
            _check_name(name)
            override = str(override) if isinstance(override, str) else override
            if override not in OVERRIDES:
                raise ValueError(
                    f"{name}: {override!r} is not an override; use one of {', '.join(OVERRIDES)}"
                )
            if override != "none":  # "none" is the absence of an override
                out[name] = override
        return dict(sorted(out.items()))


def solana_endpoints_for(settings: RuntimeSettings, configured: Sequence[str]) -> tuple[str, ...]:
    """The Solana endpoints to use: the runtime list or the configured one, primary first.

    In emergency mode the primary is skipped, so all traffic goes to the backups; with a single
    endpoint there is no backup, and it is kept.
    """
    endpoints = settings.solana_endpoints or tuple(configured)
    if settings.emergency and len(endpoints) > 1:
        return endpoints[1:]
    return endpoints


def _on_off(value: bool) -> str:
    return "on" if value else "off"


def _endpoints_text(value: tuple[str, ...] | None) -> str:
    # Redacted: a provider's URL may carry its API key, and this text is printed and logged.
    return "from SOLANA_RPC_ENDPOINTS" if value is None else ", ".join(map(redact_url, value))


def describe_changes(old: RuntimeSettings, new: RuntimeSettings) -> list[str]:
    """One line per setting that differs, e.g. ``maintenance: off -> on``."""
    lines = []
    for key in (MAINTENANCE, EMERGENCY):
        if getattr(old, key) != getattr(new, key):
            lines.append(f"{key}: {_on_off(getattr(old, key))} -> {_on_off(getattr(new, key))}")
    if old.solana_endpoints != new.solana_endpoints:
        lines.append(
            f"{ENDPOINTS}: {_endpoints_text(old.solana_endpoints)}"
            f" -> {_endpoints_text(new.solana_endpoints)}"
        )
    for name in sorted(old.breaker_overrides.keys() | new.breaker_overrides.keys()):
        before = old.breaker_overrides.get(name, "none")
        after = new.breaker_overrides.get(name, "none")
        if before != after:
            lines.append(f"breaker {name}: {before} -> {after}")
    return lines


class SettingChange(BaseModel):
    """What one setter did: the row's value before and after, who, and when."""

    model_config = ConfigDict(frozen=True)

    key: str
    old: Any
    new: Any
    by: str
    at: datetime
    previous_by: str | None = None

    @property
    def changed(self) -> bool:
        return self.old != self.new

    def describe(self) -> str:
        label = self.key
        if label.startswith(OVERRIDE_PREFIX):
            label = f"breaker {label.removeprefix(OVERRIDE_PREFIX)} override"
        elif label.startswith(RESET_PREFIX):
            label = f"breaker {label.removeprefix(RESET_PREFIX)} resets"
        verb = "" if self.changed else " (unchanged)"
        return f"{label}: {_text(self.key, self.old)} -> {_text(self.key, self.new)}{verb}"


def _text(key: str, value: Any) -> str:
    if key in (MAINTENANCE, EMERGENCY):
        return _on_off(bool(value))
    if key == ENDPOINTS:
        return _endpoints_text(None if value is None else tuple(value))
    return str(value)


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
        self._pool = pool
        self._endpoint, self._secrets = endpoint_and_secrets(dsn) if dsn else (None, ())
        self._acquire_timeout = acquire_timeout
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
        if self._owns_pool:
            try:
                await asyncio.wait_for(self._pool.close(), 10.0)
            except TimeoutError:
                self._pool.terminate()

    # -- settings ------------------------------------------------------------------------------

    async def entries(self) -> list[SettingEntry]:
        """Every row of ``runtime_settings``, by key."""
        rows = await self._run(
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
                f"runtime_settings holds an invalid value: {_describe_validation(exc)}",
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
            raise RuntimeConfigError(_describe_validation(exc)) from None

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

        change = await self._run(work)
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
                name = _check_name(snapshot.get("name"))
            except ValueError as exc:
                raise RuntimeConfigError(f"snapshot name: {exc}") from None
            latest[name] = json.dumps(_jsonable(snapshot), default=str, allow_nan=False)
        names, payloads = list(latest), list(latest.values())
        await self._run(
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
        await self._run(
            lambda conn: conn.execute("DELETE FROM worker_breakers WHERE worker_id = $1", worker_id)
        )

    async def breakers(self, *, max_age_s: float | None = None) -> list[dict[str, Any]]:
        """The newest snapshot per worker and breaker, by name then worker.

        Each item: ``worker_id``, ``name``, ``snapshot`` (dict), ``reported_at``, ``age_s``.
        ``max_age_s`` leaves out reports older than that (workers that died).
        """
        rows = await self._run(
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

    # -- the one place errors are classified ---------------------------------------------------

    async def _run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``work`` on a pooled connection; classify what fails. A connection that failed
        is terminated, so the pool opens a fresh one for the next call."""
        try:
            conn = await self._pool.acquire(timeout=self._acquire_timeout)
        except Exception as exc:
            raise self._classify(exc, "acquire") from exc
        try:
            return await work(conn)
        except (ServiceError, RuntimeConfigError):
            raise
        except Exception as exc:
            error = self._classify(exc, "query")
            if error.kind is ErrorKind.TRANSIENT:
                with contextlib.suppress(asyncpg.exceptions.InterfaceError):
                    conn.terminate()
            raise error from exc
        finally:
            with contextlib.suppress(Exception):
                await self._pool.release(conn)

    def _classify(self, exc: BaseException, during: Phase) -> ServiceError:
        return classify_error(exc, during=during, endpoint=self._endpoint, secrets=self._secrets)


OnChange = Callable[[RuntimeSettings, RuntimeSettings], Awaitable[None] | None]
Report = Callable[[], Sequence[Mapping[str, Any]] | Awaitable[Sequence[Mapping[str, Any]]]]


class RuntimeConfigWatcher:
    """Polls the runtime settings for one worker and reports its breakers.

    Every ``interval_s``: load the settings; if they differ from those last applied (or on the
    first successful load) call ``on_change(old, new)``; then report ``report()`` (breaker
    snapshots). Nothing that fails stops it: a failed load keeps the settings in force and is
    retried next poll, and an ``on_change`` that raises is called again next poll (the settings
    count as applied only once it returns).
    """

    def __init__(
        self,
        store: RuntimeConfigStore,
        *,
        worker_id: str,
        interval_s: float = 5.0,
        on_change: OnChange | None = None,
        report: Report | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """``timeout_s`` bounds each database call (default: the larger of 5 s and the
        interval), so a stalled database cannot stall the loop."""
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._store = store
        self._worker_id = worker_id
        self._interval = interval_s
        self._on_change = on_change
        self._report = report
        self._timeout = timeout_s if timeout_s is not None else max(5.0, interval_s)
        self._current = RuntimeSettings()
        self._loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.polls = 0
        self.load_failures = 0
        self.report_failures = 0
        self.last_error: BaseException | None = None

    @property
    def current(self) -> RuntimeSettings:
        """The settings last applied (the defaults until the first successful load)."""
        return self._current

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start polling (the first poll is immediate)."""
        if self.running:
            raise RuntimeError("the runtime config watcher is already running")
        self._task = asyncio.create_task(self._loop(), name=f"runtime-config {self._worker_id}")

    async def wait_loaded(self, within_s: float) -> bool:
        """Wait up to ``within_s`` for the first settings to be applied; False if not yet."""
        try:
            await asyncio.wait_for(self._loaded.wait(), within_s)
        except TimeoutError:
            return False
        return True

    async def stop(self, *, forget: bool = True) -> None:
        """Stop polling; with ``forget``, remove this worker's breaker reports (best effort)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if forget and self._report is not None:
            try:
                async with asyncio.timeout(self._timeout):
                    await self._store.forget_breakers(self._worker_id)
            except Exception as exc:
                log.warning("could not remove the breaker reports of %s: %s", self._worker_id, exc)

    async def _loop(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self._interval)

    async def poll_once(self) -> None:
        """Load and apply the settings, then report the breakers; never raises."""
        self.polls += 1
        await self._apply()
        await self._send_report()

    async def _apply(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                new = await self._store.load()
        except Exception as exc:
            self.load_failures += 1
            self.last_error = exc
            if not self._failing:
                log.warning("runtime settings unavailable, keeping those in force: %s", exc)
            self._failing = True
            return
        if self._failing:
            log.info("runtime settings readable again")
            self._failing = False
        if self.loaded and new == self._current:
            return
        old = self._current
        if self._on_change is not None:
            try:
                result = self._on_change(old, new)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("applying runtime settings failed; trying again next poll")
                return
        self._current = new
        self._loaded.set()
        for line in describe_changes(old, new):
            log.info("runtime setting applied: %s", line)

    async def _send_report(self) -> None:
        if self._report is None:
            return
        try:
            snapshots = self._report()
            if inspect.isawaitable(snapshots):
                snapshots = await snapshots
            async with asyncio.timeout(self._timeout):
                await self._store.report_breakers(self._worker_id, list(snapshots))
        except Exception as exc:
            self.report_failures += 1
            log.debug("breaker report failed: %s", exc)
