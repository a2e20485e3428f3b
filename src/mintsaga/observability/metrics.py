"""The Prometheus metric catalogue, and the worker's `/metrics` endpoint.

Every metric the product exports is defined here, in the default registry, so other modules
import and set them (`record_*` and `set_*` below) and dashboards and alert rules have one list
to read. Label values never carry secrets: endpoints are `redact_url` forms or names.

    mintsaga_requests_total{service,endpoint,outcome,classification}  one per dependency call
    mintsaga_request_duration_seconds{service,endpoint}                its latency (histogram)
    mintsaga_activity_retries_total{activity,service}                  an activity attempt > 1
    mintsaga_failovers_total{service}                                  moved on to a backup
    mintsaga_gateway_checks_total{gateway,result}                      public gateways, post-mint
    mintsaga_breaker_state{breaker}                                    0 closed, 1 half-open, 2 open
    mintsaga_breaker_transitions_total{breaker,from_state,to_state}
    mintsaga_db_pool_connections{state}                                in_use | idle | max
    mintsaga_mints{status}                                             from Temporal visibility
    mintsaga_oldest_awaiting_operator_seconds                          since its wait began
    mintsaga_admission_queued, mintsaga_admission_held                 from Postgres, fleet-wide
    mintsaga_task_queue_backlog{task_queue}                            approximate, from the server
    mintsaga_task_queue_capacity                                       TASK_QUEUE_CAPACITY
    mintsaga_task_priorities_supported                                 1: the server honours them
    mintsaga_system_wallet_lamports
    mintsaga_health_up{check,target}, mintsaga_health_latency_seconds{check,target}
    mintsaga_rpc_slot_lag{endpoint}                                    set by the health checks
    mintsaga_rpc_endpoint_unusable_total{endpoint,reason,method}       an endpoint that cannot
                                                                       serve a call (401, -32011...)
    mintsaga_webhook_backlog, mintsaga_webhook_oldest_pending_seconds  pending, fleet-wide
    mintsaga_webhook_failed                                            deliveries given up
    mintsaga_webhook_attempts_total{endpoint,outcome}                  delivered | failed | gone

`serve_metrics(port)` serves the registry over HTTP (a thread of the process); the Temporal
SDK's own metrics join it through `observability.temporal_metrics`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mintsaga.observability.readiness import start_http_server  # /metrics, /healthz, /readyz
from mintsaga.setting_readers import SettingsError

# `*_created` series double every counter for nothing a dashboard uses.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it untyped

# Dependency latencies range from a local database round trip to a confirmation wait.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

OUTCOMES = ("success", "failure")
CLASSIFICATIONS = ("", "transient", "rate_limited", "permanent", "needs_operator", "unclassified")
MINT_STATUSES = ("QUEUED", "IN_PROGRESS", "AWAITING_OPERATOR", "MINTED", "ROLLED_BACK", "FAILED")
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}

REQUESTS = Counter(
    "mintsaga_requests_total",
    "Calls to a dependency, by outcome and failure classification",
    ["service", "endpoint", "outcome", "classification"],
)
REQUEST_DURATION = Histogram(
    "mintsaga_request_duration_seconds",
    "Latency of calls to a dependency (failures included)",
    ["service", "endpoint"],
    buckets=LATENCY_BUCKETS,
)
ACTIVITY_RETRIES = Counter(
    "mintsaga_activity_retries_total",
    "Activity attempts after the first, by activity and the service its step leans on",
    ["activity", "service"],
)
FAILOVERS = Counter(
    "mintsaga_failovers_total",
    "Calls moved on to the next endpoint or provider after a retryable failure",
    ["service"],
)
GATEWAY_CHECKS = Counter(
    "mintsaga_gateway_checks_total",
    "Post-mint reads of a CID through a public IPFS gateway (reported, never blocking a mint):"
    " served (its verified content) or not_served",
    ["gateway", "result"],
)
BREAKER_STATE = Gauge(
    "mintsaga_breaker_state",
    "Circuit breaker state as read: 0 closed, 1 half-open, 2 open",
    ["breaker"],
)
BREAKER_TRANSITIONS = Counter(
    "mintsaga_breaker_transitions_total",
    "Circuit breaker state changes (closed->open is a trip, half_open->closed a recovery)",
    ["breaker", "from_state", "to_state"],
)
MINTS = Gauge(
    "mintsaga_mints",
    "Mints by MintStatus (QUEUED, IN_PROGRESS and AWAITING_OPERATOR: running ones only), "
    "counted from Temporal visibility",
    ["status"],
)
OLDEST_AWAITING_OPERATOR = Gauge(
    "mintsaga_oldest_awaiting_operator_seconds",
    "How long the running mint that has waited longest for an operator has waited (since its"
    " wait began, not since the mint started); 0 when none waits",
)
ADMISSION_QUEUED = Gauge(
    "mintsaga_admission_queued",
    "Mints waiting at admission (MINT_ADMISSION_LIMIT reached): rows of mint_admission_queue,"
    " fleet-wide, from Postgres",
)
ADMISSION_HELD = Gauge(
    "mintsaga_admission_held",
    "Mints between claim and pivot (stage INITIATED, IPFS_UPLOADED or DATABASE_UPDATED),"
    " fleet-wide, from Postgres: what MINT_ADMISSION_LIMIT bounds",
)
COLLECTION_MEMBERS = Gauge(
    "mintsaga_collection_members",
    "Mints of each collection (the key `collection create` gave): minted, or minting (claimed,"
    " not rolled back, not minted yet), fleet-wide, from Postgres",
    ["collection", "state"],
)
COLLECTION_MAX_SIZE = Gauge(
    "mintsaga_collection_max_size",
    "Each collection's max size (its TokenGroup's): a mint past it is refused at its claim",
    ["collection"],
)
TASK_QUEUE_CAPACITY = Gauge(
    "mintsaga_task_queue_capacity",
    "TASK_QUEUE_CAPACITY as this worker is configured: the backlog the task queue alerts"
    " compare with",
)
TASK_PRIORITIES_SUPPORTED = Gauge(
    "mintsaga_task_priorities_supported",
    "1 when the Temporal server honours task priorities (Priority.priority_key) by default,"
    " 0 when it does not or its version is unknown (observability/temporal_features.py)",
)
TASK_QUEUE_BACKLOG = Gauge(
    "mintsaga_task_queue_backlog",
    "Approximate backlog (workflow and activity tasks) of the worker's task queue",
    ["task_queue"],
)
SYSTEM_WALLET_LAMPORTS = Gauge(
    "mintsaga_system_wallet_lamports",
    "Lamports held by the system wallet (the fee payer)",
)
WALLET_SPEND_RESERVED = Counter(
    "mintsaga_wallet_spend_reserved_lamports_total",
    "Lamports reserved from the system wallet's hourly budget before signing (the most each"
    " signed transaction can take)",
)
SPEND_BREAKER_REFUSALS = Counter(
    "mintsaga_spend_breaker_refusals_total",
    "Signatures refused because the system wallet's last hour of spend would pass"
    " SOLANA_SPEND_LIMIT_SOL_PER_HOUR",
)
WALLET_SPEND_WINDOW = Gauge(
    "mintsaga_wallet_spend_window_lamports",
    "The system wallet's reservations of the last hour, fleet-wide, as this worker last read them",
)
WALLET_SPEND_LIMIT = Gauge(
    "mintsaga_wallet_spend_limit_lamports",
    "SOLANA_SPEND_LIMIT_SOL_PER_HOUR in lamports, as this worker applies it",
)
FINALIZATION_TIMEOUTS = Counter(
    "mintsaga_solana_finalization_timeouts_total",
    "Confirmation waits (SOLANA_COMMITMENT=finalized) that saw the transaction confirmed and"
    " not finalized within their time (FinalizationTimeout: the next attempt waits on)",
)
HEALTH_UP = Gauge(
    "mintsaga_health_up",
    "Result of the last health check: 1 ok, 0 failing",
    ["check", "target"],
)
HEALTH_LATENCY = Gauge(
    "mintsaga_health_latency_seconds",
    "Latency of the last health check",
    ["check", "target"],
)
IPFS_SINGLE_PROVIDER_CIDS = Gauge(
    "mintsaga_ipfs_single_provider_cids",
    "CIDs of live or minted mints held by one provider only: uploaded to the backup (kubo)"
    " while Pinata failed, not yet pinned on Pinata by the pin repair (set by its scan)",
    ["provider"],
)
PIN_REPAIRS = Counter(
    "mintsaga_pin_repairs_total",
    "CIDs the pin repair handled, by outcome: already_pinned, repinned, released (compensated:"
    " not pinned), claimed, kubo_failed, cid_mismatch",
    ["outcome"],
)
RPC_SLOT_LAG = Gauge(
    "mintsaga_rpc_slot_lag",
    "Slots an RPC endpoint is behind the highest one",
    ["endpoint"],
)
RPC_ENDPOINT_UNUSABLE = Counter(
    "mintsaga_rpc_endpoint_unusable_total",
    "Calls an RPC endpoint could not serve whatever the request (reason: unauthorized, forbidden,"
    " not_found, too_large, method_not_found, no_history); the call moved on to the next endpoint",
    ["endpoint", "reason", "method"],
)
RPC_PANIC_CALLS = Counter(
    "mintsaga_rpc_panic_calls_total",
    "Calls sent to an RPC endpoint whose circuit opened by itself: fewer than half of the"
    " endpoints were healthy (panic routing), or every healthy one failed the call (last"
    " resort); the pool never stalls on its own breakers",
    ["endpoint"],
)
RPC_EMERGENCY_CALLS = Counter(
    "mintsaga_rpc_emergency_calls_total",
    "Calls sent to an emergency RPC endpoint (SOLANA_EMERGENCY_ENDPOINTS, the spec's Emergency"
    " Local Node): every normal endpoint was open, forced open, unable to serve the call or"
    " failed it",
    ["endpoint"],
)

RPC_BUDGET_WAITS = Counter(
    "mintsaga_rpc_budget_waits_total",
    "Calls that waited because no RPC endpoint had room in its request budget (the plan's"
    " limit, SOLANA_RPC_REQUESTS_PER_S / SOLANA_RPC_SENDS_PER_S, or slowed by 429s); endpoint:"
    " the one whose room came first",
    ["endpoint", "method"],
)
RPC_THROTTLED = Counter(
    "mintsaga_rpc_throttled_total",
    "HTTP 429 / rate-limit answers from an RPC endpoint; each halves its request budget (AIMD)",
    ["endpoint", "method"],
)

WEBHOOK_BACKLOG = Gauge(
    "mintsaga_webhook_backlog",
    "Webhook deliveries pending (not yet answered 2xx nor given up), fleet-wide",
)
WEBHOOK_OLDEST_PENDING = Gauge(
    "mintsaga_webhook_oldest_pending_seconds",
    "Age of the oldest pending webhook delivery; 0 when none",
)
WEBHOOK_FAILED = Gauge(
    "mintsaga_webhook_failed",
    "Webhook deliveries given up (failed), waiting for `mintsaga webhooks retry`",
)
WEBHOOK_ATTEMPTS = Counter(
    "mintsaga_webhook_attempts_total",
    "Webhook delivery attempts by this worker, by outcome (delivered, failed: tried again or"
    " given up, gone: 410)",
    ["endpoint", "outcome"],
)

# -- recording ---------------------------------------------------------------------------------


def record_request(
    service: str, endpoint: str, *, outcome: str, classification: str, latency_s: float
) -> None:
    """One call to a dependency (`observability.calls` does this for every guarded call)."""
    REQUESTS.labels(service, endpoint, outcome, classification).inc()
    REQUEST_DURATION.labels(service, endpoint).observe(max(0.0, latency_s))


def record_spend(
    *, reserved_lamports: int, window_lamports: int, limit_lamports: int, granted: bool
) -> None:
    """A reservation of the spend breaker (`db/wallet_spend.py`), granted or refused."""
    if granted:
        WALLET_SPEND_RESERVED.inc(reserved_lamports)
    else:
        SPEND_BREAKER_REFUSALS.inc()
    WALLET_SPEND_WINDOW.set(window_lamports)
    WALLET_SPEND_LIMIT.set(limit_lamports)


def record_pin_repair(outcome: str) -> None:
    PIN_REPAIRS.labels(outcome).inc()


def record_finalization_timeout() -> None:
    """A confirmation wait saw its transaction confirmed, never finalized (activities/solana.py)."""
    FINALIZATION_TIMEOUTS.inc()


def record_failover(service: str) -> None:
    """A call moved on from a failed endpoint (or provider) to the next one."""
    FAILOVERS.labels(service).inc()


def record_gateway_check(gateway: str, *, served: bool) -> None:
    """A public gateway's post-mint read of a CID (ipfs/gateways.py `report_public`)."""
    GATEWAY_CHECKS.labels(gateway, "served" if served else "not_served").inc()


