"""Start and steer mints: a Python API for the backend, and a CLI for operators.

    python starter.py mint --request FILE.json [--wait] [--json]
    python starter.py status MINT_ID [--json]
    python starter.py list [--stuck] [--json]
    python starter.py show MINT_ID [--json]
    python starter.py retry MINT_ID [--priority-fee N] [--endpoint URL]
    python starter.py compensate MINT_ID
    python starter.py maintenance on|off|status
    python starter.py emergency on|off|status
    python starter.py endpoints list [--json] | set URL[,URL...] | reset
    python starter.py breaker list [--max-age SECONDS]
    python starter.py breaker open|close|disable|reset NAME|URL [--force]
    python starter.py health [--json] [--latest [--schedule ID]] [--timeout SECONDS]

Reads TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE and TEMPORAL_TASK_QUEUE (defaults: 127.0.0.1:7233,
default, mint-saga), and MINTSAGA_CODEC_KEYS: payloads encrypted as the worker's (codec/).
The runtime settings (maintenance, emergency, endpoints, breaker overrides) live in Postgres:
those commands read DATABASE_URL instead, record who changed what ($USER@hostname), and
workers pick the change up within a poll (5 s). `show` reads both: the
workflow's history from Temporal and the mint's `mint_events` rows from DATABASE_URL (left out,
with a note, when it is unset). docs/runbook.md walks the operator's procedures.

Starting the same request twice returns the same workflow, finished or not; the same
`mint_id` with another request is refused, naming the fields that differ. An image URL must be
https to a public host (http and private hosts only where MINT_IMAGE_ALLOW_PRIVATE_URLS is set,
as in the devstack). With `--json` the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import ipaddress
import json
import logging
import os
import socket
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from clients.errors import ServiceError, redact_url
from clients.images import is_link_local, is_public_address
from clients.mint_store import MintStore
from clients.mint_timeline import (
    Entry,
    awaiting_since_from_history,
    event_entries,
    failure_text,
    history_entries,
    last_failure_from_history,
    merge,
    pending_entries,
)
from clients.process_exit import exit_now
from clients.runtime_config import (
    RuntimeConfigError,
    RuntimeConfigStore,
    RuntimeSettings,
    SettingChange,
    solana_endpoints_for,
)
from clients.settings import SettingsError, TemporalSecurity, secret_from_env
from clients.stages import MintStage
from codec import data_converter_from_env
from observability import health as health_checks
from observability.logging import configure_logging
from observability.tracing import configure_tracing, interceptors, shutdown_tracing
from workflows.mint_saga import MINT_STAGE, MINT_STATUS, MintSaga
from workflows.models import (
    MintRequest,
    MintResult,
    MintStatus,
    RetryOverrides,
    StatusView,
    workflow_id_for,
)

DEFAULT_TASK_QUEUE = "mint-saga"


class StarterError(RuntimeError):
    """A request the starter refuses, or a mint it cannot steer; the message says why."""


# ------------------------------------------------------------------------------- Python API


async def connect(address: str | None = None, namespace: str | None = None) -> Client:
    """A client with the converter the worker uses (pydantic; the codec with
    MINTSAGA_CODEC_KEYS set)."""
    return await Client.connect(
        address or os.environ.get("TEMPORAL_ADDRESS") or "127.0.0.1:7233",
        namespace=namespace or os.environ.get("TEMPORAL_NAMESPACE") or "default",
        data_converter=data_converter_from_env(),  # MINTSAGA_CODEC_KEYS: encrypted payloads
        interceptors=interceptors(),
        **TemporalSecurity.from_env().connect_options(),  # TEMPORAL_API_KEY, TEMPORAL_TLS_*
    )


def task_queue() -> str:
    return os.environ.get("TEMPORAL_TASK_QUEUE") or DEFAULT_TASK_QUEUE


async def start_mint(
    client: Client,
    request: MintRequest,
    *,
    queue: str | None = None,
    allow_private_urls: bool | None = None,
) -> WorkflowHandle[MintSaga, MintResult]:
    """Start the mint, or return the workflow already started for the same request.

    Refused with a `StarterError`, before anything starts, when the image URL is not one a
    worker may fetch (`check_image_url`; `allow_private_urls` defaults to
    MINT_IMAGE_ALLOW_PRIVATE_URLS here). Refused too when the `mint_id` already belongs to a
    mint of another request: naming the fields that differ, it is never merged into that one.
    """
    check_image_url(request, allow_private_urls=allow_private_urls)
    try:
        handle = await client.start_workflow(
            MintSaga.run,
            request,
            id=request.workflow_id,
            task_queue=queue or task_queue(),
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(MINT_STAGE, MintStage.INITIATED.value),
                    SearchAttributePair(MINT_STATUS, MintStatus.IN_PROGRESS.value),
                ]
            ),
            static_summary=f"mint {request.mint_id} for user {request.user_id}",
        )
    except WorkflowAlreadyStartedError:
        # Finished already: REJECT_DUPLICATE keeps the id, and this is that mint.
        handle = client.get_workflow_handle_for(MintSaga.run, request.workflow_id)
    # Whoever started it (this call, an earlier one, a racing starter), its input decides.
    differ = await _fields_differing(client, handle, request)
    if differ:
        raise StarterError(
            f"mint_id {request.mint_id} already exists with another {', '.join(differ)};"
            " nothing started (a new mint needs a new mint_id)"
        )
    return handle


async def _fields_differing(
    client: Client, handle: WorkflowHandle[MintSaga, MintResult], request: MintRequest
) -> list[str]:
    """The request's fields that differ from the input the workflow was started with."""
    async for event in handle.fetch_history_events(page_size=1):
        payloads = event.workflow_execution_started_event_attributes.input.payloads
        try:
            [started] = await client.data_converter.decode(payloads, [MintRequest])
        except Exception:  # started by hand, or from another language, with something else
            return ["request (the existing one is not a valid MintRequest)"]
        ours, theirs = request.model_dump(mode="json"), started.model_dump(mode="json")
        return [name for name in MintRequest.model_fields if ours[name] != theirs[name]]
    raise StarterError(f"mint {request.mint_id}: its workflow has no history to compare with")


