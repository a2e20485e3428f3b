"""The Temporal SDK's own metrics (`temporal_*`), in the same registry as ours.

The SDK's core records into a `MetricBuffer` (`temporal_runtime()` builds the `Runtime` that
the worker's client uses); a collector drains it every second and at each scrape, keeping
counters as totals, gauges as their last value and histograms in fixed buckets, so one
`/metrics` endpoint carries both. Durations are in seconds.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import REGISTRY
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    BUFFERED_METRIC_KIND_GAUGE,
    BufferedMetricUpdate,
    MetricBuffer,
    MetricBufferDurationFormat,
    Runtime,
    TelemetryConfig,
)

log = logging.getLogger("mintsaga.metrics")

BUFFER_SIZE = 100_000  # updates between drains; the SDK drops (and logs) past this
DRAIN_INTERVAL_S = 1.0
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

Labels = tuple[tuple[str, str], ...]


@dataclass
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        self.buckets[bisect.bisect_left(BUCKETS, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*BUCKETS, float("inf")), self.buckets, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


@dataclass
class _Family:
    kind: int
    help: str
    series: dict[Labels, float | _Histogram] = field(default_factory=dict)


def _labels(attributes: Mapping[str, object]) -> Labels:
    return tuple(sorted((str(k), str(v)) for k, v in attributes.items()))


class TemporalMetricsCollector(Collector):
    """Aggregates a `MetricBuffer`'s updates into Prometheus families."""

    def __init__(self, buffer: MetricBuffer) -> None:
        self._buffer = buffer
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}

    def add(self, updates: list[BufferedMetricUpdate]) -> None:
        with self._lock:
            for update in updates:
                metric = update.metric
                family = self._families.get(metric.name)
                if family is None:
                    unit = f" ({metric.unit})" if metric.unit else ""
                    family = _Family(metric.kind, (metric.description or metric.name) + unit)
                    self._families[metric.name] = family
                key = _labels(update.attributes)
                if family.kind == BUFFERED_METRIC_KIND_COUNTER:
                    current = family.series.get(key, 0.0)
                    assert isinstance(current, float | int)
                    family.series[key] = current + update.value
                elif family.kind == BUFFERED_METRIC_KIND_GAUGE:
                    family.series[key] = float(update.value)
                else:
                    histogram = family.series.setdefault(key, _Histogram())
                    assert isinstance(histogram, _Histogram)
                    histogram.observe(float(update.value))

    def drain(self) -> None:
        self.add(list(self._buffer.retrieve_updates()))

    def collect(self) -> Iterator[Metric]:
        self.drain()
        with self._lock:
            families = [(n, f.kind, f.help, dict(f.series)) for n, f in self._families.items()]
        for name, kind, help_text, series in families:
            names = sorted({k for labels in series for k, _ in labels})
            if kind == BUFFERED_METRIC_KIND_COUNTER:
                family: Metric = CounterMetricFamily(name, help_text, labels=names)
            elif kind == BUFFERED_METRIC_KIND_GAUGE:
                family = GaugeMetricFamily(name, help_text, labels=names)
            else:
                family = HistogramMetricFamily(name, help_text, labels=names)
            for labels, value in series.items():
                given = dict(labels)
                values = [given.get(k, "") for k in names]
                if isinstance(value, _Histogram):
                    assert isinstance(family, HistogramMetricFamily)
                    family.add_metric(values, value.cumulative(), value.total)
                else:
                    family.add_metric(values, value)  # type: ignore[attr-defined]
            yield family


_runtime: Runtime | None = None
_collector: TemporalMetricsCollector | None = None


def temporal_runtime() -> Runtime:
    """The process's `Runtime` whose metrics land in our registry (created once).

    Pass it as `Client.connect(..., runtime=temporal_runtime())`.
    """
    global _runtime, _collector
    if _runtime is None:
        buffer = MetricBuffer(BUFFER_SIZE, MetricBufferDurationFormat.SECONDS)
        _runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
        _collector = TemporalMetricsCollector(buffer)
        REGISTRY.register(_collector)
        threading.Thread(
            target=_drain_forever, args=(_collector,), name="temporal-metrics", daemon=True
        ).start()
    return _runtime


def _drain_forever(collector: TemporalMetricsCollector) -> None:
    while True:
        time.sleep(DRAIN_INTERVAL_S)
        try:
            collector.drain()
        except Exception:
            log.exception("draining the Temporal SDK's metrics failed")
