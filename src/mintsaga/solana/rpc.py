"""A pool of Solana JSON-RPC endpoints with failover inside one call, and error classification.

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

Errors are classified once, here (``classify_error``), into the one ``ServiceError`` every
client raises:

    connect refused / DNS                        TRANSIENT       SolanaUnreachable
    timeout (httpx2 or the per-attempt cap)      TRANSIENT       SolanaTimeout
    connection lost before the answer            TRANSIENT       SolanaConnectionLost
    HTTP 5xx, 408                                TRANSIENT       SolanaUnavailable
    HTTP 429 (Retry-After), JSON-RPC rate limit  RATE_LIMITED    SolanaRateLimited
    HTTP 401/403                                 NEEDS_OPERATOR  SolanaUnauthorized       unusable
    HTTP 404                                     NEEDS_OPERATOR  SolanaEndpointNotFound   unusable
    HTTP 413                                     NEEDS_OPERATOR  SolanaRequestTooLarge    unusable
    other HTTP 4xx                               PERMANENT       SolanaRejected
    -32005 node behind / unhealthy               TRANSIENT       NodeBehind
    -32004/-32014/-32016/-32019                  TRANSIENT       NodeNotReady
    -32603 internal error                        TRANSIENT       SolanaInternalError
    "Blockhash not found"                        TRANSIENT       BlockhashNotFound
    "already been processed"                     PERMANENT       AlreadyProcessed (= sent)
    fee payer missing / short of lamports        NEEDS_OPERATOR  SystemWalletUnderfunded
    AccountInUse, block cost limits              TRANSIENT       <the error's name>
    any other simulation / instruction failure   PERMANENT       TransactionRejected
    -32003 bad signature                         PERMANENT       SignatureVerificationFailed
    -32601 method not found (send-only node)     NEEDS_OPERATOR  SolanaMethodNotFound     unusable
    -32011 no transaction history                NEEDS_OPERATOR  TransactionHistoryNotAvailable
                                                                                          unusable
    -32600/-32602/-32700                         PERMANENT       SolanaInvalidRequest
    an answer of the wrong shape                 TRANSIENT       SolanaInvalidResponse

"unusable" (the last column) means the endpoint cannot serve this call whatever the request, so
the call moves on to the next endpoint. The sources, for each:

- -32011 ``TransactionHistoryNotAvailable`` ("Transaction history is not available from this
  node"): Agave's rpc-client-api/src/custom_error.rs; rpc/src/rpc.rs answers it to
  ``getSignatureStatuses`` with ``searchTransactionHistory`` (and to the block and transaction
  reads) on a node started without ``--enable-rpc-transaction-history``. Without that flag
  ``getSignatureStatuses`` searches only the recent status cache (solana.com/docs/rpc/http/
  getsignaturestatuses: "all active slots plus MAX_RECENT_BLOCKHASHES rooted slots"), which is
  enough while a transaction's blockhash is valid, so polls do not ask for history.
- -32601 method not found: JSON-RPC 2.0; what a send-only endpoint (a provider's transaction
  sender, a node serving only ``sendTransaction``) answers to reads.
- HTTP 401: QuickNode's Solana error reference (quicknode.com/docs/solana/error-references:
  token auth, IP allowlist, JWT) and Helius' error codes FAQ (helius.dev/docs/api-reference/
  common-error-codes: invalid, expired or revoked key, access control rules).
- HTTP 403: QuickNode: "Endpoint Disabled (... a past due payment)".
- HTTP 404: QuickNode: "Incorrect URL or Incorrect method".
- HTTP 413: QuickNode: "Content Too Large: body of the request is too large" (the endpoint's own
  limit: our largest body is one transaction).

Endpoint URLs may carry API keys, so only their names (``endpoint_name``) appear in
messages, the ``endpoint`` field and log lines; exceptions whose text may hold the raw URL (the
HTTP library's) are not chained onto the ``ServiceError``.

Each endpoint has its own solana-py ``AsyncClient`` with transport retries off, so every
failure is seen here. Calls go through ``AsyncClient.send_rpc_request`` and come back as plain
JSON, so JSON-RPC errors keep their code, message and data whatever the method.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import httpx2
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException, RPCNoResultException
from solana.rpc.jsonrpc import JsonRpcRequest, SolanaJsonRpcError

from mintsaga.errors import ErrorKind, ServiceError, endpoint_name
from mintsaga.observability.metrics import (
    record_budget_wait,
    record_emergency_call,
    record_endpoint_unusable,
    record_failover,
    record_panic_call,
    record_throttled,
)
from mintsaga.resilience.breaker import (
    SOLANA_BREAKER,
    BreakerRegistry,
    BreakerState,
    CircuitBreaker,
    Override,
)
from mintsaga.resilience.guard import (
    HEARTBEAT_EVERY_S,
    QUEUE_MARGIN_S,
    attempt_time_left,
    circuit_open,
    keep_alive,
    through,
    wait_for_half_open,
)
from mintsaga.settings import DEFAULT_MAX_SLOT_LAG
from mintsaga.solana.budget import EndpointBudget

log = logging.getLogger(__name__)

SERVICE = "solana"
T = TypeVar("T")

# JSON-RPC codes (solana-rpc-client-api custom_error.rs and JSON-RPC 2.0).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
PREFLIGHT_FAILURE = -32002
SIGNATURE_VERIFICATION_FAILURE = -32003
BLOCK_NOT_AVAILABLE = -32004
NODE_UNHEALTHY = -32005
BLOCK_STATUS_NOT_AVAILABLE_YET = -32014
MIN_CONTEXT_SLOT_NOT_REACHED = -32016
TRANSACTION_HISTORY_NOT_AVAILABLE = -32011
LONG_TERM_STORAGE_UNREACHABLE = -32019
# What some providers answer inside a 200 when they rate-limit.
RATE_LIMIT_CODES = frozenset({429, -32429})

# A call no endpoint's request budget had room for (solana/budget.py): nothing was sent.
BUDGET_EXHAUSTED = "SolanaBudgetExhausted"
# Why an endpoint cannot serve a call (``ServiceError.unusable``, the metric's `reason`).
UNAUTHORIZED = "unauthorized"  # HTTP 401
FORBIDDEN = "forbidden"  # HTTP 403
NOT_FOUND = "not_found"  # HTTP 404
TOO_LARGE = "too_large"  # HTTP 413
NO_METHOD = "method_not_found"  # -32601
NO_HISTORY = "no_history"  # -32011
# Those that mean the endpoint serves no call at all (``ServiceError.whole_endpoint``): a key it
# refuses, a URL with nothing behind it. A 403 is left per call: QuickNode answers it for a
# disabled endpoint but also for one method a plan does not allow.
WHOLE_ENDPOINT = frozenset({UNAUTHORIZED, NOT_FOUND})
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

# solders' typed error objects (what ``RPCException`` carries) -> their JSON-RPC code.
_SOLDERS_ERROR_CODES = {
    "ParseErrorMessage": PARSE_ERROR,
    "InvalidRequestMessage": INVALID_REQUEST,
    "MethodNotFoundMessage": METHOD_NOT_FOUND,
    "InvalidParamsMessage": INVALID_PARAMS,
    "InternalErrorMessage": INTERNAL_ERROR,
    "BlockCleanedUpMessage": -32001,
    "SendTransactionPreflightFailureMessage": PREFLIGHT_FAILURE,
    "BlockNotAvailableMessage": BLOCK_NOT_AVAILABLE,
    "NodeUnhealthyMessage": NODE_UNHEALTHY,
    "TransactionPrecompileVerificationFailureMessage": -32006,
    "SlotSkippedMessage": -32007,
    "LongTermStorageSlotSkippedMessage": -32009,
    "KeyExcludedFromSecondaryIndexMessage": -32010,
    "ScanErrorMessage": -32012,
    "BlockStatusNotAvailableYetMessage": BLOCK_STATUS_NOT_AVAILABLE_YET,
    "UnsupportedTransactionVersionMessage": -32015,
    "MinContextSlotNotReachedMessage": MIN_CONTEXT_SLOT_NOT_REACHED,
}

# Transaction errors a leader may not hit a moment later: worth another endpoint or attempt.
_TRANSIENT_TX_ERRORS = frozenset(
    {
        "AccountInUse",
        "ClusterMaintenance",
        "WouldExceedMaxBlockCostLimit",
        "WouldExceedMaxAccountCostLimit",
        "WouldExceedMaxVoteCostLimit",
        "WouldExceedAccountDataBlockLimit",
        "WouldExceedAccountDataTotalLimit",
    }
)
# Wording of an underfunded fee payer: Agave's TransactionError texts and the system program's
# "Transfer: insufficient lamports X, need Y" log line.
_UNDERFUNDED_TEXT = (
    "insufficient lamports",
    "insufficient funds for fee",
    "attempt to debit an account but found no record of a prior credit",
)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds)


# -- classification --------------------------------------------------------------------------


def _error(
    kind: ErrorKind,
    code: str,
    message: str,
    endpoint: str | None,
    retry_after: float | None = None,
    *,
    endpoint_healthy: bool = False,
    unusable: str | None = None,
) -> ServiceError:
    return ServiceError(
        message,
        service=SERVICE,
        kind=kind,
        code=code,
        endpoint=endpoint,
        retry_after=retry_after,
        endpoint_healthy=endpoint_healthy,
        unusable=unusable,
        whole_endpoint=unusable in WHOLE_ENDPOINT,
    )


def _unusable(code: str, message: str, endpoint: str | None, reason: str) -> ServiceError:
    """This endpoint cannot serve the call: the pool moves on; NEEDS_OPERATOR if none can."""
    return _error(ErrorKind.NEEDS_OPERATOR, code, message, endpoint, unusable=reason)


def _tx_error_name(err: Any) -> str | None:
    """``"BlockhashNotFound"`` or ``{"InstructionError": [...]}`` -> the variant's name."""
    if isinstance(err, str):
        return err
    if isinstance(err, dict) and len(err) == 1:
        return str(next(iter(err)))
    return None