# The static half of the worker's image checks (clients.images does the rest, per redirect hop).
PRIVATE_URLS_SETTING = "MINT_IMAGE_ALLOW_PRIVATE_URLS"


def allow_private_urls_here() -> bool:
    """MINT_IMAGE_ALLOW_PRIVATE_URLS where the starter runs (the devstack sets it)."""
    raw = os.environ.get(PRIVATE_URLS_SETTING, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise StarterError(f"{PRIVATE_URLS_SETTING}: {raw!r} is not a boolean (use true or false)")


def check_image_url(request: MintRequest, *, allow_private_urls: bool | None = None) -> None:
    """Refuse an image URL no worker should fetch, before anything starts.

    Only https, to a host that is not a loopback, private or link-local address literal (or
    `localhost`). With `allow_private_urls` (the devstack: its servers are on loopback) http
    and private hosts pass; link-local (169.254.169.254, cloud metadata) never does. Host
    names are resolved by the worker, which checks every address of every hop again.
    """
    url = request.image.url
    if url is None:
        return
    allow = allow_private_urls_here() if allow_private_urls is None else allow_private_urls
    problem = _image_url_problem(url, allow)
    if problem:
        raise StarterError(f"invalid request, nothing started: image.url: {problem}")


def _image_url_problem(url: str, allow_private: bool) -> str | None:
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    if parts.scheme not in ("https", "http"):
        return f"must be an https URL, not {parts.scheme or 'schemeless'}"
    if not host:
        return "has no host"
    if parts.scheme == "http" and not allow_private:
        return f"must be https (http is for the devstack only: {PRIVATE_URLS_SETTING})"
    address = _address_literal(host)
    if address is not None and is_link_local(address):
        return f"host {host} is link-local (cloud metadata lives there); it is never fetched"
    if allow_private:
        return None
    if host == "localhost" or host.endswith(".localhost"):
        return f"host {host} is loopback; only public hosts may be fetched"
    if address is not None and not is_public_address(address):
        return (
            f"host {host} is a loopback, private or reserved address;"
            " only public hosts may be fetched"
        )
    return None


def _address_literal(host: str) -> str | None:
    """The IP address a host literal spells (127.1 and 2130706433 too, as resolvers read them)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if all(c in "0123456789abcdefx." for c in host.lower()):
        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _handle(client: Client, mint_id: str) -> WorkflowHandle[MintSaga, MintResult]:
    return client.get_workflow_handle_for(MintSaga.run, workflow_id_for(mint_id))


async def get_status(client: Client, mint_id: str) -> StatusView:
    try:
        return await _handle(client, mint_id).query(MintSaga.status)
    except WorkflowQueryFailedError as exc:
        raise StarterError(f"status {mint_id}: {exc.message}") from exc
    except RPCError as exc:
        raise StarterError(f"status {mint_id}: {_finished_or(exc)}") from exc


async def retry(
    client: Client, mint_id: str, overrides: RetryOverrides | None = None
) -> StatusView:
    """Retry the step a mint waits at; refused when nothing waits."""
    try:
        return await _handle(client, mint_id).execute_update(
            MintSaga.retry_update, overrides or RetryOverrides()
        )
    except WorkflowUpdateFailedError as exc:
        raise StarterError(f"retry {mint_id}: {exc.cause}") from exc
    except RPCError as exc:
        raise StarterError(f"retry {mint_id}: {_finished_or(exc)}") from exc


async def compensate(client: Client, mint_id: str) -> StatusView:
    """Roll back a mint waiting before the pivot; refused otherwise."""
    try:
        return await _handle(client, mint_id).execute_update(MintSaga.compensate_update)
    except WorkflowUpdateFailedError as exc:
        raise StarterError(f"compensate {mint_id}: {exc.cause}") from exc
    except RPCError as exc:
        raise StarterError(f"compensate {mint_id}: {_finished_or(exc)}") from exc


def _finished_or(exc: RPCError) -> str:
    if exc.status == RPCStatusCode.NOT_FOUND and "completed" in exc.message:
        return "the mint has finished: nothing is waiting for an operator"
    if exc.status == RPCStatusCode.NOT_FOUND:
        return "no such mint"
    return exc.message


async def list_mints(client: Client, *, stuck: bool = False) -> list[dict[str, Any]]:
    query = 'WorkflowType="MintSaga"'
    if stuck:
        query += f' AND MintStatus="{MintStatus.AWAITING_OPERATOR.value}"'
    rows = []
    async for execution in client.list_workflows(query):
        attributes = execution.typed_search_attributes
        rows.append(
            {
                "mint_id": execution.id.removeprefix("mint-"),
                "status": attributes.get(MINT_STATUS),
                "stage": attributes.get(MINT_STAGE),
                "started": execution.start_time,
                "running": execution.status == WorkflowExecutionStatus.RUNNING,
            }
        )
    return rows


# A status query that no worker answers (none polling the queue) gives up after this.
STATUS_QUERY_TIMEOUT = timedelta(seconds=5)


async def _status_or_none(
    handle: WorkflowHandle[MintSaga, MintResult],
) -> tuple[StatusView | None, str | None]:
    """The `status` query's answer, or None and why not (no worker answering, say)."""
    try:
        return await handle.query(MintSaga.status, rpc_timeout=STATUS_QUERY_TIMEOUT), None
    except WorkflowQueryFailedError as exc:
        return None, f"the status query failed: {exc.message}"
    except RPCError as exc:
        return (
            None,
            f"no worker answered the status query ({exc.status.name if exc.status else exc})",
        )


async def stuck_mints(client: Client) -> list[dict[str, Any]]:
    """The mints waiting for an operator, the longest waiting first: those AWAITING_OPERATOR
    (a step spent its retries) and those FAILED and still running (a compensation did).

    Each row: ``mint_id``, ``workflow_id``, ``stage``, ``awaiting_steps``, ``last_error``
    (``step``, ``type``, ``kind``, ``message``), ``awaiting_since`` and ``waiting_s`` (from the
    status query, else from when the history set ``MintStatus``), ``started``, ``past_pivot``
    and ``note`` (set when no worker answered and the row comes from the history).
    """
    query = (
        f'WorkflowType="MintSaga" AND (MintStatus="{MintStatus.AWAITING_OPERATOR.value}"'
        f' OR (MintStatus="{MintStatus.FAILED.value}" AND ExecutionStatus="Running"))'
    )
    now = datetime.now(UTC)
    rows = [
        await _stuck_row(client, execution, now) async for execution in client.list_workflows(query)
    ]
    return sorted(rows, key=lambda row: row["awaiting_since"] or now)


async def _stuck_row(client: Client, execution: WorkflowExecution, now: datetime) -> dict[str, Any]:
    handle = client.get_workflow_handle_for(MintSaga.run, execution.id, run_id=execution.run_id)
    view, note = await _status_or_none(handle)
    row: dict[str, Any] = {
        "mint_id": execution.id.removeprefix("mint-"),
        "workflow_id": execution.id,
        "stage": execution.typed_search_attributes.get(MINT_STAGE),
        "awaiting_steps": [],
        "last_error": None,
        "awaiting_since": None,
        "waiting_s": None,
        "started": execution.start_time,
        "past_pivot": None,
        "note": note,
    }
    if view is not None:
        row["stage"] = view.stage.value
        row["awaiting_steps"] = list(view.awaiting_steps) or (
            [view.awaiting_step] if view.awaiting_step else []
        )
        row["last_error"] = view.last_error.model_dump() if view.last_error else None
        row["awaiting_since"] = view.awaiting_since
        row["past_pivot"] = view.past_pivot
    else:
        found = await last_failure_from_history(handle, client.data_converter)
        if found is not None:
            row["last_error"] = {"step": found[0], **found[1]}
    if row["awaiting_since"] is None:  # a worker older than `awaiting_since`, or none answering
        row["awaiting_since"] = await awaiting_since_from_history(handle)
    if row["awaiting_since"] is not None:
        row["waiting_s"] = max(0.0, (now - row["awaiting_since"]).total_seconds())
    return row


async def mint_events(mint_id: str, url: str | None = None) -> tuple[list[Entry], str | None]:
    """The mint's rows in ``mint_events`` as timeline entries, or none and why not."""
    try:
        url = url or secret_from_env(os.environ, "DATABASE_URL", required=False)  # or _FILE
    except SettingsError as exc:
        return [], f"mint_events not shown: {exc}"
    if not url:
        return [], "DATABASE_URL is not set: the mint_events rows are not shown"
    try:
        store = await MintStore.connect(url, min_size=1, max_size=1, command_timeout=10.0)
    except ServiceError as exc:
        return [], f"mint_events not shown: cannot reach the database (DATABASE_URL): {exc}"
    try:
        return event_entries(await store.events(mint_id)), None
    except ServiceError as exc:
        return [], f"mint_events not shown: {exc}"
    finally:
        await store.close()


async def mint_timeline(
    client: Client, mint_id: str, *, database_url: str | None = None
) -> dict[str, Any]:
    """Everything `show` prints: where the mint stands and its timeline, oldest first.

    The timeline merges the workflow history (steps, attempts, failures, search attribute
    changes, operators' signals and updates, the outcome), the ``mint_events`` rows
    (DATABASE_URL; left out with a note when unset or unreachable) and, while the mint runs,
    its pending steps. A finished mint shows the same. A `StarterError` when neither Temporal
    nor the event table knows the mint.
    """
    handle = _handle(client, mint_id)
    notes: list[str] = []
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise StarterError(f"show {mint_id}: {exc.message}") from exc
        description = None
    events, why_not = await mint_events(mint_id, database_url)
    if why_not:
        notes.append(why_not)
    if description is None:
        if not events:
            checked = "" if why_not else ", and no row in mint_events"
            raise StarterError(
                f"show {mint_id}: no such mint (no workflow {workflow_id_for(mint_id)}{checked})"
            )
        notes.append(f"no workflow {workflow_id_for(mint_id)} (its history may have expired)")
        return {
            "mint_id": mint_id,
            "workflow_id": workflow_id_for(mint_id),
            "run_id": None,
            "execution_status": None,
            "status": None,
            "stage": None,
            "view": None,
            "notes": notes,
            "timeline": [entry.as_json() for entry in merge(events)],
        }
    history = await history_entries(handle, client.data_converter)
    running = description.status == WorkflowExecutionStatus.RUNNING
    view, pending = None, []
    if running:
        view, why_not = await _status_or_none(handle)
        if why_not:
            notes.append(why_not)
        pending = await pending_entries(description, client.data_converter)
    attributes = description.typed_search_attributes
    return {
        "mint_id": mint_id,
        "workflow_id": description.id,
        "run_id": description.run_id,
        "execution_status": description.status.name if description.status else None,
        "status": view.status.value if view else attributes.get(MINT_STATUS),
        "stage": view.stage.value if view else attributes.get(MINT_STAGE),
        "view": view.model_dump(mode="json") if view else None,
        "notes": notes,
        "timeline": [entry.as_json() for entry in merge(history, events, pending)],
    }


# ------------------------------------------------------------------------------- runtime settings

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
    store: RuntimeConfigStore, urls: Sequence[str] | None, *, by: str | None = None
) -> SettingChange:
    """Replace the Solana endpoints, primary first; None: back to SOLANA_RPC_ENDPOINTS."""
    return await store.set_endpoints(urls, by or operator())


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
    key-like path part (`clients.errors.redact_url`); so a URL matches the known name that
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


