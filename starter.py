"""Start and steer mints: a Python API for the backend, and a CLI for operators.

    python starter.py mint --request FILE.json [--wait] [--json]
    python starter.py status MINT_ID [--json]
    python starter.py list [--stuck]
    python starter.py retry MINT_ID [--priority-fee N] [--endpoint URL]
    python starter.py compensate MINT_ID

Reads TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE and TEMPORAL_TASK_QUEUE (defaults: 127.0.0.1:7233,
default, mint-saga). Starting the same `mint_id` twice returns the same workflow, finished or
not. With `--json` the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from temporalio.client import (
    Client,
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
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from clients.process_exit import exit_now
from clients.stages import MintStage
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
    """A client with the pydantic converter the worker uses."""
    return await Client.connect(
        address or os.environ.get("TEMPORAL_ADDRESS") or "127.0.0.1:7233",
        namespace=namespace or os.environ.get("TEMPORAL_NAMESPACE") or "default",
        data_converter=pydantic_data_converter,
    )


def task_queue() -> str:
    return os.environ.get("TEMPORAL_TASK_QUEUE") or DEFAULT_TASK_QUEUE


async def start_mint(
    client: Client, request: MintRequest, *, queue: str | None = None
) -> WorkflowHandle[MintSaga, MintResult]:
    """Start the mint, or return the workflow already started for its `mint_id`."""
    try:
        return await client.start_workflow(
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
        return client.get_workflow_handle_for(MintSaga.run, request.workflow_id)


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


# ------------------------------------------------------------------------------- CLI


def load_request(path: Path) -> MintRequest:
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise StarterError(f"--request: cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise StarterError(f"--request: {path} is not JSON: {exc}") from exc
    try:
        return MintRequest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'request'}: {error['msg']}"
            for error in exc.errors()
        )
        raise StarterError(f"invalid request, nothing started: {problems}") from exc


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
        print(f"  WAITING at {view.awaiting_step}: retry or compensate with starter.py")
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


async def cmd_list(client: Client, args: argparse.Namespace) -> int:
    rows = await list_mints(client, stuck=args.stuck)
    now = datetime.now(UTC)
    for row in rows:
        age = now - row["started"]
        line = f"{row['mint_id']:<40} {row['status'] or '-':<18} {row['stage'] or '-':<21} {age}"
        if args.stuck:
            view = await get_status(client, row["mint_id"])
            error = view.last_error
            line += (
                f"  at {view.awaiting_step}: {error.type + ': ' + error.message if error else ''}"
            )
        print(line)
    if not rows:
        print("no stuck mints" if args.stuck else "no mints")
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
    listing.add_argument("--stuck", action="store_true", help="only those awaiting an operator")
    listing.set_defaults(func=cmd_list)
    again = commands.add_parser("retry", help="retry the step a mint waits at")
    again.add_argument("mint_id")
    again.add_argument("--priority-fee", type=int, default=None, help="micro-lamports per CU")
    again.add_argument("--endpoint", default=None, help="preferred RPC endpoint")
    again.set_defaults(func=cmd_retry)
    undo = commands.add_parser("compensate", help="roll back a mint waiting before the pivot")
    undo.add_argument("mint_id")
    undo.set_defaults(func=cmd_compensate)
    return top


async def _main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
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


if __name__ == "__main__":
    exit_now(asyncio.run(_main()))