def _is_underfunded(err: Any, text: str) -> bool:
    name = _tx_error_name(err)
    if name in ("InsufficientFundsForFee", "AccountNotFound"):
        return True  # both are checked against the fee payer before anything runs
    if name == "InsufficientFundsForRent" and isinstance(err, dict):
        detail = err[name]
        index = detail.get("account_index") if isinstance(detail, dict) else None
        if index == 0:  # account 0 is the fee payer
            return True
    lowered = text.lower()
    return any(phrase in lowered for phrase in _UNDERFUNDED_TEXT)


def classify_rpc_error(
    code: int,
    message: str,
    data: Any,
    *,
    endpoint: str | None,
    method: str | None = None,
    fee_payer: str | None = None,
) -> ServiceError:
    """A JSON-RPC ``error`` object (code, message, data) as a ``ServiceError``."""
    where = f"{method}: " if method else ""
    data_dict = data if isinstance(data, dict) else {}
    err = data_dict.get("err")
    logs = data_dict.get("logs") or []
    log_text = "\n".join(str(line) for line in logs if isinstance(line, str))
    text = f"{message}\n{log_text}"
    lowered = text.lower()
    err_name = _tx_error_name(err)

    if err_name == "BlockhashNotFound" or "blockhash not found" in lowered:
        return _error(
            ErrorKind.TRANSIENT,
            "BlockhashNotFound",
            f"{where}{message} (the transaction's blockhash is unknown to this node or "
            "expired; re-sign only once it has expired and the signature is unknown)",
            endpoint,
            endpoint_healthy=True,
        )
    if err_name == "AlreadyProcessed" or "already been processed" in lowered:
        # Not a failure of the send: the same signed bytes already landed. PERMANENT only so
        # the pool stops here; the caller treats it as sent.
        return _error(
            ErrorKind.PERMANENT,
            "AlreadyProcessed",
            f"{where}{message}",
            endpoint,
            endpoint_healthy=True,
        )
    if (code == PREFLIGHT_FAILURE or err is not None) and _is_underfunded(err, text):
        who = f"system wallet {fee_payer}" if fee_payer else "system wallet (the fee payer)"
        shortfall = next((line for line in logs if "insufficient lamports" in str(line)), message)
        return _error(
            ErrorKind.NEEDS_OPERATOR,
            "SystemWalletUnderfunded",
            f"{where}the {who} has too few lamports for this transaction ({shortfall}); "
            "fund it, then retry",
            endpoint,
            endpoint_healthy=True,
        )
    if code in RATE_LIMIT_CODES or "rate limit" in lowered or "too many requests" in lowered:
        return _error(ErrorKind.RATE_LIMITED, "SolanaRateLimited", f"{where}{message}", endpoint)
    if code == PREFLIGHT_FAILURE:
        if err_name in _TRANSIENT_TX_ERRORS:
            return _error(ErrorKind.TRANSIENT, err_name or "", f"{where}{message}", endpoint)
        tail = f"; last logs: {logs[-3:]}" if logs else ""
        return _error(
            ErrorKind.PERMANENT,
            "TransactionRejected",
            f"{where}{message} (err={err!r}){tail}",
            endpoint,
            endpoint_healthy=True,
        )
    if code == NODE_UNHEALTHY:
        return _error(ErrorKind.TRANSIENT, "NodeBehind", f"{where}{message}", endpoint)
    if code in (
        BLOCK_NOT_AVAILABLE,
        BLOCK_STATUS_NOT_AVAILABLE_YET,
        MIN_CONTEXT_SLOT_NOT_REACHED,
        LONG_TERM_STORAGE_UNREACHABLE,
    ):
        return _error(ErrorKind.TRANSIENT, "NodeNotReady", f"{where}{message}", endpoint)
    if code == INTERNAL_ERROR:
        return _error(ErrorKind.TRANSIENT, "SolanaInternalError", f"{where}{message}", endpoint)
    if code == SIGNATURE_VERIFICATION_FAILURE:
        return _error(
            ErrorKind.PERMANENT, "SignatureVerificationFailed", f"{where}{message}", endpoint
        )
    if code == METHOD_NOT_FOUND:
        return _unusable(
            "SolanaMethodNotFound",
            f"{where}{message} (this endpoint does not serve the method: a send-only endpoint?)",
            endpoint,
            NO_METHOD,
        )
    if code == TRANSACTION_HISTORY_NOT_AVAILABLE:
        return _unusable(
            "TransactionHistoryNotAvailable",
            f"{where}{message} (the node keeps no transaction history: searchTransactionHistory"
            " needs an endpoint started with --enable-rpc-transaction-history)",
            endpoint,
            NO_HISTORY,
        )
    if code in (INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR):
        return _error(ErrorKind.PERMANENT, "SolanaInvalidRequest", f"{where}{message}", endpoint)
    return _error(
        ErrorKind.PERMANENT, "SolanaRpcError", f"{where}{message} (code {code})", endpoint
    )


