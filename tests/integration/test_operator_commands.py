"""The operator commands of `starter.py`, run as an operator runs them, against a real stuck mint
and a real worker on the devstack: `list --stuck`, `show`, `retry`, `compensate`, the breaker
overrides, maintenance, emergency and the endpoints; and every command docs/runbook.md gives.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import re
import shlex
import time
import typing
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client

import mintsaga
from devstack.config import StackConfig
from devstack.requests import mint_request
from mintsaga.activities.failures import to_application_error
from mintsaga.api.switches import breaker_name_for, workers_endpoints
from mintsaga.cli.main import parser
from mintsaga.db.runtime_config import RuntimeConfigStore
from mintsaga.errors import ErrorKind, ServiceError, redact_url
from mintsaga.resilience.breaker import BreakerRegistry, BreakerState, Override
from mintsaga.settings import Settings
from mintsaga.workflows.models import MintStatus, StatusView
from tests.paths import HISTORIES, ROOT
from tests.saga_support import (
    Ran,
    activity_name,
    add_fault,
    clear_faults,
    replay_failures,
    run_starter,
    running_worker,
    wait_for,
)

RUNBOOK = ROOT / "docs" / "runbook.md"
Activity = Callable[..., Awaitable[Any]]
STUCK_QUEUE = "operator-commands"
SETTINGS_QUEUE = "operator-settings"
# The runbook sections the alert rules link to (deploy/prometheus); each must exist.
ANCHORS = (
    "breaker-open",
    "breaker-half-open",
    "service-degraded",
    "latency-high",
    "queue-backlog",
    "retries-exhausted",
    "mint-awaiting-operator",
    "wallet-low",
    "health-check-failing",
    "rpc-slot-lag",
    "maintenance-mode",
    "emergency-mode",
    "database-outage",
    "rpc-endpoint-down",
    "rpc-endpoint-unusable",
    "rpc-panic-routing",
    "rpc-emergency-endpoint",
    "rpc-budget-exhausted",
    "finalization-stalled",
    "ipfs-provider-down",
)


async def cli(stack: StackConfig, *argv: str, queue: str = STUCK_QUEUE) -> Ran:
    """`python starter.py ...` with the devstack's settings exported (DATABASE_URL included).

    Asynchronously: the worker answering its queries runs on this test's event loop.
    """
    env = {
        **os.environ,
        **stack.worker_env(),
        "DATABASE_URL": stack.database_url,
        "TEMPORAL_TASK_QUEUE": queue,
    }
    return await run_starter(env, *argv)


async def eventually(check: Callable[[], Any], within_s: float = 15, what: str = "") -> None:
    """Poll `check` (sync or async; true when done) until it holds: a worker polls every 5 s."""
    deadline = time.monotonic() + within_s
    while True:
        outcome = check()
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s} s: {what}")
        await asyncio.sleep(0.25)


def stuck_row(listing: dict[str, Any], mint_id: str) -> dict[str, Any] | None:
    return next((row for row in listing["stuck"] if row["mint_id"] == mint_id), None)


# ------------------------------------------------------------------------- a real stuck mint


@pytest.mark.integration
async def test_a_stuck_mint_is_listed_shown_retried_and_another_compensated(
    stack: StackConfig, client: Client
) -> None:
    breakers = BreakerRegistry()
    pinata, kubo = redact_url(stack.url("pinata")), redact_url(stack.url("kubo"))
    async with running_worker(stack, client, STUCK_QUEUE, breakers=breakers):
        # Both IPFS providers fail: the pre-mint check spends its retries and asks an operator.
        add_fault(stack, target="pinata", kind="status", status=503)
        add_fault(stack, target="kubo", kind="down")
        to_retry, to_undo = mint_request(stack), mint_request(stack)
        handles = [
            await mintsaga.start_mint(client, r, queue=STUCK_QUEUE) for r in (to_retry, to_undo)
        ]
        started = datetime.now(UTC)
        for request in (to_retry, to_undo):
            await wait_for(client, request.mint_id, lambda s: s.awaiting_operator, 60)

        # list --stuck: a table with stage, step, error and how long it has waited.
        listing = await cli(stack, "list", "--stuck")
        assert listing.returncode == 0, listing.stderr
        header, *lines = listing.stdout.splitlines()
        assert header.split()[:3] == ["MINT_ID", "STAGE", "WAITING"]
        line = next(line for line in lines if line.startswith(to_retry.mint_id))
        assert re.search(r"\sINITIATED\s+check_ipfs\s+[\dhms]+\s+(Pinata|Kubo)\w+: \S", line), line
        rows = (await cli(stack, "list", "--stuck", "--json")).json()
        row = stuck_row(rows, to_retry.mint_id)
        assert row is not None and stuck_row(rows, to_undo.mint_id) is not None
        assert row["stage"] == "INITIATED" and row["awaiting_steps"] == ["check_ipfs"]
        assert row["last_error"]["step"] == "check_ipfs"
        # Refused (503, down) or, once the breakers opened on those failures, skipped.
        assert re.fullmatch(
            r"(Pinata|Kubo)(Unavailable|Unreachable|CircuitOpen)", row["last_error"]["type"]
        )
        assert row["last_error"]["kind"] in ("transient", "rate_limited")
        assert row["last_error"]["message"]
        # The age is the wait, not the mint's: it began after three attempts (1 s + 2 s apart).
        since = datetime.fromisoformat(row["awaiting_since"])
        assert (since - datetime.fromisoformat(row["started"])).total_seconds() > 2.0
        assert 0 <= row["waiting_s"] <= (datetime.now(UTC) - started).total_seconds() - 2.0

        # show: the merged timeline, the failure and the wait in it.
        shown = await cli(stack, "show", to_retry.mint_id)
        assert shown.returncode == 0, shown.stderr
        assert f"mint {to_retry.mint_id}: AWAITING_OPERATOR" in shown.stdout
        assert "WAITING at check_ipfs" in shown.stdout
        assert "check_ipfs: FAILED after 3 attempts:" in shown.stdout
        assert "status -> AWAITING_OPERATOR" in shown.stdout

        # The providers are back: reset their breakers (by URL, as an operator pastes it) so
        # the retry need not wait out an open circuit; the worker closes them at its next poll.
        clear_faults(stack)
        for url in (stack.url("pinata") + "/", stack.url("kubo")):
            reset = await cli(stack, "breaker", "reset", url)
            assert reset.returncode == 0, reset.stderr
        overrides = await cli(stack, "breaker", "list")
        assert pinata in overrides.stdout and kubo in overrides.stdout

        def closed() -> bool:
            found = [breakers.find(name) for name in (pinata, kubo)]
            return all(b is None or b.state is BreakerState.CLOSED for b in found)

        await eventually(closed, what="the IPFS breakers closed by `breaker reset`")

        retried = await cli(stack, "retry", to_retry.mint_id)
        assert retried.returncode == 0, retried.stderr
        undone = await cli(stack, "compensate", to_undo.mint_id)
        assert undone.returncode == 0, undone.stderr
        minted, rolled_back = await asyncio.wait_for(
            asyncio.gather(*(h.result() for h in handles)), 60
        )
        assert minted.status == MintStatus.MINTED
        assert rolled_back.status == MintStatus.ROLLED_BACK

        # Neither waits any more.
        rows = (await cli(stack, "list", "--stuck", "--json")).json()
        assert stuck_row(rows, to_retry.mint_id) is None
        assert stuck_row(rows, to_undo.mint_id) is None

        # show after the end: the failure, the operator's retry, the database's events and the
        # outcome, merged by time.
        story = (await cli(stack, "show", to_retry.mint_id, "--json")).json()
        timeline = story["timeline"]
        assert story["execution_status"] == "COMPLETED" and story["status"] == "MINTED"
        times = [datetime.fromisoformat(entry["at"]) for entry in timeline]
        assert times == sorted(times)
        kinds = [(entry["kind"], entry["step"]) for entry in timeline]
        failed = kinds.index(("activity_failed", "check_ipfs"))
        [retry_at] = [
            i
            for i, entry in enumerate(timeline)
            if entry["kind"] == "update" and entry["detail"]["name"] == "retry_now"
        ]
        minted_row = next(
            i
            for i, entry in enumerate(timeline)
            if entry["source"] == "events" and entry["detail"]["stage"] == "MINTED"
        )
        completed = kinds.index(("workflow_completed", None))
        assert failed < retry_at < minted_row < completed
        assert timeline[completed]["detail"]["status"] == "MINTED"
        text = await cli(stack, "show", to_retry.mint_id)
        assert "update retry_now accepted" in text.stdout
        assert "events   MINTED [minted]" in text.stdout

        undone_story = await cli(stack, "show", to_undo.mint_id)
        assert "update compensate_now accepted" in undone_story.stdout
        assert f"mint {to_undo.mint_id}: ROLLED_BACK" in undone_story.stdout
        assert "workflow completed: ROLLED_BACK" in undone_story.stdout

    unknown = await cli(stack, "show", "no-such-mint-42")
    assert unknown.returncode == 2
    assert "no such mint" in unknown.stderr and "mint-no-such-mint-42" in unknown.stderr


# ------------------------------------------------------------------------- retry overrides

OVERRIDES_QUEUE = "operator-overrides"
OVERRIDE_FEE = 7_000


def _recording(
    calls: dict[str, list[Any]], field: str, refusals: int = 0
) -> Callable[[Activity], Activity]:
    """Wrapper: note `arg.<field>` per mint on every call; refuse each mint's first `refusals`
    calls as only a person can fix (the step waits for an operator at once), then run it."""

    def wrapper(original: Activity) -> Activity:
        async def wrapped(arg: Any) -> Any:
            seen = calls[arg.mint_id]
            seen.append(getattr(arg, field))
            if len(seen) <= refusals:
                # As a real activity says it (the system wallet short of lamports, say).
                raise to_application_error(
                    ServiceError(
                        "refused until an operator retries",
                        service="solana",
                        kind=ErrorKind.NEEDS_OPERATOR,
                        code="SystemWalletUnderfunded",
                    ),
                    activity.info().attempt,
                )
            return await original(arg)

        # The converter reads the input and result types from the annotations.
        hints = typing.get_type_hints(original)
        wrapped.__annotations__ = {"arg": next(iter(hints.values())), "return": hints["return"]}
        return activity.defn(name=activity_name(original))(wrapped)

    return wrapper


@pytest.mark.integration
async def test_a_retry_fee_above_the_operator_cap_is_announced_as_clamped(
    stack: StackConfig,
) -> None:
    """The worker clamps an operator's fee to SOLANA_OPERATOR_PRIORITY_FEE_CAP (the signed
    transaction: tests/integration/test_solana_minter.py); the CLI says so first, naming the
    cap, whatever then happens to the retry (here: no such mint)."""
    cap = Settings.from_env(stack.worker_env()).solana_operator_priority_fee_cap
    absent = f"absent-{uuid.uuid4().hex[:8]}"
    ran = await cli(stack, "retry", absent, "--priority-fee", str(cap + 1))
    assert f"priority fee {cap + 1} is above SOLANA_OPERATOR_PRIORITY_FEE_CAP={cap}" in ran.stderr
    assert "clamps it" in ran.stderr and "no such mint" in ran.stderr
    within = await cli(stack, "retry", absent, "--priority-fee", str(cap))
    assert "SOLANA_OPERATOR_PRIORITY_FEE_CAP" not in within.stderr


@pytest.mark.integration
async def test_a_plain_retry_drops_earlier_overrides_and_keep_overrides_keeps_them(
    stack: StackConfig, client: Client
) -> None:
    """An operator's priority fee and endpoint last until the next decision: after a retry
    with them, a plain `retry` runs the step with neither; `retry --keep-overrides` keeps
    both. The workers' default settings; only prepare_transaction is made to wait twice."""
    fees: dict[str, list[int | None]] = collections.defaultdict(list)
    sent_to: dict[str, list[str | None]] = collections.defaultdict(list)
    wrap = {
        "prepare_transaction": _recording(fees, "priority_fee_micro_lamports", refusals=2),
        "send_transaction": _recording(sent_to, "preferred_endpoint"),
    }
    backup = redact_url(stack.worker_env()["SOLANA_RPC_ENDPOINTS"].split(",")[1])
    async with running_worker(stack, client, OVERRIDES_QUEUE, wrap=wrap):
        plain, kept = mint_request(stack), mint_request(stack)
        handles = [
            await mintsaga.start_mint(client, r, queue=OVERRIDES_QUEUE) for r in (plain, kept)
        ]

        def waits_after(attempts: int) -> Callable[[StatusView], bool]:
            return lambda s: (
                s.awaiting_step == "prepare_transaction"
                and s.attempts.get("prepare_transaction") == attempts
            )

        for request in (plain, kept):
            await wait_for(client, request.mint_id, waits_after(1), 90)
            overridden = await cli(
                stack,
                "retry",
                request.mint_id,
                "--priority-fee",
                str(OVERRIDE_FEE),
                "--endpoint",
                backup,
                queue=OVERRIDES_QUEUE,
            )
            assert overridden.returncode == 0, overridden.stderr
            await wait_for(client, request.mint_id, waits_after(2), 60)
        again = await cli(stack, "retry", plain.mint_id, queue=OVERRIDES_QUEUE)
        assert again.returncode == 0, again.stderr
        keeping = await cli(stack, "retry", kept.mint_id, "--keep-overrides", queue=OVERRIDES_QUEUE)
        assert keeping.returncode == 0, keeping.stderr
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 90)
        assert [r.status for r in results] == [MintStatus.MINTED, MintStatus.MINTED]

        # The request set no fee (None: the worker computes one, capped).
        assert fees[plain.mint_id] == [None, OVERRIDE_FEE, None]
        assert sent_to[plain.mint_id] and set(sent_to[plain.mint_id]) == {None}
        assert fees[kept.mint_id] == [None, OVERRIDE_FEE, OVERRIDE_FEE]
        assert sent_to[kept.mint_id] and set(sent_to[kept.mint_id]) == {backup}

        story = await cli(stack, "show", kept.mint_id, queue=OVERRIDES_QUEUE)
        assert f"(priority fee {OVERRIDE_FEE}, endpoint {backup})" in story.stdout
        assert "update retry_now accepted from" in story.stdout
        assert "(keeping earlier overrides)" in story.stdout

    # What the stored histories hold (tests/replay/test_retry_overrides.py replays them):
    # RECORD_HISTORIES=1 writes these two there.
    histories = {
        "operator-retry-drops-overrides": await client.get_workflow_handle(
            f"mint-{plain.mint_id}"
        ).fetch_history(),
        "operator-retry-keeps-overrides": await client.get_workflow_handle(
            f"mint-{kept.mint_id}"
        ).fetch_history(),
    }
    assert await replay_failures(list(histories.values())) == {}
    if os.environ.get("RECORD_HISTORIES"):
        for name, history in histories.items():
            (HISTORIES / f"{name}.json").write_text(history.to_json())


