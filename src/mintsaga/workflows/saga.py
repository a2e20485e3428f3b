"""The saga's machinery, apart from its story: `MintSaga` (workflows.mint_saga) inherits it.

- **Steps.** `_step` runs one `Step` with its policy (`workflows.steps.execute`) and counts its
  attempts and retries. When the step spends its retries it asks an operator and, on `retry`,
  runs it again; a permanent failure before the pivot raises `StepFailed` at once, since no
  retry can change it. `_all` runs steps in parallel and lets every one finish.
- **Compensations.** `_register` pushes a step's compensation *before* the step runs (a step
  that timed out may still have happened); `_roll_back` runs them in reverse, each with its own
  retry policy, shielded from cancellation (`_shielded`), one failing not stopping the others.
  A compensation that fails for good leaves the saga `FAILED`, waiting for an operator.
- **Operators.** `_await_operator` waits for `retry` (with overrides, which last until the
  next decision unless it says `keep_overrides`) or `compensate`, before the pivot no longer
  than the request allows; `_decide` is what the signal and update handlers call.
- **Status.** `_enter`, `_set_status`, the waiting steps: the MintStage/MintStatus attributes.
- **Notices.** What the backend is told (`mintsaga.notices`): each stage, a delay (late, or
  waiting for an operator: once), a wait and its end, the outcome. `_notify` queues a notice;
  one background task records the queue in order (`record_notices`, retried without limit),
  so a slow database or webhook receiver never holds up a step; the saga waits for the queue
  only before it returns. Mints started before this change record none (`STATUS_NOTICES`).

Everything here is workflow code: deterministic, and every command it issues (activities,
timers, search attribute upserts, `workflow.patched` markers) is recorded in histories that
must replay, so its order never changes without a `workflow.patched` gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from temporalio import workflow
from temporalio.common import Priority, SearchAttributeKey, TypedSearchAttributes
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError
from temporalio.exceptions import TimeoutError as ActivityTimeoutError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from mintsaga.notices import NoticeType
    from mintsaga.stages import MintStage
    from mintsaga.workflows.activity_models import FailureDetails, NoticeIn, NoticesIn, StepOut
    from mintsaga.workflows.models import ErrorInfo, MintStatus, OperatorDecision, RetryOverrides
    from mintsaga.workflows.policies import RECORD_NOTICES, STEPS, provider_task_queue
    from mintsaga.workflows.steps import Step, execute

__all__ = [
    "MINT_STAGE",
    "MINT_STATUS",
    "OVERRIDES_PER_RETRY",
    "Compensation",
    "HandledError",
    "Saga",
    "StepFailed",
    "attempts_made",
    "error_info",
]

# The patch id of "a retry's overrides last until the next operator decision".
OVERRIDES_PER_RETRY = "operator-overrides-per-retry"
# The patch ids of "the backend is told each status change" and "steps after the pivot are
# dispatched first" (issue 17).
STATUS_NOTICES = "status-notices"
POST_PIVOT_PRIORITY = "post-pivot-priority"
# The patch id of the lean saga (issue 19, docs/design.md "Local activities"): the short steps
# run as local activities, search attributes change only with MintStatus, and every patch
# above is taken as applied without its marker.
LEAN_SAGA = "lean-saga"
# Temporal's priority keys run from 1 (first) to 5, default 3: a mint past the pivot is
# finished before new mints are started. Servers without task priorities ignore the key.
AFTER_PIVOT = Priority(priority_key=1)

MINT_STAGE = SearchAttributeKey.for_keyword("MintStage")
MINT_STATUS = SearchAttributeKey.for_keyword("MintStatus")
# Set by start_mint for a mint naming a collection (`list --collection`); never by the workflow.
MINT_COLLECTION = SearchAttributeKey.for_keyword("MintCollection")

In = TypeVar("In")
Out = TypeVar("Out", bound=StepOut)
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
class Compensation(Generic[In]):
    """A step that undoes another, and how to build its input from the reason."""

    step: Step[In, Any]
    make_input: Callable[[str], In]


def error_info(step: str, err: ActivityError) -> ErrorInfo:
    """What went wrong, from the activity's classified ApplicationError (or a timeout)."""
    cause = err.cause
    if isinstance(cause, ApplicationError):
        details = FailureDetails.of(cause)
        kind = details.kind if details is not None else None
        if kind is None:  # the details do not say: the retry flag does
            kind = "permanent" if cause.non_retryable else "transient"
        return ErrorInfo(step=step, type=cause.type or "Error", message=cause.message, kind=kind)
    if isinstance(cause, ActivityTimeoutError):
        return ErrorInfo(step=step, type="Timeout", message=str(cause), kind="transient")
    return ErrorInfo(step=step, type=type(cause).__name__, message=str(cause), kind="transient")


