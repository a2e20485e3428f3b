"""The endpoints of the Solana RPC pool and what it knows of each, for ``SolanaRpc``
(solana/rpc.py), which calls through them.

``EndpointPool`` holds each endpoint's client, request budget and circuit breaker, the two tiers
(normal, emergency), and the order a call asks them in: endpoints lagging the best by more than
``max_slot_lag`` slots (``SLOT_LAG_FRESH_S``) and those that lately could not serve a kind of
call (``UNUSABLE_FOR_S``) last, open ones by their success rate when the pool panics, and each
endpoint's share of the attempt's time left (``call_timeout``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed

from mintsaga.errors import ServiceError, endpoint_name
from mintsaga.observability.metrics import record_endpoint_unusable
from mintsaga.resilience.breaker import (
    SOLANA_BREAKER,
    BreakerRegistry,
    BreakerState,
    CircuitBreaker,
)
from mintsaga.resilience.guard import QUEUE_MARGIN_S, attempt_time_left
from mintsaga.settings import DEFAULT_MAX_SLOT_LAG
from mintsaga.solana.budget import EndpointBudget

# The pool's log lines keep the logger they had in solana/rpc.py.
log = logging.getLogger("mintsaga.solana.rpc")

# An endpoint that could not serve a kind of call is asked last for it this long (the Solana
# breaker's open time), then first again: a fixed key or a restored plan is found by itself.
UNUSABLE_FOR_S = 60.0
# The per-endpoint wait when no attempt deadline is known (outside an activity) and the cap of
# `SOLANA_TIMEOUT_MS`'s default; an answer takes well under a second on a healthy node.
DEFAULT_TIMEOUT_S = 5.0
# However little time the attempt has left, an endpoint is given at least this long.
MIN_CALL_TIMEOUT_S = 0.5
# DEFAULT_MAX_SLOT_LAG (SOLANA_MAX_SLOT_LAG's default, from settings): an endpoint more
# `confirmed` slots than that behind the best is asked last (the health check's MAX_SLOT_LAG;
# 150 slots, ~60 s, is also how long a blockhash lives, so a node further behind may not know
# a fresh blockhash yet).
# A slot-lag measurement (a round of `highest_slot_index`) is believed this long: while mints
# are prepared a round comes every couple of seconds; an old one no longer steers calls.
SLOT_LAG_FRESH_S = 30.0


@dataclass
class _Endpoint:
    url: str  # may hold an API key: never logged or put in a message
    name: str  # redacted
    client: AsyncClient
    budget: EndpointBudget


# A plan's limit per endpoint: one value for every endpoint, or one per endpoint in order;
# None: no limit configured.
Limits = Sequence[float | None]


class EndpointPool:
    """The endpoints of one ``SolanaRpc`` and their standing (the class's docstring tells
    the whole); the calls themselves are ``SolanaRpc``'s."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        breakers: BreakerRegistry | None = None,
        guarded: bool = True,
        requests_per_s: Limits = (None,),
        sends_per_s: Limits = (None,),
        emergency: Sequence[str] = (),
        max_slot_lag: int | None = DEFAULT_MAX_SLOT_LAG,
    ) -> None:
        self._timeout = timeout
        self._guarded = guarded
        self._requests_per_s = list(requests_per_s) or [None]
        self._sends_per_s = list(sends_per_s) or [None]
        # (endpoint name, call kind or ALL_CALLS) -> until when it is asked last
        self._unable_until: dict[tuple[str, str], float] = {}
        self.breakers = breakers or BreakerRegistry()
        self._max_slot_lag = max_slot_lag
        # endpoint name -> (slots behind the best, when measured)
        self._behind: dict[str, tuple[int, float]] = {}
        normal = self._connect(endpoints)
        names = {endpoint.name for endpoint in normal}
        clash = sorted(endpoint_name(url) for url in emergency if endpoint_name(url) in names)
        if clash:
            raise ValueError(
                f"{', '.join(clash)}: both a normal and an emergency Solana endpoint"
                " (SOLANA_RPC_ENDPOINTS, SOLANA_EMERGENCY_ENDPOINTS)"
            )
        # The normal endpoints (indices 0 .. count-1), then the emergency ones.
        self._count = len(normal)
        self._endpoints = normal + self._connect(emergency, emergency=True)

    def _connect(self, endpoints: Sequence[str], *, emergency: bool = False) -> list[_Endpoint]:
        if not endpoints and not emergency:
            raise ValueError("SolanaRpc needs at least one endpoint (SOLANA_RPC_ENDPOINTS)")
        return [
            _Endpoint(
                url=url,
                name=endpoint_name(url),
                client=AsyncClient(url, Confirmed, timeout=self._timeout, max_transport_retries=0),
                budget=EndpointBudget.of(None, None)
                if emergency
                else EndpointBudget.of(
                    _limit_for(self._requests_per_s, index), _limit_for(self._sends_per_s, index)
                ),
            )
            for index, url in enumerate(endpoints)
        ]

    async def set_endpoints(self, endpoints: Sequence[str]) -> None:
        """Switch to another ordered list of normal endpoints at run time (a call under way
        finishes on the old); the emergency tier is kept."""
        new = self._connect(endpoints)
        old, tier = self._endpoints[: self._count], self._endpoints[self._count :]
        self._endpoints, self._count = new + tier, len(new)
        for endpoint in old:
            await endpoint.client.close()

    @property
    def urls(self) -> list[str]:
        """The configured URLs of the normal endpoints (unredacted: for comparing with
        configuration, never logging)."""
        return [endpoint.url for endpoint in self._endpoints[: self._count]]

    @property
    def emergency_endpoints(self) -> list[str]:
        """The emergency tier, redacted, in configured order."""
        return [endpoint.name for endpoint in self._endpoints[self._count :]]

    @property
    def emergency_indices(self) -> list[int]:
        return list(range(self._count, len(self._endpoints)))

    def name(self, index: int) -> str:
        """Endpoint ``index``'s name (redacted), normal or emergency: for an index a call
        answered from, which may be an emergency endpoint's."""
        return self._endpoints[index].name

    @property
    def endpoints(self) -> list[str]:
        """The normal endpoints, redacted, in configured order (indices for ``only=``)."""
        return [endpoint.name for endpoint in self._endpoints[: self._count]]

    async def close(self) -> None:
        for endpoint in self._endpoints:
            await endpoint.client.close()

    def _order(self, only: Sequence[int] | None = None) -> list[int]:
        """Indices of the endpoints to try, in priority order (breakers are checked per call):
        the normal ones, unless ``only`` names others (an emergency one that answered)."""
        if only is None:
            return list(range(self._count))
        for index in only:
            if not 0 <= index < len(self._endpoints):
                raise IndexError(f"no Solana endpoint #{index} (have {len(self._endpoints)})")
        return list(dict.fromkeys(only))

    def rotated(self, start: int) -> list[int]:
        """Every normal endpoint, starting from `start` (mod their number): a retry that should
        ask another node first, while open circuits are still skipped and failover still
        works."""
        count = self._count
        return [(start + offset) % count for offset in range(count)]

    def breaker(self, index: int) -> CircuitBreaker:
        return self.breakers.get(self._endpoints[index].name, SOLANA_BREAKER)

    def budget(self, index: int) -> EndpointBudget:
        return self._endpoints[index].budget

    # -- panic routing ---------------------------------------------------------------------

    def panicking(self) -> bool:
        """Whether fewer than half of the normal endpoints are healthy (their breaker closed,
        or overridden to allow everything): the pool then asks the open ones too."""
        if not self._guarded:
            return False
        healthy = sum(1 for i in range(self._count) if self.breaker(i).state is BreakerState.CLOSED)
        return healthy * 2 < self._count

    # -- the emergency tier and slot lag ---------------------------------------------------

    def _emergency_tier(self, order: Sequence[int]) -> list[int]:
        """The emergency endpoints a call over ``order`` may fall back to: those not in it
        already, nor also configured as a normal endpoint (after ``set_endpoints``)."""
        normal = {endpoint.name for endpoint in self._endpoints[: self._count]}
        return [
            i
            for i in self.emergency_indices
            if i not in order and self._endpoints[i].name not in normal
        ]

    def _record_slots(self, best: int, answers: Sequence[tuple[int, int]]) -> None:
        """One round of `confirmed` slots (slot, -index): how far each is behind the best."""
        now = time.monotonic()
        for slot, negative_index in answers:
            index = -negative_index
            endpoint = self._endpoints[index]
            lag = best - slot
            was = self.slot_lag(index)
            self._behind[endpoint.name] = (lag, now)
            limit = self._max_slot_lag
            if limit is not None and lag > limit and (was is None or was <= limit):
                log.warning(
                    "solana endpoint %s is %d slots behind the best (over %d): asked last",
                    endpoint.name,
                    lag,
                    limit,
                )

    def slot_lag(self, index: int) -> int | None:
        """Slots endpoint ``index`` was behind the best at the last round, if recent."""
        found = self._behind.get(self._endpoints[index].name)
        if found is None or time.monotonic() - found[1] > SLOT_LAG_FRESH_S:
            return None
        return found[0]

    def lagging(self, index: int) -> bool:
        """Whether endpoint ``index`` lags the best by more than ``max_slot_lag`` slots."""
        if self._max_slot_lag is None:
            return False
        lag = self.slot_lag(index)
        return lag is not None and lag > self._max_slot_lag

    def _in_sync_first(self, order: list[int]) -> list[int]:
        """``order`` with the endpoints that lag the best by too many slots moved last."""
        if not self._behind or self._max_slot_lag is None:
            return order
        behind = [i for i in order if self.lagging(i)]
        return [i for i in order if i not in behind] + behind

    def _least_bad(self, indices: Sequence[int]) -> list[int]:
        """``indices`` by their breaker's success rate over its window, best first (an
        endpoint with no recent call counts as good; ties keep the priority order)."""

        def rate(index: int) -> float:
            found = self.breaker(index).success_rate()
            return 1.0 if found is None else found

        return sorted(indices, key=lambda i: -rate(i))

    # -- endpoints that cannot serve a kind of call ---------------------------------------------

    def call_timeout(self, endpoints_left: int) -> float:
        """How long one endpoint's answer is awaited: the attempt's time left (less the margin
        a failing attempt needs to report) shared by the ``endpoints_left`` still to ask, at
        least ``MIN_CALL_TIMEOUT_S`` and at most ``timeout``; ``timeout`` outside an attempt."""
        left = attempt_time_left()
        if left <= 0:
            return self._timeout
        share = (left - QUEUE_MARGIN_S) / max(1, endpoints_left)
        return min(self._timeout, max(MIN_CALL_TIMEOUT_S, share))

    def _left_to_ask(self, indices: Sequence[int], *, panic: bool = False, later: int = 0) -> int:
        """How many of ``indices`` a call may still ask (an open circuit will refuse it, unless
        the pool is ``panic``king and no operator forced it), plus ``later`` open ones that
        panic routing will ask at the end."""
        if not self._guarded:
            return len(indices)

        def askable(index: int) -> bool:
            breaker = self.breaker(index)
            if breaker.state is not BreakerState.OPEN:
                return True
            return panic and breaker.retry_at() is not None

        return sum(1 for i in indices if askable(i)) + later or 1

    def _cannot_serve(self, name: str, kind: str, error: ServiceError) -> None:
        reason = error.unusable or ""
        record_endpoint_unusable(name, reason, kind)
        self._unable_until[(name, ALL_CALLS if error.whole_endpoint else kind)] = (
            time.monotonic() + UNUSABLE_FOR_S
        )
        log.warning(
            "solana %s: %s cannot serve it (%s: %s); trying the next endpoint",
            kind,
            name,
            error.code,
            error.message,
        )

    def cannot_serve(self, index: int, kind: str) -> bool:
        """Whether endpoint ``index`` answered lately that it cannot serve ``kind`` calls (or
        any call): such an endpoint is asked last, for ``UNUSABLE_FOR_S``."""
        name = self._endpoints[index].name
        now = time.monotonic()
        return any(self._unable_until.get((name, key), 0.0) > now for key in (kind, ALL_CALLS))

    def _usable_first(self, order: list[int], kind: str) -> list[int]:
        """``order`` with the endpoints that lately could not serve ``kind`` moved last."""
        if not self._unable_until:
            return order
        unable = [i for i in order if self.cannot_serve(i, kind)]
        return [i for i in order if i not in unable] + unable


ALL_CALLS = "*"


def _limit_for(limits: Sequence[float | None], index: int) -> float | None:
    """Endpoint ``index``'s limit: its own, or the one value given for all."""
    if len(limits) == 1:
        return limits[0]
    return limits[index] if index < len(limits) else None


def call_kind(method: str, params: Sequence[Any] | None) -> str:
    """The kind of call an endpoint may be unable to serve: the method, and for
    ``getSignatureStatuses`` whether it searches the transaction history (a node without
    history serves the status cache all the same)."""
    if method == "getSignatureStatuses" and params:
        config = params[-1]
        if isinstance(config, dict) and config.get("searchTransactionHistory"):
            return f"{method}+history"
    return method
