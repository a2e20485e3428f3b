"""The resilience layer's hooks, as a worker runs them (`mintsaga.resilience.guard.GuardHooks`).

The guard is plain Python; here it gets what it needs from Temporal (an activity attempt's
deadline, and its heartbeat while a call every circuit refuses waits inside the attempt) and
from observability (a span and request metrics per guarded call, breaker state gauges).
"""

from __future__ import annotations

from mintsaga.activities.heartbeat import attempt_time_left, keep_alive
from mintsaga.observability.calls import observed_call, record_http_call
from mintsaga.observability.metrics import record_breaker_state
from mintsaga.resilience import guard


def install_call_hooks() -> None:
    """Give the resilience layer what it needs from Temporal and from observability: an
    activity attempt's deadline and heartbeat (a call every circuit refuses waits inside its
    attempt), and the spans and metrics of every guarded call and breaker."""
    guard.install(
        guard.GuardHooks(
            time_left=attempt_time_left,
            keep_alive=keep_alive,
            observe_call=observed_call,
            observe_http=record_http_call,
            observe_breaker=record_breaker_state,
        )
    )