# ------------------------------------------------------------------------- runtime settings


@pytest.fixture
async def settings_store(stack: StackConfig) -> AsyncIterator[RuntimeConfigStore]:
    store = await RuntimeConfigStore.connect(stack.database_url)
    try:
        yield store
    finally:  # whatever failed, the next test's workers see the defaults again
        await store.set_maintenance(False, "test cleanup")
        await store.set_emergency(False, "test cleanup")
        await store.set_endpoints(None, "test cleanup")
        for name in (await store.load()).breaker_overrides:
            await store.set_breaker_override(name, "none", "test cleanup")
        await store.close()


@pytest.mark.integration
async def test_breaker_maintenance_emergency_and_endpoints_round_trip_through_the_cli(
    stack: StackConfig, client: Client, settings_store: RuntimeConfigStore
) -> None:
    store = settings_store
    breakers = BreakerRegistry()
    urls = stack.worker_env()["SOLANA_RPC_ENDPOINTS"].split(",")
    names = [redact_url(url) for url in urls]
    primary = names[0]

    async def used() -> list[list[str]]:
        """The Solana endpoints each worker reported using, primary first."""
        reports = workers_endpoints(await store.breakers(max_age_s=15))
        return [[e["name"] for e in worker["endpoints"]] for worker in reports]

    async def workers_use(order: list[str]) -> bool:
        lists = await used()
        return bool(lists) and all(found == order for found in lists)

    def override_is(override: Override) -> bool:
        breaker = breakers.find(primary)
        return breaker is not None and breaker.override is override

    async with running_worker(stack, client, SETTINGS_QUEUE, breakers=breakers):
        await eventually(lambda: workers_use(names), what="the worker reports its endpoints")
        listed = await cli(stack, "endpoints", "list")
        assert listed.returncode == 0, listed.stderr
        assert "from SOLANA_RPC_ENDPOINTS" in listed.stdout
        assert f"1. {primary}  breaker" in listed.stdout

        # A breaker named by its URL as configured, with credentials: the worker's name is set
        # (and no credential is stored as a name).
        with_credentials = urls[0].replace("://", "://operator:hunter2@") + "/"
        opened = await cli(stack, "breaker", "open", with_credentials)
        assert opened.returncode == 0, opened.stderr
        assert (await store.load()).breaker_overrides == {primary: "force_open"}
        assert "hunter2" not in opened.stdout
        # Emergency on, a new order, and maintenance, all at once.
        for argv in (
            ("emergency", "on"),
            ("endpoints", "set", f"{urls[1]},{urls[2]}", urls[0]),
            ("maintenance", "on"),
        ):
            done = await cli(stack, *argv)
            assert done.returncode == 0, done.stderr
        # The new primary (urls[1]) is skipped in emergency mode: backups only.
        await eventually(
            lambda: workers_use([names[2], names[0]]), what="emergency with the new order"
        )
        await eventually(lambda: override_is(Override.FORCE_OPEN), what="breaker forced open")
        assert breakers.find(primary).state is BreakerState.OPEN  # type: ignore[union-attr]
        settings = await store.load()
        assert settings.maintenance and settings.emergency
        assert "maintenance: on" in (await cli(stack, "maintenance", "status")).stdout
        view = (await cli(stack, "endpoints", "list", "--json")).json()
        assert view["source"] == "runtime override" and view["emergency"] is True
        assert view["listed"] == [names[1], names[2], names[0]]
        assert view["effective"] == [names[2], names[0]]
        breaker_list = await cli(stack, "breaker", "list")
        assert re.search(rf"{re.escape(primary)}\s+open\s+force_open", breaker_list.stdout)

        closed = await cli(stack, "breaker", "close", primary)
        assert closed.returncode == 0, closed.stderr
        for argv in (("emergency", "off"), ("maintenance", "off")):
            done = await cli(stack, *argv)
            assert done.returncode == 0, done.stderr
        await eventually(lambda: workers_use([names[1], names[2], names[0]]), what="order")
        await eventually(lambda: override_is(Override.FORCE_CLOSED), what="forced closed")
        assert not (await store.load()).maintenance
        assert "emergency: off" in (await cli(stack, "emergency", "status")).stdout

        reset = await cli(stack, "breaker", "reset", primary)
        assert reset.returncode == 0, reset.stderr
        back = await cli(stack, "endpoints", "reset")
        assert back.returncode == 0, back.stderr
        await eventually(lambda: workers_use(names), what="the configured order again")
        await eventually(lambda: override_is(Override.NONE), what="the override released")
        assert breakers.find(primary).state is BreakerState.CLOSED  # type: ignore[union-attr]
        assert (await store.load()).breaker_overrides == {}

        typo = await cli(stack, "breaker", "open", "http://127.0.0.1:1/")
        assert typo.returncode == 2 and "no worker reports a breaker" in typo.stderr
        assert (await store.load()).breaker_overrides == {}


