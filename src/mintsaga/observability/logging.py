"""Log lines for people (default) or one JSON object per line (`LOG_FORMAT=json`), never secrets.

JSON lines carry `time`, `level`, `logger`, `message` and whatever is known of the context:
`workflow_id`, `mint_id` (the workflow id without its `mint-` prefix), `run_id`, `activity`
and `stage` (the activity's step), `attempt`, plus every `extra=` field the code passes
(`endpoint`, `cid`, `code`, ...). Inside an activity the context comes from
`temporalio.activity.info()`, so a client's own log lines are bound too; `bound(**fields)` binds
more for a block of code.

The redaction guard runs on every line in both formats: the values of `SECRET_SETTINGS` found in
the environment or in the files their `NAME_FILE` names (the Pinata JWT, the mint key seed, the
codec's keys and token, the Temporal API key, a DSN's password), the keys in the endpoint URLs
of `URL_SETTINGS` (`errors.url_secrets`: query, userinfo, path and host) and anything
`add_secret()` registered are replaced by `***`, as are URL passwords (`user:pw@`), bearer
tokens and `password=` pairs; `endpoint` fields are reduced to `redact_url` form.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TextIO
from urllib.parse import urlsplit

from temporalio import activity, workflow

from mintsaga.errors import redact_url, url_secrets
from mintsaga.setting_readers import SettingsError, secret_from_env

FORMAT_SETTING = "LOG_FORMAT"
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Settings whose values must never appear in a line; DSNs contribute their password only.
SECRET_SETTINGS = (
    "PINATA_JWT",
    "MINT_KEY_SEED",
    "MINTSAGA_CODEC_KEYS",
    "MINTSAGA_CODEC_TOKEN",
    "TEMPORAL_API_KEY",
)
DSN_SETTINGS = ("DATABASE_URL",)
# Settings holding endpoint URLs (comma-separated lists too), whose keys (in the query, userinfo,
# path or a host label: `errors.url_secrets`) a library may quote in its own words.
URL_SETTINGS = (
    "SOLANA_RPC_ENDPOINTS",
    "SOLANA_EMERGENCY_ENDPOINTS",
    "IPFS_GATEWAYS",
    "IPFS_DEDICATED_GATEWAY",
    "KUBO_API_URL",
    "PINATA_API_URL",
)
MIN_SECRET_LENGTH = 4  # shorter values would blank out ordinary words (URL passwords are
# removed by pattern whatever their length)
CHATTY_LOGGERS = ("httpx", "httpx2")  # one INFO line per request: our own logs say more

_PATTERNS = (
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*):[^@\s/]*@"), r"\1:***@"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1 ***"),
    (re.compile(r"(?i)\b(password|passwd|pwd)=[^\s&;]+"), r"\1=***"),
)
# LogRecord's own attributes: everything else on a record came from `extra=`.
_RECORD_FIELDS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName", "temporal_activity", "temporal_workflow"}
)
_NOTHING_BOUND: Mapping[str, Any] = MappingProxyType({})
_bound: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "mintsaga_log_fields", default=_NOTHING_BOUND
)
_secrets: set[str] = set()


# -- redaction -----------------------------------------------------------------------------------


def add_secret(value: str | None) -> None:
    """Never let `value` into a log line (a key another module holds, say)."""
    if value and len(value.strip()) >= MIN_SECRET_LENGTH:
        _secrets.add(value.strip())


def _setting(env: Mapping[str, str], name: str) -> str:
    """The value of `name`, or of the file `name_FILE` names (a bad one is the settings' error
    to report, not this guard's)."""
    try:
        return secret_from_env(env, name, required=False) or ""
    except SettingsError:
        return env.get(name, "")


def secrets_from_env(env: Mapping[str, str]) -> list[str]:
    found = [_setting(env, name) for name in SECRET_SETTINGS]
    for name in DSN_SETTINGS:
        with contextlib.suppress(ValueError):
            found.append(urlsplit(_setting(env, name)).password or "")
    for name in URL_SETTINGS:
        for url in _setting(env, name).split(","):
            found.extend(url_secrets(url))
    return [value for value in found if value]


def redact(text: str) -> str:
    """`text` without any registered secret, URL password, bearer token or password pair."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFormatter(logging.Formatter):
    """The readable format, redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


# -- context -------------------------------------------------------------------------------------


@contextlib.contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Add `fields` to every JSON line logged in this block (this task and those it starts)."""
    token = _bound.set({**_bound.get(), **fields})
    try:
        yield
    finally:
        _bound.reset(token)


def mint_id_of(workflow_id: str | None) -> str | None:
    if workflow_id and workflow_id.startswith("mint-"):
        return workflow_id[len("mint-") :]
    return None


def _context(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    details = getattr(record, "temporal_activity", None)
    if details is None and activity.in_activity():
        info = activity.info()
        details = {
            "workflow_id": info.workflow_id,
            "workflow_run_id": info.workflow_run_id,
            "activity_type": info.activity_type,
            "attempt": info.attempt,
        }
    if isinstance(details, Mapping):
        fields.update(
            workflow_id=details.get("workflow_id"),
            run_id=details.get("workflow_run_id"),
            activity=details.get("activity_type"),
            stage=details.get("activity_type"),
            attempt=details.get("attempt"),
        )
    wf = getattr(record, "temporal_workflow", None)
    if isinstance(wf, Mapping):
        fields.update(
            workflow_id=wf.get("workflow_id"), run_id=wf.get("run_id"), attempt=wf.get("attempt")
        )
    fields["mint_id"] = mint_id_of(fields.get("workflow_id"))
    fields.update(_bound.get())
    return {key: value for key, value in fields.items() if value is not None}


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_context(record))
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                line[key] = value
        if isinstance(line.get("endpoint"), str) and "://" in line["endpoint"]:
            line["endpoint"] = redact_url(line["endpoint"])
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(_plain(line), ensure_ascii=False)


# -- setup ---------------------------------------------------------------------------------------


def log_format(env: Mapping[str, str]) -> str:
    raw = env.get(FORMAT_SETTING, "").strip().lower() or "text"
    if raw not in FORMATS:
        raise SettingsError(f"{FORMAT_SETTING}: {raw!r} is not a log format (use text or json)")
    return raw


def configure_logging(
    env: Mapping[str, str] | None = None,
    *,
    level: int = logging.INFO,
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
) -> str:
    """Send every log line to `stream` (stderr) in `LOG_FORMAT`; returns the format used.

    Replaces the root logger's handlers. Raises SettingsError for a bad `LOG_FORMAT`.
    """
    env = os.environ if env is None else env
    chosen = log_format(env)
    for value in [*secrets_from_env(env), *secrets]:
        add_secret(value)
    handler = logging.StreamHandler(stream or sys.stderr)
    if chosen == "json":
        handler.setFormatter(JsonFormatter())
        # The context is in the object's fields; no need to repeat it inside the message.
        activity.logger.activity_info_on_message = False
        workflow.logger.workflow_info_on_message = False
    else:
        handler.setFormatter(RedactingFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for chatty in CHATTY_LOGGERS:
        logging.getLogger(chatty).setLevel(logging.WARNING)
    return chosen
