"""Metrics, traces and logs: pure checks of each piece, then one real mint on the devstack
read back from the in-memory span exporter, the `/metrics` endpoint over HTTP and the JSON log
lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from temporalio import activity, workflow
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    BUFFERED_METRIC_KIND_GAUGE,
    BUFFERED_METRIC_KIND_HISTOGRAM,
)

import mintsaga
import mintsaga.worker as worker
from devstack.config import StackConfig
from devstack.requests import mint_request
from mintsaga.errors import redact_url
from mintsaga.observability import logging as obs_logging
from mintsaga.observability import metrics
from mintsaga.observability.calls import http_status_kind
from mintsaga.observability.sampler import mint_query, sample_backlog, sample_mints
from mintsaga.observability.temporal_metrics import TemporalMetricsCollector
from mintsaga.observability.tracing import configure_tracing, install_memory_exporter
from mintsaga.resilience.breaker import BreakerConfig, BreakerRegistry
from mintsaga.setting_readers import SettingsError
from mintsaga.settings import Settings
from mintsaga.workflows.models import MintStatus
from tests.saga_support import add_fault, fault_first, running_worker, settings_for

OBS_QUEUE = "observability-tests"

# -- pure pieces -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, None),
        (204, None),
        (None, "transient"),
        (500, "transient"),
        (503, "transient"),
        (408, "transient"),
        (429, "rate_limited"),
        (401, "needs_operator"),
        (403, "needs_operator"),
        (400, "permanent"),
        (404, "permanent"),
    ],
)
def test_an_http_answer_is_classified_like_the_clients_do(status: int | None, kind: str | None):
    got = http_status_kind(status)
    assert (None if got is None else str(got)) == kind


def _minimal_env(tmp_path: Any, **extra: str) -> dict[str, str]:
    keypair = tmp_path / "wallet.json"
    keypair.write_text("[]")
    return {
        "DATABASE_URL": "postgresql://u:pw@127.0.0.1:1/x",
        "SOLANA_RPC_ENDPOINTS": "http://127.0.0.1:1",
        "PINATA_JWT": "jwt",
        "KUBO_API_URL": "http://127.0.0.1:2",
        "PINATA_REQUESTS_PER_MINUTE": "60",
        "IPFS_GATEWAYS": "http://127.0.0.1:3",
        "MINT_KEY_SEED": "00" * 32,
        "MINT_AUTHORITY_KEYPAIR": str(keypair),
        "MINT_UPDATE_AUTHORITY": "none",
        **extra,
    }


def test_metrics_port_is_off_by_default_and_a_bad_one_is_named(tmp_path: Any) -> None:
    assert Settings.from_env(_minimal_env(tmp_path)).metrics_port == 0
    assert Settings.from_env(_minimal_env(tmp_path, METRICS_PORT="9464")).metrics_port == 9464
    for bad in ("http", "-1", "70000"):
        with pytest.raises(SettingsError, match="METRICS_PORT"):
            Settings.from_env(_minimal_env(tmp_path, METRICS_PORT=bad))


def test_a_bad_log_format_or_trace_setting_is_named() -> None:
    with pytest.raises(SettingsError, match="LOG_FORMAT"):
        obs_logging.log_format({"LOG_FORMAT": "xml"})
    assert obs_logging.log_format({}) == "text"
    with pytest.raises(SettingsError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        configure_tracing("t", {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"})
    with pytest.raises(SettingsError, match="MINTSAGA_TRACE_CONSOLE"):
        configure_tracing("t", {"MINTSAGA_TRACE_CONSOLE": "maybe"})
    assert configure_tracing("t", {}) is False  # nothing asked for: the no-op provider stays


@contextlib.contextmanager
def _logging_configured(env: dict[str, str], stream: io.StringIO) -> Iterator[None]:
    """`configure_logging` for one test; the session's logging is put back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    on_message = activity.logger.activity_info_on_message, workflow.logger.workflow_info_on_message
    obs_logging.configure_logging(env, stream=stream)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        activity.logger.activity_info_on_message = on_message[0]
        workflow.logger.workflow_info_on_message = on_message[1]