# ------------------------------------------------------------------------------- CLI


def load_request(path: Path) -> MintRequest:
    """The request in a JSON file, checked as `start_mint` checks it (with this environment)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise StarterError(f"--request: cannot read {path}: {exc.strerror}") from exc
    request = request_from_json(text, source=f"--request: {path}")
    check_image_url(request)
    return request


def request_from_json(text: str | bytes, *, source: str = "request") -> MintRequest:
    """A `MintRequest` from a backend's JSON; a `StarterError` names every bad field."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StarterError(f"{source} is not JSON: {exc}; nothing started") from exc
    try:
        return MintRequest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_named_problem(error) for error in exc.errors())
        raise StarterError(f"invalid request, nothing started: {problems}") from exc


def _named_problem(error: Any) -> str:
    """`attributes[3].value: at most 256 characters`: the field first, as the request spells it."""
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
    field = field.removeprefix(".") or "request"
    message = str(error["msg"]).removeprefix("Value error, ")
    # The model's own messages already start with the field (`image.url: ...`).
    return message if message.startswith(field) else f"{field}: {message}"


def _print_json(model: Any) -> None:
    data = model.model_dump(mode="json") if hasattr(model, "model_dump") else model
    print(json.dumps(data, sort_keys=True, default=str))


def _print_status(view: StatusView) -> None:
    print(f"mint {view.mint_id}: {view.status} at {view.stage}")
    print(f"  owner         {view.owner}")
    print(f"  mint address  {view.mint_address or '-'}")
    print(f"  image         {view.image_cid or '-'}")
    print(f"  metadata      {view.metadata_cid or '-'}")
    print(f"  signature     {view.signature or '-'}")
    print(f"  past pivot    {view.past_pivot}")
    if view.awaiting_operator:
        since = f" since {view.awaiting_since:%Y-%m-%d %H:%M:%S %Z}" if view.awaiting_since else ""
        steps = ", ".join(view.awaiting_steps) or view.awaiting_step
        print(f"  WAITING at {steps}{since}: retry or compensate with starter.py")
    if view.last_error:
        error = view.last_error
        print(f"  last error    {error.step}: {error.type} ({error.kind}): {error.message}")
    if view.reason:
        print(f"  reason        {view.reason}")


