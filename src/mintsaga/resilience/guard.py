"""One call through one endpoint's circuit breaker.

An open breaker answers at once with a retryable `ServiceError` (code `<Service>CircuitOpen`,
`retry_after` = when it may be probed), so a pool moves on to its next endpoint. When no endpoint
is left, the call is queued for later (the spec's fallback for the database): inside an activity
whose attempt has the time, it waits for the soonest half-open time (`wait_for_half_open`) and
tries again, so a refusal by our own breaker does not spend one of the step's attempts; without
the time, the activity fails and its next attempt waits for that half-open time instead of
hammering. Outcomes are recorded with their latency; a failure that says nothing about the
endpoint (a permanent error: a bad request) is recorded as neutral, and an answer a healthy
endpoint gives about the request (`ServiceError.endpoint_healthy`: an expired blockhash, a
rejected transaction) as a success. An endpoint that serves no call at all
(`ServiceError.whole_endpoint`: a refused key, a wrong URL) counts as failing although its error
is not retryable, so its breaker opens and calls stop asking it.

Plain Python: what the guard needs from its surroundings arrives as `GuardHooks`, installed once
by the composition root (`mintsaga.activities.call_hooks.install_call_hooks`): the time left in
the current attempt (a Temporal activity's deadline), a keep-alive while a queued call waits
(its heartbeat), and the observers of calls, HTTP answers and breaker states (spans and
metrics). Without them (a script, a unit test) a call is not queued and nothing is observed."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TypeVar

from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.resilience.breaker import BreakerState, CircuitBreaker, Override

T = TypeVar("T")


def _no_time() -> float:
    return 0.0


def _nothing() -> None:
    return None


def _unobserved_call(
    service: str, endpoint: str | None, operation: str | None
) -> AbstractContextManager[object]:
    return contextlib.nullcontext()


def _unobserved_http(
    service: str, endpoint: str | None, status: int | None, latency_s: float, operation: str | None
) -> None:
    return None


def _unobserved_breaker(name: str, state: BreakerState) -> None:
    return None


@dataclass(frozen=True, kw_only=True)
class GuardHooks:
    """What a guarded call needs from where it runs; the defaults do nothing.

    Attributes:
        time_left: seconds the current attempt has left (0: not inside one; a refused call is
            then not queued but fails at once).
        keep_alive: called at least every `HEARTBEAT_EVERY_S` while a queued call waits.
        observe_call: a context manager around each call (service, endpoint, operation).
        observe_http: one HTTP answer judged (service, endpoint, status, latency, operation).
        observe_breaker: a breaker's state after a call (name, state).
    """

    time_left: Callable[[], float] = _no_time
    keep_alive: Callable[[], None] = _nothing
    observe_call: Callable[[str, str | None, str | None], AbstractContextManager[object]] = (
        _unobserved_call
    )
    observe_http: Callable[[str, str | None, int | None, float, str | None], None] = (
        _unobserved_http
    )
    observe_breaker: Callable[[str, BreakerState], None] = _unobserved_breaker


_hooks = GuardHooks()


def install(hooks: GuardHooks) -> GuardHooks:
    """Use `hooks` from now on, in this process; returns the ones they replace."""
    global _hooks
    replaced, _hooks = _hooks, hooks
    return replaced


def installed() -> GuardHooks:
    return _hooks


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
    """Seconds the current attempt has left (`GuardHooks.time_left`; 0 outside one)."""
    return _hooks.time_left()


def keep_alive() -> None:
    """Tell the current attempt's caller it is alive (`GuardHooks.keep_alive`: a heartbeat
    inside an activity), e.g. before a pool moves on to its next endpoint."""
    _hooks.keep_alive()


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
        _hooks.keep_alive()
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
    span and request metrics (`GuardHooks.observe_call`), labelled with `endpoint` (default: the
    breaker's name) and named after `operation` (an RPC method, say).
    """
    label = endpoint or (breaker.name if breaker is not None else None)
    observe = _hooks.observe_call
    if breaker is None:
        with observe(service, label, operation):
            return await call()
    if not admitted:
        while not breaker.allow():
            if not await wait_for_half_open([breaker], clock=clock):
                raise circuit_open(service, [breaker], clock=clock)
    started = clock()
    try:
        try:
            with observe(service, label, operation):
                result = await call()
        except ServiceError as exc:
            if exc.endpoint_healthy:
                breaker.record_success(clock() - started)
            else:
                breaker.record_failure(retriable=exc.endpoint_fault, streak=not exc.connected)
            raise
        except BaseException:
            breaker.record_failure(retriable=False)  # cancelled, or a bug: not the endpoint's
            raise
        breaker.record_success(clock() - started)
        return result
    finally:
        _hooks.observe_breaker(breaker.name, breaker.state)


def admit(breaker: CircuitBreaker | None, service: str, *, last_resort: bool = False) -> None:
    """Raise the open-circuit error when `breaker` refuses a call now. `last_resort`: the
    caller's other endpoints failed this call, so only an operator's force-open refuses it
    (our own breakers must not fail a call the endpoint could still serve)."""
    if breaker is None or breaker.allow():
        return
    if last_resort and breaker.override is not Override.FORCE_OPEN:
        return
    raise circuit_open(service, [breaker])


def refuse_if_forced_open(breaker: CircuitBreaker | None, service: str) -> None:
    """Raise the open-circuit error only when an operator forced `breaker` open. For a caller
    that never reports its outcome to `breaker` (the pin repair, whose Pinata client has none):
    `admit` would take one of the half-open state's probe permits, which only an outcome gives
    back, and leave the mints' own calls refused until the breaker reopens."""
    if breaker is not None and breaker.override is Override.FORCE_OPEN:
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

    With `service`, the call also gets its span and request metrics (`GuardHooks.observe_call`),
    labelled with `endpoint` (default: the breaker's name).
    """
    if service is not None:
        label = endpoint or (breaker.name if breaker is not None else None)
        _hooks.observe_http(service, label, status, latency_s, operation)
    if breaker is None:
        return
    if status is None or status >= 500 or status in (408, 429):
        breaker.record_failure()
    else:
        breaker.record_success(latency_s)
    _hooks.observe_breaker(breaker.name, breaker.state)
