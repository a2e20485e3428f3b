"""`mintsaga webhooks list|retry`: the webhook deliveries (docs/webhooks.md), read from
DATABASE_URL like the runtime switches.

    mintsaga webhooks list [--state pending|failed|delivered] [--mint MINT_ID] [--limit N] [--json]
    mintsaga webhooks retry (EVENT_ID... | --failed)
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from mintsaga.api.errors import StarterError
from mintsaga.api.switches import database_url
from mintsaga.api.webhooks import delivery_store, list_deliveries, retry_deliveries
from mintsaga.db.webhook_deliveries import DELIVERY_STATES, DeliveryRow
from mintsaga.errors import ServiceError

__all__ = ["add_webhooks_parser", "cmd_webhooks"]


def add_webhooks_parser(commands: Any) -> None:
    """The `webhooks` command and its actions, on the CLI's subparsers."""
    hooks = commands.add_parser("webhooks", help="webhook deliveries: list, or send again")
    actions = hooks.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="deliveries, newest notice first")
    listing.add_argument("--state", choices=DELIVERY_STATES, default=None)
    listing.add_argument("--mint", default=None, metavar="MINT_ID", help="one mint's deliveries")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    listing.add_argument("--json", action="store_true", help="one JSON object")
    again = actions.add_parser(
        "retry", help="failed deliveries back to pending, due now (tried for another day)"
    )
    again.add_argument("event_ids", nargs="*", metavar="EVENT_ID", help="evt_N, as `list` shows")
    again.add_argument("--failed", action="store_true", help="every failed delivery")
    hooks.set_defaults(func=cmd_webhooks, temporal=False)  # Postgres only


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _print_rows(rows: list[DeliveryRow]) -> None:
    header = ("EVENT", "TYPE", "MINT", "ENDPOINT", "STATE", "ATTEMPTS", "LAST", "NEXT / DONE")
    table = [header]
    for row in rows:
        last = "-" if row.last_status is None and not row.last_error else (row.last_error or "")
        if row.last_status is not None and not row.last_error:
            last = str(row.last_status)
        done = row.delivered_at if row.state == "delivered" else row.next_attempt_at
        if row.state == "failed":
            done = row.last_attempt_at
        table.append(
            (
                row.event_id,
                row.type or "-",
                row.mint_id,
                row.endpoint,
                row.state,
                str(row.attempts),
                last[:60],
                _when(done),
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip())


async def cmd_webhooks(_client: object, args: argparse.Namespace) -> int:
    url = database_url()
    try:
        store = await delivery_store(url)
    except ServiceError as exc:
        raise StarterError(f"cannot reach the database (DATABASE_URL): {exc}") from exc
    try:
        if args.action == "list":
            rows = await list_deliveries(
                store, state=args.state, mint_id=args.mint, limit=args.limit
            )
            if args.json:
                print(json.dumps({"deliveries": [r.as_json() for r in rows]}, sort_keys=True))
            elif rows:
                _print_rows(rows)
            else:
                print("no webhook deliveries" + (f" in state {args.state}" if args.state else ""))
            return 0
        requeued = await retry_deliveries(store, args.event_ids, every_failed=args.failed)
        for row in requeued:
            print(f"requeued {row.event_id} to {row.endpoint} (mint {row.mint_id})")
        if not requeued:
            print("no failed delivery to requeue")
            return 1
        return 0
    except ServiceError as exc:
        raise StarterError(f"webhooks {args.action}: {exc}") from exc
    finally:
        await store.close()
