"""One span and one set of samples per call to a dependency.

`resilience.guard` calls these for every call a client makes (Solana RPC, Pinata, Kubo, the
gateways, Postgres), so nothing else needs instrumenting. Each call gets:

- a CLIENT span named `<service> <operation>` (or `<service>`), child of the activity's span,
  with `mintsaga.service`, `mintsaga.endpoint` (redacted), `mintsaga.attempt` (the activity's
  attempt, when in one), `mintsaga.outcome` (success | failure | cancelled),
  `mintsaga.classification` (the `ServiceError` kind; "" on success) and `mintsaga.error_code`;
- `mintsaga_requests_total` and `mintsaga_request_duration_seconds` samples.

Error messages are not copied into spans, only the classified code and kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from temporalio import activity

from mintsaga.errors import ErrorKind, ServiceError, redact_url
from mintsaga.observability.metrics import record_request
from mintsaga.observability.tracing import tracer

UNCLASSIFIED = "unclassified"  # an exception no client classified (a bug, not the service)


def endpoint_label(service: str, endpoint: str | None) -> str:
    """A URL's redacted form, a name as is, or the service when there is neither."""
    if not endpoint:
        return service
    return redact_url(endpoint) if "://" in endpoint else endpoint


def _attempt() -> int | None:
    return activity.info().attempt if activity.in_activity() else None


def _start_attributes(service: str, endpoint: str) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {
        "mintsaga.service": service,
        "mintsaga.endpoint": endpoint,
    }
    attempt = _attempt()
    if attempt is not None:
        attributes["mintsaga.attempt"] = attempt
    return attributes


def _finish(span: Span, outcome: str, classification: str, code: str | None = None) -> None:
    span.set_attribute("mintsaga.outcome", outcome)
    span.set_attribute("mintsaga.classification", classification)
    if code:
        span.set_attribute("mintsaga.error_code", code)
    if outcome == "failure":
        span.set_status(Status(StatusCode.ERROR, f"{code or classification}"))


@contextlib.contextmanager
def observed_call(
    service: str, endpoint: str | None, operation: str | None = None
) -> Iterator[None]:
    """Around one call: a span, and its outcome counted with its latency when it ends."""
    label = endpoint_label(service, endpoint)
    name = f"{service} {operation}" if operation else service
    started = time.monotonic()
    with tracer().start_as_current_span(
        name,
        kind=SpanKind.CLIENT,
        attributes=_start_attributes(service, label),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        except ServiceError as exc:
            _finish(span, "failure", str(exc.kind), exc.code)
            record_request(
                service,
                label,
                outcome="failure",
                classification=str(exc.kind),
                latency_s=time.monotonic() - started,
            )
            raise
        except asyncio.CancelledError:
            _finish(span, "cancelled", "")  # the caller gave up: says nothing of the service
            raise
        except BaseException as exc:
            _finish(span, "failure", UNCLASSIFIED, type(exc).__name__)
            record_request(
                service,
                label,
                outcome="failure",
                classification=UNCLASSIFIED,
                latency_s=time.monotonic() - started,
            )
            raise
        _finish(span, "success", "")
        latency_s = time.monotonic() - started
        record_request(service, label, outcome="success", classification="", latency_s=latency_s)


def http_status_kind(status: int | None) -> ErrorKind | None:
    """How an HTTP answer classifies (None: a success). No answer at all is transient."""
    if status is None or status == 408 or status >= 500:
        return ErrorKind.TRANSIENT
    if status == 429:
        return ErrorKind.RATE_LIMITED
    if status in (401, 403):
        return ErrorKind.NEEDS_OPERATOR  # a credential only an operator can fix
    if status >= 400:
        return ErrorKind.PERMANENT
    return None


def record_http_call(
    service: str,
    endpoint: str | None,
    status: int | None,
    latency_s: float,
    operation: str | None = None,
) -> None:
    """A call already made (`status`: None when no answer came): its span and samples."""
    label = endpoint_label(service, endpoint)
    name = f"{service} {operation}" if operation else service
    kind = http_status_kind(status)
    outcome, classification = ("success", "") if kind is None else ("failure", str(kind))
    span = tracer().start_span(
        name,
        kind=SpanKind.CLIENT,
        attributes=_start_attributes(service, label),
        start_time=time.time_ns() - int(max(0.0, latency_s) * 1e9),
    )
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    code = None if kind is None else ("NoAnswer" if status is None else f"HTTP {status}")
    _finish(span, outcome, classification, code)
    span.end()
    record_request(
        service, label, outcome=outcome, classification=classification, latency_s=latency_s
    )
