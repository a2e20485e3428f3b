"""How one setting is read from the environment, and the error when it is wrong.

`SettingsError` names the variable at fault and never echoes a secret's value;
`secret_from_env` reads a secret from `NAME` or from the file `NAME_FILE` names; the other
readers check an integer, a number, a boolean or http(s) URLs. `mintsaga.settings`,
`mintsaga.temporal_settings` and `mintsaga.worker_tuning` build on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from mintsaga.errors import endpoint_name


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _required(env: Mapping[str, str], name: str, what: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SettingsError(f"{name} is not set: it names {what}")
    return value


FILE_SUFFIX = "_FILE"


def _read_setting_file(setting: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"{setting}: cannot read {path} ({exc.strerror or exc})") from None


def secret_from_env(
    env: Mapping[str, str], name: str, what: str = "", *, required: bool = True
) -> str | None:
    """A secret setting: `NAME` holds the value, or `NAME_FILE` the path of a file holding it
    (a mounted Kubernetes or compose secret; surrounding whitespace, the final newline too, is
    dropped). Both set, the file unreadable or empty, or (when `required`) neither set: a
    SettingsError naming the variable, never the value. None when optional and unset."""
    file_setting = name + FILE_SUFFIX
    value = env.get(name, "").strip()
    path = env.get(file_setting, "").strip()
    if value and path:
        raise SettingsError(
            f"{name} and {file_setting} are both set: set one (the value, or the path of a file"
            " holding it)"
        )
    if path:
        try:
            value = _read_setting_file(file_setting, path).decode().strip()
        except UnicodeDecodeError:
            raise SettingsError(f"{file_setting}: {path} is not UTF-8 text") from None
        if not value:
            raise SettingsError(f"{file_setting}: {path} is empty")
    if value:
        return value
    if required:
        raise SettingsError(
            f"{name} is not set (nor {file_setting}, a file holding it): it names {what}"
        )
    return None


def _required_secret(env: Mapping[str, str], name: str, what: str) -> str:
    value = secret_from_env(env, name, what)
    assert value is not None  # required: missing raises
    return value


def _url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{name}: {parts.scheme or 'no'} scheme; expected an http(s) URL")
    return value.rstrip("/")


def _url_list(env: Mapping[str, str], name: str, what: str) -> tuple[str, ...]:
    items = [item.strip() for item in _required_secret(env, name, what).split(",") if item.strip()]
    if not items:
        raise SettingsError(f"{name} is empty: it lists {what}, comma-separated")
    return tuple(_url(name, item) for item in items)


def _named_urls(env: Mapping[str, str], name: str, what: str) -> tuple[str, ...]:
    """`_url_list`, each URL's name (`endpoint_name`: the URL without its key) unique: the
    runtime settings and the breakers know endpoints by those names."""
    urls = _url_list(env, name, what)
    names = [endpoint_name(url) for url in urls]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SettingsError(
            f"{name}: {', '.join(twice)} is listed twice (the same URL, or the same one with"
            " another key): each endpoint must be told apart without its key"
        )
    return urls


def _int(
    env: Mapping[str, str],
    name: str,
    default: int,
    *,
    minimum: int = 0,
    maximum: int | None = None,
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{name}: {value} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{name}: {value} is above the maximum {maximum}")
    return value


def bool_setting(env: Mapping[str, str], name: str) -> bool:
    """A true/false setting: unset, 0, false or no is false; 1, true or yes is true."""
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise SettingsError(f"{name}: {raw!r} is not a boolean (use true or false)")


def _float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not a number") from None
    if not value >= minimum or value == float("inf"):  # NaN fails the first test
        raise SettingsError(f"{name}: {raw} is not a finite number >= {minimum:g}")
    return value