# ------------------------------------------------------------------------- the runbook


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


# A command as the runbook writes it: `mintsaga ...` or `python starter.py ...` (the same CLI),
# in a code span or at the start of a line of a code block.
RUNBOOK_COMMAND = re.compile(
    r"(?:^[ \t]*|(?<=`))(?:mintsaga|python starter\.py) ([^`\n#]*)", re.MULTILINE
)


def runbook_commands() -> list[list[str]]:
    """Every `mintsaga ...` (or `python starter.py ...`) command in the runbook, split as a shell
    would; a synopsis (`breaker open\\|close NAME [--force]`) gives each alternative, without its
    optional parts."""
    commands = []
    for match in RUNBOOK_COMMAND.finditer(RUNBOOK.read_text()):
        synopsis = re.split(r"\s>\s", match.group(1))[0]  # not a shell redirection after it
        synopsis = re.sub(r"\[[^\]]*\]", "", synopsis).replace("\\|", "|")
        words = [word.split("|") if "|" in word else [word] for word in shlex.split(synopsis)]
        commands.extend(list(argv) for argv in itertools.product(*words))
    return commands


def test_every_starter_command_in_the_runbook_parses() -> None:
    commands = runbook_commands()
    assert len(commands) >= 20
    used = {argv[0] for argv in commands}
    expected = {"list", "show", "status", "retry", "compensate", "breaker", "maintenance"}
    assert expected | {"emergency", "endpoints", "health"} <= used
    cli = parser()
    for argv in commands:
        try:
            cli.parse_args(argv)
        except SystemExit as exc:  # argparse's way of refusing
            raise AssertionError(f"runbook command does not parse: mintsaga {argv}") from exc