def test_the_redaction_guard_removes_secrets_in_both_formats() -> None:
    jwt, seed, password = "eyJhbGciOi.secret-jwt.sig", "ab" * 32, "hunter2-pw"
    env = {
        "PINATA_JWT": jwt,
        "MINT_KEY_SEED": seed,
        "DATABASE_URL": f"postgresql://mint:{password}@db:5432/mintsaga",
    }
    for fmt in ("text", "json"):
        record = logging.LogRecord(
            "t", logging.WARNING, __file__, 1, "jwt %s seed %s dsn %s", None, None
        )
        record.args = (jwt, seed, env["DATABASE_URL"])
        record.endpoint = f"https://user:{password}@rpc.example/v2/{'k' * 20}?api-key=x"
        record.headers = {"Authorization": "Bearer abc.def.ghi"}
        stream = io.StringIO()
        with _logging_configured({**env, "LOG_FORMAT": fmt}, stream):
            logging.getLogger().handlers[0].handle(record)
        line = stream.getvalue()
        for secret in (jwt, seed, password, "abc.def.ghi", "api-key", "k" * 20):
            assert secret not in line, (fmt, line)
        if fmt == "json":
            parsed = json.loads(line)
            assert parsed["endpoint"] == "https://rpc.example/v2/***"
            assert parsed["level"] == "WARNING" and "jwt ***" in parsed["message"]


@dataclass
class _Metric:
    name: str
    kind: int
    description: str = "d"
    unit: str | None = None


@dataclass
class _Update:
    metric: _Metric
    value: float
    attributes: dict[str, Any] = field(default_factory=dict)


def test_temporal_sdk_metrics_are_folded_into_prometheus_families() -> None:
    requests = _Metric("temporal_request", BUFFERED_METRIC_KIND_COUNTER)
    slots = _Metric("temporal_worker_task_slots_available", BUFFERED_METRIC_KIND_GAUGE)
    latency = _Metric("temporal_request_latency", BUFFERED_METRIC_KIND_HISTOGRAM, unit="s")
    collector = TemporalMetricsCollector(buffer=None)  # type: ignore[arg-type]
    collector.add(
        [
            _Update(requests, 1, {"operation": "StartWorkflow"}),
            _Update(requests, 2, {"operation": "StartWorkflow"}),
            _Update(slots, 5, {"worker_type": "ActivityWorker"}),
            _Update(slots, 3, {"worker_type": "ActivityWorker"}),
            _Update(latency, 0.02),
            _Update(latency, 7.0),
        ]
    )
    collector.drain = lambda: None  # type: ignore[method-assign]
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collector.collect()
        for s in family.samples
    }
    assert samples[("temporal_request_total", (("operation", "StartWorkflow"),))] == 3
    assert (
        samples[("temporal_worker_task_slots_available", (("worker_type", "ActivityWorker"),))] == 3
    )
    assert samples[("temporal_request_latency_count", ())] == 2
    assert samples[("temporal_request_latency_bucket", (("le", "0.025"),))] == 1
    assert samples[("temporal_request_latency_bucket", (("le", "10.0"),))] == 2
    assert samples[("temporal_request_latency_sum", ())] == pytest.approx(7.02)


def test_breaker_transitions_set_the_state_gauge_and_count() -> None:
    now = [0.0]
    registry = BreakerRegistry(
        clock=lambda: now[0], on_transition=metrics.record_breaker_transition
    )
    breaker = registry.get("unit-breaker", BreakerConfig(open_s=5, consecutive_failures=2))
    for _ in range(2):
        breaker.record_failure()
    assert metrics.sample_value("mintsaga_breaker_state", {"breaker": "unit-breaker"}) == 2
    now[0] = 6.0
    assert breaker.state == "half_open"
    assert metrics.sample_value("mintsaga_breaker_state", {"breaker": "unit-breaker"}) == 1
    labels = {"breaker": "unit-breaker", "from_state": "closed", "to_state": "open"}
    assert metrics.sample_value("mintsaga_breaker_transitions_total", labels) == 1