def _solders_error_fields(obj: Any) -> tuple[int, str, Any]:
    """(code, message, data) of the typed error object inside solana-py's ``RPCException``."""
    if isinstance(obj, int):  # solders keeps only the code of an error it has no type for
        return int(obj), "", None
    code = _SOLDERS_ERROR_CODES.get(type(obj).__name__, INTERNAL_ERROR)
    message = str(getattr(obj, "message", "") or obj)
    data: Any = None
    to_json = getattr(obj, "to_json", None)
    if callable(to_json):
        try:
            data = json.loads(to_json()).get("data")
        except (ValueError, AttributeError):
            data = None
    return code, message, data


def _http_status_error(
    status: int, headers: Any, *, endpoint: str | None, where: str
) -> ServiceError:
    retry_after = parse_retry_after(headers.get("Retry-After")) if headers is not None else None
    if status == 429:
        return _error(
            ErrorKind.RATE_LIMITED,
            "SolanaRateLimited",
            f"{where}HTTP 429 Too Many Requests",
            endpoint,
            retry_after,
        )
    if status >= 500 or status == 408:
        return _error(
            ErrorKind.TRANSIENT, "SolanaUnavailable", f"{where}HTTP {status}", endpoint, retry_after
        )
    if status == 401:
        return _unusable(
            "SolanaUnauthorized",
            f"{where}HTTP 401: the endpoint refused our credentials (an invalid, expired or"
            " revoked API key, or an IP allowlist: check its key)",
            endpoint,
            UNAUTHORIZED,
        )
    if status == 403:
        return _unusable(
            "SolanaUnauthorized",
            f"{where}HTTP 403: the endpoint refused us (disabled, e.g. for a past due payment,"
            " or the key lacks this plan's access)",
            endpoint,
            FORBIDDEN,
        )
    if status == 404:
        return _unusable(
            "SolanaEndpointNotFound",
            f"{where}HTTP 404: no JSON-RPC endpoint at this URL (check SOLANA_RPC_ENDPOINTS)",
            endpoint,
            NOT_FOUND,
        )
    if status == 413:
        return _unusable(
            "SolanaRequestTooLarge",
            f"{where}HTTP 413: the request is over this endpoint's size limit",
            endpoint,
            TOO_LARGE,
        )
    return _error(ErrorKind.PERMANENT, "SolanaRejected", f"{where}HTTP {status}", endpoint)


