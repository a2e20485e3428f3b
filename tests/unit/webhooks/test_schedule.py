"""The retry schedule and what each answer means (pure: no clock, no server)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from mintsaga.webhooks.schedule import (
    DEFAULT_SCHEDULE,
    RetrySchedule,
    outcome_of,
    retry_after_s,
)

EXACT = RetrySchedule(jitter=0.0)


def test_delays_double_from_5_s_to_an_hour() -> None:
    rng = random.Random(1)
    delays = [EXACT.delay_s(n, rng=rng) for n in range(1, 14)]
    assert delays[:11] == [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600]
    assert delays[11:] == [3600, 3600]
    assert EXACT.delay_s(10_000, rng=rng) == 3600  # no overflow for a long-failing delivery


def test_a_day_of_attempts_on_the_default_schedule() -> None:
    # Attempt times (no jitter) within the day after the notice: the first 10 within 43 min,
    # then hourly; about 33 in all.
    rng = random.Random(0)
    at, times, n = 0.0, [0.0], 1
    while True:
        at += EXACT.delay_s(n, rng=rng)
        if at >= DEFAULT_SCHEDULE.give_up_after.total_seconds():
            break
        times.append(at)
        n += 1
    assert times[:7] == [0, 5, 15, 35, 75, 155, 315]
    assert 30 <= len(times) <= 36


def test_jitter_stays_within_its_bounds_and_varies() -> None:
    rng = random.Random(7)
    seen = [DEFAULT_SCHEDULE.delay_s(3, rng=rng) for _ in range(500)]
    assert min(seen) >= 20 * 0.8 and max(seen) <= 20 * 1.2
    assert max(seen) - min(seen) > 4  # it does spread the retries


def test_retry_after_is_honoured_when_longer_and_capped_at_the_maximum() -> None:
    rng = random.Random(0)
    assert EXACT.delay_s(1, retry_after=30, rng=rng) == 30
    assert EXACT.delay_s(5, retry_after=1, rng=rng) == 80  # shorter: the backoff stands
    assert EXACT.delay_s(1, retry_after=86_400, rng=rng) == 3600


def test_retry_after_header_forms() -> None:
    now = datetime(2026, 12, 3, 22, 0, 0, tzinfo=UTC)
    assert retry_after_s("120") == 120
    assert retry_after_s("Thu, 03 Dec 2026 22:01:30 GMT", now=now) == 90
    assert retry_after_s("Thu, 03 Dec 2026 21:00:00 GMT", now=now) == 0
    assert retry_after_s("soon") is None
    assert retry_after_s(None) is None


@pytest.mark.parametrize(
    ("status", "delivered", "stop", "throttled"),
    [
        (200, True, False, False),
        (204, True, False, False),
        (299, True, False, False),
        (301, False, False, False),  # redirects are failures, not followed
        (400, False, False, False),
        (404, False, False, False),
        (410, False, True, False),  # Gone: stop sending
        (429, False, False, True),
        (500, False, False, False),
        (502, False, False, True),
        (503, False, False, False),
        (504, False, False, True),
        (None, False, False, False),  # no answer
    ],
)
def test_what_each_answer_means(
    status: int | None, delivered: bool, stop: bool, throttled: bool
) -> None:
    outcome = outcome_of(status)
    assert (outcome.delivered, outcome.stop, outcome.throttled) == (delivered, stop, throttled)


def test_a_schedule_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="first_delay_s"):
        RetrySchedule(first_delay_s=10, max_delay_s=5)
    with pytest.raises(ValueError, match="jitter"):
        RetrySchedule(jitter=1.0)
    with pytest.raises(ValueError, match="give_up_after"):
        RetrySchedule(give_up_after=timedelta(0))
