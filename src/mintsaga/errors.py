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
import ipaddress
import re
from urllib.parse import parse_qsl, urlsplit, urlunsplit


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
        unusable: this endpoint cannot serve this call, whatever the request (a short reason:
            "unauthorized", "no_history", ...): a pool moves on to its next endpoint although
            the kind (NEEDS_OPERATOR, for when no endpoint can serve it) is not retryable.
        whole_endpoint: with ``unusable``, the endpoint serves no call at all (a bad key, a
            wrong URL), so its circuit breaker counts a failure; otherwise only this kind of
            call is refused (a send-only node, a node without history) and the breaker is
            left alone, since the endpoint serves the others.
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
        unusable: str | None = None,
        whole_endpoint: bool = False,
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
        self.unusable = unusable
        self.whole_endpoint = whole_endpoint and unusable is not None

    @property
    def retryable(self) -> bool:
        return self.kind.retryable

    @property
    def endpoint_fault(self) -> bool:
        """Whether the failure counts against the endpoint's circuit breaker: a retryable one,
        or an endpoint that serves nothing (``whole_endpoint``)."""
        return self.retryable or self.whole_endpoint

    def __str__(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"{self.service} {self.code} ({self.kind}){where}: {self.message}"


# -- URLs ------------------------------------------------------------------------------------

# What a key or token is spelled with: base64url, hex, base58, standard base64 (`+`, `=`),
# percent-encoding and `~` (RFC 3986's unreserved).
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9_\-+=~%]+$")
_HEX = re.compile(r"^[0-9a-f]+$")
# Query parameters whose value is a credential whatever it looks like.
_SECRET_PARAM = re.compile(r"(?i)(key|token|secret|auth|pass|pwd|sig|credential|session)")
MASK = "***"


def _digits(text: str) -> int:
    return sum(1 for c in text if c.isdigit())


def _letters(text: str) -> int:
    return sum(1 for c in text if c.isalpha())


def looks_like_token(piece: str) -> bool:
    """Whether a piece of a URL (a path segment, a part of a host label, a query value) is
    spelled like a key: 16 or more token characters (as the providers' keys in
    tests/unit/foundation/test_errors.py are), or 12 or more mixing at least two digits and two
    letters (a shorter random id); a word, a version or a network name is not.
    """
    if not _TOKEN_CHARS.match(piece):
        return False
    if len(piece) >= 16:
        return True
    return len(piece) >= 12 and _digits(piece) >= 2 and _letters(piece) >= 2


def _secret_host_part(part: str) -> bool:
    """A part of a host label (split at `-`) spelled like a token. Hosts are lower case, so a
    base58 key's case is lost: long (24+), or 12+ with two digits and two letters, or hex of 8+
    mixing digits and letters (`<name>-<hex key>`)."""
    digits, letters = _digits(part), _letters(part)
    if len(part) >= 24:
        return True
    if len(part) >= 12 and digits >= 2 and letters >= 2:
        return True
    return len(part) >= 8 and bool(_HEX.match(part)) and digits >= 2 and letters >= 2


def _secret_segment(segment: str) -> bool:
    """A path segment that is a token, or holds one between dots (a JWT: three base64url
    parts)."""
    return looks_like_token(segment) or any(looks_like_token(p) for p in segment.split("."))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _redact_host(host: str) -> str:
    """The host with every token-like part of its labels masked, the last two labels (the
    provider's own domain: `rpcpool.com`, `quiknode.pro`) always kept; IP literals as they are."""
    if not host or _is_ip(host):
        return host
    labels = host.split(".")
    kept = labels[-2:] if len(labels) >= 2 else []
    masked = [
        "-".join(MASK if _secret_host_part(part) else part for part in label.split("-"))
        for label in labels[: len(labels) - len(kept)]
    ]
    return ".".join([*masked, *kept])


def endpoint_name(url: str) -> str:
    """The name an endpoint is known by (runtime settings, breakers, `endpoints list`): its
    URL as ``redact_url`` shows it (no credentials, query or key-like part), without a
    trailing slash. Names are what operators give and what Postgres stores; keys stay in the
    configuration."""
    return redact_url(url.strip().rstrip("/")).rstrip("/")


def redact_url(url: str) -> str:
    """``url`` fit for a message, a log line, a metric label or a breaker name: no userinfo,
    query or fragment, and no key-like part in its host or path (each replaced by ``***``).

    Providers put API keys in the query (``?api-key=``), in userinfo, as a path segment
    (``/v2/<key>``, ``/<token>/``) or in a host label (``<name>-<key>.mainnet.rpcpool.com``):
    see ``looks_like_token`` and tests/unit/foundation/test_errors.py for the forms, each
    from its provider's documentation. The scheme (``wss://`` too), the port, the provider's
    domain and the other labels stay, so the endpoint is still recognisable; IPv6 literals keep
    their brackets.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable url>"
    host = f"[{host}]" if ":" in host else _redact_host(host)
    netloc = f"{host}:{port}" if port is not None else host
    segments = [MASK if _secret_segment(s) else s for s in parts.path.split("/")]
    return urlunsplit((parts.scheme, netloc, "/".join(segments), "", ""))


def url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that ``redact_url`` takes out because they may be credentials
    (userinfo, key-like query values and path or host parts), for a guard that scrubs them
    from text that quotes the URL some other way (a library's exception, a log line)."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
    except ValueError:
        return []
    # A user name is often a plain word (it would blank that word out of every line).
    found = [value for value in (parts.password,) if value]
    if parts.username and looks_like_token(parts.username):
        found.append(parts.username)
    for name, value in parse_qsl(parts.query, keep_blank_values=False):
        if _SECRET_PARAM.search(name) or looks_like_token(value):
            found.append(value)
    if host and ":" not in host and not _is_ip(host):
        for label in host.split(".")[:-2]:
            found += [p for p in label.split("-") if _secret_host_part(p)]
    for segment in parts.path.split("/"):
        if _secret_segment(segment):
            found.append(segment)
    return found
