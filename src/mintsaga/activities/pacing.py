"""When the next attempt of a failed activity runs: the spec's backoff, computed here because
Temporal's server adds no jitter.

Per step service (the `service` column of workflows/policies.py): base * 2^(attempt-1), capped,
plus the service's jitter; never sooner than the provider's `Retry-After` (or an open circuit's
half-open time); stretched when the service's recent success rate drops (adaptive backoff);
and held at the cap once retries exceed the service's retry budget, so a storm of failures
cannot multiply the load on a struggling provider. The worker keeps one `RetryPacing`.
"""

from __future__ import annotations

from mintsaga.errors import ServiceError
from mintsaga.resilience.backoff import (
    BACKOFF_BY_SERVICE,
    IPFS_BACKOFF,
    AdaptiveBackoff,
    RetryBudget,
    retry_delay,
)


class RetryPacing:
    """Adaptive backoff and a retry budget per service, for one worker process."""

    def __init__(self) -> None:
        self._adaptive = {service: AdaptiveBackoff() for service in BACKOFF_BY_SERVICE}
        self._budget = {service: RetryBudget() for service in BACKOFF_BY_SERVICE}

    def record(self, service: str, *, success: bool) -> None:
        if service in self._adaptive:
            self._adaptive[service].record(success)
            self._budget[service].record_request()

    def delay_s(self, service: str, exc: ServiceError, attempt: int) -> float:
        backoff = BACKOFF_BY_SERVICE.get(service, IPFS_BACKOFF)
        stretch = self._adaptive[service].stretch() if service in self._adaptive else 1.0
        budget = self._budget.get(service)
        if budget is not None and not budget.can_retry():
            # Over budget: wait as long as the policy ever waits.
            return retry_delay(
                backoff, attempt, retry_after_s=max(backoff.cap_s, exc.retry_after or 0)
            )
        if budget is not None:
            budget.record_retry()
        return retry_delay(backoff, attempt, retry_after_s=exc.retry_after, stretch=stretch)


PACING = RetryPacing()