_HTTP_STATUS_ERRORS = (httpx2.HTTPStatusError, httpx.HTTPStatusError)
_TIMEOUTS = (httpx2.TimeoutException, httpx.TimeoutException, TimeoutError)
_CONNECT_ERRORS = (httpx2.ConnectError, httpx.ConnectError)
_HTTP_ERRORS = (httpx2.HTTPError, httpx.HTTPError)
_BAD_ANSWER_ERRORS = (RPCNoResultException, ValueError, KeyError, TypeError, IndexError)
# Everything a call may raise that ``classify_error`` understands.
CLASSIFIABLE = (
    SolanaRpcException,
    SolanaJsonRpcError,
    RPCException,
    *_HTTP_ERRORS,
    TimeoutError,
    *_BAD_ANSWER_ERRORS,
)


def classify_error(
    exc: BaseException,
    *,
    endpoint: str | None,
    method: str | None = None,
    fee_payer: str | None = None,
) -> ServiceError:
    """Translate what a solana-py call raised into a ``ServiceError``.

    ``endpoint`` must already be redacted. ``fee_payer`` (a base58 public key) is named when
    the system wallet turns out to be underfunded. The result's ``__cause__`` is set to ``exc``
    unless the exception's text may contain the raw endpoint URL (HTTP library errors).
    """
    where = f"{method}: " if method else ""
    inner: BaseException = exc
    if isinstance(exc, SolanaRpcException) and exc.__cause__ is not None:
        inner = exc.__cause__  # solana-py wraps the HTTP library's exception
    chain = True

    if isinstance(inner, SolanaJsonRpcError):
        error = classify_rpc_error(
            inner.code,
            inner.message,
            inner.data,
            endpoint=endpoint,
            method=method,
            fee_payer=fee_payer,
        )
    elif isinstance(inner, RPCException):
        code, message, data = _solders_error_fields(inner.args[0] if inner.args else None)
        error = classify_rpc_error(
            code, message, data, endpoint=endpoint, method=method, fee_payer=fee_payer
        )
    elif isinstance(inner, _HTTP_STATUS_ERRORS):
        chain = False  # "... for url 'https://...?api-key=...'"
        error = _http_status_error(
            inner.response.status_code, inner.response.headers, endpoint=endpoint, where=where
        )
    elif isinstance(inner, _TIMEOUTS):
        chain = not isinstance(inner, _HTTP_ERRORS)
        error = _error(
            ErrorKind.TRANSIENT,
            "SolanaTimeout",
            f"{where}no answer in time ({type(inner).__name__})",
            endpoint,
        )
    elif isinstance(inner, _CONNECT_ERRORS):
        chain = False
        error = _error(
            ErrorKind.TRANSIENT,
            "SolanaUnreachable",
            f"{where}cannot connect ({type(inner).__name__})",
            endpoint,
        )
    elif isinstance(inner, _HTTP_ERRORS):
        chain = False
        # For sendTransaction this is ambiguous: the node may have taken the transaction.
        error = _error(
            ErrorKind.TRANSIENT,
            "SolanaConnectionLost",
            f"{where}the connection failed before an answer ({type(inner).__name__})",
            endpoint,
        )
    elif isinstance(inner, _BAD_ANSWER_ERRORS):
        error = _error(
            ErrorKind.TRANSIENT,
            "SolanaInvalidResponse",
            f"{where}unexpected answer ({type(inner).__name__}: {str(inner)[:200]})",
            endpoint,
        )
    else:
        error = _error(
            ErrorKind.PERMANENT,
            "SolanaUnexpectedError",
            f"{where}{type(inner).__name__}",
            endpoint,
        )
    if chain:
        error.__cause__ = exc
    error.__suppress_context__ = True
    return error