def test_the_runbook_has_every_section_the_alerts_link_to() -> None:
    text = RUNBOOK.read_text()
    anchors = {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.MULTILINE)}
    missing = [anchor for anchor in ANCHORS if anchor not in anchors]
    assert not missing, f"docs/runbook.md lacks the sections {missing}"
    links = set(re.findall(r"\]\(#([\w-]+)\)", text))
    assert links <= anchors, f"links to missing sections: {sorted(links - anchors)}"
    assert 'MintStatus="AWAITING_OPERATOR"' in text
    # Every alert rule's runbook_url lands on a section (or an `<a id>` alias of one).
    targets = anchors | set(re.findall(r'<a id="([\w-]+)"></a>', text))
    for rules in (ROOT / "deploy").rglob("*.y*ml"):
        wanted = set(re.findall(r"runbook\.md#([\w-]+)", rules.read_text()))
        assert wanted <= targets, f"{rules.name} links to {sorted(wanted - targets)}"


# ------------------------------------------------------------------------- breaker names


def test_a_breaker_is_named_as_breaker_list_prints_it_or_by_its_endpoint_url() -> None:
    known = [
        "https://rpc.example.com",
        "https://api.pinata.cloud",
        "postgresql://db.internal:5432/mintsaga",
        "https://mainnet.provider.io/v2/***",
    ]
    name_for = breaker_name_for
    assert name_for("https://rpc.example.com", known) == "https://rpc.example.com"
    # The URL as configured: credentials, query, a trailing slash and case do not matter.
    assert name_for("HTTPS://RPC.example.com/", known) == "https://rpc.example.com"
    assert name_for("https://u:secret@api.pinata.cloud/?k=v", known) == "https://api.pinata.cloud"
    assert name_for("postgres://app:pw@db.internal:5432/mintsaga", known) == known[2]
    key = "https://mainnet.provider.io/v2/0123456789abcdefABCDEF"
    assert name_for(key, known) == known[3]
    # Not reported by any worker: redacted as workers name it, so no credential is stored.
    assert name_for("https://ops:secret@new.example.com/v1?api-key=x", known) == (
        "https://new.example.com/v1"
    )
    assert name_for("postgres", known) == "postgres"  # a label stays a label
    with pytest.raises(mintsaga.StarterError, match="matches"):
        name_for("HTTPS://rpc.example.com", ["https://rpc.example.com", "https://rpc.example.com/"])
