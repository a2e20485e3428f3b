"""MintSaga: one NFT for one user, through every network fault, never twice and never orphaned.

Read `run` top to bottom: the six stages of DESIGN.md. Before the pivot (the first send of the
signed transaction) a terminal failure compensates: every compensation was registered before
its step, they run in reverse, shielded from cancellation. From the pivot on the saga only goes
forward. A step that spends its retries waits for an operator (`retry` or `compensate`), who
finds it with the `MintStatus` search attribute.

Deterministic code only: activities are called by name with the models of
`workflows.activity_models`; no network library is imported here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError
from temporalio.exceptions import TimeoutError as ActivityTimeoutError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from mintsaga.stages import MintStage
    from mintsaga.workflows import activity_models as io
    from mintsaga.workflows.models import (
        ErrorInfo,
        MintRequest,
        MintResult,
        MintStatus,
        OperatorDecision,
        RetryOverrides,
        StatusView,
    )
    from mintsaga.workflows.policies import MAX_RESIGNS, STEPS, provider_task_queue

MINT_STAGE = SearchAttributeKey.for_keyword("MintStage")
MINT_STATUS = SearchAttributeKey.for_keyword("MintStatus")

Out = TypeVar("Out", bound=io.StepOut)
T = TypeVar("T")


class StepFailed(Exception):
    """A step before the pivot ended for good; the saga compensates."""

    def __init__(self, error: ErrorInfo, *, decided_by: str | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.decided_by = decided_by  # None: the failure itself; else who chose to compensate

    @property
    def reason(self) -> str:
        why = f"{self.error.step} failed: {self.error.type}: {self.error.message}"
        return f"{self.decided_by} chose to compensate after {why}" if self.decided_by else why


class HandledError(Exception):
    """A failure the calling stage knows how to handle itself (e.g. an expired blockhash)."""

    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True)
class Compensation:
    step: str
    make_input: Callable[[str], BaseModel]  # reason -> the activity's input


def error_info(step: str, err: ActivityError) -> ErrorInfo:
    """What went wrong, from the activity's classified ApplicationError (or a timeout)."""
    cause = err.cause
    if isinstance(cause, ApplicationError):
        details = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
        kind = details.get("kind", "permanent" if cause.non_retryable else "transient")
        return ErrorInfo(step=step, type=cause.type or "Error", message=cause.message, kind=kind)
    if isinstance(cause, ActivityTimeoutError):
        return ErrorInfo(step=step, type="Timeout", message=str(cause), kind="transient")
    return ErrorInfo(step=step, type=type(cause).__name__, message=str(cause), kind="transient")


