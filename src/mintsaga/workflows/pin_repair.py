"""PinRepair: content pinned on Kubo only (a Pinata outage during its mint) pinned to Pinata.

Deterministic code only. A Temporal Schedule (`api/pin_repair.py`) starts one run every
`PIN_REPAIR_INTERVAL_S`; each run is a bounded batch:

1. `pin_repair_scan`: gives back holds a dead repair left, sets the gauge of content held by
   one provider only, and picks up to `PIN_REPAIR_BATCH` CIDs of live or minted mints that
   nobody has seen Pinata hold (activities/pin_repair.py).
2. For each CID, one after the other: `pin_repair_repin` reads the bytes from Kubo and uploads
   them to Pinata under a hold that no compensation can race (db/pin_repair.py). A CID whose
   upload is not known to have landed on Kubo (its note was lost, or it predates the repair) is
   first looked up in Pinata's pinList (`pin_repair_check`), and confirmed without an upload
   when Pinata has it (at most a few look-ups a run). A CID known to be Kubo's is uploaded
   without that look-up: pinList is a `/data/*` route, 30 requests a minute for the account on
   every plan, while re-uploading content Pinata already holds is harmless (`isDuplicate`).

Every step runs on the Pinata task queue (`policies.provider_task_queue`), so Temporal's
fleet-wide activity rate there (`PINATA_ACTIVITIES_PER_SECOND`) paces the repair with the
mints' own Pinata calls; each step makes at most one Pinata request, as the rate assumes.
A step that fails (Pinata still down, the database unreachable) ends the run: the next run is
the retry, so a repair never hammers a provider that is not answering. A CID whose repair
cannot succeed now (not readable on Kubo, too large, another CID from Pinata) is reported and
left for a later run; the rest of the batch goes on.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from mintsaga.workflows.policies import PINATA, provider_task_queue
    from mintsaga.workflows.steps import Step, execute


class ScanOut(BaseModel):
    """What `pin_repair_scan` found."""

    cids: list[str]
    kubo_only: list[str]  # of `cids`, those whose upload landed on Kubo (no pinList needed)
    single_provider: int  # CIDs held by Kubo only (the gauge's value)
    holds_released: int  # holds a dead repair left, given back now


class CheckOut(BaseModel):
    pinned: bool  # Pinata's pinList holds the CID


RepinOutcome = Literal[
    "repinned",  # read from Kubo, uploaded to Pinata, its CID checked
    "released",  # no live or minted mint holds the CID any more (compensated): not pinned
    "claimed",  # a compensation is unpinning it now: left for a later run
    "kubo_failed",  # Kubo could not give the bytes (not there, too large, down)
    "cid_mismatch",  # Pinata named another CID for the bytes: the NFT's CID is still missing
]


class RepinOut(BaseModel):
    outcome: RepinOutcome
    detail: str = ""


class CidResult(BaseModel):
    cid: str
    outcome: str  # already_pinned, a RepinOutcome, or failed
    detail: str = ""


class PinRepairReport(BaseModel):
    """The run's result: what it found and did, CID by CID."""

    single_provider: int
    holds_released: int
    results: list[CidResult]
    stopped: str = ""  # why the run ended before its batch was done (a failed step)


# No retry inside a run: the next scheduled run is the retry (module docstring).
ONCE = RetryPolicy(maximum_attempts=1)
PIN_REPAIR_SCAN: Step[None, ScanOut] = Step(
    "pin_repair_scan",
    None,
    ScanOut,
    "ipfs",
    attempts=1,
    timeout=timedelta(seconds=120),
    retry=ONCE,
    provider=PINATA,
)
PIN_REPAIR_CHECK: Step[str, CheckOut] = Step(
    "pin_repair_check",
    str,
    CheckOut,
    "ipfs",
    attempts=1,
    timeout=timedelta(seconds=30),
    retry=ONCE,
    provider=PINATA,
)
# Kubo's read and Pinata's upload of one file (up to IMAGE_MAX_BYTES), then the hold given
# back, which may unpin (release_pins' own budget, 40 s + its records).
PIN_REPAIR_REPIN: Step[str, RepinOut] = Step(
    "pin_repair_repin",
    str,
    RepinOut,
    "ipfs",
    attempts=1,
    timeout=timedelta(seconds=180),
    heartbeat=timedelta(seconds=10),
    retry=ONCE,
    provider=PINATA,
)
PIN_REPAIR_STEPS: tuple[Step[Any, Any], ...] = (PIN_REPAIR_SCAN, PIN_REPAIR_CHECK, PIN_REPAIR_REPIN)
# They all run on the Pinata queue (worker.py serves them there).
PIN_REPAIR_PINATA_STEPS = frozenset(step.name for step in PIN_REPAIR_STEPS)


@workflow.defn(name="PinRepair")
class PinRepair:
    @workflow.run
    async def run(self) -> PinRepairReport:
        queue = provider_task_queue(workflow.info().task_queue, PINATA)
        try:
            scan = await execute(PIN_REPAIR_SCAN, None, task_queue=queue)
        except ActivityError as err:
            return PinRepairReport(
                single_provider=-1, holds_released=0, results=[], stopped=_why(err)
            )
        report = PinRepairReport(
            single_provider=scan.single_provider, holds_released=scan.holds_released, results=[]
        )
        kubo_only = set(scan.kubo_only)
        for cid in scan.cids:
            try:
                if cid not in kubo_only:
                    found = await execute(PIN_REPAIR_CHECK, cid, task_queue=queue, summary=cid)
                    if found.pinned:
                        report.results.append(CidResult(cid=cid, outcome="already_pinned"))
                        continue
                done = await execute(PIN_REPAIR_REPIN, cid, task_queue=queue, summary=cid)
            except ActivityError as err:
                report.stopped = _why(err)
                report.results.append(CidResult(cid=cid, outcome="failed", detail=report.stopped))
                break
            report.results.append(CidResult(cid=cid, outcome=done.outcome, detail=done.detail))
        return report


def _why(err: ActivityError) -> str:
    cause = err.cause if err.cause is not None else err
    return f"{type(cause).__name__}: {cause}"[:300]
