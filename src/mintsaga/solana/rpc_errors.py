"""How a failed Solana call becomes a ``ServiceError``: the RPC pool (solana/rpc.py) classifies
what each endpoint raised, prepare what a simulation answered.

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
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

import httpx
import httpx2
from solana.exceptions import SolanaRpcException
from solana.rpc.core import RPCException, RPCNoResultException
from solana.rpc.jsonrpc import SolanaJsonRpcError

from mintsaga.errors import ErrorKind, ServiceError

SERVICE = "solana"


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
