"""The health probes on the devstack: the table, the gauges, the schedule and `starter.py health`.

Each test injects its fault through the devstack's admin API, runs the product's `HealthCheck`
workflow on a worker of this module's own queue, and reads the result, the worker's gauges
(`observability.metrics`) and the IPFS providers' pin lists.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from temporalio.client import Client, ScheduleIntervalSpec
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Replayer

import mintsaga.activities.health as health_activities
from devstack.config import SOLANA_ENDPOINTS, StackConfig
from mintsaga.api import health as health_checks
from mintsaga.db.errors import endpoint_and_secrets
from mintsaga.errors import redact_url
from mintsaga.ipfs.cid import compute_cid
from mintsaga.ipfs.kubo import KuboClient
from mintsaga.ipfs.pinata import PinataClient
from mintsaga.ipfs.uploads import IpfsUploader
from mintsaga.observability.metrics import BREAKER_STATE, record_breaker_state, sample_value
from mintsaga.resilience.breaker import BreakerRegistry
from mintsaga.setting_readers import SettingsError
from mintsaga.workflows.health import (
    SCHEDULED_RUN_ID_PREFIX,
    HealthCheck,
    HealthPinCleanup,
    HealthRow,
    cleanup_workflow_id,
)
from tests.paths import ROOT
from tests.saga_support import (
    add_fault,
    clear_faults,
    pinata_get,
    pinned_anywhere,
    running_worker,
)

pytestmark = pytest.mark.integration

# The product's breakers of this module's worker: health probes must leave them alone.
BREAKERS = BreakerRegistry()
CID = re.compile(r"\b(Qm[1-9A-HJ-NP-Za-km-z]{44}|b[a-z2-7]{58})\b")


@pytest.fixture(scope="module")
async def queue(stack: StackConfig, client: Client) -> AsyncIterator[str]:
    name = f"health-{uuid.uuid4().hex[:8]}"
    async with running_worker(stack, client, name, breakers=BREAKERS):
        yield name


def by_key(rows: list[HealthRow]) -> dict[tuple[str, str], HealthRow]:
    keys = [(row.check, row.target) for row in rows]
    assert len(set(keys)) == len(keys), f"a check reported twice: {keys}"
    return dict(zip(keys, rows, strict=True))


def gauge(check: str, target: str) -> float | None:
    return sample_value("mintsaga_health_up", {"check": check, "target": target})


def name(stack: StackConfig, service: str) -> str:
    return redact_url(stack.url(service))


def probe_cid(rows: list[HealthRow]) -> str:
    [unpin] = [row for row in rows if row.check == "ipfs_unpin"]
    found = CID.search(unpin.detail)
    assert found, unpin.detail
    return found.group(1)


async def test_every_dependency_is_probed_and_reported_healthy(
    stack: StackConfig, client: Client, queue: str
) -> None:
    _, rows = await health_checks.run_health_check(client, queue)
    table = by_key(rows)
    database, _ = endpoint_and_secrets(stack.database_url)
    expected = {
        *(("solana_rpc", name(stack, s)) for s in SOLANA_ENDPOINTS),
        ("postgres", database),
        ("pinata_auth", name(stack, "pinata")),
        ("ipfs_upload", "ipfs"),
        ("gateway_fetch", name(stack, "gateway-1")),
        ("gateway_fetch", name(stack, "gateway-2")),
        ("ipfs_unpin", "ipfs"),
    }
    assert set(table) == expected
    assert all(row.ok for row in rows), [row for row in rows if not row.ok]
    for (check, target), row in table.items():
        assert gauge(check, target) == 1.0
        latency = sample_value(
            "mintsaga_health_latency_seconds", {"check": check, "target": target}
        )
        assert latency == pytest.approx(row.latency_s)
    # One ledger behind three endpoints: at most the slot or two they were asked apart.
    for endpoint in SOLANA_ENDPOINTS:
        lag = sample_value("mintsaga_rpc_slot_lag", {"endpoint": name(stack, endpoint)})
        assert lag is not None and 0 <= lag <= 5
    # The probe's blob was fetched through both gateways and is pinned nowhere now.
    assert "pinned" in table["ipfs_upload", "ipfs"].detail
    assert not await pinned_anywhere(stack, probe_cid(rows))
    assert "PINATA_JWT" not in json.dumps([row.model_dump() for row in rows])
    assert stack.pinata_jwt not in json.dumps([row.model_dump() for row in rows])


async def test_injected_faults_fail_their_rows_and_gauges_but_no_breaker(
    stack: StackConfig, client: Client, queue: str
) -> None:
    add_fault(stack, target="solana-2", kind="down")
    add_fault(stack, target="gateway-1", kind="error")
    solana_2, gateway_1 = name(stack, "solana-2"), name(stack, "gateway-1")
    # As if the worker's own breaker for solana-2 were open: the probes must not overwrite it.
    before = sample_value("mintsaga_breaker_state", {"breaker": solana_2})
    record_breaker_state(solana_2, "open")
    try:
        for _ in range(3):  # 3 failures in a row would open a Solana breaker that saw them
            _, rows = await health_checks.run_health_check(client, queue)
        assert sample_value("mintsaga_breaker_state", {"breaker": solana_2}) == 2.0
    finally:
        if before is None:
            BREAKER_STATE.remove(solana_2)
        else:
            BREAKER_STATE.labels(solana_2).set(before)
    table = by_key(rows)
    down = table["solana_rpc", solana_2]
    assert not down.ok and "SolanaUnreachable" in down.detail
    broken = table["gateway_fetch", gateway_1]
    assert not broken.ok and "500" in broken.detail
    assert gauge("solana_rpc", solana_2) == 0.0
    assert gauge("gateway_fetch", gateway_1) == 0.0
    # The endpoint that did not answer has no slot lag rather than an old one.
    assert sample_value("mintsaga_rpc_slot_lag", {"endpoint": solana_2}) is None
    healthy = [
        row
        for key, row in table.items()
        if key not in {("solana_rpc", solana_2), ("gateway_fetch", gateway_1)}
    ]
    assert healthy and all(row.ok for row in healthy), healthy
    assert gauge("solana_rpc", name(stack, "solana-1")) == 1.0
    # The probes went around the product's breakers: mints still get solana-2 once it is back.
    for service in ("solana-2", "gateway-1"):
        breaker = BREAKERS.find(name(stack, service))
        assert breaker is None or breaker.snapshot()["calls"] == 0, breaker.snapshot()
    clear_faults(stack)
    _, rows = await health_checks.run_health_check(client, queue)
    assert all(row.ok for row in rows), [row for row in rows if not row.ok]
    assert gauge("solana_rpc", solana_2) == 1.0


async def test_a_failed_unpin_is_retried_until_no_probe_pin_is_left(
    stack: StackConfig, client: Client, queue: str
) -> None:
    add_fault(stack, target="pinata", kind="error", match="/pinning/unpin")
    parent, rows = await health_checks.run_health_check(client, queue)
    table = by_key(rows)
    unpin = table["ipfs_unpin", "ipfs"]
    assert not unpin.ok and "HealthPinCleanup" in unpin.detail
    assert table["ipfs_upload", "ipfs"].ok
    cid = probe_cid(rows)
    assert await pinned_anywhere(stack, cid)  # the fault is real: the pin is still there
    clear_faults(stack)
    cleanup = client.get_workflow_handle_for(HealthPinCleanup.run, cleanup_workflow_id(cid))
    await asyncio.wait_for(cleanup.result(), 60)
    assert not await pinned_anywhere(stack, cid)
    # Both workflows are deterministic: their histories replay.
    histories = [
        await client.get_workflow_handle(workflow_id).fetch_history()
        for workflow_id in (parent, cleanup_workflow_id(cid))
    ]
    replayer = Replayer(
        workflows=[HealthCheck, HealthPinCleanup], data_converter=pydantic_data_converter
    )
    for history in histories:
        await replayer.replay_workflow(history)


async def test_a_hung_dependency_fails_its_row_without_holding_up_the_table(
    stack: StackConfig, client: Client, queue: str
) -> None:
    add_fault(stack, target="postgres", kind="hang")
    _, rows = await asyncio.wait_for(health_checks.run_health_check(client, queue), 60)
    clear_faults(stack)
    database, _ = endpoint_and_secrets(stack.database_url)
    table = by_key(rows)
    hung = table["postgres", database]
    assert not hung.ok and "no answer within" in hung.detail
    assert all(row.ok for key, row in table.items() if key != ("postgres", database))


async def test_the_schedule_is_created_idempotently_and_its_runs_report(
    client: Client, queue: str
) -> None:
    schedule_id = f"health-test-{uuid.uuid4().hex[:8]}"
    every = timedelta(minutes=1)
    assert (
        await health_checks.ensure_health_schedule(
            client, queue, every=every, schedule_id=schedule_id
        )
        == "created"
    )
    handle = client.get_schedule_handle(schedule_id)
    try:
        await handle.pause(note="paused by the test")
        assert (
            await health_checks.ensure_health_schedule(
                client, queue, every=every, schedule_id=schedule_id
            )
            == "updated"
        )
        described = await handle.describe()
        assert described.schedule.state.paused  # an operator's pause survives a worker restart
        assert described.schedule.spec.intervals == [ScheduleIntervalSpec(every=every)]
        action = described.schedule.action
        assert action.workflow == "HealthCheck" and action.task_queue == queue  # type: ignore[union-attr]
        assert await health_checks.latest_scheduled(client, schedule_id=schedule_id) is None

        await handle.trigger()  # a run now, paused or not

        async def ran() -> tuple[str, list[HealthRow]]:
            while True:
                found = await health_checks.latest_scheduled(client, schedule_id=schedule_id)
                if found is not None:
                    return found
                await asyncio.sleep(0.2)

        workflow_id, rows = await asyncio.wait_for(ran(), 60)
        assert workflow_id.startswith(f"{health_checks.HEALTH_SCHEDULE_ID}-run")
        assert rows and all(row.ok for row in rows), rows
    finally:
        await handle.delete()


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


async def starter_health(stack: StackConfig, queue: str, *argv: str) -> Ran:
    env = {**os.environ, **stack.worker_env(), "TEMPORAL_TASK_QUEUE": queue}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "starter.py",
        "health",
        *argv,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return Ran(process.returncode, stdout.decode(), stderr.decode())


async def test_starter_health_prints_the_table_and_fails_on_a_failing_check(
    stack: StackConfig, queue: str
) -> None:
    healthy = await starter_health(stack, queue)
    assert healthy.returncode == 0, healthy.stderr
    lines = healthy.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "TARGET", "OK", "LATENCY", "MS", "DETAIL"]
    assert len(lines) == 1 + 9 + 1 and lines[-1].startswith("all ok")

    add_fault(stack, target="pinata", kind="status", status=401, match="/data/testAuthentication")
    failing = await starter_health(stack, queue)
    assert failing.returncode == 1, failing.stderr
    [row] = [line for line in failing.stdout.splitlines() if line.startswith("pinata_auth")]
    assert row.split()[:3] == ["pinata_auth", name(stack, "pinata"), "FAIL"]
    assert "PinataUnauthorized" in row or "401" in row
    assert "1 of 9 checks failing" in failing.stdout

    as_json = await starter_health(stack, queue, "--json")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout.splitlines()[-1])
    assert report["ok"] is False
    [auth] = [row for row in report["rows"] if row["check"] == "pinata_auth"]
    assert auth["ok"] is False


async def test_starter_health_without_a_worker_says_so(stack: StackConfig) -> None:
    ran = await starter_health(stack, f"nobody-{uuid.uuid4().hex[:6]}", "--timeout", "2")
    assert ran.returncode == 2
    assert "is a worker polling" in ran.stderr


async def test_starter_health_latest_names_a_missing_schedule(stack: StackConfig) -> None:
    ran = await starter_health(stack, "any", "--latest", "--schedule", "no-such-schedule")
    assert ran.returncode == 2
    assert "no schedule no-such-schedule" in ran.stderr


def test_the_interval_setting_is_checked_and_named() -> None:
    assert health_checks.interval_from_env({}) == timedelta(minutes=1)
    assert health_checks.interval_from_env({"HEALTH_CHECK_INTERVAL_S": "0"}) is None
    assert health_checks.interval_from_env({"HEALTH_CHECK_INTERVAL_S": "300"}) == timedelta(
        minutes=5
    )
    for bad in ("soon", "5", "-1"):
        with pytest.raises(SettingsError, match="HEALTH_CHECK_INTERVAL_S"):
            health_checks.interval_from_env({"HEALTH_CHECK_INTERVAL_S": bad})


async def test_the_worker_refuses_a_bad_interval_before_starting(stack: StackConfig) -> None:
    env = {**os.environ, **stack.worker_env(), "HEALTH_CHECK_INTERVAL_S": "often"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "worker.py",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert "HEALTH_CHECK_INTERVAL_S" in stderr.decode()


async def test_a_health_gauge_expires_unless_a_newer_probe_refreshes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker that stopped getting the scheduled probes must not keep reporting old answers."""
    monkeypatch.setattr(health_activities, "STALE_AFTER_S", 0.3)
    old = HealthRow(check="postgres", target="db-old", ok=False, latency_s=0.1, detail="x")
    kept = HealthRow(check="postgres", target="db-kept", ok=False, latency_s=0.1, detail="x")
    health_activities.publish([old, kept])
    await asyncio.sleep(0.2)
    health_activities.publish([kept.model_copy(update={"ok": True})])  # refreshed
    await asyncio.sleep(0.2)
    assert gauge("postgres", "db-old") is None
    assert (
        sample_value("mintsaga_health_latency_seconds", {"check": "postgres", "target": "db-old"})
        is None
    )
    assert gauge("postgres", "db-kept") == 1.0
    await asyncio.sleep(0.2)
    assert gauge("postgres", "db-kept") is None


