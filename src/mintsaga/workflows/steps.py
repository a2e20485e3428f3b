"""What a step is: one activity, named once, with its input and output models and its policy.

A `Step` is the whole contract of one activity. The activity's decorator takes its name
(`@activity.defn(name=CLAIM_MINT.name)`), the workflow schedules it through `execute` (which
passes the step's name, timeouts, retry policy and output model, so the result comes back
typed), and the policy table is the set of steps (`workflows.policies` for the saga,
`workflows.health` for the probes). `tests/integration/test_steps.py` checks that the worker
registers an activity for every step, with the step's models, and nothing else.

Names never change: a running workflow's history refers to its activities by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, TypeVar, cast

from temporalio import workflow
from temporalio.common import Priority, RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    FailureError,
)
from temporalio.exceptions import TimeoutError as StepTimeout
from temporalio.workflow import ActivityCancellationType

# One backoff table (base, cap, jitter) per service, shared with activities.pacing, which
# computes the jittered delay each failed attempt asks for.
from mintsaga.resilience.backoff import BACKOFF_BY_SERVICE

# A local attempt's longest run: past it the step goes on as a regular activity with its own
# timeout. Short enough that a slow dependency neither holds its workflow task open past the
# SDK's task heartbeat (8 s of the 10 s task timeout) nor a local-activity slot for long.
LOCAL_ATTEMPT_TIMEOUT = timedelta(seconds=5)
# Lean mints after this patch wait out the delay a failed local attempt asked for (its
# Retry-After or jittered backoff) before the regular activity's first attempt.
LOCAL_ATTEMPT_BACKOFF = "local-attempt-backoff"

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(frozen=True)
class Step(Generic[In, Out]):
    """One activity's place in a workflow: its name, its models, and how hard to retry it.

    Args:
        name: the activity type, as histories record it (never renamed).
        input: the model of its one argument; None: it takes no argument.
        output: the model it returns; None: it returns nothing.
        service: the service it leans on (a key of `BACKOFF_BY_SERVICE` for the saga's
            steps), which picks its backoff and labels its retries.
        attempts: the most attempts Temporal makes (0: no limit).
        timeout: one attempt's start-to-close timeout.
        heartbeat: its heartbeat timeout, for a step that heartbeats.
        provider: a rate-limited provider it calls: it then runs on that provider's task
            queue (`policies.provider_task_queue`), where Temporal holds the provider's rate
            for the whole fleet.
        retry: its retry policy when not the service's backoff (the health probes'); its
            `maximum_attempts` must be `attempts`.
        deadline: a schedule-to-close timeout over all attempts, if any.
        local: short, idempotent and calling no rate-limited provider: the lean saga runs
            it as a local activity (docs/design.md "Local activities"), with the same
            timeout and retry policy; the step's name and models do not change.
    """

    name: str
    input: type[In] | None
    output: type[Out] | None
    service: str
    attempts: int
    timeout: timedelta
    heartbeat: timedelta | None = None
    provider: str | None = None
    retry: RetryPolicy | None = None
    deadline: timedelta | None = None
    local: bool = False

    def __post_init__(self) -> None:
        if self.retry is None and self.service not in BACKOFF_BY_SERVICE:
            raise ValueError(f"{self.name}: no backoff for service {self.service!r}")
        if self.retry is not None and self.retry.maximum_attempts != self.attempts:
            raise ValueError(f"{self.name}: retry.maximum_attempts must be {self.attempts}")

    def retry_policy(self, attempts: int | None = None) -> RetryPolicy:
        """Its retry policy; `attempts`: that many instead of its own (0: no limit)."""
        if self.retry is not None:
            return self.retry
        backoff = BACKOFF_BY_SERVICE[self.service]
        return RetryPolicy(
            initial_interval=timedelta(seconds=backoff.base_s),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=backoff.cap_s),
            maximum_attempts=self.attempts if attempts is None else attempts,
        )

    def options(self) -> dict[str, Any]:
        """Keyword arguments for `workflow.execute_activity` (as `execute` passes them)."""
        return {
            "start_to_close_timeout": self.timeout,
            "schedule_to_close_timeout": self.deadline,
            "heartbeat_timeout": self.heartbeat,
            "retry_policy": self.retry_policy(),
        }


async def execute(
    step: Step[In, Out],
    arg: In,
    *,
    task_queue: str | None = None,
    summary: str | None = None,
    cancellation_type: ActivityCancellationType = ActivityCancellationType.TRY_CANCEL,
    priority: Priority | None = None,
    local: bool = False,
    fallback: bool = True,
    on_fallback: Callable[[], None] | None = None,
) -> Out:
    """Run `step` with `arg` (None for a step without input) and return its typed output.

    The one way a workflow here schedules an activity. The keyword defaults are the SDK's.
    `local`: its first attempt as a local activity (the step must allow it), on this worker,
    in the workflow task that asked; when that attempt fails and may be retried, the rest of
    the step's attempts run as a regular activity (on `task_queue`, with `priority`), retried
    by the server with the step's backoff, so a failing dependency never holds the workflow
    task open (docs/design.md "Local activities"). `fallback=False`: the local attempt only;
    `on_fallback` is called when the regular activity takes over (a failed attempt more).
    """
    if local:
        if not step.local:
            raise ValueError(f"{step.name} may not run as a local activity")
        delay: timedelta | None = None
        try:
            return cast(
                Out,
                await workflow.execute_local_activity(
                    step.name,
                    args=[] if step.input is None else [arg],
                    result_type=step.output,
                    summary=summary,
                    cancellation_type=cancellation_type,
                    start_to_close_timeout=min(step.timeout, LOCAL_ATTEMPT_TIMEOUT),
                    schedule_to_close_timeout=step.deadline,
                    retry_policy=step.retry_policy(attempts=1),
                ),
            )
        except ActivityError as err:
            # The SDK's core wraps a local attempt's timeout (and cancellation) in an
            # ActivityError: a timeout goes on as a regular activity, anything else is raised.
            if not isinstance(err.cause, StepTimeout) or step.attempts == 1 or not fallback:
                raise
        except FailureError as exc:
            if not _retryable(exc) or step.attempts == 1 or not fallback:
                # A local activity's failure arrives as its cause alone: wrapped as a regular
                # activity's is, so the saga reads both the same way.
                raise ActivityError(
                    f"local activity {step.name} failed",
                    scheduled_event_id=0,
                    started_event_id=0,
                    identity="",
                    activity_type=step.name,
                    activity_id="",
                    retry_state=None,
                ) from exc
            # The step's own attempts follow, as a regular activity: the local attempt is a
            # try before them, so a failing dependency meets exactly the step it met before
            # the lean saga (attempts, backoff, the server's waits for an open circuit).
            if isinstance(exc, ApplicationError):
                delay = exc.next_retry_delay
        if on_fallback is not None:
            on_fallback()
        # The wait the failed attempt asked for (a provider's Retry-After, the service's
        # backoff), as the server would have waited between two regular attempts.
        if delay and delay > timedelta(0) and workflow.patched(LOCAL_ATTEMPT_BACKOFF):
            await workflow.sleep(delay)
    result = await workflow.execute_activity(
        step.name,
        args=[] if step.input is None else [arg],
        result_type=step.output,
        task_queue=task_queue,
        summary=summary,
        cancellation_type=cancellation_type,
        start_to_close_timeout=step.timeout,
        schedule_to_close_timeout=step.deadline,
        heartbeat_timeout=step.heartbeat,
        retry_policy=step.retry_policy(),
        priority=priority or Priority.default,
    )
    return cast(Out, result)


def _retryable(failure: FailureError) -> bool:
    """Whether another attempt may change a failed local attempt's outcome: not a
    cancellation, not an ApplicationError marked non-retryable (a permanent error, or one for a
    person); a timeout or any other failure may."""
    if isinstance(failure, CancelledError):
        return False
    return not (isinstance(failure, ApplicationError) and failure.non_retryable)
