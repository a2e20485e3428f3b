"""HTTP failures classified once, at the client boundary, into a ``ServiceError``.

    httpx.RequestError (connect, timeout, protocol, ...)  TRANSIENT     <Service>Unreachable
    408, 5xx                                               TRANSIENT     <Service>Unavailable
    429                                                    RATE_LIMITED  <Service>RateLimited
    401/403 when the client holds a credential setting     NEEDS_OPERATOR <Service>Unauthorized
    any other 4xx (and unexpected 1xx/3xx)                 PERMANENT     <Service>Rejected

``retry_after`` comes from ``Retry-After`` (delta-seconds or an HTTP date).

Bodies from hosts we do not control (images, gateways) are read with ``read_bounded``: limits
on the bytes on the wire and on the decoded bytes, at most one ``Content-Encoding`` (gzip or
deflate) decoded here in bounded steps, never by httpx (which decodes a whole chunk at once:
a few hundred bytes of ``gzip, gzip`` become hundreds of MiB). Error answers are read with
``capped_error_answer``: a few KiB on the wire, never decoded.
"""

from __future__ import annotations

import email.utils
import json
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from mintsaga.errors import ErrorKind, ServiceError, redact_url

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


# What readers of untrusted bodies ask for: the codings `read_bounded` decodes (httpx would add
# br or zstd when their packages happen to be installed).
ACCEPT_ENCODING = "gzip, deflate"
DECODED = frozenset({"gzip", "x-gzip", "deflate"})
# Decoded output is produced in steps of at most this many bytes.
_INFLATE_STEP = 64 * 1024
# Redirects untrusted fetches follow, by hand, each hop checked (images, gateways).
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 3