def record_endpoint_unusable(endpoint: str, reason: str, method: str) -> None:
    """An endpoint answered that it cannot serve `method` (solana/rpc.py's pool moved on)."""
    RPC_ENDPOINT_UNUSABLE.labels(endpoint, reason, method).inc()


def record_panic_call(endpoint: str) -> None:
    """A call went to an open endpoint because too few were healthy (solana/rpc.py)."""
    RPC_PANIC_CALLS.labels(endpoint).inc()


def record_emergency_call(endpoint: str) -> None:
    """A call went to an emergency endpoint: no normal one could answer it (solana/rpc.py)."""
    RPC_EMERGENCY_CALLS.labels(endpoint).inc()


def record_budget_wait(endpoint: str, method: str) -> None:
    """A call waited for room in an endpoint's request budget (solana/rpc.py)."""
    RPC_BUDGET_WAITS.labels(endpoint, method).inc()


def record_throttled(endpoint: str, method: str) -> None:
    """An endpoint answered a call with a rate limit (429): its budget halves."""
    RPC_THROTTLED.labels(endpoint, method).inc()


def record_activity_attempt(activity: str, service: str, attempt: int) -> None:
    """An activity attempt started; attempts after the first are retries."""
    if attempt > 1:
        ACTIVITY_RETRIES.labels(activity, service).inc()


