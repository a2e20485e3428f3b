"""One call through one endpoint's circuit breaker.

An open breaker answers at once with a retryable `ServiceError` (code `<Service>CircuitOpen`,
`retry_after` = when it may be probed), so a pool moves on to its next endpoint. When no endpoint
is left, the call is queued for later (the spec's fallback for the database): inside an activity
whose attempt has the time, it waits for the soonest half-open time (`wait_for_half_open`) and
tries again, so a refusal by our own breaker does not spend one of the step's attempts; without
the time, the activity fails and its next attempt waits for that half-open time instead of
hammering. Outcomes are recorded with their latency; a failure that says nothing about the
endpoint (a permanent error: a bad request, a rejected transaction) is recorded as neutral.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from temporalio import activity

from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.observability.calls import observed_call, record_http_call
from mintsaga.observability.metrics import record_breaker_state
from mintsaga.resilience.breaker import BreakerState, CircuitBreaker

T = TypeVar("T")

# Answers a healthy endpoint gives about the request, not about itself.
HEALTHY_ANSWERS = frozenset(
    {"AlreadyProcessed", "BlockhashNotFound", "SystemWalletUnderfunded", "TransactionRejected"}
)


def service_prefix(service: str) -> str:
    return service[:1].upper() + service[1:]


def circuit_open(
    service: str, breakers: Iterable[CircuitBreaker], *, clock: Callable[[], float] = time.monotonic
) -> ServiceError:
    """The error for "no endpoint of `service` may be called now"."""
    breakers = list(breakers)
    times = [t for t in (b.retry_at() for b in breakers) if t is not None]
    wait = max(0.0, min(times) - clock()) if times else None
    names = ", ".join(b.name for b in breakers)
    return ServiceError(
        f"the circuit is open for {names}"
        + (f"; the first may be probed in {wait:.1f} s" if wait is not None else ""),
        service=service,
        kind=ErrorKind.RATE_LIMITED,
        code=f"{service_prefix(service)}CircuitOpen",
        endpoint=breakers[0].name if len(breakers) == 1 else None,
        retry_after=wait,
    )


# A queued call gives up while this much of its attempt would be left (to fail and report).
QUEUE_MARGIN_S = 1.0
# Half-open with every probe permit taken: the probes' verdict comes within a call's time.
HALF_OPEN_POLL_S = 0.25
QUEUE_JITTER_S = 0.25  # waiters spread out, so they do not meet the half-open probes at once
HEARTBEAT_EVERY_S = 2.0


def attempt_time_left() -> float:
    """Seconds the current activity attempt has before its start-to-close timeout (0 outside
    an activity, or without that timeout)."""
    if not activity.in_activity():
        return 0.0
    info = activity.info()
    if info.start_to_close_timeout is None:
        return 0.0
    elapsed = (datetime.now(UTC) - info.started_time).total_seconds()
    return info.start_to_close_timeout.total_seconds() - elapsed


async def wait_for_half_open(
    breakers: Sequence[CircuitBreaker], *, clock: Callable[[], float] = time.monotonic
) -> bool:
    """Queue a call every breaker refuses: wait until the soonest may be probed (heartbeating)
    and answer True, so the caller asks again. False, at once, when the wait would not fit in
    the activity attempt's time (or outside an activity), or an operator forced them open."""
    times = [t for t in (b.retry_at() for b in breakers) if t is not None]
    if times:
        wait = max(0.0, min(times) - clock())
    elif any(b.state is BreakerState.HALF_OPEN for b in breakers):
        wait = HALF_OPEN_POLL_S
    else:
        return False  # forced open by an operator: no time at which it opens by itself
    wait += random.uniform(0.0, QUEUE_JITTER_S)
    if wait + QUEUE_MARGIN_S > attempt_time_left():
        return False
    while wait > 0:
        activity.heartbeat()
        await asyncio.sleep(min(wait, HEARTBEAT_EVERY_S))
        wait -= HEARTBEAT_EVERY_S
    return True


async def through(
    breaker: CircuitBreaker | None,
    service: str,
    call: Callable[[], Awaitable[T]],
    *,
    admitted: bool = False,
    clock: Callable[[], float] = time.monotonic,
    endpoint: str | None = None,
    operation: str | None = None,
) -> T:
    """Run `call` if `breaker` allows it, and record how it went.

    `admitted`: the caller already asked `breaker.allow()` (a pool skipping open endpoints);
    asking twice would spend two of a half-open breaker's probes. Every call that runs gets a
    span and request metrics (`observability.calls`), labelled with `endpoint` (default: the
    breaker's name) and named after `operation` (an RPC method, say).
    """
    label = endpoint or (breaker.name if breaker is not None else None)
    if breaker is None:
        with observed_call(service, label, operation):
            return await call()
    if not admitted:
        while not breaker.allow():
            if not await wait_for_half_open([breaker], clock=clock):
                raise circuit_open(service, [breaker], clock=clock)
    started = clock()
    try:
        try:
            with observed_call(service, label, operation):
                result = await call()
        except ServiceError as exc:
            if exc.code in HEALTHY_ANSWERS:
                breaker.record_success(clock() - started)
            else:
                breaker.record_failure(retriable=exc.retryable, streak=not exc.connected)
            raise
        except BaseException:
            breaker.record_failure(retriable=False)  # cancelled, or a bug: not the endpoint's
            raise
        breaker.record_success(clock() - started)
        return result
    finally:
        record_breaker_state(breaker.name, breaker.state)


def admit(breaker: CircuitBreaker | None, service: str) -> None:
    """Raise the open-circuit error when `breaker` refuses a call now."""
    if breaker is not None and not breaker.allow():
        raise circuit_open(service, [breaker])


def record_http(
    breaker: CircuitBreaker | None,
    status: int | None,
    latency_s: float,
    *,
    service: str | None = None,
    endpoint: str | None = None,
    operation: str | None = None,
) -> None:
    """Judge an HTTP endpoint by its answer: no answer, 408, 429 and 5xx count against it.

    With `service`, the call also gets its span and request metrics (`observability.calls`),
    labelled with `endpoint` (default: the breaker's name).
    """
    if service is not None:
        label = endpoint or (breaker.name if breaker is not None else None)
        record_http_call(service, label, status, latency_s, operation)
    if breaker is None:
        return
    if status is None or status >= 500 or status in (408, 429):
        breaker.record_failure()
    else:
        breaker.record_success(latency_s)
    record_breaker_state(breaker.name, breaker.state)
