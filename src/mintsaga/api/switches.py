"""The runtime switches operators flip (maintenance, emergency, endpoints, breaker overrides).

They live in Postgres (DATABASE_URL, or DATABASE_URL_FILE), not in Temporal: each change records
who made it (`$USER@hostname`), and workers pick it up within a poll (5 s).
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mintsaga.api.errors import StarterError
from mintsaga.db.runtime_config import RuntimeConfigStore
from mintsaga.db.runtime_settings import SettingChange, endpoint_name, endpoint_order
from mintsaga.errors import redact_url
from mintsaga.setting_readers import SettingsError, secret_from_env

# `breaker ACTION NAME` -> the override it sets (resilience.breaker.Override values).
BREAKER_ACTIONS = {
    "open": "force_open",
    "close": "force_closed",
    "disable": "disabled",
    "reset": "none",
}


def database_url() -> str:
    try:  # DATABASE_URL, or DATABASE_URL_FILE (in a worker's pod or container)
        url = secret_from_env(
            os.environ, "DATABASE_URL", "the Postgres database that holds the runtime settings"
        )
    except SettingsError as exc:
        raise StarterError(str(exc)) from None
    assert url is not None
    return url


def operator() -> str:
    """Who makes a change: ``$USER@hostname``."""
    user = os.environ.get("USER") or os.environ.get("LOGNAME")
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
    return f"{user}@{socket.gethostname()}"


async def config_store(url: str | None = None) -> RuntimeConfigStore:
    """A store of the runtime settings (its own small pool: close it after use)."""
    return await RuntimeConfigStore.connect(url or database_url())


async def set_maintenance(
    store: RuntimeConfigStore, on: bool, *, by: str | None = None
) -> SettingChange:
    """Maintenance on: new mints wait at the start (running ones finish); off: they go on."""
    return await store.set_maintenance(on, by or operator())


async def set_emergency(
    store: RuntimeConfigStore, on: bool, *, by: str | None = None
) -> SettingChange:
    """Emergency on: every worker sends Solana traffic to the backups only."""
    return await store.set_emergency(on, by or operator())


async def set_endpoints(
    store: RuntimeConfigStore, names: Sequence[str] | None, *, by: str | None = None
) -> SettingChange:
    """Reorder the Solana endpoints, primary first; None: back to SOLANA_RPC_ENDPOINTS.

    Each is named as `endpoints list` shows it (a URL given with its key is reduced to that
    name: no key is stored), and must be one the configuration names: SOLANA_RPC_ENDPOINTS
    where this runs, or an endpoint a worker reports. Anything else is refused, naming it.
    """
    if names is not None:
        await _check_known(store, names)
    return await store.set_endpoints(names, by or operator())


async def _check_known(store: RuntimeConfigStore, names: Sequence[str]) -> None:
    known = {endpoint_name(url) for url in configured_endpoints()}
    known |= {  # the Solana endpoints workers report using (see `workers_endpoints`)
        report["name"]
        for report in await store.breakers()
        if isinstance(report["snapshot"].get("solana_position"), int)
    }
    unknown = [endpoint_name(name) for name in names if endpoint_name(name) not in known]
    if unknown:
        configured = ", ".join(sorted(known)) or "none known here: set SOLANA_RPC_ENDPOINTS"
        raise StarterError(
            f"endpoints set: {', '.join(unknown)} is not a configured Solana endpoint"
            f" (configured: {configured}); an endpoint is added in SOLANA_RPC_ENDPOINTS, not"
            " at run time; nothing changed"
        )


async def set_breaker_override(
    store: RuntimeConfigStore,
    name: str,
    override: str,
    *,
    by: str | None = None,
    force: bool = False,
) -> SettingChange:
    """Override one breaker on every worker; refused for a name no worker reports (a typo
    would change nothing) unless ``force`` or no worker reports anything yet.

    ``name`` is a breaker's name as `breaker list` prints it, or the endpoint's URL as
    configured (credentials, query and a trailing slash aside: see `breaker_name_for`).
    """
    name = await _known_breaker(store, name, check=override != "none" and not force)
    return await store.set_breaker_override(name, override, by or operator())


async def reset_breaker(
    store: RuntimeConfigStore, name: str, *, by: str | None = None, force: bool = False
) -> list[SettingChange]:
    """Close a breaker now on every worker and release its override (the spec's manual reset
    once the endpoint is verified); the name as in `set_breaker_override`."""
    name = await _known_breaker(store, name, check=not force)
    return await store.reset_breaker(name, by or operator())


async def _known_breaker(store: RuntimeConfigStore, given: str, *, check: bool) -> str:
    known = sorted({report["name"] for report in await store.breakers()})
    name = breaker_name_for(given, known)
    if check and known and name not in known:
        raise StarterError(
            f"breaker {name}: no worker reports a breaker by that name (known: "
            f"{', '.join(known)}); nothing changed (--force sets it anyway)"
        )
    return name


def breaker_name_for(given: str, known: Iterable[str]) -> str:
    """The breaker ``given`` means: a name as `breaker list` prints it, or an endpoint's URL
    as configured. Workers name a breaker by its endpoint's URL without credentials, query or
    key-like path part (`mintsaga.errors.redact_url`); so a URL matches the known name that
    differs only in those, case of scheme and host, or a trailing slash. A URL no worker
    reports is redacted the same way, so no credential is ever stored as a name."""
    names = set(known)
    if given in names or "://" not in given:
        return given
    wanted = _breaker_key(given)
    matches = sorted(name for name in names if _breaker_key(name) == wanted)
    if len(matches) > 1:
        raise StarterError(f"breaker {given}: matches {', '.join(matches)}; name one of them")
    return matches[0] if matches else redact_url(given)


def _breaker_key(name: str) -> str:
    if "://" not in name:
        return name
    parts = urlsplit(redact_url(name))
    scheme = "postgresql" if parts.scheme.lower() == "postgres" else parts.scheme.lower()
    return urlunsplit((scheme, parts.netloc.lower(), parts.path.rstrip("/"), "", ""))


async def list_breakers(
    store: RuntimeConfigStore, *, max_age_s: float | None = None
) -> list[dict[str, Any]]:
    """The newest snapshot of every breaker on every worker."""
    return await store.breakers(max_age_s=max_age_s)


def configured_endpoints() -> tuple[str, ...]:
    """SOLANA_RPC_ENDPOINTS (or its _FILE) as this shell sees it (the workers' may differ)."""
    try:
        raw = secret_from_env(os.environ, "SOLANA_RPC_ENDPOINTS", required=False) or ""
    except SettingsError as exc:
        raise StarterError(str(exc)) from None
    return tuple(item.strip().rstrip("/") for item in raw.split(",") if item.strip())


def _split_urls(items: Sequence[str]) -> list[str]:
    return [url.strip() for item in items for url in item.split(",") if url.strip()]


async def endpoints_in_use(store: RuntimeConfigStore) -> dict[str, Any]:
    """The Solana endpoints: the setting (the runtime override, or SOLANA_RPC_ENDPOINTS as
    this shell sees it), the order it makes (emergency mode skips the primary), and what each
    worker reported using at its last poll, primary first. URLs are redacted."""
    settings = await store.load()
    entries = {entry.key: entry for entry in await store.entries()}
    override = settings.solana_endpoints is not None
    entry = entries.get("solana_endpoints") if override else None
    listed = settings.solana_endpoints or tuple(map(endpoint_name, configured_endpoints()))
    effective = endpoint_order(settings, listed)
    return {
        "source": "runtime override" if override else "SOLANA_RPC_ENDPOINTS",
        "set_by": entry.updated_by if entry else None,
        "set_at": entry.updated_at if entry else None,
        "listed": list(listed),
        "effective": list(effective),
        "emergency": settings.emergency,
        "workers": workers_endpoints(await store.breakers()),
    }


def workers_endpoints(reports: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per worker, from its breaker reports: the Solana endpoints it uses, primary first
    (a worker reports each one's `solana_position`), with each breaker's state."""
    workers: dict[str, dict[str, Any]] = {}
    for report in reports:
        worker = workers.setdefault(
            report["worker_id"],
            {"worker_id": report["worker_id"], "age_s": report["age_s"], "endpoints": []},
        )
        worker["age_s"] = min(worker["age_s"], report["age_s"])
        position = report["snapshot"].get("solana_position")
        if isinstance(position, int):
            worker["endpoints"].append(
                {
                    "position": position,
                    "name": report["name"],
                    "state": report["snapshot"].get("state"),
                }
            )
    for worker in workers.values():
        worker["endpoints"].sort(key=lambda endpoint: endpoint["position"])
    return sorted(workers.values(), key=lambda worker: worker["worker_id"])
