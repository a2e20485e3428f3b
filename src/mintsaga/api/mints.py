"""Start and steer mints from a backend: connect, start (idempotent per `mint_id`), status,
retry and compensate, list.

Starting the same request twice returns the same workflow, finished or not; the same `mint_id`
with another request is refused with a `StarterError` naming the fields that differ.
"""

from __future__ import annotations

import os
import re
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
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

from mintsaga import temporal_client
from mintsaga.api.errors import StarterError
from mintsaga.api.image_urls import (
    check_image_url,
)
from mintsaga.codec import data_converter_from_env
from mintsaga.observability.tracing import interceptors
from mintsaga.setting_readers import SettingsError
from mintsaga.settings import operator_fee_cap_from_env, priority_fee_cap_from_env
from mintsaga.stages import MintStage
from mintsaga.workflows.mint_saga import MINT_STAGE, MINT_STATUS, MintSaga
from mintsaga.workflows.models import (
    COLLECTION_KEY_PATTERN,
    MintRequest,
    MintResult,
    MintStatus,
    RetryOverrides,
    StatusView,
    workflow_id_for,
)
from mintsaga.workflows.saga import MINT_COLLECTION

DEFAULT_TASK_QUEUE = "mint-saga"


async def connect(address: str | None = None, namespace: str | None = None) -> Client:
    """A client with the converter the worker uses (pydantic; the codec with
    MINTSAGA_CODEC_KEYS set), for the environment's Temporal (`mintsaga.temporal_client`:
    TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS_*, a TOML profile);
    `address` and `namespace` given here win."""
    env = dict(os.environ)
    if address:
        env["TEMPORAL_ADDRESS"] = address
    if namespace:
        env["TEMPORAL_NAMESPACE"] = namespace
    return await temporal_client.connect(
        data_converter=data_converter_from_env(),  # MINTSAGA_CODEC_KEYS: encrypted payloads
        interceptors=interceptors(),
        env=env,
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
    check_priority_fee(request)
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
                    # Only with a collection: a namespace without the attribute still mints.
                    *(
                        [SearchAttributePair(MINT_COLLECTION, request.collection)]
                        if request.collection is not None
                        else []
                    ),
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


def check_priority_fee(request: MintRequest) -> None:
    """Refuse a requested priority fee above SOLANA_PRIORITY_FEE_CAP (as set where this runs;
    the worker's default otherwise): the hot wallet pays it, and only an operator may bid more."""
    fee = request.options.priority_fee_micro_lamports
    try:
        cap = priority_fee_cap_from_env()
    except SettingsError as exc:
        raise StarterError(str(exc)) from None
    if fee is not None and fee > cap:
        raise StarterError(
            "invalid request, nothing started: options.priority_fee_micro_lamports:"
            f" {fee} is above the cap SOLANA_PRIORITY_FEE_CAP={cap} (micro-lamports per CU)"
        )


def operator_fee_note(overrides: RetryOverrides | None) -> str | None:
    """What an operator should know about a retry's priority fee before sending it: a fee
    above SOLANA_OPERATOR_PRIORITY_FEE_CAP (as set where this runs) is clamped to it by the
    worker (the hot wallet is never bid more); None when there is nothing to say."""
    fee = overrides.priority_fee_micro_lamports if overrides is not None else None
    try:
        cap = operator_fee_cap_from_env()
    except SettingsError as exc:
        raise StarterError(str(exc)) from None
    if fee is None or fee <= cap:
        return None
    return (
        f"priority fee {fee} is above SOLANA_OPERATOR_PRIORITY_FEE_CAP={cap} (micro-lamports"
        " per CU): the worker clamps it to its cap"
    )


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
        # .get: fields left out of the payload when unset (MintRequest's serializer).
        return [name for name in MintRequest.model_fields if ours.get(name) != theirs.get(name)]
    raise StarterError(f"mint {request.mint_id}: its workflow has no history to compare with")


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
    client: Client,
    mint_id: str,
    overrides: RetryOverrides | None = None,
    *,
    keep_overrides: bool = False,
) -> StatusView:
    """Retry the step a mint waits at; refused when nothing waits.

    `overrides` (a priority fee, an endpoint to send to first) last until the next decision:
    a retry drops those of earlier retries unless `keep_overrides` (or
    `overrides.keep_overrides`) is set, then its own fields replace theirs.
    """
    overrides = overrides or RetryOverrides()
    if keep_overrides and not overrides.keep_overrides:
        overrides = overrides.model_copy(update={"keep_overrides": True})
    try:
        return await _handle(client, mint_id).execute_update(MintSaga.retry_update, overrides)
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


async def list_mints(
    client: Client, *, stuck: bool = False, queued: bool = False, collection: str | None = None
) -> list[dict[str, Any]]:
    """Mints, newest first: all of them, or those awaiting an operator (`stuck`), or those
    waiting at admission (`queued`: MintStatus QUEUED, running; MINT_ADMISSION_LIMIT); with
    ``collection``, only the mints naming that collection's key."""
    if stuck and queued:
        raise StarterError("list: --stuck or --queued, not both")
    query = 'WorkflowType="MintSaga"'
    if stuck:
        query += f' AND MintStatus="{MintStatus.AWAITING_OPERATOR.value}"'
    if queued:
        query += f' AND MintStatus="{MintStatus.QUEUED.value}" AND ExecutionStatus="Running"'
    if collection is not None:
        if not re.fullmatch(COLLECTION_KEY_PATTERN, collection):
            raise StarterError(f"list --collection {collection!r}: not a collection key")
        query += f' AND MintCollection="{collection}"'
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
                "collection": attributes.get(MINT_COLLECTION),
            }
        )
    return rows
