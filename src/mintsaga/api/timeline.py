"""Everything `mintsaga show` prints: where a mint stands, and its timeline merged from the
workflow history, the `mint_events` rows and its pending steps (`mintsaga.api.history`)."""

from __future__ import annotations

import os
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
)
from temporalio.service import RPCError, RPCStatusCode

from mintsaga.api.errors import StarterError
from mintsaga.api.history import (
    Entry,
    event_entries,
    history_entries,
    merge,
    pending_entries,
)
from mintsaga.api.mints import (
    _handle,
)
from mintsaga.api.stuck import _status_or_none
from mintsaga.db.mint_store import MintStore
from mintsaga.errors import ServiceError
from mintsaga.setting_readers import SettingsError, secret_from_env
from mintsaga.workflows.mint_saga import MINT_STAGE, MINT_STATUS
from mintsaga.workflows.models import (
    workflow_id_for,
)


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