def test_visibility_queries_count_only_running_unfinished_mints() -> None:
    assert mint_query("MINTED") == 'WorkflowType="MintSaga" AND MintStatus="MINTED"'
    assert mint_query("AWAITING_OPERATOR").endswith('AND ExecutionStatus="Running"')


# -- one real mint, seen through every channel ------------------------------------------------


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = install_memory_exporter()
    yield exporter
    exporter.shutdown()


@pytest.fixture
def metrics_endpoint() -> Iterator[metrics.MetricsServer]:
    server = metrics.serve_metrics(0, host="127.0.0.1")
    yield server
    server.close()


@pytest.fixture
def json_logs(stack: StackConfig) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    with _logging_configured({**stack.worker_env(), "LOG_FORMAT": "json"}, stream):
        yield stream


async def _scrape(server: metrics.MetricsServer) -> dict[str, list[tuple[dict[str, str], float]]]:
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(server.url)).text
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def _value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str):
    return sum(
        value
        for got, value in samples.get(name, [])
        if all(got.get(key) == want for key, want in labels.items())
    )


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


@pytest.mark.integration
async def test_a_mint_with_faults_shows_in_spans_metrics_and_logs(
    stack: StackConfig,
    spans: InMemorySpanExporter,
    metrics_endpoint: metrics.MetricsServer,
    json_logs: io.StringIO,
) -> None:
    settings = settings_for(stack, METRICS_PORT=str(metrics_endpoint.port))
    client = await worker.connect_temporal(settings)  # tracing interceptor, SDK metrics runtime
    breakers = BreakerRegistry(on_transition=metrics.record_breaker_transition)
    solana_1 = redact_url(stack.url("solana-1"))
    spans.clear()
    # The primary RPC endpoint is down for the whole mint; both IPFS providers fail the first
    # attempt of the uploads (a retry of the activity), then Pinata alone for the rest.
    add_fault(stack, target="solana-1", kind="down")
    upload_faults = fault_first(
        stack,
        {"target": "pinata", "kind": "status", "status": 503, "match": "/pinning/pinFile"},
        {
            "target": "kubo",
            "kind": "status",
            "status": 503,
            "match": "/api/v0/add",
            "duration_ms": 700,
        },
    )
    request = mint_request(stack)
    async with running_worker(
        stack, client, OBS_QUEUE, breakers=breakers, wrap={"upload_assets": upload_faults}
    ):
        handle = await mintsaga.start_mint(client, request, queue=OBS_QUEUE)
        result = await handle.result()
        assert result.status == MintStatus.MINTED
        counts = await sample_mints(client)
        for _ in range(50):  # visibility may lag the workflow's completion a little
            if counts["MINTED"] >= 1:
                break
            await asyncio.sleep(0.1)
            counts = await sample_mints(client)
        backlog = await sample_backlog(client, OBS_QUEUE)
        scraped = await _scrape(metrics_endpoint)

    # -- spans: the workflow's and activities' from the interceptor, ours below them
    finished = spans.get_finished_spans()
    names = {span.name for span in finished}
    for expected in (
        "StartWorkflow:MintSaga",
        "RunWorkflow:MintSaga",
        "StartActivity:admit_mint",
        "RunActivity:admit_mint",
        "RunActivity:upload_assets",
    ):
        assert expected in names, sorted(names)
    start = next(s for s in finished if s.name == "StartWorkflow:MintSaga")
    # The mint's calls, all in the trace its start began (the wallet sampler has its own).
    calls = [
        s
        for s in finished
        if "mintsaga.service" in _attrs(s) and s.context.trace_id == start.context.trace_id
    ]
    by_service = {_attrs(s)["mintsaga.service"] for s in calls}
    assert {"solana", "pinata", "kubo", "gateway", "postgres"} <= by_service
    for span in calls:
        attrs = _attrs(span)
        assert attrs["mintsaga.outcome"] in ("success", "failure", "cancelled")
        assert isinstance(attrs.get("mintsaga.attempt"), int)  # every call ran in an activity
        assert "://" not in attrs["mintsaga.endpoint"] or attrs["mintsaga.endpoint"] == redact_url(
            attrs["mintsaga.endpoint"]
        )
    run_claim = next(s for s in finished if s.name == "RunActivity:admit_mint")
    db_calls = [s for s in calls if _attrs(s)["mintsaga.service"] == "postgres"]
    assert any(s.parent and s.parent.span_id == run_claim.context.span_id for s in db_calls)
    assert all("@" not in _attrs(s)["mintsaga.endpoint"] for s in db_calls)
    down = [s for s in calls if _attrs(s)["mintsaga.endpoint"] == solana_1]
    assert down and _attrs(down[0])["mintsaga.outcome"] == "failure"
    assert _attrs(down[0])["mintsaga.classification"] == "transient"
    assert any(
        _attrs(s)["mintsaga.service"] == "pinata"
        and _attrs(s)["mintsaga.classification"] == "transient"
        and _attrs(s).get("http.response.status_code") == 503
        for s in calls
    )
    assert any(
        _attrs(s)["mintsaga.service"] == "kubo" and _attrs(s)["mintsaga.outcome"] == "success"
        for s in calls
    )
    metadata_runs = {s.context.span_id for s in finished if s.name == "RunActivity:upload_assets"}
    attempts = {
        _attrs(s)["mintsaga.attempt"]
        for s in calls
        if s.parent is not None and s.parent.span_id in metadata_runs
    }
    assert attempts >= {1, 2}  # the activity's retry, seen in its calls' spans
    secrets = (stack.pinata_jwt, stack.worker_env()["MINT_KEY_SEED"])
    for span in finished:
        flat = json.dumps(_attrs(span), default=str) + span.name
        assert not any(secret in flat for secret in secrets)

    # -- metrics, scraped over HTTP
    for service in ("solana", "pinata", "kubo", "gateway", "postgres"):
        assert _value(scraped, "mintsaga_requests_total", service=service, outcome="success") > 0
        assert _value(scraped, "mintsaga_request_duration_seconds_count", service=service) > 0
    assert (
        _value(
            scraped,
            "mintsaga_requests_total",
            service="solana",
            endpoint=solana_1,
            outcome="failure",
            classification="transient",
        )
        >= 3
    )
    assert (
        _value(
            scraped,
            "mintsaga_requests_total",
            service="pinata",
            outcome="failure",
            classification="transient",
        )
        >= 1
    )
    assert _value(scraped, "mintsaga_failovers_total", service="solana") >= 1
    assert _value(scraped, "mintsaga_failovers_total", service="ipfs") >= 1
    assert (
        _value(
            scraped,
            "mintsaga_activity_retries_total",
            activity="upload_assets",
            service="ipfs",
        )
        >= 1
    )
    assert _value(scraped, "mintsaga_breaker_state", breaker=solana_1) == 2  # open
    assert (
        _value(
            scraped,
            "mintsaga_breaker_transitions_total",
            breaker=solana_1,
            from_state="closed",
            to_state="open",
        )
        == 1
    )
    pool = {labels["state"]: value for labels, value in scraped["mintsaga_db_pool_connections"]}
    assert pool["max"] >= settings.db_pool_max and pool["idle"] + pool["in_use"] > 0
    assert _value(scraped, "mintsaga_system_wallet_lamports") > 0
    assert counts["MINTED"] >= 1
    assert _value(scraped, "mintsaga_mints", status="MINTED") == counts["MINTED"]
    assert backlog >= 0 and "mintsaga_task_queue_backlog" in scraped
    assert any(name.startswith("temporal_") for name in scraped)  # the SDK's own metrics

    # -- JSON logs: one object per line, the mint bound, no secret
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines() if line.strip()]
    mine = [line for line in lines if line.get("mint_id") == request.mint_id]
    assert mine, lines[-5:]
    assert all(line["workflow_id"] == f"mint-{request.mint_id}" for line in mine)
    failover = [line for line in mine if "failing over to kubo" in line["message"]]
    assert failover and failover[0]["stage"] == "upload_assets"
    assert failover[0]["endpoint"] == redact_url(stack.url("pinata"))
    text = json_logs.getvalue()
    assert not any(secret in text for secret in secrets)