async def cmd_mint(client: Client, args: argparse.Namespace) -> int:
    request = load_request(args.request)
    handle = await start_mint(client, request)
    if not args.json:
        print(f"started {handle.id} (mint {request.mint_id})", flush=True)
    if not args.wait:
        if args.json:
            _print_json({"workflow_id": handle.id, "mint_id": request.mint_id})
        return 0
    if not args.json:
        print("waiting for the result ...", flush=True)
    try:
        result = await handle.result()
    except WorkflowFailureError as exc:
        raise StarterError(f"mint {request.mint_id} ended without a result: {exc.cause}") from exc
    if args.json:
        _print_json(result)
    else:
        print(f"{result.status}: {result.mint_address or '-'} owned by {result.owner}")
        if result.reason:
            print(f"reason: {result.reason}")
    return 0 if result.status == MintStatus.MINTED else 1


async def cmd_status(client: Client, args: argparse.Namespace) -> int:
    view = await get_status(client, args.mint_id)
    if args.json:
        _print_json(view)
    else:
        _print_status(view)
    return 0


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_cell(error: dict[str, Any] | None, limit: int = 80) -> str:
    if not error:
        return "-"
    return _clip(f"{error.get('type') or 'error'}: {error.get('message', '')}", limit)


async def cmd_list(client: Client, args: argparse.Namespace) -> int:
    if args.stuck:
        return _print_stuck(await stuck_mints(client), as_json=args.json)
    rows = await list_mints(client)
    now = datetime.now(UTC)
    if args.json:
        _print_json({"mints": rows})
        return 0
    table = [("MINT_ID", "STATUS", "STAGE", "AGE")]
    for row in rows:
        age = _age((now - row["started"]).total_seconds())
        table.append((row["mint_id"], row["status"] or "-", row["stage"] or "-", age))
    print("\n".join(_table(table)) if rows else "no mints")
    return 0


