"""Provider profiles for the local Solana endpoints: what a hosted RPC plan answers.

Each endpoint (``solana-1`` .. ``solana-3``) runs one profile, chosen at ``up``
(``--solana-profiles solana-1=rate-limited,solana-2=no-history`` or
``DEVSTACK_SOLANA_PROFILES``) and changed while the stack runs
(``PUT /solana/<name>/profile`` on the admin API):

- ``default``       the emulator as it always was: every method, no limit
- ``rate-limited``  a hosted plan's per-second limits, 429 past them
- ``no-history``    a node without transaction history: ``-32011`` on history searches
- ``send-only``     a transaction-sending endpoint: ``-32601`` on everything but sendTransaction
- ``expired-key``   HTTP 401 to everything (an API key that expired or was revoked)
- ``disabled``      HTTP 403 to everything (an endpoint disabled, e.g. for a past-due bill)

Sources (read 2026-12-03; quoted where the behaviour comes from, and said so where the
providers' documentation is silent):

[H-RL]  Helius, "Rate Limits", https://www.helius.dev/docs/billing/rate-limits
        Free plan: RPC 10 requests/s; "Sending Transactions": sendTransaction 1/sec (Developer
        5, Business 50, Professional 100 /sec); "When rate limits are exceeded, you'll receive
        an HTTP 429 response." No response body and no Retry-After header are documented.
[H-EC]  Helius, "Error Codes FAQ", https://www.helius.dev/docs/api-reference/common-error-codes
        401 Unauthorized: "Invalid or missing API key ... Expired or revoked API key"; 429:
        "You've exceeded your plan's rate limits". No response body is documented.
[QN-EC] QuickNode, "Solana Error Code Reference",
        https://www.quicknode.com/docs/solana/error-references
        401 "One or more security requirements not met such as incorrect token auth ...";
        403 "Endpoint disabled (one reason could be a past due payment)"; 429 "The requests
        per second (RPS) of your requests are higher than your plan allows", with the one
        documented body: {"jsonrpc": "2.0", "error": {"code": 429, "message": "The requests
        per second (RPS) of your requests are higher than your plan allows."}, "id": 1}
[AG-CE] Agave, rpc-client-api/src/custom_error.rs: -32011 TransactionHistoryNotAvailable,
        "Transaction history is not available from this node" (no data).
[AG-RPC] Agave, rpc/src/rpc.rs: get_signature_statuses answers TransactionHistoryNotAvailable
        when searchTransactionHistory is true and the node runs without
        --enable-rpc-transaction-history; get_transaction answers it whenever history is off.
[H-SND] Helius Sender, https://www.helius.dev/docs/sending-transactions/sender and
        https://www.helius.dev/docs/api-reference/sender/ping: a send-only service documenting
        sendTransaction and ``GET /ping`` ("ok") alone. What it answers to other JSON-RPC
        methods is not documented; we answer JSON-RPC 2.0's -32601 "Method not found" (the
        code Agave itself gives an unknown method), with HTTP 200.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

PROFILES: dict[str, str] = {
    "default": "every method, no limit (the emulator as it always was)",
    "rate-limited": "a hosted plan's requests/s and sendTransaction/s limits; HTTP 429 past them",
    "no-history": "no transaction history: -32011 on getSignatureStatuses with "
    "searchTransactionHistory and on getTransaction",
    "send-only": "sendTransaction only: -32601 Method not found on every other method",
    "expired-key": "HTTP 401 to every request (expired or revoked API key)",
    "disabled": "HTTP 403 to every request (endpoint disabled, e.g. a past-due bill)",
}
# Profiles under which an endpoint serves reads (the stack funds its wallet through one).
READ_PROFILES = ("default", "rate-limited", "no-history")

# [H-RL] Helius' Free plan: 10 RPC requests/s, 1 sendTransaction/s.
FREE_PLAN_REQUESTS_PER_SECOND = 10
FREE_PLAN_SENDS_PER_SECOND = 1
WINDOW_S = 1.0  # "per second": we hold a sliding one-second window ([H-RL] says no more)
HISTORY_S = 300  # how many wall-clock seconds of per-second counts the admin API keeps

# [QN-EC]'s documented 429 body. Helius documents the status but no body ([H-RL], [H-EC]).
RATE_LIMITED_MESSAGE = (
    "The requests per second (RPS) of your requests are higher than your plan allows."
)
# Neither provider documents a 401 or 403 body ([H-EC], [QN-EC] give the status and its
# causes only). We answer in the shape of [QN-EC]'s documented 429 body (the HTTP status as
# the JSON-RPC code), with the causes the documentation gives as the message.
UNAUTHORIZED_MESSAGE = "Unauthorized: invalid, expired or revoked API key"
FORBIDDEN_MESSAGE = "Forbidden: endpoint disabled"

# [AG-CE]
TRANSACTION_HISTORY_NOT_AVAILABLE = -32011
TRANSACTION_HISTORY_NOT_AVAILABLE_MESSAGE = "Transaction history is not available from this node"
METHOD_NOT_FOUND = -32601


class ProfileError(ValueError):
    """An unknown endpoint or profile, or a limit out of range."""


def parse_profile_spec(text: str, endpoints: Iterable[str]) -> dict[str, str]:
    """``"solana-1=rate-limited,solana-2=no-history"`` -> {endpoint: profile}."""
    known = tuple(endpoints)
    chosen: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, profile = (s.strip() for s in item.partition("="))
        if not sep:
            raise ProfileError(f"{item!r}: expected <endpoint>=<profile>")
        if name not in known:
            raise ProfileError(f"{name!r}: unknown endpoint; known: {', '.join(known)}")
        if profile not in PROFILES:
            raise ProfileError(f"{profile!r}: unknown profile; known: {', '.join(PROFILES)}")
        chosen[name] = profile
    return chosen


class SlidingWindow:
    """At most ``limit`` admissions in any ``WINDOW_S`` seconds (refusals take no room)."""

    def __init__(self, limit: int, clock: Callable[[], float]) -> None:
        self.limit = limit
        self._clock = clock
        self._admitted: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self._admitted and self._admitted[0] <= now - WINDOW_S:
            self._admitted.popleft()

    def wait_for(self, count: int) -> float:
        """Seconds until ``count`` more fit (0: they fit now; inf: they never will)."""
        if count <= 0:
            return 0.0
        if count > self.limit:
            return math.inf
        now = self._clock()
        self._expire(now)
        excess = len(self._admitted) + count - self.limit
        if excess <= 0:
            return 0.0
        return self._admitted[excess - 1] + WINDOW_S - now

    def admit(self, count: int) -> None:
        now = self._clock()
        self._admitted.extend([now] * count)


@dataclass
class Counters:
    """Calls an endpoint let through and refused (429), in all and for sendTransaction; and
    per wall-clock second, the calls let through, so tests can check a limit was kept."""

    accepted: int = 0
    refused: int = 0
    send_accepted: int = 0
    send_refused: int = 0
    accepted_per_second: dict[int, int] = field(default_factory=dict)
    send_accepted_per_second: dict[int, int] = field(default_factory=dict)

    def note(self, calls: int, sends: int, *, accepted: bool, second: int) -> None:
        if not accepted:
            self.refused += calls
            self.send_refused += sends
            return
        self.accepted += calls
        self.send_accepted += sends
        for per_second, n in (
            (self.accepted_per_second, calls),
            (self.send_accepted_per_second, sends),
        ):
            if n:
                per_second[second] = per_second.get(second, 0) + n
                for old in [s for s in per_second if s <= second - HISTORY_S]:
                    del per_second[old]

    def describe(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "refused": self.refused,
            "send_accepted": self.send_accepted,
            "send_refused": self.send_refused,
            "accepted_per_second": {str(s): n for s, n in sorted(self.accepted_per_second.items())},
            "send_accepted_per_second": {
                str(s): n for s, n in sorted(self.send_accepted_per_second.items())
            },
        }


@dataclass
class EndpointProfile:
    endpoint: str
    name: str = "default"
    requests_per_second: int = FREE_PLAN_REQUESTS_PER_SECOND
    send_per_second: int = FREE_PLAN_SENDS_PER_SECOND
    counters: Counters = field(default_factory=Counters)
    requests: SlidingWindow | None = None
    sends: SlidingWindow | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"profile": self.name, "description": PROFILES[self.name]}
        if self.name == "rate-limited":
            out["requests_per_second"] = self.requests_per_second
            out["send_per_second"] = self.send_per_second
        out["counters"] = self.counters.describe()
        return out


def _rpc_error_body(code: int, message: str, request_id: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": request_id}


class SolanaProfiles:
    """The live profile of every Solana endpoint, shared by the RPC apps and the admin API."""

    def __init__(
        self,
        endpoints: Iterable[str],
        initial: dict[str, str] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._endpoints: dict[str, EndpointProfile] = {}
        for endpoint in endpoints:
            self._endpoints[endpoint] = EndpointProfile(endpoint)
        for endpoint, name in (initial or {}).items():
            self.set(endpoint, name)

    @property
    def endpoints(self) -> list[str]:
        return list(self._endpoints)

    def get(self, endpoint: str) -> EndpointProfile:
        try:
            return self._endpoints[endpoint]
        except KeyError:
            raise ProfileError(
                f"{endpoint!r}: unknown endpoint; known: {', '.join(self._endpoints)}"
            ) from None

    def set(
        self,
        endpoint: str,
        name: str,
        *,
        requests_per_second: int | None = None,
        send_per_second: int | None = None,
    ) -> EndpointProfile:
        """Give ``endpoint`` profile ``name`` (limits for ``rate-limited`` default to Helius'
        Free plan); its counters start again from zero."""
        self.get(endpoint)
        if name not in PROFILES:
            raise ProfileError(f"{name!r}: unknown profile; known: {', '.join(PROFILES)}")
        rps = FREE_PLAN_REQUESTS_PER_SECOND if requests_per_second is None else requests_per_second
        sps = FREE_PLAN_SENDS_PER_SECOND if send_per_second is None else send_per_second
        for label, value in (("requests_per_second", rps), ("send_per_second", sps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ProfileError(f"{label}: {value!r} is not a positive integer")
        if name != "rate-limited" and (requests_per_second or send_per_second):
            raise ProfileError("requests_per_second, send_per_second: only for rate-limited")
        profile = EndpointProfile(endpoint, name, rps, sps)
        if name == "rate-limited":
            profile.requests = SlidingWindow(rps, self._clock)
            profile.sends = SlidingWindow(sps, self._clock)
        self._endpoints[endpoint] = profile
        return profile

    def describe(self) -> dict[str, Any]:
        return {name: profile.describe() for name, profile in self._endpoints.items()}

    # -- what the RPC app asks --------------------------------------------------------------

    def gate(self, endpoint: str, methods: list[str], request_id: Any) -> web.Response | None:
        """The answer a provider's edge gives before the node sees the request, if any: 401 or
        403 for a dead key, 429 past a rate limit. Every call is counted (a batch counts each
        of its calls: the providers' documentation says nothing of batches, so each call
        costs as a single request would)."""
        profile = self.get(endpoint)
        calls = max(1, len(methods))
        sends = sum(1 for method in methods if method == "sendTransaction")
        second = int(self._wall_clock())
        if profile.name == "expired-key":
            profile.counters.note(calls, sends, accepted=False, second=second)
            return web.json_response(
                _rpc_error_body(401, UNAUTHORIZED_MESSAGE, request_id), status=401
            )
        if profile.name == "disabled":
            profile.counters.note(calls, sends, accepted=False, second=second)
            return web.json_response(
                _rpc_error_body(403, FORBIDDEN_MESSAGE, request_id), status=403
            )
        if profile.requests is not None and profile.sends is not None:
            wait = max(profile.requests.wait_for(calls), profile.sends.wait_for(sends))
            if wait > 0:
                profile.counters.note(calls, sends, accepted=False, second=second)
                # Neither Helius nor QuickNode documents a Retry-After header on its 429
                # ([H-RL], [QN-EC]); we send one (whole seconds, at least 1: when the window
                # has room again), so a client that honours it can be checked. A batch larger
                # than the limit never fits; it is told 1 s all the same.
                retry_after = 1 if math.isinf(wait) else max(1, math.ceil(wait))
                return web.json_response(
                    _rpc_error_body(429, RATE_LIMITED_MESSAGE, request_id),
                    status=429,
                    headers={"Retry-After": str(retry_after)},
                )
            profile.requests.admit(calls)
            profile.sends.admit(sends)
        profile.counters.note(calls, sends, accepted=True, second=second)
        return None

    def refusal(self, endpoint: str, method: str, params: list[Any]) -> tuple[int, str] | None:
        """The JSON-RPC error (code, message) the node answers one call with, if its profile
        refuses it (HTTP 200, as a node answers)."""
        name = self.get(endpoint).name
        if name == "send-only" and method != "sendTransaction":
            return METHOD_NOT_FOUND, "Method not found"  # [H-SND]
        if name == "no-history":  # [AG-RPC]
            if method == "getTransaction":
                return TRANSACTION_HISTORY_NOT_AVAILABLE, TRANSACTION_HISTORY_NOT_AVAILABLE_MESSAGE
            if method == "getSignatureStatuses":
                config = params[1] if len(params) > 1 else None
                if isinstance(config, dict) and config.get("searchTransactionHistory"):
                    return (
                        TRANSACTION_HISTORY_NOT_AVAILABLE,
                        TRANSACTION_HISTORY_NOT_AVAILABLE_MESSAGE,
                    )
        return None
