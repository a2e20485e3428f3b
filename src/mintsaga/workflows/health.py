"""HealthCheck: one probe of every dependency, run by a Temporal Schedule every minute.

Deterministic code only. Each probe is one activity (`activities/health.py`) that never raises
for a failing dependency: it returns rows, one per target, and sets the `mintsaga_health_*`
gauges of the worker that ran it. The workflow gathers the rows into one table, the result
`starter.py health` prints.

A probe that does not finish (its worker died, its timeout passed) still gives a row, failing,
so the table always says something about every check. The IPFS probe reads a long-lived canary
CID through every gateway each run, and now and then (`HEALTH_UPLOAD_PROBE_INTERVAL_S`, and every
run by hand) uploads a unique blob; when that blob's unpin fails, `HealthPinCleanup` (a child
workflow left running on its own) retries the unpin until it succeeds, so a health probe never
leaves an orphaned pin.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from mintsaga.workflows.steps import Step, execute


class HealthRow(BaseModel):
    """One line of the health table: one check of one target."""

    check: str  # solana_rpc | postgres | pinata_auth | ipfs_upload | gateway_fetch | ipfs_unpin
    target: str  # a redacted URL (or "ipfs" for the provider pair)
    ok: bool
    latency_s: float
    detail: str  # what was seen; never a secret


class ProbeOut(BaseModel):
    """What one probe activity returns."""

    rows: list[HealthRow]
    pending_unpin: str | None = None  # a probe CID whose unpin failed: clean up later


# The ids of the schedule's runs start with this (the server appends the scheduled time);
# a run by hand has another id, and probes everything (activities.health.upload_due).
SCHEDULED_RUN_ID_PREFIX = "mintsaga-health-run"
# Each probe bounds its own calls (activities.health.PROBE_TIMEOUT_S); this is the backstop.
PROBE_TIMEOUT = timedelta(seconds=90)
# A probe is not retried: the next scheduled run (a minute later) is the retry.
NO_RETRY = RetryPolicy(maximum_attempts=1)
# The orphan-pin cleanup keeps trying, more and more slowly, for a week.
UNPIN_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
)
UNPIN_DEADLINE = timedelta(days=7)


def _probe_step(name: str) -> Step[None, ProbeOut]:
    return Step(name, None, ProbeOut, "health", attempts=1, timeout=PROBE_TIMEOUT, retry=NO_RETRY)


HEALTH_SOLANA = _probe_step("health_solana")
HEALTH_POSTGRES = _probe_step("health_postgres")
HEALTH_PINATA = _probe_step("health_pinata")
HEALTH_IPFS_ROUNDTRIP = _probe_step("health_ipfs_roundtrip")
HEALTH_UNPIN: Step[str, None] = Step(
    "health_unpin",
    str,
    None,
    "health",
    attempts=0,
    timeout=timedelta(seconds=60),
    retry=UNPIN_RETRY,
    deadline=UNPIN_DEADLINE,
)

# Each probe and the check its rows carry (for the row of a probe that did not finish).
PROBES: tuple[tuple[Step[None, ProbeOut], str], ...] = (
    (HEALTH_SOLANA, "solana_rpc"),
    (HEALTH_POSTGRES, "postgres"),
    (HEALTH_PINATA, "pinata_auth"),
    (HEALTH_IPFS_ROUNDTRIP, "ipfs_upload"),
)
HEALTH_STEPS: tuple[Step[Any, Any], ...] = (*(step for step, _ in PROBES), HEALTH_UNPIN)


def cleanup_workflow_id(cid: str) -> str:
    return f"mintsaga-health-unpin-{cid}"


@workflow.defn(name="HealthCheck")
class HealthCheck:
    @workflow.run
    async def run(self) -> list[HealthRow]:
        outs = await asyncio.gather(*(self._probe(step, check) for step, check in PROBES))
        for out in outs:
            if out.pending_unpin:
                await workflow.start_child_workflow(
                    HealthPinCleanup.run,
                    out.pending_unpin,
                    id=cleanup_workflow_id(out.pending_unpin),
                    parent_close_policy=ParentClosePolicy.ABANDON,
                    static_summary=f"unpin health probe {out.pending_unpin}",
                )
        return [row for out in outs for row in out.rows]

    async def _probe(self, step: Step[None, ProbeOut], check: str) -> ProbeOut:
        try:
            return await execute(step, None)
        except ActivityError as err:
            cause = err.cause if err.cause is not None else err
            detail = f"the probe did not finish: {type(cause).__name__}: {cause}"
            row = HealthRow(check=check, target="-", ok=False, latency_s=0.0, detail=detail[:300])
            return ProbeOut(rows=[row])


@workflow.defn(name="HealthPinCleanup")
class HealthPinCleanup:
    """Unpin one health-probe CID from every provider; retried until it succeeds."""

    @workflow.run
    async def run(self, cid: str) -> None:
        await execute(HEALTH_UNPIN, cid)
