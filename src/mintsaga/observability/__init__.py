"""Seeing what the worker does: Prometheus metrics, OpenTelemetry traces, structured logs.

- `observability.metrics`: the metric catalogue and the `/metrics` endpoint (`METRICS_PORT`).
- `observability.readiness`: `/healthz` and `/readyz` beside it; `observability.probe` asks them
  from the command line (the container image's HEALTHCHECK).
- `observability.temporal_metrics`: the Temporal SDK's own metrics, drained into the same
  registry.
- `observability.calls`: one span and one set of samples per call to a dependency (used by
  `resilience.guard`, the choke point every client call passes).
- `observability.sampler`: the periodic samples (mints by status, queue backlog, wallet balance).
- `observability.tracing`: the tracer provider, its exporters and Temporal's interceptor.
- `observability.logging`: JSON log lines with the mint bound, and the redaction guard.
"""
