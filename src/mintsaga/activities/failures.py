"""How a classified client failure becomes a Temporal activity failure.

Every activity body runs inside `classified()`: a `ServiceError` leaves as an `ApplicationError`
whose `type` is the searchable code, whose details (`FailureDetails`) say the kind, service,
endpoint and attempt, and whose retry flag follows the kind. A retryable failure carries
`next_retry_delay` from `activities.pacing` (jittered backoff, `Retry-After`, adaptive stretch,
retry budget); the step's `RetryPolicy` still counts the attempts.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError

from mintsaga.activities.heartbeat import heartbeating
from mintsaga.activities.pacing import PACING
from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.observability.metrics import record_activity_attempt
from mintsaga.workflows.activity_models import FailureDetails
from mintsaga.workflows.policies import STEPS


def to_application_error(
    exc: ServiceError, attempt: int, delay_s: float | None = None
) -> ApplicationError:
    # `delay_s` comes from activities.pacing, which already waits at least `Retry-After`.
    retry_delay = timedelta(seconds=delay_s) if exc.retryable and delay_s is not None else None
    details = FailureDetails(
        kind=exc.kind, service=exc.service, endpoint=exc.endpoint, attempt=attempt
    )
    return ApplicationError(
        exc.message,
        details.as_detail(),
        type=exc.code,
        non_retryable=not exc.retryable,
        next_retry_delay=retry_delay,
    )


def permanent(message: str, code: str, service: str) -> ServiceError:
    """A failure no retry can change, found by the activity itself (not by a client)."""
    return ServiceError(message, service=service, kind=ErrorKind.PERMANENT, code=code)


class classified:
    """Translate client failures into Temporal failures for the current activity.

    `with classified():` around a quick body; `async with classified(heartbeat=True):` around
    one that may outlast its heartbeat timeout (it heartbeats every couple of seconds).
    """

    def __init__(self, *, heartbeat: bool = False) -> None:
        self._heartbeat = heartbeat
        self._beats: contextlib.AbstractAsyncContextManager[None] | None = None

    def __enter__(self) -> None:
        info = activity.info()
        step = STEPS.get(info.activity_type)
        service = step.service if step is not None else "ipfs"
        record_activity_attempt(info.activity_type, service, info.attempt)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        info = activity.info()
        step = STEPS.get(info.activity_type)
        service = step.service if step is not None else "ipfs"
        if exc is None:
            PACING.record(service, success=True)
        if isinstance(exc, ServiceError):
            PACING.record(service, success=False)
            delay_s = PACING.delay_s(service, exc, info.attempt) if exc.retryable else None
            activity.logger.warning(
                "%s failed on attempt %d: %s", info.activity_type, info.attempt, exc
            )
            raise to_application_error(exc, info.attempt, delay_s) from None

    async def __aenter__(self) -> None:
        self.__enter__()
        if self._heartbeat:
            self._beats = heartbeating()
            await self._beats.__aenter__()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if self._beats is not None:
            await self._beats.__aexit__(kind, exc, tb)  # type: ignore[arg-type]
        self.__exit__(kind, exc, tb)
