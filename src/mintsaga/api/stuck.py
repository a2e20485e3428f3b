"""The mints waiting for an operator, the longest waiting first (`mintsaga list --stuck`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.service import RPCError

from mintsaga.api.history import (
    awaiting_since_from_history,
    last_failure_from_history,
)
from mintsaga.workflows.mint_saga import MINT_STAGE, MintSaga
from mintsaga.workflows.models import (
    MintResult,
    MintStatus,
    StatusView,
)

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
    handle: WorkflowHandle[MintSaga, MintResult] = client.get_workflow_handle_for(
        MintSaga.run, execution.id, run_id=execution.run_id
    )
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