def attempts_made(err: ActivityError, limit: int) -> int:
    """How many attempts a failed activity used: activities report theirs in the details."""
    cause = err.cause
    if isinstance(cause, ApplicationError):
        details = FailureDetails.of(cause)
        if details is not None and details.attempt is not None:
            return details.attempt
    return limit


class Saga:
    """The machinery a saga workflow inherits (module docstring); the subclass tells the story
    and calls `_start` first."""

    def __init__(self) -> None:
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
        self._awaiting_since: datetime | None = None  # for `mintsaga list --stuck`'s age
        self._decision: OperatorDecision | None = None
        self._decisions = 0
        self._overrides = RetryOverrides()
        self._compensations: list[Compensation[Any]] = []
        self._pivoted = False  # the first send happened: from here on, only forward
        self._reason: str | None = None  # why the saga compensated
        self._operator_timeout_s: float | None = None  # before the pivot; None: no limit
        # Notices (`_notify`): on for mints started after STATUS_NOTICES.
        self._notices_on = False
        self._notice_mint_id = ""
        self._notice_backlog: list[NoticeIn] = []
        self._notices_made = 0
        self._recording = False  # the recorder task is running
        self._delayed = False  # DELAYED was told (once per mint)
        self._settled = False  # the outcome is known: no more delay notices
        self._running: dict[str, str] = {}  # steps running now, with their service
        self._prioritise = False  # POST_PIVOT_PRIORITY
        self._background: set[asyncio.Future[None]] = set()  # the notice tasks
        self._lean = False  # LEAN_SAGA
        self._notices_begun = False

    def _start(self, *, operator_timeout_s: float) -> None:
        self._operator_timeout_s = operator_timeout_s
        self._lean = workflow.patched(LEAN_SAGA)
        if self._lean and _attributes_set(workflow.info().typed_search_attributes):
            return  # the starter set both (mintsaga.start_mint does)
        # Set both attributes at once, for starters (another language) that set neither.
        workflow.upsert_search_attributes(
            [
                MINT_STAGE.value_set(MintStage.INITIATED.value),
                MINT_STATUS.value_set(MintStatus.IN_PROGRESS.value),
            ]
        )

    def _patched(self, patch_id: str) -> bool:
        """`workflow.patched(patch_id)`, except in the lean saga, which came after every patch
        before it: there they all hold, and none records a marker."""
        return self._lean or workflow.patched(patch_id)

    def _begin_notices(self, mint_id: str, *, delay_notice_s: float) -> None:
        """Tell the backend the mint started, and a delay if it is not over in time (once:
        the lean saga may begin them early, when its first look at the database fails)."""
        if self._notices_begun:
            return
        self._notices_begun = True
        self._prioritise = self._patched(POST_PIVOT_PRIORITY)
        self._notices_on = self._patched(STATUS_NOTICES)
        if not self._notices_on:
            return
        self._notice_mint_id = mint_id
        self._notify(NoticeType.IN_PROGRESS)
        self._keep(asyncio.ensure_future(self._watch_for_delay(delay_notice_s)))

    # ---------------------------------------------------------------- steps

    async def _step(
        self,
        step: Step[In, Out],
        arg: In | Callable[[], In],
        *,
        handled: tuple[str, ...] = (),
        remote: bool = False,
    ) -> Out:
        """Run one activity with its policy; when it spends its retries, ask an operator.

        `arg` may be a function, so a retry after an operator's overrides builds a new input.
        A cancelled workflow waits for a running activity to finish or acknowledge the
        cancellation before compensating, so no step lands after its compensation ran.
        `remote`: a regular activity even where the lean saga would run it locally (a wait).
        """
        name = step.name
        while True:
            self._attempts[name] = self._attempts.get(name, 0) + 1
            self._running[name] = step.service
            local = self._local(step) and not remote
            fell_back: list[int] = []  # a failed local attempt before the regular ones
            if not local:  # the lean saga waits on it: what it has to tell goes first
                self._flush_notices()
            run = execute(
                step,
                arg() if callable(arg) else arg,
                summary=name,
                cancellation_type=self._cancellation_type(),
                task_queue=self._task_queue(step),  # a local step's regular attempts
                priority=AFTER_PIVOT if self._pivoted and self._prioritise else None,
                local=local,
                on_fallback=functools.partial(fell_back.append, 1),
            )
            try:
                out = await (self._cancellable(run) if self._lean else run)
            except ActivityError as err:
                self._running.pop(name, None)
                if isinstance(err.cause, CancelledError):
                    raise asyncio.CancelledError from err  # the workflow is being cancelled
                error = error_info(name, err)
                self._last_error = error
                self._count_retries(
                    step.service, attempts_made(err, step.attempts) + len(fell_back)
                )
                if error.type in handled:
                    raise HandledError(error) from err
                if error.kind == "permanent" and not self._pivoted:
                    raise StepFailed(error) from err  # no retry can change it: compensate now
                await self._await_operator(name, error)
                continue
            self._running.pop(name, None)
            self._count_retries(step.service, out.attempt + len(fell_back))
            return out

    @staticmethod
    async def _cancellable(run: Awaitable[Out]) -> Out:
        """`run`, but a cancellation meanwhile is raised once the step finished or acknowledged
        it (awaited plainly, a step completing after the cancel returns its result and the
        cancellation is lost). The lean saga awaits its single steps this way."""
        task = asyncio.ensure_future(run)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            task.cancel()  # the step's cancellation, as its cancellation type says
            with contextlib.suppress(ActivityError, asyncio.CancelledError):
                await task  # it finished or acknowledged: its compensation is registered
            raise

    def _local(self, step: Step[Any, Any]) -> bool:
        """The lean saga runs a step that allows it as a local activity."""
        return self._lean and step.local

    def _task_queue(self, step: Step[Any, Any]) -> str | None:
        """A step that calls a rate-limited provider (Pinata) runs on that provider's queue,
        where Temporal holds the provider's rate for the whole fleet. Mints started before
        this change schedule every step on the saga's queue (their histories say so); the
        worker serves every activity there too."""
        if step.provider is None or not self._patched("pinata-task-queue"):
            return None
        return provider_task_queue(workflow.info().task_queue, step.provider)

    def _cancellation_type(self) -> ActivityCancellationType:
        # Mints started before this change cancel their running step at once (their
        # histories say so); newer ones wait for it, so nothing lands after compensation.
        if self._patched("wait-for-cancelled-steps"):
            return ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
        return ActivityCancellationType.TRY_CANCEL

    async def _all(self, *steps: Coroutine[Any, Any, Any]) -> list[Any]:
        """Run steps in parallel; wait for every one, then raise the first failure.

        A step failing for good stops its siblings from waiting for an operator (they would
        be compensated anyway); running siblings finish, so nothing lands after compensation.
        """

        def note_failure(task: asyncio.Future[Any]) -> None:
            if not task.cancelled():
                failure = task.exception()
                if isinstance(failure, StepFailed):
                    self._abandoned = self._abandoned or failure

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

    # ---------------------------------------------------------------- compensation

    def _register(self, step: Step[In, Any], make_input: Callable[[str], In]) -> None:
        """Push a compensation before its step runs: a timed-out step may still have happened."""
        self._compensations.append(Compensation(step, make_input))

    async def _roll_back(self, cause: StepFailed | asyncio.CancelledError) -> None:
        """Run every registered compensation, newest first, until all have succeeded; then
        the saga is ROLLED_BACK (and a cancellation goes on being one: it is raised again)."""
        if isinstance(cause, StepFailed):
            self._reason = cause.reason
        else:
            self._reason = "cancelled before the pivot"
        self._set_details(f"compensating: {self._reason}")
        pending = list(reversed(self._compensations))
        while pending:
            pending = await self._shielded(self._compensate(pending, self._reason))
            if pending:
                # A compensation failed after all its retries: a person must look.
                self._set_status(MintStatus.FAILED)
                self._enter(MintStage.FAILED, f"compensation failed: {self._last_error}")
                self._delayed = True  # no delay notice over FAILED while an operator looks
                self._notify(NoticeType.FAILED, reason=self._reason, **self._error_data())
                await self._shielded(self._wait_for_decision(None, "compensation failed"))
        self._enter(MintStage.ROLLED_BACK, f"rolled back: {self._reason}")
        self._set_status(MintStatus.ROLLED_BACK)
        self._notify(NoticeType.ROLLED_BACK, reason=self._reason)
        await self._shielded(self._notices_recorded())
        if isinstance(cause, asyncio.CancelledError):
            raise cause

    async def _compensate(
        self, pending: list[Compensation[Any]], reason: str
    ) -> list[Compensation[Any]]:
        """Run each compensation in order; one failing does not stop the others."""
        failed: list[Compensation[Any]] = []
        for compensation in pending:
            step = compensation.step
            try:
                local = self._local(step)
                if not local:
                    self._flush_notices()
                await execute(
                    step,
                    compensation.make_input(reason),
                    task_queue=self._task_queue(step),
                    local=local,
                )
            except ActivityError as err:
                self._last_error = error_info(step.name, err)
                workflow.logger.error("compensation %s failed: %s", step.name, err)
                failed.append(compensation)
        return failed

    # ---------------------------------------------------------------- operators

    async def _await_operator(self, step: str, error: ErrorInfo) -> None:
        """Wait for `retry` (returns) or `compensate` (raises StepFailed, before the pivot only)."""
        self._last_error = error
        timeout = None if self._pivoted else self._operator_timeout_s
        decision = await self._wait_for_decision(step, f"{error.type}: {error.message}", timeout)
        if decision.action == "compensate":
            raise StepFailed(error, decided_by=decision.decided_by)
        self._overrides = self._overrides_after(decision.overrides)

    def _overrides_after(self, given: RetryOverrides) -> RetryOverrides:
        """The overrides the steps use after a retry that brought `given`.

        A retry's overrides last until the next operator decision: a plain retry runs with
        none, `keep_overrides` keeps the earlier ones under its own. Decisions recorded before
        this rule (no marker in their history) replay as they ran: an empty retry kept the
        overrides in force, a retry with any replaced them all.
        """
        if self._patched(OVERRIDES_PER_RETRY):
            return given.over(self._overrides) if given.keep_overrides else given.changes
        return given.changes if given.changes != RetryOverrides() else self._overrides

    async def _wait_for_decision(
        self, step: str | None, why: str, wait_s: float | None = None
    ) -> OperatorDecision:
        waiting = step or "compensation"
        self._waiting.append(waiting)
        self._publish_status()
        self._set_details(f"waiting for an operator at {waiting}: {why}")
        if step is not None:  # a failed compensation was told as FAILED
            self._notify_delayed(f"waiting for an operator at {step}")
            self._notify(NoticeType.AWAITING_OPERATOR, **{**self._error_data(), "step": step})
        self._flush_notices()
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
        self._notify(
            NoticeType.RESUMED,
            step=waiting,
            decision=decision.action,
            decided_by=decision.decided_by or "an operator",
        )
        return decision

    def _decide(self, decision: OperatorDecision) -> None:
        self._decision = decision
        self._decisions += 1

    # ---------------------------------------------------------------- status

    def _enter(self, stage: MintStage, details: str) -> None:
        now = workflow.now()
        elapsed = (now - self._stage_started).total_seconds()
        self._stage_seconds[self._stage] = self._stage_seconds.get(self._stage, 0.0) + elapsed
        entered = stage != self._stage
        self._stage, self._stage_started = stage, now
        # The lean saga publishes the stage with the status only (`_publish_status`): what
        # an operator filters on; the stage in between is in the status query and the events.
        if not self._lean:
            workflow.upsert_search_attributes([MINT_STAGE.value_set(stage.value)])
        self._set_details(details)
        # The outcomes (MINTED, ROLLED_BACK, FAILED) are told where they are decided.
        if entered and stage.in_progress:
            self._notify(NoticeType.IN_PROGRESS)

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
            published = [MINT_STATUS.value_set(shown.value)]
            if self._lean:  # FAILED is set before its stage is entered (older histories)
                stage = MintStage.FAILED if shown == MintStatus.FAILED else self._stage
                published.insert(0, MINT_STAGE.value_set(stage.value))
            workflow.upsert_search_attributes(published)

    def _count_retries(self, service: str, attempts: int) -> None:
        self._retries[service] = self._retries.get(service, 0) + max(0, attempts - 1)

    @staticmethod
    def _set_details(sentence: str) -> None:
        workflow.set_current_details(sentence)

    # ---------------------------------------------------------------- notices

    def _notice_data(self) -> dict[str, Any]:
        """What every notice says besides its stage (the subclass adds the mint's fields)."""
        return {}

    def _error_data(self) -> dict[str, Any]:
        error = self._last_error
        if error is None:
            return {}
        step = STEPS.get(error.step)
        return {
            "step": error.step,
            "service": step.service if step is not None else None,
            "error": {"type": error.type, "message": error.message, "kind": error.kind},
        }

    def _notify(self, kind: NoticeType, **data: Any) -> None:
        """Queue one notice for the recorder (mints started before STATUS_NOTICES: none)."""
        if not self._notices_on:
            return
        self._notices_made += 1
        body = {"stage": self._stage.value, **self._notice_data(), **data}
        # Unique per run: a mint started again under the same id (its history deleted) tells
        # its own story; a retried recording is recognised by the same key.
        key = f"{workflow.info().run_id}:{self._notices_made}:{kind.value}"
        body = {k: v for k, v in body.items() if v is not None}
        self._notice_backlog.append(NoticeIn(type=kind.value, event_key=key, data=body))
        if not self._lean:
            self._flush_notices()

    def _flush_notices(self) -> None:
        """Start recording the queued notices, unless recording already. The lean saga flushes
        only where it is about to wait (a regular activity, an operator, a delay, the end):
        the notices of a run of local activities go in one batch, one local activity."""
        if self._notice_backlog and not self._recording:
            self._recording = True
            self._keep(asyncio.ensure_future(self._record_notices()))

    def _keep(self, task: asyncio.Future[None]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _notify_delayed(self, why: str) -> None:
        """DELAYED, once per mint: why, and which steps and services it waits on."""
        if self._delayed or self._settled:
            return
        self._delayed = True
        cause: dict[str, Any] = {"reason": why, **self._error_data()}
        if self._running:
            cause["running"] = sorted(self._running)
            cause["services"] = sorted(set(self._running.values()))
        self._notify(NoticeType.DELAYED, cause=cause)

    async def _watch_for_delay(self, after_s: float) -> None:
        why = f"not minted within {after_s:.0f} s (options.delay_notice_s)"
        if self._lean:
            # A plain timer, left running when the mint ends in time (a cancel: one more event).
            await workflow.sleep(after_s)
            self._notify_delayed(why)  # says nothing once settled
            self._flush_notices()
            return
        try:
            await workflow.wait_condition(lambda: self._settled, timeout=after_s)
        except TimeoutError:
            self._notify_delayed(why)

    async def _record_notices(self) -> None:
        """Record the queued notices in order, a batch per activity, until none is left."""
        while self._notice_backlog:
            batch = tuple(self._notice_backlog)
            try:
                await execute(
                    RECORD_NOTICES,
                    NoticesIn(mint_id=self._notice_mint_id, notices=batch),
                    summary=RECORD_NOTICES.name,
                    local=self._local(RECORD_NOTICES),
                )
            except ActivityError as err:  # retried without limit: only a bug ends it
                workflow.logger.error("notices %s not recorded: %s", batch[0].event_key, err)
            del self._notice_backlog[: len(batch)]
        self._recording = False

    async def _notices_recorded(self) -> None:
        """The outcome is known: no more delay notice; wait until every notice is recorded."""
        self._settled = True
        self._flush_notices()
        await workflow.wait_condition(lambda: not self._recording)


def _attributes_set(attributes: TypedSearchAttributes) -> bool:
    """Whether the start set both MintStage and MintStatus."""
    return attributes.get(MINT_STAGE) is not None and attributes.get(MINT_STATUS) is not None
