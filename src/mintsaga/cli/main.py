"""The operators' CLI: `mintsaga` (or `python starter.py`, the same commands).

    mintsaga mint --request FILE.json [--wait] [--json]
    mintsaga status MINT_ID [--json]
    mintsaga list [--stuck | --queued] [--json]
    mintsaga show MINT_ID [--json]
    mintsaga retry MINT_ID [--priority-fee N] [--endpoint URL] [--keep-overrides]
    mintsaga compensate MINT_ID
    mintsaga maintenance on|off|status
    mintsaga emergency on|off|status
    mintsaga endpoints list [--json] | set NAME[,NAME...] | reset
    mintsaga breaker list [--max-age SECONDS]
    mintsaga breaker open|close|disable|reset NAME|URL [--force]
    mintsaga health [--json] [--latest [--schedule ID]] [--timeout SECONDS]
    mintsaga livecheck --report FILE.json [--request FILE.json] [--mint-timeout S] [--json]
    mintsaga events [--after CURSOR] [--limit N] [--follow]
    mintsaga webhooks list [--state pending|failed|delivered] [--mint MINT_ID] [--json]
    mintsaga webhooks retry (EVENT_ID... | --failed)
    mintsaga collection create --key KEY --name NAME --symbol SYM --max-size N [--image PATH]
    mintsaga collection rotate-authority --key KEY --new-keypair FILE
    mintsaga collection list [--json]

Reads TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE and TEMPORAL_TASK_QUEUE (defaults: 127.0.0.1:7233,
default, mint-saga), and MINTSAGA_CODEC_KEYS: payloads encrypted as the worker's (mintsaga.codec).
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
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from mintsaga.api import health as health_checks
from mintsaga.api.errors import StarterError
from mintsaga.api.mints import (
    connect,
)
from mintsaga.api.requests import load_request
from mintsaga.api.switches import (
    BREAKER_ACTIONS,
    _split_urls,
    config_store,
    database_url,
)
from mintsaga.cli.collections import add_collection_parser
from mintsaga.cli.commands import (
    cmd_breaker,
    cmd_compensate,
    cmd_emergency,
    cmd_endpoints,
    cmd_health,
    cmd_list,
    cmd_livecheck,
    cmd_maintenance,
    cmd_mint,
    cmd_retry,
    cmd_show,
    cmd_status,
)
from mintsaga.cli.events import add_events_command
from mintsaga.cli.webhooks import add_webhooks_parser
from mintsaga.codec import data_converter_from_env
from mintsaga.db.runtime_settings import RuntimeConfigError, RuntimeSettings
from mintsaga.errors import ServiceError
from mintsaga.observability.logging import configure_logging
from mintsaga.observability.tracing import configure_tracing, shutdown_tracing
from mintsaga.process_exit import exit_now
from mintsaga.setting_readers import SettingsError
from mintsaga.temporal_settings import TemporalTarget


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


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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
    listing.add_argument(
        "--collection",
        default=None,
        metavar="KEY",
        help="only the mints naming this collection (`collection list` shows the keys)",
    )
    listing.add_argument(
        "--queued",
        action="store_true",
        help="only those waiting at admission (MINT_ADMISSION_LIMIT reached): nothing claimed yet",
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
    again.add_argument(
        "--keep-overrides",
        action="store_true",
        help="keep the fee and endpoint earlier retries set (a retry without it drops them)",
    )
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
    endpoint_set = endpoint_actions.add_parser(
        "set", help="reorder the configured ones, primary first, by name (as `list` shows them)"
    )
    endpoint_set.add_argument("urls", nargs="+", metavar="NAME[,NAME...]")
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

    live = commands.add_parser(
        "livecheck",
        help="probe the configured providers (a worker's settings) and compare them with the"
        " devstack's assumptions (exit 1 on a difference)",
    )
    live.add_argument("--report", type=Path, required=True, help="write the JSON report here")
    live.add_argument(
        "--request", type=Path, help="also mint this request end to end (needs a running worker)"
    )
    live.add_argument(
        "--mint-timeout", type=float, default=600.0, metavar="SECONDS", help="wait this long"
    )
    live.add_argument("--json", action="store_true", help="end with one JSON object")
    live.set_defaults(func=cmd_livecheck)
    add_events_command(commands)  # the cursor feed (cli/events.py): DATABASE_URL only
    add_webhooks_parser(commands)  # webhook deliveries (cli/webhooks.py): DATABASE_URL only
    add_collection_parser(commands)  # collections (cli/collections.py): no Temporal
    return top


async def _main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if getattr(args, "settings", False):
            return await _run_settings_command(args)
        if getattr(args, "temporal", True) is False:  # reads Postgres only (`events`)
            return int(await args.func(None, args))
        if args.command in ("mint", "livecheck") and args.request:
            load_request(args.request)  # refuse a bad request before connecting anywhere
        if args.command == "livecheck" and not args.request:
            return int(await args.func(None, args))  # no mint: Temporal is not needed
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
        TemporalTarget.from_env()  # TEMPORAL_ADDRESS, TEMPORAL_API_KEY, TEMPORAL_TLS_*, likewise
    except SettingsError as exc:
        print(f"starter: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(argv))
    finally:
        shutdown_tracing()  # flush spans: exit_now skips atexit


def main(argv: list[str] | None = None) -> None:
    """The `mintsaga` console script (and `python starter.py`)."""
    exit_now(_observed_main(argv))


if __name__ == "__main__":
    main()