def breaker_state_value(state: object) -> int:
    """`BreakerState` (or its string) -> the gauge's number."""
    return BREAKER_STATES[str(state)]


def record_breaker_state(name: str, state: object) -> None:
    BREAKER_STATE.labels(name).set(breaker_state_value(state))


def record_breaker_transition(name: str, old: object, new: object, reason: str = "") -> None:
    """A `resilience.breaker.TransitionHook`: `BreakerRegistry(on_transition=...)`."""
    BREAKER_TRANSITIONS.labels(name, str(old), str(new)).inc()
    record_breaker_state(name, new)


def set_health(check: str, target: str, *, up: bool, latency_s: float | None = None) -> None:
    """The last result of one health check (`target`: an endpoint's redacted URL or a name)."""
    HEALTH_UP.labels(check, target).set(1 if up else 0)
    if latency_s is not None:
        HEALTH_LATENCY.labels(check, target).set(latency_s)


def set_slot_lag(endpoint: str, lag: int) -> None:
    RPC_SLOT_LAG.labels(endpoint).set(lag)


def set_mints(counts: dict[str, int], *, oldest_awaiting_s: float | None) -> None:
    for status, count in counts.items():
        MINTS.labels(status).set(count)
    OLDEST_AWAITING_OPERATOR.set(oldest_awaiting_s or 0.0)