def _print_stuck(rows: list[dict[str, Any]], *, as_json: bool) -> int:
    if as_json:
        _print_json({"stuck": rows})
        return 0
    if not rows:
        print("no stuck mints")
        return 0
    table = [("MINT_ID", "STAGE", "WAITING AT", "WAITING FOR", "LAST ERROR")]
    for row in rows:
        waited = "?" if row["waiting_s"] is None else _age(row["waiting_s"])
        table.append(
            (
                row["mint_id"],
                row["stage"] or "-",
                ",".join(row["awaiting_steps"]) or "?",
                waited,
                _error_cell(row["last_error"]),
            )
        )
    for line in _table(table):
        print(line)
    for row in rows:
        if row["note"]:
            print(f"{row['mint_id']}: {row['note']}")
    print(
        f"{len(rows)} mint(s) waiting: `starter.py show MINT_ID` for the story, then"
        " `starter.py retry MINT_ID` or `starter.py compensate MINT_ID`"
    )
    return 0


async def cmd_show(client: Client, args: argparse.Namespace) -> int:
    shown = await mint_timeline(client, args.mint_id)
    if args.json:
        _print_json(shown)
        return 0
    view = shown["view"]
    state = f"{shown['status'] or '-'} at {shown['stage'] or '-'}"
    run = shown["execution_status"] or "no workflow"
    print(f"mint {shown['mint_id']}: {state} (workflow {shown['workflow_id']}: {run})")
    if view and view["awaiting_operator"]:
        since = view.get("awaiting_since")
        waited = ""
        if since:
            seconds = (datetime.now(UTC) - datetime.fromisoformat(since)).total_seconds()
            waited = f" for {_age(seconds)}"
        steps = ", ".join(view["awaiting_steps"] or [view["awaiting_step"]])
        verb = "retry" if view["past_pivot"] else "retry or compensate"
        print(f"  WAITING at {steps}{waited}: {verb} (starter.py retry|compensate MINT_ID)")
    if view and view["last_error"]:
        error = view["last_error"]
        print(f"  last error  {error['step']}: {failure_text(error)}")
    for note in shown["notes"]:
        print(f"  note: {note}")
    day = None
    for entry in shown["timeline"]:
        at = datetime.fromisoformat(entry["at"])
        if at.date() != day:
            day = at.date()
            print(f"{day.isoformat()} (UTC)")
        clock = f"{at:%H:%M:%S}.{at.microsecond // 1000:03d}"
        print(f"  {clock}  {entry['source']:<7}  {entry['text']}")
    return 0


