"""How a Postgres failure becomes the ``ServiceError`` every client raises, once for both stores.

:func:`classify_error` turns what asyncpg or the socket raised into a kind (TRANSIENT,
PERMANENT, NEEDS_OPERATOR) and a code a person can search for; the table below is the whole
mapping. Messages never show the database's password: :func:`endpoint_and_secrets` gives the
URL to name in an error and the strings to scrub from it.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import asyncpg.exceptions as pgexc

from mintsaga.errors import ErrorKind, ServiceError

__all__ = [
    "IN_PROGRESS_INDEX",
    "SERVICE",
    "Phase",
    "classify_error",
    "endpoint_and_secrets",
    "permanent",
]

SERVICE = "postgres"
# The partial unique index behind "one mint in progress per user" (migrations/002): a unique
# violation on it is a refusal to start, not a conflict of ids.
IN_PROGRESS_INDEX = "mints_one_in_progress_per_user"
Phase = Literal["connect", "acquire", "query"]

# First match wins; subclasses come before their bases. TimeoutError (an OSError), unique
# violations and InterfaceError depend on more than the type and are handled before this table.
_TABLE: tuple[tuple[type[BaseException], ErrorKind, str], ...] = (
    (pgexc.DeadlockDetectedError, ErrorKind.TRANSIENT, "DeadlockDetected"),
    (pgexc.SerializationError, ErrorKind.TRANSIENT, "SerializationFailure"),
    (pgexc.TooManyConnectionsError, ErrorKind.TRANSIENT, "TooManyConnections"),
    (pgexc.CannotConnectNowError, ErrorKind.TRANSIENT, "CannotConnectNow"),
    (pgexc.AdminShutdownError, ErrorKind.TRANSIENT, "ServerShutdown"),
    (pgexc.CrashShutdownError, ErrorKind.TRANSIENT, "ServerShutdown"),
    (pgexc.QueryCanceledError, ErrorKind.TRANSIENT, "QueryCanceled"),
    (pgexc.ConnectionDoesNotExistError, ErrorKind.TRANSIENT, "ConnectionLost"),
    (pgexc.PostgresConnectionError, ErrorKind.TRANSIENT, "ConnectionFailure"),  # SQLSTATE 08
    (pgexc.InvalidAuthorizationSpecificationError, ErrorKind.NEEDS_OPERATOR, "DatabaseAuthFailed"),
    (pgexc.InvalidCatalogNameError, ErrorKind.NEEDS_OPERATOR, "DatabaseMissing"),
    (pgexc.UndefinedTableError, ErrorKind.NEEDS_OPERATOR, "SchemaNotMigrated"),
    (pgexc.UndefinedColumnError, ErrorKind.NEEDS_OPERATOR, "SchemaNotMigrated"),
    (ConnectionRefusedError, ErrorKind.TRANSIENT, "ConnectionRefused"),
    (ConnectionResetError, ErrorKind.TRANSIENT, "ConnectionReset"),
    (ConnectionError, ErrorKind.TRANSIENT, "ConnectionError"),
    (socket.gaierror, ErrorKind.TRANSIENT, "NameResolutionFailed"),
    (OSError, ErrorKind.TRANSIENT, "NetworkError"),
)

_TIMEOUT_CODES: dict[Phase, str] = {
    "connect": "ConnectTimeout",
    "acquire": "PoolAcquireTimeout",
    "query": "QueryTimeout",
}


def classify_error(
    exc: BaseException,
    *,
    during: Phase = "query",
    endpoint: str | None = None,
    secrets: Sequence[str] = (),
) -> ServiceError:
    """Translate a driver or network failure into a ``ServiceError``.

    Args:
        exc: what asyncpg or the socket raised.
        during: "connect" (creating the pool), "acquire" (waiting for a pooled connection) or
            "query"; it only tells timeouts apart.
        endpoint: the database URL without credentials, for the error.
        secrets: strings that must not appear in the message (the DSN, its password).
    """
    if isinstance(exc, ServiceError):
        return exc
    kind, code = _kind_and_code(exc, during)
    detail = str(exc) or type(exc).__name__
    for secret in secrets:
        if secret:
            detail = detail.replace(secret, "***")
    return ServiceError(
        f"{during}: {type(exc).__name__}: {detail}",
        service=SERVICE,
        kind=kind,
        code=code,
        endpoint=endpoint,
        connected=during == "query",  # not a connection failure, for the breaker
    )


def _kind_and_code(exc: BaseException, during: Phase) -> tuple[ErrorKind, str]:
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is TimeoutError on 3.11
        return ErrorKind.TRANSIENT, _TIMEOUT_CODES[during]
    if isinstance(exc, pgexc.UniqueViolationError):
        if exc.constraint_name == IN_PROGRESS_INDEX:
            return ErrorKind.PERMANENT, "UserMintInProgress"
        return ErrorKind.PERMANENT, "Conflict"
    if isinstance(exc, pgexc.InterfaceError):
        text = str(exc)
        if "pool is clos" in text:  # "pool is closing" / "pool is closed": worker shutting down
            return ErrorKind.TRANSIENT, "PoolClosed"
        if "connection is closed" in text or "connection was closed" in text:
            return ErrorKind.TRANSIENT, "ConnectionClosed"
        return ErrorKind.PERMANENT, "InterfaceError"
    for exc_type, kind, code in _TABLE:
        if isinstance(exc, exc_type):
            return kind, code
    return ErrorKind.PERMANENT, type(exc).__name__


def endpoint_and_secrets(dsn: str) -> tuple[str, tuple[str, ...]]:
    """The DSN without user, password or query, and the strings to scrub from messages."""
    parts = urlsplit(dsn)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    endpoint = urlunsplit((parts.scheme, hostport, parts.path, "", ""))
    secrets = [dsn]
    if ":" in userinfo:
        raw = userinfo.split(":", 1)[1]
        secrets += [raw, unquote(raw)]
    for value in parse_qs(parts.query).get("password", []):
        secrets.append(value)
    # Longest first, so a password inside the DSN does not break the DSN's own replacement.
    return endpoint, tuple(sorted({s for s in secrets if s}, key=len, reverse=True))


def permanent(code: str, message: str, endpoint: str | None) -> ServiceError:
    """A refusal of the store's own (an unknown mint, a finished one), never worth a retry."""
    return ServiceError(
        message, service=SERVICE, kind=ErrorKind.PERMANENT, code=code, endpoint=endpoint
    )
