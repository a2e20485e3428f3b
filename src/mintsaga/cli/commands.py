"""The CLI's commands, one `cmd_*` per subcommand, each a thin layer over `mintsaga.api`."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta

from temporalio.client import (
    Client,
    WorkflowFailureError,
)
from temporalio.service import RPCError, RPCStatusCode

from mintsaga.api import health as health_checks
from mintsaga.api.errors import StarterError
from mintsaga.api.history import (
    failure_text,
)
from mintsaga.api.livecheck import run_livecheck, write_report
from mintsaga.api.mints import (
    compensate,
    get_status,
    list_mints,
    operator_fee_note,
    retry,
    start_mint,
    task_queue,
)
from mintsaga.api.requests import load_request
from mintsaga.api.stuck import stuck_mints
from mintsaga.api.switches import (
    BREAKER_ACTIONS,
    _split_urls,
    endpoints_in_use,
    list_breakers,
    reset_breaker,
    set_breaker_override,
    set_emergency,
    set_endpoints,
    set_maintenance,
)
from mintsaga.api.timeline import mint_timeline
from mintsaga.cli.render import (
    _age,
    _breaker_table,
    _print_change,
    _print_json,
    _print_status,
    _print_stuck,
    _table,
)
from mintsaga.db.runtime_config import (
    RuntimeConfigStore,
)
from mintsaga.setting_readers import SettingsError
from mintsaga.settings import Settings
from mintsaga.workflows.models import (
    MintStatus,
    RetryOverrides,
)


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
    if args.stuck:
        return _print_stuck(await stuck_mints(client), as_json=args.json)
    rows = await list_mints(client, queued=args.queued, collection=args.collection)
    now = datetime.now(UTC)
    if args.json:
        _print_json({"mints": rows})
        return 0
    table = [("MINT_ID", "STATUS", "STAGE", "AGE")]
    for row in rows:
        age = _age((now - row["started"]).total_seconds())
        table.append((row["mint_id"], row["status"] or "-", row["stage"] or "-", age))
    print("\n".join(_table(table)) if rows else "no mints" + (" queued" if args.queued else ""))
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
        print(f"  WAITING at {steps}{waited}: {verb} (mintsaga retry|compensate MINT_ID)")
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
        priority_fee_micro_lamports=args.priority_fee,
        preferred_endpoint=args.endpoint,
        keep_overrides=args.keep_overrides,
    )
    note = operator_fee_note(overrides)
    if note:
        print(f"note: {note}", file=sys.stderr)
    view = await retry(client, args.mint_id, overrides)
    print(f"retry accepted: {args.mint_id} resumes at {view.awaiting_step} ({view.stage})")
    return 0


async def cmd_compensate(client: Client, args: argparse.Namespace) -> int:
    view = await compensate(client, args.mint_id)
    print(f"compensation accepted: {args.mint_id} rolls back from {view.awaiting_step}")
    return 0


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


# A worker reports every poll (5 s); one silent for longer than this has stopped or is cut off.
STALE_REPORT_S = 30.0


async def cmd_endpoints(store: RuntimeConfigStore, args: argparse.Namespace) -> int:
    if args.action in ("set", "reset"):
        urls = _split_urls(args.urls) if args.action == "set" else None
        _print_change(await set_endpoints(store, urls))
        print("  workers apply it at their next poll (5 s): `mintsaga endpoints list` shows it")
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


async def cmd_health(client: Client, args: argparse.Namespace) -> int:
    """Probe every dependency now (a `HealthCheck` run on the task queue), or read the newest
    scheduled run; print the table; 1 when any check fails."""
    try:
        if args.latest:
            found = await health_checks.latest_scheduled(client, schedule_id=args.schedule)
            if found is None:
                raise StarterError(
                    f"health: schedule {args.schedule} has not started a run yet"
                    " (run `mintsaga health` without --latest to probe now)"
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


async def cmd_livecheck(client: Client | None, args: argparse.Namespace) -> int:
    """Probe the configured providers, write the report, name every way they differ from the
    devstack's assumptions; 1 when any does."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise StarterError(f"livecheck needs a worker's settings: {exc}") from exc
    request = load_request(args.request) if args.request else None

    def progress(line: str) -> None:
        print(f"livecheck: {line}", file=sys.stderr, flush=True)

    report = await run_livecheck(
        settings,
        client=client if request is not None else None,
        request=request,
        progress=progress,
        mint_timeout_s=args.mint_timeout,
    )
    write_report(args.report, report)
    found = report["differences"]
    if args.json:
        _print_json({"report": str(args.report), "differences": found})
    else:
        for line in found:
            print(f"difference: {line}")
        print(f"{len(found)} difference(s) from the devstack's assumptions; report: {args.report}")
    return 1 if found else 0
