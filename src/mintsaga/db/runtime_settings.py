"""The settings operators change without a restart: what they are, what each may hold, and how a
change reads.

    maintenance        new mints wait at the start instead of failing; running ones finish
    emergency          all Solana traffic goes to the backups (the primary is skipped)
    solana_endpoints   reorders SOLANA_RPC_ENDPOINTS (None: the setting's order): endpoint names
                       (each URL as `endpoints list` shows it, keys taken out), never URLs with
                       their keys; a worker uses only the endpoints its configuration names
    breaker_overrides  breaker name -> force_open | force_closed | disabled

They are kept in Postgres by ``db/runtime_config.py`` (one row per key) and polled by every
worker (``db/runtime_watcher.py``). Nothing here talks to the database: bad input to a setter is
a ``RuntimeConfigError`` whose message names the field, raised before any statement runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from mintsaga.errors import endpoint_name, redact_url

log = logging.getLogger("mintsaga.runtime_config")

__all__ = [
    "EMERGENCY",
    "ENDPOINTS",
    "MAINTENANCE",
    "OVERRIDES",
    "OVERRIDE_PREFIX",
    "RESET_PREFIX",
    "RuntimeConfigError",
    "RuntimeSettings",
    "SettingChange",
    "check_breaker_name",
    "describe_changes",
    "describe_validation",
    "endpoint_name",
    "endpoint_order",
    "solana_endpoints_for",
]

# The values of resilience.breaker.Override (a test keeps them equal; spelled out here so this
# module does not depend on the breaker's); "none" removes an override.
OVERRIDES: tuple[str, ...] = ("none", "force_open", "force_closed", "disabled")
# The keys of runtime_settings' rows; an override and a reset counter per breaker name.
MAINTENANCE = "maintenance"
EMERGENCY = "emergency"
ENDPOINTS = "solana_endpoints"
OVERRIDE_PREFIX = "breaker_override:"
RESET_PREFIX = "breaker_reset:"  # a counter per breaker: each bump closes it on every worker
MAX_NAME = 200


class RuntimeConfigError(ValueError):
    """A runtime setting was given a value it cannot take; the message names the field."""


def describe_validation(exc: ValidationError) -> str:
    """Pydantic's errors as one line, each naming its field (``solana_endpoints: ...``)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'settings'}: "
        f"{str(error['msg']).removeprefix('Value error, ')}"
        for error in exc.errors()
    )


def check_breaker_name(name: object) -> str:
    """``name`` if it can name a breaker (non-empty, no whitespace, short); else ValueError."""
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
        """Names: a URL given with its key (or a row written before names) keeps only its
        name, ``redact_url``'s form, so no key is ever stored in Postgres."""
        if value is None:
            return None
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ValueError("a list of endpoint names, primary first (or null for the setting)")
        names: list[str] = []
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"{item!r} is not an endpoint name")
            url = item.strip()
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{redact_url(url)!r} is not an http(s) endpoint name")
            name = endpoint_name(url)
            if name in names:
                raise ValueError(f"{name} is listed twice")
            names.append(name)
        if not names:
            raise ValueError("at least one endpoint is needed (reset it to use the setting)")
        return tuple(names)

    @field_validator("breaker_overrides", mode="before")
    @classmethod
    def _overrides(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise ValueError("a mapping of breaker name to override")
        out: dict[str, str] = {}
        for name, override in value.items():
            check_breaker_name(name)
            override = str(override) if isinstance(override, str) else override
            if override not in OVERRIDES:
                raise ValueError(
                    f"{name}: {override!r} is not an override; use one of {', '.join(OVERRIDES)}"
                )
            if override != "none":  # "none" is the absence of an override
                out[name] = override
        return dict(sorted(out.items()))


def endpoint_order(settings: RuntimeSettings, names: Sequence[str]) -> tuple[str, ...]:
    """The endpoint names in use: the runtime order or ``names`` (the configured order),
    primary first. In emergency mode the primary is skipped, so all traffic goes to the
    backups; with a single endpoint there is no backup, and it is kept."""
    endpoints = settings.solana_endpoints or tuple(names)
    if settings.emergency and len(endpoints) > 1:
        return endpoints[1:]
    return endpoints


def solana_endpoints_for(settings: RuntimeSettings, configured: Sequence[str]) -> tuple[str, ...]:
    """The configured URLs (``SOLANA_RPC_ENDPOINTS``, keys and all) in the order the runtime
    settings give by name; a name the configuration does not have is left out (logged), and
    when none is left the configured order stands. Emergency mode as in ``endpoint_order``."""
    by_name = {endpoint_name(url): url for url in configured}
    order = endpoint_order(settings, list(by_name))
    unknown = [name for name in order if name not in by_name]
    if unknown:
        log.warning(
            "solana_endpoints names %s are not in SOLANA_RPC_ENDPOINTS here: left out",
            ", ".join(unknown),
        )
    urls = tuple(by_name[name] for name in order if name in by_name)
    if not urls:
        log.error("no runtime solana_endpoints name is configured here: the configured order")
        fallback = endpoint_order(RuntimeSettings(emergency=settings.emergency), list(by_name))
        return tuple(by_name[name] for name in fallback)
    return urls


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
        return bool(self.old != self.new)

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