class BodyRefused(Exception):
    """A body `read_bounded` stopped reading: over a limit (`too_large`) or in an encoding it
    does not decode (stacked, unknown). `reason` is for a message, without the URL."""

    def __init__(self, reason: str, *, too_large: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.too_large = too_large


def body_coding(response: httpx.Response) -> str:
    """The one content coding of a response's body (``identity`` when none).

    Raises:
        BodyRefused: stacked codings (``gzip, gzip``; a repeated header counts too) or one
            that is not gzip or deflate.
    """
    codings = [
        token.strip().lower()
        for value in response.headers.get_list("Content-Encoding")
        for token in value.split(",")
    ]
    codings = [c for c in codings if c not in ("", "identity")]
    if len(codings) > 1:
        raise BodyRefused(
            f"is encoded {len(codings)} times (Content-Encoding: {', '.join(codings)}); "
            "at most one encoding is decoded",
            too_large=False,
        )
    if codings and codings[0] not in DECODED:
        raise BodyRefused(
            f"has Content-Encoding {codings[0]!r}; only gzip and deflate are decoded",
            too_large=False,
        )
    return codings[0] if codings else "identity"


def wire_allowance(max_bytes: int) -> int:
    """The bytes on the wire allowed for a body of at most `max_bytes` decoded bytes:
    compressing bytes already compressed (a PNG) grows them a little."""
    return max_bytes + max_bytes // 64 + 4096


class _Inflater:
    """One gzip or deflate layer, decoded in steps of at most `_INFLATE_STEP` bytes."""

    def __init__(self, coding: str) -> None:
        self._gzip = coding in ("gzip", "x-gzip")
        self._raw_fallback = not self._gzip  # "deflate" is zlib-wrapped, or raw in the wild
        self._started = False
        # A zlib header is 2 bytes: until that many arrived, a raw stream cannot be told from a
        # wrapped one (a 1-byte first chunk decodes to nothing and raises nothing), so they
        # are held back and given to the decoder together.
        self._head = bytearray()
        self._decoder = self._new()

    def _new(self, raw: bool = False) -> zlib._Decompress:
        wbits = -zlib.MAX_WBITS if raw else (16 + zlib.MAX_WBITS if self._gzip else zlib.MAX_WBITS)
        return zlib.decompressobj(wbits)

    def feed(self, data: bytes, out: bytearray, limit: int) -> None:
        """Decode `data` onto `out`; BodyRefused once `out` would grow past `limit`."""
        if self._raw_fallback and not self._started:
            self._head += data
            if len(self._head) < 2:
                return
            data, self._head = bytes(self._head), bytearray()
        while data:
            if self._decoder.eof:
                if not self._gzip or not data.strip(b"\x00"):
                    return  # bytes after a deflate stream, or gzip padding: ignored
                self._decoder = self._new()  # gzip: members may follow one another
            try:
                piece = self._decoder.decompress(data, self._room(out, limit))
            except zlib.error as exc:
                if self._raw_fallback and not self._started:
                    self._raw_fallback = False
                    self._decoder = self._new(raw=True)
                    continue
                raise BodyRefused(f"is not valid {self._name}: {exc}", too_large=False) from exc
            self._started = True
            self._append(piece, out, limit)
            decoder = self._decoder
            data = decoder.unused_data if decoder.eof else decoder.unconsumed_tail

    def finish(self, out: bytearray, limit: int) -> None:
        """What the decoder still holds; a body cut short of its stream's end is refused."""
        if self._head:  # a body of one byte
            head, self._head = bytes(self._head), bytearray()
            self._raw_fallback = False
            self.feed(head, out, limit)
        while not self._decoder.eof:
            piece = self._decoder.decompress(self._decoder.unconsumed_tail, self._room(out, limit))
            if not piece:
                break
            self._append(piece, out, limit)
        if self._started and not self._decoder.eof:
            raise BodyRefused(f"ends inside its {self._name} stream", too_large=False)

    @staticmethod
    def _room(out: bytearray, limit: int) -> int:
        return max(1, min(_INFLATE_STEP, limit + 1 - len(out)))

    @staticmethod
    def _append(piece: bytes, out: bytearray, limit: int) -> None:
        out += piece
        if len(out) > limit:
            raise BodyRefused(f"decodes to more than {limit} bytes", too_large=True)

    @property
    def _name(self) -> str:
        return "gzip" if self._gzip else "deflate"


async def read_bounded(
    response: httpx.Response, max_bytes: int, *, max_wire_bytes: int | None = None
) -> bytes:
    """A streamed response's body, decoded, never holding more than about `max_bytes` of it.

    The body is read raw (``aiter_raw``): at most `max_wire_bytes` on the wire (default
    `max_bytes` unencoded, else `wire_allowance(max_bytes)`), a declared ``Content-Length``
    above that refused before reading; then at most one gzip or deflate layer is decoded in
    bounded steps, stopping as soon as the decoded bytes pass `max_bytes`. The rest of the
    body is never read.

    Raises:
        BodyRefused: too large on the wire or decoded, stacked or unknown encodings, a broken
            compressed stream.
    """
    coding = body_coding(response)
    if max_wire_bytes is not None:
        wire_limit = max_wire_bytes
    else:  # unencoded, the bytes on the wire are the body
        wire_limit = max_bytes if coding == "identity" else wire_allowance(max_bytes)
    declared = response.headers.get("Content-Length", "").strip()
    if declared.isdigit() and int(declared) > wire_limit:
        raise BodyRefused(
            f"declares {int(declared)} bytes on the wire, more than {wire_limit}", too_large=True
        )
    if response.is_stream_consumed:  # read whole already, by a transport that buffers (tests)
        if len(response.content) > max_bytes:
            raise BodyRefused(f"is more than {max_bytes} bytes", too_large=True)
        return response.content
    inflater = None if coding == "identity" else _Inflater(coding)
    out = bytearray()
    wire = 0
    async for chunk in response.aiter_raw():
        wire += len(chunk)
        if wire > wire_limit:
            raise BodyRefused(f"is more than {wire_limit} bytes on the wire", too_large=True)
        if inflater is None:
            out += chunk
            if len(out) > max_bytes:
                raise BodyRefused(f"is more than {max_bytes} bytes", too_large=True)
        else:
            inflater.feed(chunk, out, max_bytes)
    if inflater is not None:
        inflater.finish(out, max_bytes)
    return bytes(out)


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


def bad_location(exc: httpx.RequestError) -> str | None:
    """The reason when httpx refused a redirect's ``Location`` header (it reads it on every
    3xx, followed or not): the server's fault, not the network's. None for any other error."""
    text = str(exc)
    if isinstance(exc, httpx.RemoteProtocolError) and "location header" in text.lower():
        return text[:_MAX_DETAIL]
    return None


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
        # The path may hold the endpoint's key (`/v2/<key>`): shown as redact_url shows it.
        path = urlsplit(redact_url(str(response.request.url))).path
        raise bad_answer(
            f"answer to {path} is not JSON", service=service, endpoint=endpoint
        ) from exc
