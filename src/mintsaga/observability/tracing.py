"""OpenTelemetry tracing: the provider, its exporters, and Temporal's interceptor.

    OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318   spans exported by OTLP over HTTP
                                                        (the exporter reads the standard
                                                        OTEL_EXPORTER_OTLP_* variables)
    MINTSAGA_TRACE_CONSOLE=1                            spans printed to stderr as JSON
    neither                                             the API's no-op provider: no cost

`interceptors()` goes on every `Client.connect` (worker and starter): Temporal's
`TracingInterceptor` makes spans for starting a workflow, running it and each activity, and
carries the context through the workflow's headers, so the spans of one mint form one trace.
`observability.calls` adds a span per dependency call below the activity's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Interceptor
from temporalio.contrib.opentelemetry import TracingInterceptor

from mintsaga.setting_readers import SettingsError

TRACER_NAME = "mintsaga"
ENDPOINT_SETTING = "OTEL_EXPORTER_OTLP_ENDPOINT"
CONSOLE_SETTING = "MINTSAGA_TRACE_CONSOLE"


def tracer() -> trace.Tracer:
    """The product's tracer (a proxy until a provider is installed, so import order is free)."""
    return trace.get_tracer(TRACER_NAME)


def interceptors() -> list[Interceptor]:
    """For `Client.connect(interceptors=...)`: spans for client calls, workflows, activities."""
    return [TracingInterceptor()]


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise SettingsError(f"{name}: {raw!r} is not a boolean (use 1 or 0)")


def sdk_provider(service_name: str = "mintsaga") -> TracerProvider:
    """The global SDK provider, installed on first use (OpenTelemetry allows only one)."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    trace.set_tracer_provider(provider)
    return provider


def configure_tracing(service_name: str, env: Mapping[str, str] | None = None) -> bool:
    """Install the exporters the environment asks for; False when it asks for none.

    Raises SettingsError naming a malformed setting.
    """
    env = os.environ if env is None else env
    endpoint = env.get(ENDPOINT_SETTING, "").strip()
    console = _flag(env, CONSOLE_SETTING)
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(
                f"{ENDPOINT_SETTING}: expected the collector's http(s) URL "
                "(OTLP over HTTP, e.g. http://127.0.0.1:4318)"
            )
    if not endpoint and not console:
        return False
    provider = sdk_provider(service_name)
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if console:
        # stderr: the starter's stdout ends with its JSON answer.
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    return True


def install_memory_exporter() -> InMemorySpanExporter:
    """Keep every finished span in memory (tests): `.get_finished_spans()`, `.clear()`."""
    exporter = InMemorySpanExporter()
    sdk_provider().add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def shutdown_tracing() -> None:
    """Flush and stop the exporters (before `exit_now`, which skips atexit handlers)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()