async def cmd_retry(client: Client, args: argparse.Namespace) -> int:
    overrides = RetryOverrides(
        priority_fee_micro_lamports=args.priority_fee, preferred_endpoint=args.endpoint
    )
    view = await retry(client, args.mint_id, overrides)
    print(f"retry accepted: {args.mint_id} resumes at {view.awaiting_step} ({view.stage})")
    return 0


async def cmd_compensate(client: Client, args: argparse.Namespace) -> int:
    view = await compensate(client, args.mint_id)
    print(f"compensation accepted: {args.mint_id} rolls back from {view.awaiting_step}")
    return 0


def _print_change(change: SettingChange) -> None:
    print(f"{change.describe()}, by {change.by} at {change.at:%Y-%m-%d %H:%M:%S %Z}")
    if change.previous_by and change.changed:
        print(f"  (last set by {change.previous_by})")


async def _print_switch(store: RuntimeConfigStore, key: str) -> int:
    """`maintenance status` / `emergency status`: on or off, who set it and when."""
    entry = next((entry for entry in await store.entries() if entry.key == key), None)
    if entry is None:
        print(f"{key}: off (never set)")
    else:
        state = "on" if entry.value else "off"
        print(
            f"{key}: {state}, set by {entry.updated_by} at {entry.updated_at:%Y-%m-%d %H:%M:%S %Z}"
        )
    return 0


async def cmd_maintenance(store: RuntimeConfigStore, args: argparse.Namespace) -> int:
    if args.state == "status":
        return await _print_switch(store, "maintenance")
    change = await set_maintenance(store, args.state == "on")
    _print_change(change)
    if change.new:
        print("  new mints wait at the start until `maintenance off`; running mints finish")
    return 0


async def cmd_emergency(store: RuntimeConfigStore, args: argparse.Namespace) -> int:
    if args.state == "status":
        return await _print_switch(store, "emergency")
    change = await set_emergency(store, args.state == "on")
    _print_change(change)
    if change.new:
        print("  workers skip the primary Solana endpoint: all traffic goes to the backups")
    return 0


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
    listed = settings.solana_endpoints or configured_endpoints()
    effective = solana_endpoints_for(settings, listed)
    return {
        "source": "runtime override" if override else "SOLANA_RPC_ENDPOINTS",
        "set_by": entry.updated_by if entry else None,
        "set_at": entry.updated_at if entry else None,
        "listed": [redact_url(url) for url in listed],
        "effective": [redact_url(url) for url in effective],
        "emergency": settings.emergency,
        "workers": workers_endpoints(await store.breakers()),
    }


# A worker reports every poll (5 s); one silent for longer than this has stopped or is cut off.
STALE_REPORT_S = 30.0


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


async def cmd_endpoints(store: RuntimeConfigStore, args: argparse.Namespace) -> int:
    if args.action in ("set", "reset"):
        urls = _split_urls(args.urls) if args.action == "set" else None
        _print_change(await set_endpoints(store, urls))
        print("  workers apply it at their next poll (5 s): `starter.py endpoints list` shows it")
        return 0
    view = await endpoints_in_use(store)
    if args.json:
        _print_json(view)
        return 0
    if view["set_by"]:
        print(
            f"solana endpoints: runtime override, set by {view['set_by']}"
            f" at {view['set_at']:%Y-%m-%d %H:%M:%S %Z}"
        )
    else:
        print("solana endpoints: from SOLANA_RPC_ENDPOINTS (no runtime override)")
        if not view["listed"]:
            print("  (SOLANA_RPC_ENDPOINTS is not set in this shell: the workers' own list)")
    for position, url in enumerate(view["listed"], start=1):
        role = "primary" if position == 1 else "backup"
        skipped = "  (skipped: emergency mode)" if url not in view["effective"] else ""
        print(f"  {position}. {url}  {role}{skipped}")
    if view["emergency"]:
        print("emergency mode is on: the primary is skipped while there is a backup")
    workers = view["workers"]
    if not workers:
        print("no worker reports what it uses (none running, or none reached the database)")
    for worker in workers:
        used = [endpoint["name"] for endpoint in worker["endpoints"]]
        if not used:
            verdict = "reports no endpoint order (a worker older than this starter)"
        elif not view["effective"] or used == view["effective"]:
            verdict = "uses"
        else:
            verdict = "uses (not the order above yet: it applies it at its next poll, 5 s)"
        stale = ""
        if worker["age_s"] > STALE_REPORT_S:
            stale = " [no report since: stopped, or cut off from the database?]"
        print(f"worker {worker['worker_id']} ({_age(worker['age_s'])} ago{stale}) {verdict}")
        for endpoint in worker["endpoints"]:
            print(f"  {endpoint['position']}. {endpoint['name']}  breaker {endpoint['state']}")
    return 0


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _rate(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value * 100:.0f}%"
    return "-"


