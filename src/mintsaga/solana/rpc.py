"""A pool of Solana JSON-RPC endpoints with failover inside one call.

Every call tries the endpoints in order (each at most once) and moves on when the failure is
retryable (a refused connection, a timeout, a 5xx, a 429, a node that is behind) or belongs to
the endpoint rather than the request (``ServiceError.unusable``: a refused key, a wrong URL, a
send-only node, a node without transaction history). A failure that another endpoint cannot fix
(a rejected transaction, an empty system wallet) ends the call at once. If every endpoint fails,
the last retryable ``ServiceError`` is raised (a later attempt may find one back), else the last
"unusable" one (NEEDS_OPERATOR: no endpoint can serve this call until an operator acts).

An endpoint that could not serve a kind of call is counted
(``mintsaga_rpc_endpoint_unusable_total{endpoint,reason,method}``) and asked last for that kind
of call (every kind, when it serves nothing) for ``UNUSABLE_FOR_S``; one that serves nothing
also counts against its circuit breaker (``ServiceError.whole_endpoint``).

Each endpoint's answer is awaited at most ``call_timeout``: the current activity attempt's time
left (``resilience.guard.attempt_time_left``), less a margin, shared among the endpoints still
to ask, and never more than ``timeout`` (``SOLANA_TIMEOUT_MS``). So an endpoint that hangs is
abandoned in time for the next one to answer inside the same attempt (a 10 s ``check_rpc``
attempt gives each of three endpoints 3 s).

Errors are classified once, in solana/rpc_errors.py (``classify_error``, its table); the
endpoints, their tiers and the order a call asks them in are solana/rpc_pool.py's.

Each endpoint has its own solana-py ``AsyncClient`` with transport retries off, so every
failure is seen here. Calls go through ``AsyncClient.send_rpc_request`` and come back as plain
JSON, so JSON-RPC errors keep their code, message and data whatever the method.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from solana.rpc.jsonrpc import JsonRpcRequest

from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.observability.metrics import (
    record_budget_wait,
    record_emergency_call,
    record_failover,
    record_panic_call,
    record_throttled,
)
from mintsaga.resilience.breaker import BreakerState, CircuitBreaker, Override
from mintsaga.resilience.guard import (
    HEARTBEAT_EVERY_S,
    QUEUE_MARGIN_S,
    attempt_time_left,
    circuit_open,
    keep_alive,
    through,
    wait_for_half_open,
)
from mintsaga.solana.rpc_errors import CLASSIFIABLE, SERVICE, _error, classify_error
from mintsaga.solana.rpc_pool import MIN_CALL_TIMEOUT_S, EndpointPool, _Endpoint, call_kind

log = logging.getLogger(__name__)

T = TypeVar("T")


# A call no endpoint's request budget had room for (solana/budget.py): nothing was sent.
BUDGET_EXHAUSTED = "SolanaBudgetExhausted"


class SolanaRpc(EndpointPool):
    """One ``AsyncClient`` per endpoint, tried in order within each call.

    ``timeout`` caps one attempt at one endpoint, end to end (``SOLANA_TIMEOUT_MS``); inside
    an activity attempt the wait is shorter when the attempt's time left, shared among the
    endpoints still to ask, is (``call_timeout``). Use as an async context manager,
    or call ``close()``. ``guarded=False``: no circuit breakers at all (the health probes: an
    open breaker must not hide an endpoint's health, and a probe must not count towards
    opening one); calls are still classified and observed like any other.

    Two tiers (the spec's endpoint strategy): the normal ``endpoints`` (primary, backups) and
    the ``emergency`` ones (SOLANA_EMERGENCY_ENDPOINTS, "Emergency Local Node (Last resort)"),
    asked only by a call that may use every normal endpoint, once each normal one is open,
    forced open, cannot serve the call or failed it. Emergency endpoints have indices after the
    normal ones (``emergency_indices``; ``name(index)`` names any index) but are left out of
    ``endpoints``, ``urls``, ``rotated`` and the default order, so callers that iterate over
    the endpoints (broadcasts, second opinions) never reach them by themselves. They have no
    request budget (a local node has no plan) and keep their breakers (an operator's
    force-open is respected; one open by itself is still asked: it is the last resort).

    Slot lag: each ``highest_slot_index`` round (prepare asks one per blockhash fetch) records
    how far each normal endpoint's ``confirmed`` slot is behind the best; for
    ``SLOT_LAG_FRESH_S`` after, an endpoint more than ``max_slot_lag`` slots behind is asked
    after the others (``None``: never).
    """

    def __repr__(self) -> str:
        return f"SolanaRpc(endpoints={self.endpoints!r}, timeout={self._timeout})"

    async def __aenter__(self) -> SolanaRpc:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def highest_slot_index(self) -> int | None:
        """The endpoint whose `confirmed` slot is highest, asked all at once (open circuits
        skipped); None when no endpoint answered."""

        async def slot_of(index: int) -> tuple[int, int] | None:
            try:
                slot = await self.call(
                    "getSlot", [{"commitment": "confirmed"}], parse=int, only=[index]
                )
            except ServiceError:
                return None
            return slot, -index  # on a tie, the endpoint first in priority

        answers = await asyncio.gather(*(slot_of(i) for i in self._order()))
        best = max((a for a in answers if a is not None), default=None)
        if best is not None:
            self._record_slots(best[0], [a for a in answers if a is not None])
        return None if best is None else -best[1]

    async def call(
        self,
        method: str,
        params: list[Any] | None = None,
        *,
        parse: Callable[[Any], T] | None = None,
        only: Sequence[int] | None = None,
        fee_payer: str | None = None,
        wait_for_budget: bool = True,
    ) -> Any:
        """Call ``method`` on the first endpoint that answers; return its (parsed) result.

        ``parse`` runs per endpoint, so an answer of the wrong shape fails over like any other
        transient failure. ``only`` restricts the endpoints (by index), e.g. to verify against
        a node other than the one that took the transaction. ``wait_for_budget=False``: when
        no endpoint has room in its request budget now, fail at once (``SolanaBudgetExhausted``)
        instead of waiting for some (a rebroadcast, which is worth nothing late).
        """
        _index, result = await self.call_answered(
            method,
            params,
            parse=parse,
            only=only,
            fee_payer=fee_payer,
            wait_for_budget=wait_for_budget,
        )
        return result

    async def call_answered(
        self,
        method: str,
        params: list[Any] | None = None,
        *,
        parse: Callable[[Any], T] | None = None,
        only: Sequence[int] | None = None,
        fee_payer: str | None = None,
        wait_for_budget: bool = True,
    ) -> tuple[int, Any]:
        """``call``, also saying which endpoint (its index) answered: to check an answer
        against another node's, or the same node's.

        Each endpoint is asked at most once per call, in priority order, if its request budget
        (``solana/budget.py``) has room now; when none that is left has, the call waits for the
        soonest room (inside the attempt's time) rather than send a request the plan refuses.

        Panic routing (Envoy's panic threshold): while fewer than half of the endpoints are
        healthy (``panicking``), the endpoints whose breaker opened by itself are asked too,
        after the others, the least bad first; and so they are, as a last resort, when every
        endpoint the breakers allowed failed this call. An operator's force-open is always
        respected. So automatic breakers can skip a failing endpoint, never stall the pool
        nor fail a call an open endpoint could still answer.

        The emergency tier (``emergency``) comes after all that, for a call that may use every
        normal endpoint: each emergency endpoint in order (``mintsaga_rpc_emergency_calls_total``),
        the answering index being one of ``emergency_indices``. Endpoints lagging the best by
        more than ``max_slot_lag`` slots are asked after the others (``lagging``).
        """
        request = JsonRpcRequest(method=method, params=params)
        kind = call_kind(method, params)
        order = self._usable_first(self._in_sync_first(self._order(only)), kind)
        # Only a call that may use every endpoint waits for one to reopen, or enters the
        # emergency tier; one restricted to some (a per-endpoint question, like
        # `highest_slot_index`'s or a broadcast's) fails at once.
        may_wait = set(range(self._count)) <= set(order)
        tier = self._emergency_tier(order) if may_wait else []
        tier_tried = False
        unable: dict[int, ServiceError] = {}  # endpoints that cannot serve this call
        asked: set[int] = set()
        last: ServiceError | None = None

        async def ask(index: int, left: int, *, bypass: bool = False) -> tuple[bool, Any]:
            """(True, result) when endpoint ``index`` answered; (False, None) when the call
            should move on; raises when no other endpoint can change the answer. ``bypass``:
            its breaker refused the call (panic, last resort, emergency tier); a half-open one
            then does not hear the outcome, which would hand back a probe permit this call
            never took."""
            nonlocal last
            endpoint = self._endpoints[index]
            breaker = self.breaker(index) if self._guarded else None
            if bypass and breaker is not None and breaker.state is BreakerState.HALF_OPEN:
                breaker = None
            wait_s = self.call_timeout(left)

            async def attempt() -> Any:
                try:
                    async with asyncio.timeout(wait_s):
                        result = await endpoint.client.send_rpc_request(request, object)
                    return parse(result) if parse is not None else result
                except TimeoutError:
                    raise _error(
                        ErrorKind.TRANSIENT,
                        "SolanaTimeout",
                        f"{method}: no answer within {wait_s:.1f} s",
                        endpoint.name,
                    ) from None
                except CLASSIFIABLE as exc:
                    raise classify_error(
                        exc, endpoint=endpoint.name, method=method, fee_payer=fee_payer
                    ) from None

            if last is not None or unable:
                record_failover(SERVICE)  # the previous endpoint failed or could not serve
                keep_alive()  # a heartbeat between endpoints, however long each took
            asked.add(index)
            endpoint.budget.take(method)
            try:
                answer = await through(
                    breaker,
                    SERVICE,
                    attempt,
                    admitted=True,
                    endpoint=endpoint.name,
                    operation=method,
                )
            except ServiceError as error:
                self._judge_budget(endpoint, method, error)
                if error.unusable is not None:
                    self._cannot_serve(endpoint.name, kind, error)
                    unable[index] = error
                    return False, None
                if not error.retryable:
                    raise
                log.warning(
                    "solana %s failed at %s (%s, %s); trying the next endpoint",
                    method,
                    endpoint.name,
                    error.code,
                    error.kind,
                )
                last = error
                return False, None
            endpoint.budget.succeeded(method)
            return True, answer

        while True:
            skipped: list[CircuitBreaker] = []
            panic = self.panicking()
            opened: list[int] = []  # open by their own breaker: asked last when panicking
            blocked: list[int] = []  # no room in their budget now
            for position, index in enumerate(order):
                if index in unable or index in asked:
                    continue
                if self._endpoints[index].budget.wait_for(method) > 0:
                    blocked.append(index)
                    continue
                breaker = self.breaker(index) if self._guarded else None
                if breaker is not None and not breaker.allow():
                    skipped.append(breaker)
                    # Open by itself (or half-open with its probes out), not by an operator.
                    if breaker.override is not Override.FORCE_OPEN:
                        opened.append(index)
                    continue
                rest = [i for i in order[position:] if i not in unable and i not in asked]
                later = (len(opened) if panic else 0) + len(tier)
                left = self._left_to_ask(rest, panic=panic, later=later)
                answered, result = await ask(index, left)
                if answered:
                    return index, result
            # The open ones: when panicking, or as a last resort once every endpoint the
            # breakers allowed has failed this call (a call that would fail anyway).
            opened = self._least_bad(opened) if panic or last is not None else []
            for position, index in enumerate(opened):
                if index in unable or index in asked:
                    continue
                if self._endpoints[index].budget.wait_for(method) > 0:
                    blocked.append(index)
                    continue
                record_panic_call(self._endpoints[index].name)
                answered, result = await ask(index, len(opened) - position + len(tier), bypass=True)
                if answered:
                    return index, result
            if blocked and wait_for_budget and await self._wait_for_budget(blocked, method):
                continue
            # The emergency tier: every normal endpoint is open (by itself or an operator),
            # cannot serve this call or failed it, or has no room in its budget within the
            # time the call has (the wait above did not fit).
            if tier and not tier_tried:
                tier_tried = True
                for position, index in enumerate(tier):
                    breaker = self.breaker(index) if self._guarded else None
                    refused = breaker is not None and not breaker.allow()
                    if refused and breaker is not None and breaker.override is Override.FORCE_OPEN:
                        continue  # forced open by an operator (half-open: still asked)
                    record_emergency_call(self._endpoints[index].name)
                    answered, result = await ask(index, len(tier) - position, bypass=refused)
                    if answered:
                        return index, result
            if last is not None:
                raise last
            if blocked:
                raise self._budget_exhausted(blocked, method)
            # Every endpoint's circuit is open (but for those that cannot serve this call):
            # queued until the soonest may be probed.
            if skipped and may_wait and await wait_for_half_open(skipped):
                continue
            if skipped or not unable:
                raise circuit_open(SERVICE, skipped)
            # No endpoint can serve it: only an operator can change that.
            raise list(unable.values())[-1]

    # -- the request budget ----------------------------------------------------------------

    def _judge_budget(self, endpoint: _Endpoint, method: str, error: ServiceError) -> None:
        """A 429 slows the endpoint's budget down (AIMD); any other answer lets it grow."""
        if error.code == "SolanaRateLimited":
            endpoint.budget.throttled(method, error.retry_after)
            record_throttled(endpoint.name, method)
        elif error.code not in ("SolanaTimeout", "SolanaUnreachable", "SolanaConnectionLost"):
            endpoint.budget.succeeded(method)

    async def _wait_for_budget(self, blocked: Sequence[int], method: str) -> bool:
        """Wait (heartbeating) until the soonest of ``blocked`` has room for ``method``;
        False, at once, when that would not fit in the attempt's time (outside an attempt:
        in ``timeout``)."""
        wait, soonest = min((self._endpoints[i].budget.wait_for(method), i) for i in blocked)
        left = attempt_time_left()
        room = (left - QUEUE_MARGIN_S - MIN_CALL_TIMEOUT_S) if left > 0 else self._timeout
        if wait > room:
            return False
        record_budget_wait(self._endpoints[soonest].name, method)
        while wait > 0:
            keep_alive()
            await asyncio.sleep(min(wait, HEARTBEAT_EVERY_S))
            wait -= HEARTBEAT_EVERY_S
        return True

    def _budget_exhausted(self, blocked: Sequence[int], method: str) -> ServiceError:
        wait = min(self._endpoints[i].budget.wait_for(method) for i in blocked)
        names = ", ".join(self._endpoints[i].name for i in blocked)
        return _error(
            ErrorKind.RATE_LIMITED,
            BUDGET_EXHAUSTED,
            f"{method}: no room in the request budget of {names} for {wait:.1f} s "
            "(SOLANA_RPC_REQUESTS_PER_S / SOLANA_RPC_SENDS_PER_S, slowed by 429s)",
            self._endpoints[blocked[0]].name if len(blocked) == 1 else None,
            retry_after=wait,
        )