def attempts_made(err: ActivityError, limit: int) -> int:
    """How many attempts a failed activity used: activities report theirs in the details."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.details and isinstance(cause.details[0], dict):
        attempt = cause.details[0].get("attempt")
        if isinstance(attempt, int):
            return attempt
    return limit


@workflow.defn(name="MintSaga")
class MintSaga:
    def __init__(self) -> None:
        self._request: MintRequest | None = None
        self._stage = MintStage.INITIATED
        self._status = MintStatus.IN_PROGRESS
        self._stage_started = workflow.now()
        self._stage_seconds: dict[str, float] = {}
        self._retries: dict[str, int] = {}
        self._attempts: dict[str, int] = {}
        self._last_error: ErrorInfo | None = None
        self._waiting: list[str] = []  # steps waiting for an operator (parallel ones too)
        self._abandoned: StepFailed | None = None  # a parallel sibling failed for good
        self._published_status = MintStatus.IN_PROGRESS
        self._awaiting_since: datetime | None = None  # for `starter.py list --stuck`'s age
        self._decision: OperatorDecision | None = None
        self._decisions = 0
        self._overrides = RetryOverrides()
        self._compensations: list[Compensation] = []
        self._pivoted = False
        self._reason: str | None = None
        self._mint_address: str | None = None
        self._image: io.ImageCidOut | None = None  # checked and hashed, not uploaded yet
        self._image_cid: str | None = None
        self._image_type = "application/octet-stream"
        self._metadata_cid: str | None = None
        self._prepared: io.PreparedTx | None = None
        self._resigns = 0
        self._signature: str | None = None
        self._slot: int | None = None

    # ---------------------------------------------------------------- the saga, top to bottom

    @workflow.run
    async def run(self, request: MintRequest) -> MintResult:
        self._request = request
        # Set both attributes at once, for starters (another language) that set neither.
        workflow.upsert_search_attributes(
            [
                MINT_STAGE.value_set(MintStage.INITIATED.value),
                MINT_STATUS.value_set(MintStatus.IN_PROGRESS.value),
            ]
        )
        try:
            await self._wait_out_maintenance()
            self._set_details("checking that IPFS, the database and Solana answer")
            await self._pre_mint_checks()
            await self._check_image_and_claim()
            await self._upload()
            await self._record_uploads()
            await self._prepare_transaction()
        except (StepFailed, asyncio.CancelledError) as exc:
            return await self._roll_back(exc)
        # The pivot: from the first send on, the saga only goes forward.
        return await self._shielded(self._mint_forward())

    async def _mint_forward(self) -> MintResult:
        await self._land_transaction()
        await self._record_minted()
        await self._verify()
        await self._post_mint_checks()
        await self._finish()
        return self._result(MintStatus.MINTED)

    # ---------------------------------------------------------------- 0. maintenance mode

    async def _wait_out_maintenance(self) -> None:
        # Mints started before maintenance mode existed have no such step in their history.
        if workflow.patched("maintenance-gate"):
            self._set_details("waiting while maintenance mode is on (returns at once when off)")
            await self._step(
                "wait_out_maintenance", io.MintRef(mint_id=self._req.mint_id), io.StepOut
            )

    # ---------------------------------------------------------------- 1. pre-mint checks

    async def _pre_mint_checks(self) -> None:
        ref = io.MintRef(mint_id=self._req.mint_id)
        await self._all(
            self._step("check_ipfs", ref, io.StepOut),
            self._step("check_database", ref, io.StepOut),
            self._step("check_rpc", ref, io.StepOut),
        )

    async def _check_image_and_claim(self) -> None:
        # The image first: a bad reference (a private host, too big, not an image, outside
        # MINT_IMAGE_DIR) ends the mint before anything is written, pinned or sent. Mints
        # started before this change claimed their row first; their histories replay that way.
        if workflow.patched("image-before-claim"):
            await self._compute_image_cid()
            await self._claim()
        else:
            await self._claim()
            await self._compute_image_cid()

    async def _compute_image_cid(self) -> None:
        req = self._req
        self._set_details("loading the image and computing its CID")
        self._image = await self._step(
            "compute_image_cid", io.ImageIn(mint_id=req.mint_id, image=req.image), io.ImageCidOut
        )

    async def _claim(self) -> None:
        req = self._req
        self._register(
            "rollback_mint",
            lambda reason: io.RollbackIn(
                mint_id=req.mint_id, user_id=req.user_id, wallet=req.wallet, reason=reason
            ),
        )
        claimed = await self._step(
            "claim_mint",
            io.ClaimIn(mint_id=req.mint_id, user_id=req.user_id, wallet=req.wallet),
            io.ClaimOut,
        )
        self._mint_address = claimed.mint_address

    # ---------------------------------------------------------------- 2. uploads

    async def _upload(self) -> None:
        req, image = self._req, self._image
        assert image is not None
        self._image_cid, self._image_type = image.cid, image.content_type
        # Pins are recorded against the mint before each upload, so this undoes them all.
        self._register("release_pins", lambda _reason: io.MintRef(mint_id=req.mint_id))
        self._set_details(f"uploading image {image.cid} and its metadata to IPFS")
        _, metadata = await self._all(
            self._step(
                "upload_image",
                io.UploadImageIn(mint_id=req.mint_id, image=req.image, expected_cid=image.cid),
                io.UploadOut,
            ),
            self._step(
                "upload_metadata",
                io.UploadMetadataIn(
                    mint_id=req.mint_id,
                    name=req.name,
                    symbol=req.symbol,
                    description=req.description,
                    attributes=req.attributes,
                    image_cid=image.cid,
                    image_content_type=image.content_type,
                ),
                io.UploadOut,
            ),
        )
        self._metadata_cid = metadata.cid
        self._enter(MintStage.IPFS_UPLOADED, f"image and metadata pinned; metadata {metadata.cid}")

    # ---------------------------------------------------------------- 3. database record

    async def _record_uploads(self) -> None:
        await self._step(
            "record_uploads",
            io.RecordUploadsIn(
                mint_id=self._req.mint_id,
                image_cid=self._image_cid or "",
                metadata_cid=self._metadata_cid or "",
            ),
            io.StepOut,
        )
        self._enter(MintStage.DATABASE_UPDATED, "building and signing the mint transaction")

    # ---------------------------------------------------------------- 4. the transaction

    async def _prepare_transaction(self) -> None:
        # A function, not a model: an operator's retry may bring a new priority fee.
        self._prepared = await self._step("prepare_transaction", self._prepare_input, io.PreparedTx)

    def _prepare_input(self) -> io.PrepareIn:
        req = self._req
        fee = self._overrides.priority_fee_micro_lamports
        return io.PrepareIn(
            mint_id=req.mint_id,
            owner=req.wallet,
            name=req.name,
            symbol=req.symbol,
            uri=self._metadata_uri or "",
            priority_fee_micro_lamports=req.options.priority_fee_micro_lamports
            if fee is None
            else fee,
            resign=self._resigns,
        )

    async def _land_transaction(self) -> None:
        """Send, confirm, and re-sign only once the old blockhash has expired unseen."""
        resigns_since_operator = 0
        while True:
            prepared = self._prepared
            assert prepared is not None
            if prepared.already_minted is not None:
                self._pivoted = True  # the NFT exists: nothing may be undone
                self._signature = prepared.already_minted.signature
                self._slot = prepared.already_minted.slot
                break
            self._enter(MintStage.BLOCKCHAIN_SUBMITTED, f"sending transaction {prepared.signature}")
            self._pivoted = True
            # Refused as expired by every endpoint (BlockhashNotFound) is handled by waiting:
            # only the confirmation wait may conclude the blockhash expired (block height past
            # lastValidBlockHeight, signature unseen); a node behind the others says the same.
            with contextlib.suppress(HandledError):
                await self._step(
                    "send_transaction",
                    lambda prepared=prepared: io.SendIn(
                        mint_id=self._req.mint_id,
                        signature=prepared.signature,
                        tx_base64=prepared.tx_base64,
                        preferred_endpoint=self._overrides.preferred_endpoint,
                    ),
                    io.StepOut,
                    handled=("BlockhashNotFound",),
                )
            self._set_details(f"waiting for {prepared.signature} to confirm")
            confirmed = await self._step(
                "await_confirmation",
                io.ConfirmIn(
                    mint_id=self._req.mint_id,
                    signature=prepared.signature,
                    tx_base64=prepared.tx_base64,
                    last_valid_block_height=prepared.last_valid_block_height,
                    wait_s=self._req.options.confirmation_wait_s,
                ),
                io.ConfirmOut,
            )
            if confirmed.outcome == "confirmed":
                self._signature, self._slot = prepared.signature, confirmed.slot
                break
            if confirmed.outcome == "failed":
                await self._await_operator(
                    "await_confirmation",
                    ErrorInfo(
                        step="await_confirmation",
                        type="TransactionFailed",
                        message=confirmed.error or "the transaction landed with an error",
                        kind="needs_operator",
                    ),
                )
            self._resigns += 1
            resigns_since_operator += 1
            if resigns_since_operator > MAX_RESIGNS:
                await self._await_operator(
                    "prepare_transaction",
                    ErrorInfo(
                        step="prepare_transaction",
                        type="TooManyResigns",
                        message=f"blockhash expired {self._resigns} times, the mint never landed",
                        kind="needs_operator",
                    ),
                )
                resigns_since_operator = 0
            self._set_details("blockhash expired unseen: signing again with a fresh one")
            await self._prepare_transaction()
        self._enter(MintStage.BLOCKCHAIN_CONFIRMED, f"confirmed in slot {self._slot}")

    async def _record_minted(self) -> None:
        await self._step(
            "record_minted",
            io.RecordMintedIn(
                mint_id=self._req.mint_id,
                signature=self._signature,
                slot=self._slot,
                mint_address=self._mint_address or "",
            ),
            io.StepOut,
        )

    # ---------------------------------------------------------------- 5. on-chain verification

    async def _verify(self) -> None:
        req = self._req
        self._set_details("reading the NFT back from the chain")
        await self._step(
            "verify_nft",
            io.VerifyIn(
                mint_id=req.mint_id,
                mint_address=self._mint_address or "",
                owner=req.wallet,
                name=req.name,
                symbol=req.symbol,
                uri=self._metadata_uri or "",
            ),
            io.StepOut,
        )
        self._enter(MintStage.VERIFIED, "checking gateways, the wallet's view and the database")

    # ---------------------------------------------------------------- 6. post-mint checks

    async def _post_mint_checks(self) -> None:
        req = self._req
        image_cid, metadata_cid = self._image_cid or "", self._metadata_cid or ""
        await self._all(
            self._step(
                "check_gateways",
                io.GatewayCheckIn(mint_id=req.mint_id, cids=(image_cid, metadata_cid)),
                io.StepOut,
            ),
            self._step(
                "check_partner_view",
                io.PartnerViewIn(
                    mint_id=req.mint_id,
                    mint_address=self._mint_address or "",
                    owner=req.wallet,
                    metadata_cid=metadata_cid,
                    image_cid=image_cid,
                ),
                io.StepOut,
            ),
            self._step(
                "check_db_consistency",
                io.ConsistencyIn(
                    mint_id=req.mint_id, mint_address=self._mint_address or "", owner=req.wallet
                ),
                io.StepOut,
            ),
        )

    async def _finish(self) -> None:
        await self._step("finish_mint", io.FinishIn(mint_id=self._req.mint_id), io.StepOut)
        self._enter(MintStage.MINTED, f"minted {self._mint_address} for {self._req.wallet}")
        self._set_status(MintStatus.MINTED)

    # ---------------------------------------------------------------- compensation

    def _register(self, step: str, make_input: Callable[[str], BaseModel]) -> None:
        """Push a compensation before its step runs: a timed-out step may still have happened."""
        self._compensations.append(Compensation(step, make_input))

    async def _roll_back(self, cause: StepFailed | asyncio.CancelledError) -> MintResult:
        cancelled = isinstance(cause, asyncio.CancelledError)
        self._reason = "cancelled before the pivot" if cancelled else cause.reason
        self._set_details(f"compensating: {self._reason}")
        pending = list(reversed(self._compensations))
        while pending:
            pending = await self._shielded(self._compensate(pending, self._reason))
            if pending:
                # A compensation failed after all its retries: a person must look.
                self._set_status(MintStatus.FAILED)
                self._enter(MintStage.FAILED, f"compensation failed: {self._last_error}")
                await self._shielded(self._wait_for_decision(None, "compensation failed"))
        self._enter(MintStage.ROLLED_BACK, f"rolled back: {self._reason}")
        self._set_status(MintStatus.ROLLED_BACK)
        if cancelled:
            raise cause
        return self._result(MintStatus.ROLLED_BACK)

    async def _compensate(self, pending: list[Compensation], reason: str) -> list[Compensation]:
        """Run each compensation in order; one failing does not stop the others."""
        failed: list[Compensation] = []
        for compensation in pending:
            step = STEPS[compensation.step]
            try:
                await workflow.execute_activity(
                    compensation.step,
                    compensation.make_input(reason),
                    result_type=io.StepOut
                    if compensation.step != "release_pins"
                    else io.ReleaseOut,
                    **step.options(),
                    **self._task_queue(compensation.step),
                )
            except ActivityError as err:
                self._last_error = error_info(compensation.step, err)
                workflow.logger.error("compensation %s failed: %s", compensation.step, err)
                failed.append(compensation)
        return failed

    # ---------------------------------------------------------------- steps and operators

    async def _step(
        self,
        name: str,
        arg: BaseModel | Callable[[], BaseModel],
        result_type: type[Out],
        *,
        handled: tuple[str, ...] = (),
    ) -> Out:
        """Run one activity with its policy; when it spends its retries, ask an operator.

        `arg` may be a function, so a retry after an operator's overrides builds a new input.
        A cancelled workflow waits for a running activity to finish or acknowledge the
        cancellation before compensating, so no step lands after its compensation ran.
        """
        step = STEPS[name]
        while True:
            self._attempts[name] = self._attempts.get(name, 0) + 1
            try:
                out = await workflow.execute_activity(
                    name,
                    arg() if callable(arg) else arg,
                    result_type=result_type,
                    summary=name,
                    cancellation_type=self._cancellation_type(),
                    **step.options(),
                    **self._task_queue(name),
                )
            except ActivityError as err:
                if isinstance(err.cause, CancelledError):
                    raise asyncio.CancelledError from err  # the workflow is being cancelled
                error = error_info(name, err)
                self._last_error = error
                self._count_retries(step.service, attempts_made(err, step.attempts))
                if error.type in handled:
                    raise HandledError(error) from err
                if error.kind == "permanent" and not self._pivoted:
                    raise StepFailed(error) from err  # no retry can change it: compensate now
                await self._await_operator(name, error)
                continue
            self._count_retries(step.service, out.attempt)
            return out

    @staticmethod
    def _task_queue(name: str) -> dict[str, str]:
        """A step that calls a rate-limited provider (Pinata) runs on that provider's queue,
        where Temporal holds the provider's rate for the whole fleet. Mints started before
        this change schedule every step on the saga's queue (their histories say so); the
        worker serves every activity there too."""
        provider = STEPS[name].provider
        if provider is None or not workflow.patched("pinata-task-queue"):
            return {}
        return {"task_queue": provider_task_queue(workflow.info().task_queue, provider)}

    @staticmethod
    def _cancellation_type() -> ActivityCancellationType:
        # Mints started before this change cancel their running step at once (their
        # histories say so); newer ones wait for it, so nothing lands after compensation.
        if workflow.patched("wait-for-cancelled-steps"):
            return ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
        return ActivityCancellationType.TRY_CANCEL

    async def _await_operator(self, step: str, error: ErrorInfo) -> None:
        """Wait for `retry` (returns) or `compensate` (raises StepFailed, before the pivot only)."""
        self._last_error = error
        timeout = None if self._pivoted else self._req.options.operator_timeout_s
        decision = await self._wait_for_decision(step, f"{error.type}: {error.message}", timeout)
        if decision.action == "compensate":
            raise StepFailed(error, decided_by=decision.decided_by)
        if decision.overrides != RetryOverrides():
            self._overrides = decision.overrides

    async def _wait_for_decision(
        self, step: str | None, why: str, wait_s: float | None = None
    ) -> OperatorDecision:
        waiting = step or "compensation"
        self._waiting.append(waiting)
        self._publish_status()
        self._set_details(f"waiting for an operator at {waiting}: {why}")
        seen = self._decisions
        try:
            # A step gives up its wait when a sibling failed for good; a failed compensation
            # (step None) waits for a person whatever happened elsewhere.
            await workflow.wait_condition(
                lambda: (
                    self._decisions > seen or (step is not None and self._abandoned is not None)
                ),
                timeout=wait_s,
            )
            if self._decisions > seen:
                assert self._decision is not None
                decision = self._decision
            else:  # a parallel sibling failed for good: the saga compensates anyway
                decision = OperatorDecision(action="compensate", decided_by="a failed sibling step")
        except TimeoutError:  # the configured wait is over
            decision = OperatorDecision(
                action="compensate", decided_by=f"no operator within {wait_s:.0f} s; the saga"
            )
        except asyncio.CancelledError:
            self._waiting.remove(waiting)  # the saga's cancellation path sets the status
            raise
        # Not in a `finally`: an evicted workflow must not touch search attributes.
        self._waiting.remove(waiting)
        self._publish_status()
        return decision

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

    def _decide(self, decision: OperatorDecision) -> None:
        self._decision = decision
        self._decisions += 1

    @workflow.query(name="status")
    def status(self) -> StatusView:
        req = self._req
        return StatusView(
            mint_id=req.mint_id,
            status=self._published_status,
            stage=self._stage,
            mint_address=self._mint_address,
            owner=req.wallet,
            image_cid=self._image_cid,
            metadata_cid=self._metadata_cid,
            signature=self._signature,
            attempts=dict(self._attempts),
            last_error=self._last_error,
            awaiting_operator=bool(self._waiting),
            awaiting_step=self._waiting[0] if self._waiting else None,
            awaiting_steps=tuple(self._waiting),
            awaiting_since=self._awaiting_since,
            past_pivot=self._pivoted,
            reason=self._reason,
        )

    # ---------------------------------------------------------------- bookkeeping

    @property
    def _req(self) -> MintRequest:
        assert self._request is not None
        return self._request

    @property
    def _metadata_uri(self) -> str | None:
        return f"ipfs://{self._metadata_cid}" if self._metadata_cid else None

    def _enter(self, stage: MintStage, details: str) -> None:
        now = workflow.now()
        elapsed = (now - self._stage_started).total_seconds()
        self._stage_seconds[self._stage] = self._stage_seconds.get(self._stage, 0.0) + elapsed
        self._stage, self._stage_started = stage, now
        workflow.upsert_search_attributes([MINT_STAGE.value_set(stage.value)])
        self._set_details(details)

    def _set_status(self, status: MintStatus) -> None:
        """Set where the mint stands; AWAITING_OPERATOR is derived from the waiting steps."""
        self._status = status
        self._publish_status()

    def _publish_status(self) -> None:
        shown = self._status
        if self._waiting and shown == MintStatus.IN_PROGRESS:
            shown = MintStatus.AWAITING_OPERATOR
        # Since when a step (or a failed compensation) waits for a person; reading the
        # workflow clock is no command, so replay is unaffected.
        if not self._waiting:
            self._awaiting_since = None
        elif self._awaiting_since is None:
            self._awaiting_since = workflow.now()
        if shown != self._published_status:
            self._published_status = shown
            workflow.upsert_search_attributes([MINT_STATUS.value_set(shown.value)])

    def _count_retries(self, service: str, attempts: int) -> None:
        self._retries[service] = self._retries.get(service, 0) + max(0, attempts - 1)

    def _set_details(self, sentence: str) -> None:
        workflow.set_current_details(sentence)

    def _result(self, status: MintStatus) -> MintResult:
        return MintResult(
            mint_id=self._req.mint_id,
            status=status,
            mint_address=self._mint_address,
            owner=self._req.wallet,
            signature=self._signature,
            slot=self._slot,
            image_cid=self._image_cid,
            metadata_cid=self._metadata_cid,
            metadata_uri=self._metadata_uri,
            stage_seconds={k: round(v, 3) for k, v in self._stage_seconds.items()},
            retries=dict(self._retries),
            reason=self._reason,
        )

    async def _all(self, *steps: Coroutine[Any, Any, Any]) -> list[Any]:
        """Run steps in parallel; wait for every one, then raise the first failure.

        A step failing for good stops its siblings from waiting for an operator (they would
        be compensated anyway); running siblings finish, so nothing lands after compensation.
        """

        def note_failure(task: asyncio.Future[Any]) -> None:
            if not task.cancelled() and isinstance(task.exception(), StepFailed):
                self._abandoned = self._abandoned or task.exception()  # type: ignore[assignment]

        tasks = [asyncio.ensure_future(step) for step in steps]
        for task in tasks:
            task.add_done_callback(note_failure)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results

    @staticmethod
    async def _shielded(work: Awaitable[T]) -> T:
        """Finish `work` even if the workflow is cancelled meanwhile (compensations, the
        forward path after the pivot)."""
        task = asyncio.ensure_future(work)
        while True:
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.done():
                    raise
                workflow.logger.info("cancellation noted; finishing what must finish")