def _breaker_table(reports: list[dict[str, Any]], settings: RuntimeSettings) -> list[str]:
    rows = [("WORKER", "NAME", "STATE", "OVERRIDE", "TRIPS", "SUCCESS", "AGE")]
    for report in reports:
        snapshot = report["snapshot"]
        override = str(snapshot.get("override") or "none")
        wanted = settings.breaker_overrides.get(report["name"], "none")
        if wanted != override:
            override += f" (set: {wanted})"
        rows.append(
            (
                report["worker_id"],
                report["name"],
                str(snapshot.get("state", "-")),
                override,
                str(snapshot.get("trips", "-")),
                _rate(snapshot.get("success_rate")),
                _age(report["age_s"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


async def cmd_breaker(store: RuntimeConfigStore, args: argparse.Namespace) -> int:
    if args.action != "list":
        if args.action == "reset":
            changes = await reset_breaker(store, args.name, force=args.force)
        else:
            changes = [
                await set_breaker_override(
                    store, args.name, BREAKER_ACTIONS[args.action], force=args.force
                )
            ]
        for change in changes:
            _print_change(change)
        return 0
    reports = await list_breakers(store, max_age_s=args.max_age)
    settings = await store.load()
    if reports:
        for line in _breaker_table(reports, settings):
            print(line)
    else:
        print("no breaker reported by any worker")
    reported = {report["name"] for report in reports}
    for name, override in settings.breaker_overrides.items():
        if name not in reported:
            print(f"override {override} set for {name}, which no worker reports")
    return 0


def _precheck(args: argparse.Namespace) -> None:
    """Refuse bad input before connecting anywhere."""
    try:
        if args.command == "endpoints" and args.action == "set":
            RuntimeSettings(solana_endpoints=_split_urls(args.urls))
        if args.command == "breaker" and args.action != "list":
            RuntimeSettings(breaker_overrides={args.name: BREAKER_ACTIONS[args.action]})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: "
            f"{str(error['msg']).removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        raise StarterError(f"{args.command} {args.action}: {problems}; nothing changed") from exc


async def _run_settings_command(args: argparse.Namespace) -> int:
    _precheck(args)
    url = database_url()
    try:
        store = await config_store(url)
    except ServiceError as exc:
        raise StarterError(f"cannot reach the database (DATABASE_URL): {exc}") from exc
    try:
        return int(await args.func(store, args))
    except RuntimeConfigError as exc:
        raise StarterError(f"{args.command}: {exc}; nothing changed") from exc
    except ServiceError as exc:
        raise StarterError(f"{args.command}: {exc}") from exc
    finally:
        await store.close()


# ------------------------------------------------------------------------------- health


async def cmd_health(client: Client, args: argparse.Namespace) -> int:
    """Probe every dependency now (a `HealthCheck` run on the task queue), or read the newest
    scheduled run; print the table; 1 when any check fails."""
    try:
        if args.latest:
            found = await health_checks.latest_scheduled(client, schedule_id=args.schedule)
            if found is None:
                raise StarterError(
                    f"health: schedule {args.schedule} has not started a run yet"
                    " (run `starter.py health` without --latest to probe now)"
                )
            workflow_id, rows = found
        else:
            workflow_id, rows = await health_checks.run_health_check(
                client, task_queue(), run_timeout=timedelta(seconds=args.timeout)
            )
    except WorkflowFailureError as exc:
        raise StarterError(
            f"health: the check did not finish ({exc.cause}); is a worker polling"
            f" {task_queue()} (TEMPORAL_TASK_QUEUE)?"
        ) from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise StarterError(
                f"health: no schedule {args.schedule} (a worker creates it at startup unless"
                f" {health_checks.INTERVAL_SETTING}=0)"
            ) from exc
        raise StarterError(f"health: {exc.message}") from exc
    failing = [row for row in rows if not row.ok]
    if args.json:
        _print_json(health_checks.as_json(workflow_id, rows))
    else:
        for line in health_checks.table(rows):
            print(line)
        verdict = f"{len(failing)} of {len(rows)} checks failing" if failing else "all ok"
        print(f"{verdict} ({workflow_id})")
    return 1 if failing or not rows else 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="starter.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = top.add_subparsers(dest="command", required=True)
    mint = commands.add_parser("mint", help="start a mint from a JSON request")
    mint.add_argument("--request", type=Path, required=True, help="MintRequest as JSON")
    mint.add_argument("--wait", action="store_true", help="wait for the MintResult")
    mint.add_argument("--json", action="store_true", help="end with one JSON object")
    mint.set_defaults(func=cmd_mint)
    status = commands.add_parser("status", help="where a mint stands")
    status.add_argument("mint_id")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    listing = commands.add_parser("list", help="mints, newest first")
    listing.add_argument(
        "--stuck",
        action="store_true",
        help="only those awaiting an operator: stage, step, last error, how long they waited",
    )
    listing.add_argument("--json", action="store_true", help="one JSON object")
    listing.set_defaults(func=cmd_list)
    show = commands.add_parser(
        "show", help="a mint's timeline: its workflow history and mint_events, merged by time"
    )
    show.add_argument("mint_id")
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.set_defaults(func=cmd_show)
    again = commands.add_parser("retry", help="retry the step a mint waits at")
    again.add_argument("mint_id")
    again.add_argument("--priority-fee", type=int, default=None, help="micro-lamports per CU")
    again.add_argument("--endpoint", default=None, help="preferred RPC endpoint")
    again.set_defaults(func=cmd_retry)
    undo = commands.add_parser("compensate", help="roll back a mint waiting before the pivot")
    undo.add_argument("mint_id")
    undo.set_defaults(func=cmd_compensate)

    # Runtime settings: Postgres (DATABASE_URL), not Temporal.
    maintenance = commands.add_parser("maintenance", help="new mints wait at the start (on/off)")
    maintenance.add_argument("state", choices=("on", "off", "status"))
    maintenance.set_defaults(func=cmd_maintenance, settings=True)
    emergency = commands.add_parser("emergency", help="Solana traffic to the backups (on/off)")
    emergency.add_argument("state", choices=("on", "off", "status"))
    emergency.set_defaults(func=cmd_emergency, settings=True)
    endpoints = commands.add_parser("endpoints", help="the Solana RPC endpoints in use")
    endpoint_actions = endpoints.add_subparsers(dest="action", required=True)
    endpoint_list = endpoint_actions.add_parser(
        "list", help="the setting, and the endpoints each worker uses, primary first"
    )
    endpoint_list.add_argument("--json", action="store_true", help="one JSON object")
    endpoint_set = endpoint_actions.add_parser("set", help="replace them, primary first")
    endpoint_set.add_argument("urls", nargs="+", metavar="URL[,URL...]")
    endpoint_actions.add_parser("reset", help="back to each worker's SOLANA_RPC_ENDPOINTS")
    endpoints.set_defaults(func=cmd_endpoints, settings=True)
    breaker = commands.add_parser("breaker", help="circuit breakers: list or override")
    breaker_actions = breaker.add_subparsers(dest="action", required=True)
    breaker_list = breaker_actions.add_parser("list", help="every worker's breakers")
    breaker_list.add_argument(
        "--max-age", type=float, default=None, metavar="SECONDS", help="hide older reports"
    )
    helps = {
        "open": "force the breaker open (no calls to the endpoint)",
        "close": "force it closed (calls go through whatever happens)",
        "disable": "breaker off: metrics only",
        "reset": "close the breaker now on every worker and remove any override",
    }
    for action, text in helps.items():
        sub = breaker_actions.add_parser(action, help=text)
        sub.add_argument(
            "name", help="the breaker's name, as `breaker list` shows it, or the endpoint's URL"
        )
        sub.add_argument("--force", action="store_true", help="even if no worker reports that name")
    breaker.set_defaults(func=cmd_breaker, settings=True)

    health = commands.add_parser(
        "health", help="probe every dependency now and print the table (exit 1 on a failure)"
    )
    health.add_argument("--json", action="store_true", help="end with one JSON object")
    health.add_argument(
        "--latest", action="store_true", help="the newest scheduled run instead of a new one"
    )
    health.add_argument(
        "--schedule", default=health_checks.HEALTH_SCHEDULE_ID, help="with --latest: its id"
    )
    health.add_argument(
        "--timeout", type=float, default=120.0, metavar="SECONDS", help="give up after this"
    )
    health.set_defaults(func=cmd_health)
    return top


async def _main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if getattr(args, "settings", False):
            return await _run_settings_command(args)
        if args.command == "mint":
            load_request(args.request)  # refuse a bad request before connecting anywhere
        client = await connect()
        return int(await args.func(client, args))
    except StarterError as exc:
        print(f"starter: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # Client.connect: the server is not reachable
        print(f"starter: cannot reach Temporal: {exc}", file=sys.stderr)
        return 2


def _observed_main(argv: list[str] | None = None) -> int:
    """`_main` with the log format (LOG_FORMAT) and tracing the environment asks for."""
    try:
        configure_logging(level=logging.WARNING)  # a command prints its own answer
        configure_tracing("mintsaga-starter")
        data_converter_from_env()  # MINTSAGA_CODEC_KEYS, checked before anything runs
        TemporalSecurity.from_env()  # TEMPORAL_API_KEY, TEMPORAL_TLS_*, likewise
    except SettingsError as exc:
        print(f"starter: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(argv))
    finally:
        shutdown_tracing()  # flush spans: exit_now skips atexit


if __name__ == "__main__":
    exit_now(_observed_main())
