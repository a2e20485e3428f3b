"""The one error type every client raises, classified once at the client boundary.

    ServiceError
      kind = TRANSIENT        connection refused/reset, timeouts, 5xx: try again (another endpoint)
      kind = RATE_LIMITED     429 and RPC rate limits: try again after ``retry_after``
      kind = PERMANENT        a bad request or an answer that will not change: do not retry
      kind = NEEDS_OPERATOR   only a person can fix it (an empty system wallet, a bad credential)

Clients translate third-party exceptions into a ``ServiceError`` (``raise ... from exc``), so
activities map one type to Temporal's retry behaviour instead of knowing every library.
Messages never carry secrets (tokens, keys, seeds).
"""

from __future__ import annotations

import enum
import re
from urllib.parse import urlsplit, urlunsplit


class ErrorKind(enum.StrEnum):
    TRANSIENT = "transient"
    RATE_LIMITED = "rate_limited"
    PERMANENT = "permanent"
    NEEDS_OPERATOR = "needs_operator"

    @property
    def retryable(self) -> bool:
        return self in (ErrorKind.TRANSIENT, ErrorKind.RATE_LIMITED)


def without_nul(text: str) -> str:
    """`text` with each NUL (which Postgres text refuses) shown as U+FFFD."""
    return text.replace("\x00", "\ufffd")


class ServiceError(Exception):
    """A classified failure of an external service.

    Args:
        message: what went wrong, for a person; names the setting or field at fault if any.
        service: "solana", "pinata", "kubo", "gateway", "postgres" or "image".
        kind: how the caller should react.
        code: a short searchable type name, e.g. "BlockhashNotFound", "PinataUnauthorized".
        endpoint: the URL that failed, when there is one (kept redacted: see `redact_url`).
        retry_after: seconds the service asked us to wait (Retry-After), if it said.
        connected: the failure came after a connection to the service was made (a query cut
            off mid-way): a breaker rule that counts connection failures leaves it out.
        endpoint_healthy: the endpoint answered as a healthy one does, about the request (an
            expired blockhash, a rejected transaction, an underfunded wallet): not the
            endpoint's fault, so its circuit breaker counts a success.
    """

    def __init__(
        self,
        message: str,
        *,
        service: str,
        kind: ErrorKind,
        code: str,
        endpoint: str | None = None,
        retry_after: float | None = None,
        connected: bool = False,
        endpoint_healthy: bool = False,
    ) -> None:
        # A message may quote a remote answer: no NUL, so it can be stored anywhere.
        message = without_nul(message)
        super().__init__(message)
        self.message = message
        self.service = service
        self.kind = kind
        self.code = code
        # Endpoint URLs may carry API keys (query, userinfo, path): only the redacted form
        # travels, into logs, workflow histories and breaker names.
        self.endpoint = redact_url(endpoint) if endpoint else None
        self.retry_after = retry_after
        self.connected = connected
        self.endpoint_healthy = endpoint_healthy

    @property
    def retryable(self) -> bool:
        return self.kind.retryable

    def __str__(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"{self.service} {self.code} ({self.kind}){where}: {self.message}"


_TOKENISH_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9_\-]{16,}$")


# -- URLs ------------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """``url`` fit for a message or log: no userinfo, query or fragment, no key-like path part.

    Providers put API keys in the query (``?api-key=``), in userinfo, or as a path segment
    (``/v2/<key>``); a path segment of 16+ token characters is replaced by ``***``.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable url>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    segments = [
        "***" if _TOKENISH_PATH_SEGMENT.match(segment) else segment
        for segment in parts.path.split("/")
    ]
    return urlunsplit((parts.scheme, netloc, "/".join(segments), "", ""))