# -- the canary and the upload probe's interval -----------------------------------------------


class CountingPinata(PinataClient):
    """The real client, counting its uploads."""

    uploads = 0

    async def pin_file(self, data: bytes, **kwargs: Any) -> str:
        self.uploads += 1
        return await super().pin_file(data, **kwargs)


def probes(
    stack: StackConfig, http: httpx.AsyncClient, pinata: PinataClient, **timing: timedelta
) -> Any:
    """The product's IPFS probe over the devstack, outside a worker (its other probes unused)."""
    kubo = KuboClient(stack.url("kubo"), http)
    return health_activities.HealthActivities(
        solana_urls=lambda: [],
        solana_timeout_s=5.0,
        store=None,  # type: ignore[arg-type]  # only the IPFS probe runs here
        database="",
        pinata=pinata,
        uploader=IpfsUploader(pinata, kubo),
        gateways=[stack.url("gateway-1"), stack.url("gateway-2")],
        http=http,
        kubo=kubo,
        **timing,
    )


def run_as(workflow_id: str) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=workflow_id)
    return env


def test_uploads_are_probed_once_a_window_by_the_schedule_and_always_by_hand() -> None:
    probe = health_activities.HealthActivities(
        solana_urls=lambda: [],
        solana_timeout_s=5.0,
        store=None,  # type: ignore[arg-type]
        database="",
        pinata=None,  # type: ignore[arg-type]
        uploader=None,  # type: ignore[arg-type]
        gateways=[],
        http=None,  # type: ignore[arg-type]
        check_every=timedelta(minutes=1),
        upload_every=timedelta(minutes=15),
    )
    scheduled = f"{SCHEDULED_RUN_ID_PREFIX}-2026-12-03T20:00:00Z"
    window = 15 * 60
    # The schedule's runs, one a minute: the first of each 15-minute window probes uploads.
    due = [
        probe.upload_due(scheduled, 1_800_000_000 + window * 7 + 60 * m + 0.4) for m in range(30)
    ]
    assert due == ([True] + [False] * 14) * 2
    assert probe.upload_due(f"{health_checks.HEALTH_SCHEDULE_ID}-now-abc", 1_800_000_000 + 120)
    # The schedule's own id prefix is the one the probe looks for.
    assert health_checks.health_schedule("q").action.id == SCHEDULED_RUN_ID_PREFIX  # type: ignore[union-attr]
    probe_each = health_activities.HealthActivities(
        solana_urls=lambda: [],
        solana_timeout_s=5.0,
        store=None,  # type: ignore[arg-type]
        database="",
        pinata=None,  # type: ignore[arg-type]
        uploader=None,  # type: ignore[arg-type]
        gateways=[],
        http=None,  # type: ignore[arg-type]
        upload_every=timedelta(0),  # HEALTH_UPLOAD_PROBE_INTERVAL_S=0: every run
    )
    assert probe_each.upload_due(scheduled, 1_800_000_000 + 300)