# -- the pool --------------------------------------------------------------------------------


@dataclass
class _Endpoint:
    url: str  # may hold an API key: never logged or put in a message
    name: str  # redacted
    client: AsyncClient
    budget: EndpointBudget


# A plan's limit per endpoint: one value for every endpoint, or one per endpoint in order;
# None: no limit configured.
Limits = Sequence[float | None]


class SolanaRpc:
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

    def __repr__(self) -> str:
        return f"SolanaRpc(endpoints={self.endpoints!r}, timeout={self._timeout})"

    @property
    def endpoints(self) -> list[str]:
        """The normal endpoints, redacted, in configured order (indices for ``only=``)."""
        return [endpoint.name for endpoint in self._endpoints[: self._count]]

    async def close(self) -> None:
        for endpoint in self._endpoints:
            await endpoint.client.close()

    async def __aenter__(self) -> SolanaRpc:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _order(self, only: Sequence[int] | None = None) -> list[int]:
        """Indices of the endpoints to try, in priority order (breakers are checked per call):
        the normal ones, unless ``only`` names others (an emergency one that answered)."""
        if only is None:
            return list(range(self._count))
        for index in only:
            if not 0 <= index < len(self._endpoints):
                raise IndexError(f"no Solana endpoint #{index} (have {len(self._endpoints)})")
        return list(dict.fromkeys(only))

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

    def rotated(self, start: int) -> list[int]:
        """Every normal endpoint, starting from `start` (mod their number): a retry that should
        ask another node first, while open circuits are still skipped and failover still
        works."""
        count = self._count
        return [(start + offset) % count for offset in range(count)]

    def breaker(self, index: int) -> CircuitBreaker:
        return self.breakers.get(self._endpoints[index].name, SOLANA_BREAKER)

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
