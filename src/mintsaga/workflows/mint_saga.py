"""MintSaga: one NFT for one user, through every network fault, never twice and never orphaned.

Read `run` top to bottom: the six stages of docs/design.md. Before the pivot (the first send of the
signed transaction) a terminal failure compensates: every compensation was registered before
its step, they run in reverse, shielded from cancellation. From the pivot on the saga only goes
forward. A step that spends its retries waits for an operator (`retry` or `compensate`), who
finds it with the `MintStatus` search attribute.

This module is the story; each stage is a method of `workflows.mint_stages` (a module the
sandbox shares between runs, where this one is imported again for each), and the machinery they
run on (steps with their policies, the operator's wait, compensations, status publishing) is
`workflows.saga`. Deterministic code only:
activities are scheduled through their `Step` (`workflows.policies`) with the models of
`workflows.activity_models`; no network library is imported here.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from mintsaga.notices import NoticeType
    from mintsaga.workflows.mint_stages import EndedBefore, MintStages
    from mintsaga.workflows.models import (
        MintRequest,
        MintResult,
        MintStatus,
        OperatorDecision,
        RetryOverrides,
        StatusView,
        request_problems,
    )
    from mintsaga.workflows.saga import MINT_STAGE, MINT_STATUS, StepFailed

__all__ = ["MINT_STAGE", "MINT_STATUS", "MintSaga"]


def _checked(request: MintRequest | Any) -> MintRequest:
    """The request, or a non-retryable failure (`InvalidRequest`) naming each bad field."""
    if isinstance(request, MintRequest):
        return request
    try:
        return MintRequest.model_validate(request)
    except ValidationError as exc:
        raise ApplicationError(
            f"invalid request, nothing started: {request_problems(exc)}",
            type="InvalidRequest",
            non_retryable=True,
        ) from None


@workflow.defn(name="MintSaga")
class MintSaga(MintStages):
    # ---------------------------------------------------------------- the saga, top to bottom

    @workflow.run
    async def run(self, request: MintRequest | Any) -> MintResult:
        # Anything else (a dict, a list, null) is a request that did not validate (a starter
        # that is not ours): it fails the mint at once, naming its fields, instead of failing
        # every workflow task on decode.
        self._request = request = _checked(request)
        self._start(operator_timeout_s=request.options.operator_timeout_s)
        # A mint that already ended with this request answers from its row, whether or not
        # its history still exists; nothing runs again. Earlier mints did not look.
        if self._lean:
            try:
                ended = await self._open()
            except (StepFailed, asyncio.CancelledError) as exc:  # nothing done yet
                await self._roll_back(exc)
                return self._result(MintStatus.ROLLED_BACK)
            if ended is not None:
                return self._answer_from_row(ended)
        elif self._patched("answer-ended-mints-from-row"):
            ended = await self._look_up()
            if ended is not None:
                return self._answer_from_row(ended)
        self._begin_notices(request.mint_id, delay_notice_s=request.options.delay_notice_s)
        try:
            await self._wait_out_maintenance()
            self._set_details("checking that IPFS, the database and Solana answer")
            await self._pre_mint_checks()
            await self._check_image_and_claim()
            await self._upload()
            await self._record_uploads()
            await self._prepare_transaction()
        except EndedBefore as exc:  # the claim found the row ended: nothing was done
            result = self._answer_from_row(exc.ended)
            # Notices told since the start (a look-up that could not answer) end with the
            # outcome the row holds.
            outcome = NoticeType.MINTED if exc.ended.status == "MINTED" else NoticeType.ROLLED_BACK
            self._notify(outcome, ended_before=True, reason=exc.ended.reason)
            await self._notices_recorded()
            return result
        except (StepFailed, asyncio.CancelledError) as exc:
            await self._roll_back(exc)  # raises a cancellation again once compensated
            return self._result(MintStatus.ROLLED_BACK)
        # The pivot: from the first send on, the saga only goes forward.
        return await self._shielded(self._mint_forward())

    async def _mint_forward(self) -> MintResult:
        await self._land_transaction()
        await self._record_minted()
        await self._verify()
        await self._post_mint_checks()
        await self._finish()
        await self._notices_recorded()
        return self._result(MintStatus.MINTED)

    # ---------------------------------------------------------------- operators

    @workflow.signal(name="retry")
    def retry_signal(self, overrides: RetryOverrides | None = None) -> None:
        if not self._waiting:
            workflow.logger.warning("retry ignored: nothing is waiting for an operator")
            return
        self._decide(OperatorDecision(action="retry", overrides=overrides or RetryOverrides()))

    @workflow.signal(name="compensate")
    def compensate_signal(self) -> None:
        if not self._waiting or self._pivoted:
            workflow.logger.warning("compensate ignored: nothing waiting, or past the pivot")
            return
        self._decide(OperatorDecision(action="compensate"))

    @workflow.update(name="retry_now")
    def retry_update(self, overrides: RetryOverrides | None = None) -> StatusView:
        self._decide(OperatorDecision(action="retry", overrides=overrides or RetryOverrides()))
        return self.status()

    @retry_update.validator
    def _validate_retry(self, overrides: RetryOverrides | None = None) -> None:
        if not self._waiting:
            raise ValueError(f"nothing is waiting for an operator: the mint is {self._status}")

    @workflow.update(name="compensate_now")
    def compensate_update(self) -> StatusView:
        self._decide(OperatorDecision(action="compensate"))
        return self.status()

    @compensate_update.validator
    def _validate_compensate(self) -> None:
        if not self._waiting:
            raise ValueError(f"nothing is waiting for an operator: the mint is {self._status}")
        if self._pivoted:
            raise ValueError("the transaction was sent: past the pivot a mint only goes forward")

    @workflow.query(name="status")
    def status(self) -> StatusView:
        return self._status_view()