async def test_gateways_are_probed_with_the_canary_which_stays_pinned(stack: StackConfig) -> None:
    canary = await compute_cid(health_activities.CANARY)
    async with httpx.AsyncClient(timeout=30) as http:
        pinata = CountingPinata(stack.url("pinata"), stack.pinata_jwt, http)
        probe = probes(stack, http, pinata, upload_every=timedelta(minutes=15))
        # A scheduled run outside its upload window: the canary only, no upload.
        quiet = f"{SCHEDULED_RUN_ID_PREFIX}-x"
        now = time.time()
        if probe.upload_due(quiet, now) or probe.upload_due(quiet, now + 5):
            await asyncio.sleep(61)  # the window's first minute: wait it out
        out = await run_as(quiet).run(probe.health_ipfs_roundtrip)
        rows = by_key(out.rows)
        assert {check for check, _ in rows} == {"gateway_fetch"}
        assert all(row.ok and canary in row.detail for row in out.rows), out.rows
        assert out.pending_unpin is None
        # The first run of a process pins the canary (one upload); no probe blob.
        assert pinata.uploads == 1
        # The next scheduled run reads the same CID and uploads nothing.
        again = await run_as(quiet).run(probe.health_ipfs_roundtrip)
        assert [row.detail for row in again.rows] == [row.detail for row in out.rows]
        assert pinata.uploads == 1
        # A run by hand probes the upload too, and leaves the canary pinned on both providers.
        full = await run_as("mintsaga-health-now-test").run(probe.health_ipfs_roundtrip)
        checks = {row.check for row in full.rows}
        assert checks == {"gateway_fetch", "ipfs_upload", "ipfs_unpin"}
        assert all(row.ok for row in full.rows), full.rows
        assert not await pinned_anywhere(stack, probe_cid(full.rows))
    answer = await pinata_get(stack, "/data/pinList", {"status": "pinned", "cid": canary})
    assert [row["ipfs_pin_hash"] for row in answer.json()["rows"]] == [canary]
    async with httpx.AsyncClient(timeout=10) as http:
        kubo = await http.post(stack.url("kubo") + "/api/v0/pin/ls", params={"arg": canary})
    assert kubo.status_code == 200
