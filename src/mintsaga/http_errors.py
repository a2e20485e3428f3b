"""HTTP failures classified once, at the client boundary, into a ``ServiceError``.

    httpx.RequestError (connect, timeout, protocol, ...)  TRANSIENT     <Service>Unreachable
    408, 5xx                                               TRANSIENT     <Service>Unavailable
    429                                                    RATE_LIMITED  <Service>RateLimited
    401/403 when the client holds a credential setting     NEEDS_OPERATOR <Service>Unauthorized
    any other 4xx (and unexpected 1xx/3xx)                 PERMANENT     <Service>Rejected

``retry_after`` comes from ``Retry-After`` (delta-seconds or an HTTP date).
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from mintsaga.errors import ErrorKind, ServiceError

_MAX_DETAIL = 300


def classify_status(status: int) -> ErrorKind:
    """How a caller should react to an HTTP error status (2xx is not an error: ValueError)."""
    if 200 <= status < 300:
        raise ValueError(f"HTTP {status} is a success, not an error")
    if status == 429:
        return ErrorKind.RATE_LIMITED
    if status == 408 or 500 <= status < 600:
        return ErrorKind.TRANSIENT
    return ErrorKind.PERMANENT


def parse_retry_after(
    value: str | None, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> float | None:
    """Seconds to wait from a ``Retry-After`` header; None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT; a naive result means "-0000"
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now()).total_seconds())


def service_prefix(service: str) -> str:
    """``"pinata"`` -> ``"Pinata"``: the start of every code a service's errors carry."""
    return service[:1].upper() + service[1:]


def response_detail(response: httpx.Response) -> str:
    """A short, human-readable reason from an error body (Pinata, Kubo or plain text)."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        text = response.text.strip()
        return text[:_MAX_DETAIL]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):  # Pinata: {"error": {"reason", "details"}}
            parts = [str(error.get(k)) for k in ("reason", "details") if error.get(k)]
            return ": ".join(parts)[:_MAX_DETAIL]
        if isinstance(error, str):
            return error[:_MAX_DETAIL]
        if isinstance(body.get("Message"), str):  # Kubo: {"Message", "Code", "Type"}
            message: str = body["Message"]
            return message[:_MAX_DETAIL]
    return json.dumps(body)[:_MAX_DETAIL]


# An error answer's body is read up to this many bytes on the wire, never more: its detail
# goes into a message, and a broken or hostile server may send gigabytes (or a small
# compressed body that inflates to them).
ERROR_BODY_MAX_BYTES = 4096


async def capped_error_answer(
    response: httpx.Response, limit: int = ERROR_BODY_MAX_BYTES
) -> httpx.Response:
    """A streamed non-2xx answer as a response holding at most `limit` raw bytes of its body,
    for `status_error`. A compressed body is not decoded (its detail is left out): decoding is
    where a small body becomes a huge one."""
    raw = bytearray()
    try:
        async for chunk in response.aiter_raw():
            raw += chunk[: limit - len(raw)]
            if len(raw) >= limit:
                break
    except httpx.StreamConsumed:  # a response read already (a transport that buffers it)
        raw += response.content[:limit]
    encoded = response.headers.get("Content-Encoding", "identity").strip().lower()
    dropped = ("content-encoding", "content-length")
    headers = {k: v for k, v in response.headers.items() if k.lower() not in dropped}
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=bytes(raw) if encoded in ("", "identity") else b"",
        request=response.request,
    )


def status_error(
    response: httpx.Response,
    *,
    service: str,
    endpoint: str,
    action: str,
    credential_setting: str | None = None,
    detail: str | None = None,
) -> ServiceError:
    """The ``ServiceError`` for a non-2xx answer.

    Args:
        action: what we were doing, for the message ("pin a file").
        credential_setting: the setting holding this client's credential (``PINATA_JWT``);
            when given, 401/403 means only an operator can help.
        detail: the reason to show; read from the body when None.
    """
    status = response.status_code
    prefix = service_prefix(service)
    reason = detail if detail is not None else response_detail(response)
    said = f" ({reason})" if reason else ""
    if credential_setting and status in (401, 403):
        return ServiceError(
            f"{action} refused with HTTP {status}{said}: check the {credential_setting} setting",
            service=service,
            kind=ErrorKind.NEEDS_OPERATOR,
            code=f"{prefix}Unauthorized",
            endpoint=endpoint,
        )
    kind = classify_status(status) if not 200 <= status < 300 else ErrorKind.PERMANENT
    code = {
        ErrorKind.RATE_LIMITED: "RateLimited",
        ErrorKind.TRANSIENT: "Unavailable",
        ErrorKind.PERMANENT: "Rejected",
    }[kind]
    retry_after = (
        parse_retry_after(response.headers.get("Retry-After"))
        if kind is ErrorKind.RATE_LIMITED
        else None
    )
    return ServiceError(
        f"{action} failed with HTTP {status}{said}",
        service=service,
        kind=kind,
        code=f"{prefix}{code}",
        endpoint=endpoint,
        retry_after=retry_after,
    )


def transport_error(
    exc: httpx.RequestError,
    *,
    service: str,
    endpoint: str,
    action: str,
    scrub: Callable[[str], str] = lambda text: text,
) -> ServiceError:
    """A request that got no usable answer: refused, timed out, cut, undecodable.

    ``scrub`` removes a secret the library may have quoted (h11 quotes bad header values).
    """
    reason = scrub(str(exc) or type(exc).__name__)
    return ServiceError(
        f"{action} got no answer: {type(exc).__name__}: {reason[:_MAX_DETAIL]}",
        service=service,
        kind=ErrorKind.TRANSIENT,
        code=f"{service_prefix(service)}Unreachable",
        endpoint=endpoint,
    )


def bad_answer(message: str, *, service: str, endpoint: str) -> ServiceError:
    """A 2xx whose body is not what the API documents (a proxy page, a truncated body)."""
    return ServiceError(
        message,
        service=service,
        kind=ErrorKind.TRANSIENT,
        code=f"{service_prefix(service)}BadResponse",
        endpoint=endpoint,
    )


def json_body(response: httpx.Response, *, service: str, endpoint: str) -> Any:
    """The decoded JSON of a 2xx answer, or a TRANSIENT ``BadResponse`` when it is not JSON."""
    try:
        return response.json()
    except ValueError as exc:
        raise bad_answer(
            f"answer to {response.request.url.path} is not JSON", service=service, endpoint=endpoint
        ) from exc
