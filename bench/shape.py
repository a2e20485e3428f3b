"""The engine baseline: a workflow with MintSaga's shape whose activities return at once.

`MintShape` schedules the saga's activities by the same names, in the same rounds (one round:
the activities a workflow task schedules together, awaited together), on the same task queues
(the Pinata steps on the Pinata queue), with the same options, and upserts the same search
attributes at the same points. Its activities do nothing. Run at the saga's concurrency, it is
the most mints a second this machine's Temporal server and SDK could carry: the ceiling the
benchmark's ratios are taken against. `tests/tools/test_bench.py` checks `ROUNDS` against a stored
MintSaga history, so the two cannot drift apart unseen.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import activity, workflow
from temporalio.common import SearchAttributeKey

with workflow.unsafe.imports_passed_through():
    from mintsaga.workflows.policies import STEPS, provider_task_queue

MINT_STAGE = SearchAttributeKey.for_keyword("MintStage")
MINT_STATUS = SearchAttributeKey.for_keyword("MintStatus")

# MintSaga's happy path, round by round; a stage name after a round: the saga enters that
# stage (an upsert of MintStage) once the round is done.
ROUNDS: tuple[tuple[tuple[str, ...], str | None], ...] = (
    (("wait_out_maintenance",), None),
    (("check_ipfs", "check_database", "check_rpc"), None),
    (("compute_image_cid",), None),
    (("claim_mint",), None),
    (("upload_image", "upload_metadata"), "IPFS_UPLOADED"),
    (("record_uploads",), "DATABASE_UPDATED"),
    (("prepare_transaction",), "BLOCKCHAIN_SUBMITTED"),
    (("send_transaction",), None),
    (("await_confirmation",), "BLOCKCHAIN_CONFIRMED"),
    (("record_minted",), None),
    (("verify_nft",), "VERIFIED"),
    (("check_gateways", "check_partner_view", "check_db_consistency"), None),
    (("finish_mint",), "MINTED"),
)
SHAPE_STEPS = tuple(name for names, _ in ROUNDS for name in names)


@workflow.defn(name="MintShape")
class MintShape:
    """The saga's rounds with activities that return at once (module docstring)."""

    @workflow.run
    async def run(self, request: dict[str, Any]) -> dict[str, Any]:
        workflow.upsert_search_attributes(
            [MINT_STAGE.value_set("INITIATED"), MINT_STATUS.value_set("IN_PROGRESS")]
        )
        for names, stage in ROUNDS:
            await asyncio.gather(*(self._step(name, request) for name in names))
            if stage is not None:
                workflow.upsert_search_attributes([MINT_STAGE.value_set(stage)])
        workflow.upsert_search_attributes([MINT_STATUS.value_set("MINTED")])
        return {"mint_id": request.get("mint_id"), "status": "MINTED"}

    @staticmethod
    async def _step(name: str, request: dict[str, Any]) -> Any:
        step = STEPS[name]
        queue = {}
        if step.provider is not None:
            queue = {"task_queue": provider_task_queue(workflow.info().task_queue, step.provider)}
        return await workflow.execute_activity(
            name, request, summary=name, **step.options(), **queue
        )


def _noop(name: str) -> Any:
    @activity.defn(name=name)
    async def step(_request: dict[str, Any]) -> dict[str, int]:
        return {"attempt": activity.info().attempt}

    return step


def noop_activities() -> list[Any]:
    """One activity per step of the shape, each answering at once, as the saga's do on success."""
    return [_noop(name) for name in SHAPE_STEPS]
