"""When a webhook delivery is tried again, and which answers end it: pure logic, no I/O.

The Standard Webhooks specification (https://github.com/standard-webhooks/standard-webhooks,
spec/standard-webhooks.md, "Deliverability and reliability") recommends "a retry schedule
spanning multiple days, with an exponential backoff" and "some level of random jitter to
retries to prevent cases where the failures are due to recurring load caused by the webhook
attempts themselves". Ours, for a day (issue 17):

    attempt 1 now; after a failed attempt n: 5 s * 2**(n-1), capped at 1 h, times a jitter
    in [0.8, 1.2]; a Retry-After (429, 503, ...) is honoured when longer (capped at 1 h); the
    last attempt falls at the notice's time + 24 h, after which the delivery is failed (given
    up) and shown by `mintsaga webhooks list --state failed` until an operator retries it.

That is attempts at about 0, 5, 15, 35, 75, 155, 315 s, ... then hourly: 33 in the day.

Answers ("Delivery success and failure" in the spec):

- 2xx: delivered.
- 3xx: a failure; redirects are not followed ("it's therefore recommended to update the webhook
  URL instead").
- 410 Gone: "the server [is] no longer interested in receiving webhooks from this source.
  Sender should disable the webhook endpoint": the delivery fails at once, no retry (the
  endpoint stays configured: remove it from WEBHOOK_URL; each later notice gets one attempt).
- 429, 502, 504: throttling; the backoff above, and Retry-After when sent.
- everything else, timeouts and connection errors: a failure, tried again on the schedule.
"""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = [
    "DEFAULT_SCHEDULE",
    "Outcome",
    "RetrySchedule",
    "outcome_of",
    "retry_after_s",
]


@dataclass(frozen=True, kw_only=True)
class RetrySchedule:
    """The backoff between attempts of one delivery, and how long a delivery is tried."""

    first_delay_s: float = 5.0
    max_delay_s: float = 3600.0
    give_up_after: timedelta = timedelta(days=1)
    jitter: float = 0.2  # each delay times a factor in [1 - jitter, 1 + jitter]

    def __post_init__(self) -> None:
        if not 0 < self.first_delay_s <= self.max_delay_s:
            raise ValueError("RetrySchedule: need 0 < first_delay_s <= max_delay_s")
        if not 0 <= self.jitter < 1:
            raise ValueError("RetrySchedule: jitter must be in [0, 1)")
        if self.give_up_after <= timedelta(0):
            raise ValueError("RetrySchedule: give_up_after must be positive")

    def delay_s(
        self, failed_attempts: int, *, retry_after: float | None = None, rng: random.Random
    ) -> float:
        """The pause after the ``failed_attempts``-th failed attempt (1 for the first)."""
        base = self.first_delay_s * float(2 ** max(0, min(failed_attempts - 1, 30)))
        delay = min(base, self.max_delay_s) * rng.uniform(1 - self.jitter, 1 + self.jitter)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_delay_s))
        return delay


DEFAULT_SCHEDULE = RetrySchedule()


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    stop: bool  # no further attempt (410 Gone)
    throttled: bool  # 429, 502, 504: the receiver asks us to slow down


def outcome_of(status: int | None) -> Outcome:
    """What an answer means (None: no answer: a timeout, a refused connection)."""
    if status is not None and 200 <= status < 300:
        return Outcome(delivered=True, stop=False, throttled=False)
    if status == 410:
        return Outcome(delivered=False, stop=True, throttled=False)
    return Outcome(delivered=False, stop=False, throttled=status in (429, 502, 504))


def retry_after_s(value: str | None, *, now: datetime | None = None) -> float | None:
    """A Retry-After header (RFC 9110 10.2.3: delay-seconds or an HTTP-date) in seconds."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