def set_collection(key: str, *, minted: int, minting: int, max_size: int) -> None:
    COLLECTION_MEMBERS.labels(key, "minted").set(minted)
    COLLECTION_MEMBERS.labels(key, "minting").set(minting)
    COLLECTION_MAX_SIZE.labels(key).set(max_size)


def set_admission(*, queued: int, held: int) -> None:
    ADMISSION_QUEUED.set(queued)
    ADMISSION_HELD.set(held)


def set_task_queue_capacity(capacity: int) -> None:
    TASK_QUEUE_CAPACITY.set(capacity)


def set_task_priorities_supported(supported: bool) -> None:
    TASK_PRIORITIES_SUPPORTED.set(1 if supported else 0)


def set_backlog(task_queue: str, backlog: int) -> None:
    TASK_QUEUE_BACKLOG.labels(task_queue).set(backlog)


def set_webhook_backlog(*, pending: int, oldest_pending_s: float, failed: int) -> None:
    WEBHOOK_BACKLOG.set(pending)
    WEBHOOK_OLDEST_PENDING.set(oldest_pending_s)
    WEBHOOK_FAILED.set(failed)


def record_webhook_attempt(endpoint: str, outcome: str) -> None:
    """One delivery attempt (mintsaga.webhooks); ``endpoint`` in ``endpoint_name`` form."""
    WEBHOOK_ATTEMPTS.labels(endpoint, outcome).inc()


def set_wallet_lamports(lamports: int) -> None:
    SYSTEM_WALLET_LAMPORTS.set(lamports)


# -- the database pool, read when scraped --------------------------------------------------------


class SizedPool(Protocol):
    """What asyncpg's `Pool` offers for utilisation."""

    def get_size(self) -> int: ...
    def get_idle_size(self) -> int: ...
    def get_max_size(self) -> int: ...
    def is_closing(self) -> bool: ...


class _PoolCollector(Collector):
    """`mintsaga_db_pool_connections{state}` summed over the watched pools at scrape time."""

    def __init__(self) -> None:
        self._pools: list[SizedPool] = []  # asyncpg's Pool cannot be weakly referenced
        self._lock = threading.Lock()

    def watch(self, pool: SizedPool) -> None:
        with self._lock:
            self._pools.append(pool)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "mintsaga_db_pool_connections",
            "Database pool connections: in_use, idle, and the pool's max",
            labels=["state"],
        )
        with self._lock:  # a closed pool is dropped at the next scrape
            self._pools = pools = [pool for pool in self._pools if not pool.is_closing()]
        if pools:
            size = sum(pool.get_size() for pool in pools)
            idle = sum(pool.get_idle_size() for pool in pools)
            family.add_metric(["in_use"], size - idle)
            family.add_metric(["idle"], idle)
            family.add_metric(["max"], sum(pool.get_max_size() for pool in pools))
        yield family


_POOLS = _PoolCollector()
REGISTRY.register(_POOLS)


def watch_pool(pool: SizedPool) -> None:
    """Report this pool's utilisation until it is closed."""
    _POOLS.watch(pool)


# -- the endpoint --------------------------------------------------------------------------------


@dataclass
class MetricsServer:
    """The running `/metrics` endpoint (every path but `/healthz` and `/readyz` answers with
    the exposition)."""

    host: str
    port: int
    _server: Any

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        global _serving
        self._server.shutdown()
        self._server.server_close()
        if _serving is self:
            _serving = None


_serving: MetricsServer | None = None


def serve_metrics(port: int, *, host: str = "0.0.0.0") -> MetricsServer:
    """Serve the registry on `host:port` (0: any free port, see `.port`) in a daemon thread,
    with the worker's `/healthz` and `/readyz` beside it (observability/readiness.py).

    Raises SettingsError naming `METRICS_PORT` when the port cannot be bound.
    """
    global _serving
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as exc:
        raise SettingsError(
            f"METRICS_PORT: cannot listen on {host}:{port} ({exc.strerror or exc})"
        ) from exc
    _serving = MetricsServer(host=host, port=server.server_port, _server=server)
    return _serving


def serving() -> bool:
    """Whether this process serves `/metrics` (the periodic samplers run only then)."""
    return _serving is not None


def render() -> str:
    """The exposition text, as a scrape would get it."""
    return generate_latest(REGISTRY).decode()


def sample_value(name: str, labels: dict[str, str] | None = None) -> float | None:
    """One sample's current value from the registry (None when absent): for tests and tools."""
    return REGISTRY.get_sample_value(name, labels or {})
