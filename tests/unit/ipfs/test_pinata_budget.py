"""Pinata's limits, product side (issue 16), pure logic: the /data/* budget, the plan settings,
"not pinned" on unpin, and the devstack's plan buckets (devstack.ipfs.limits)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from devstack.ipfs.limits import DATA, GENERAL, PLANS, PinataLimits, PlanError, plan_named
from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.ipfs.pinata import PinataClient, not_pinned
from mintsaga.ipfs.pinata_data import JITTER_S, DataBudget
from mintsaga.setting_readers import SettingsError
from mintsaga.settings import Settings
from mintsaga.worker_tuning import (
    PINATA_HEADROOM,
    PINATA_REQUESTS_PER_ACTIVITY,
    WorkerTuning,
    pinata_activities_per_second,
    pinata_limits_from_env,
)
from tests.unit.solana.settings_env import settings_env

# -- the /data/* budget -----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_data_budget_admits_its_limit_in_any_sliding_minute() -> None:
    clock = Clock()
    budget = DataBudget(3, clock=clock)
    for _ in range(3):
        assert budget.wait_s() == 0
        budget.take()
        clock.now += 10
    # Three sent at +0, +10, +20: the next fits once the first has left (+60) plus the jitter.
    assert budget.wait_s() == pytest.approx(60 + JITTER_S - 30)
    clock.now = 1000 + 60 + JITTER_S
    assert budget.wait_s() == 0


def test_a_429_holds_the_data_budget_for_its_retry_after() -> None:
    clock = Clock()
    budget = DataBudget(30, clock=clock)
    budget.hold(12)
    assert budget.wait_s() == pytest.approx(12)
    clock.now += 12
    assert budget.wait_s() == 0
    budget.hold(0)  # a Retry-After of 0 still holds a second
    assert budget.wait_s() == pytest.approx(1)


async def test_acquire_waits_for_room_or_refuses_a_wait_longer_than_allowed() -> None:
    budget = DataBudget(1)
    await budget.acquire(0)
    with pytest.raises(ServiceError) as refused:
        await budget.acquire(5.0, endpoint="http://pinata")
    assert refused.value.code == "PinataDataBudget"
    assert refused.value.kind is ErrorKind.RATE_LIMITED
    assert refused.value.retry_after is not None and refused.value.retry_after > 55
    assert "PINATA_DATA_REQUESTS_PER_MINUTE" in refused.value.message
    held = DataBudget(5)
    held.hold(1.0)
    started = asyncio.get_running_loop().time()
    await held.acquire(3.0)  # waits the second out, then takes its place
    assert asyncio.get_running_loop().time() - started >= 0.9
    assert held.waits == 1


def test_a_budget_needs_a_positive_limit() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        DataBudget(0)


# -- settings ----------------------------------------------------------------------------------


def test_the_plan_limit_is_required_and_drives_the_pinata_queue_rate(tmp_path: Path) -> None:
    env = settings_env(tmp_path)
    del env["PINATA_REQUESTS_PER_MINUTE"]
    with pytest.raises(SettingsError, match="PINATA_REQUESTS_PER_MINUTE is not set"):
        Settings.from_env(env)
    for plan, rpm in (("free", 60), ("picnic", 250), ("fiesta", 500)):
        settings = Settings.from_env(settings_env(tmp_path, PINATA_REQUESTS_PER_MINUTE=str(rpm)))
        assert settings.pinata_requests_per_minute == rpm, plan
        assert settings.pinata_data_requests_per_minute == 30  # Pinata's, on every plan
        assert settings.tuning.pinata_activities_per_second == pinata_activities_per_second(rpm)
    # PINATA_ACTIVITIES_PER_SECOND still overrides what the plan allows.
    pinned = settings_env(tmp_path, PINATA_ACTIVITIES_PER_SECOND="0.25")
    assert Settings.from_env(pinned).tuning.pinata_activities_per_second == 0.25


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PINATA_REQUESTS_PER_MINUTE", "0"),
        ("PINATA_REQUESTS_PER_MINUTE", "sixty"),
        ("PINATA_DATA_REQUESTS_PER_MINUTE", "0"),
        ("PINATA_DATA_REQUESTS_PER_MINUTE", "1.5"),
    ],
)
def test_a_bad_plan_setting_is_refused_by_name(variable: str, value: str) -> None:
    env = {"PINATA_REQUESTS_PER_MINUTE": "60", variable: value}
    with pytest.raises(SettingsError, match=variable):
        pinata_limits_from_env(env)


def test_the_queue_rate_keeps_the_worst_mix_inside_each_plan() -> None:
    """The lean saga's Pinata activities: upload_assets two requests (image and metadata),
    release_pins two: a mint rolled back after its uploads averages
    PINATA_REQUESTS_PER_ACTIVITY (2) over its two, a minted one over its one."""
    assert PINATA_REQUESTS_PER_ACTIVITY == (2 + 2) / 2 == 2 / 1
    for plan in ("free", "picnic", "fiesta"):
        rpm = plan_named(plan).requests_per_minute
        rate = pinata_activities_per_second(rpm)
        assert rate * 60 * PINATA_REQUESTS_PER_ACTIVITY <= rpm * PINATA_HEADROOM + 0.1
    assert WorkerTuning.from_env({}, pinata_requests_per_minute=250).pinata_activities_per_second
    assert pinata_activities_per_second(60) == pytest.approx(0.4)


# -- "not pinned" on unpin --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body"),
    [
        # The common form (what the devstack answers).
        (
            400,
            '{"error":{"reason":"CURRENT_USER_HAS_NOT_PINNED_CID",'
            '"details":"The current user has not pinned the cid: QmX"}}',
        ),
        # With a message beside them.
        (
            400,
            '{"error":{"reason":"CURRENT_USER_HAS_NOT_PINNED_CID","details":"x","message":"y"}}',
        ),
        # The older string form (dappnode/DAppNodeSDK#136).
        (400, '{"error":"Current user has not pinned hash: QmX"}'),
        # A 404 saying so; a reason in another case.
        (404, '{"error":{"reason":"current_user_has_not_pinned_cid"}}'),
        (400, "The current user has not pinned the cid: QmX"),  # not JSON at all
    ],
)
def test_each_reported_not_pinned_form_is_recognised(status: int, body: str) -> None:
    assert not_pinned(status, body)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, '{"error":{"reason":"CURRENT_USER_HAS_NOT_PINNED_CID"}}'),  # about us, not it
        (500, '{"error":{"reason":"CURRENT_USER_HAS_NOT_PINNED_CID"}}'),
        (400, '{"error":{"reason":"INVALID_HASH","details":"not a CID"}}'),
        (404, "Not Found"),  # a wrong URL says nothing about the pin
        (429, '{"error":{"reason":"RATE_LIMITED"}}'),
    ],
)
def test_other_answers_are_not_taken_for_not_pinned(status: int, body: str) -> None:
    assert not not_pinned(status, body)


# -- the devstack's plans (devstack.ipfs.limits) -----------------------------------------------


def test_the_devstack_plans_are_pinatas_documented_limits() -> None:
    assert {n: (p.requests_per_minute, p.data_requests_per_minute) for n, p in PLANS.items()} == {
        "free": (60, 30),
        "picnic": (250, 30),
        "fiesta": (500, 30),
        "legacy": (180, 30),
        "unlimited": (0, 0),
    }
    with pytest.raises(PlanError, match="unknown Pinata plan"):
        plan_named("platinum")


def test_data_routes_have_their_own_bucket_and_every_request_is_counted() -> None:
    clock = Clock()
    limits = PinataLimits(plan="free", clock=clock, wall_clock=lambda: 5000.0)
    for _ in range(60):
        assert limits.admit("POST", "/pinning/pinFileToIPFS") is None
    refused = limits.admit("POST", "/pinning/pinFileToIPFS")
    assert refused is not None and refused.bucket == GENERAL and refused.limit == 60
    assert refused.wait_s == pytest.approx(60) and refused.reset_epoch_s == 5060
    # The general bucket is full, /data/* is not: it has its own 30.
    for _ in range(30):
        assert limits.admit("GET", "/data/testAuthentication") is None
    data = limits.admit("GET", "/data/pinList")
    assert data is not None and data.bucket == DATA and data.limit == 30
    limits.admit("DELETE", "/pinning/unpin/QmA")
    snapshot = limits.snapshot()
    assert snapshot["rate_limited"] == {GENERAL: 2, DATA: 1}
    assert snapshot["test_authentication_calls"] == 30
    assert snapshot["requests_by_route"] == {
        "DELETE /pinning/unpin/{cid}": 1,
        "GET /data/pinList": 1,
        "GET /data/testAuthentication": 30,
        "POST /pinning/pinFileToIPFS": 61,
    }
    assert limits.rejected == 3
    json.dumps(snapshot)  # the admin API's answer


def test_plans_switch_at_run_time_and_a_custom_limit_is_named_so() -> None:
    limits = PinataLimits(plan="free", clock=Clock())
    assert limits.set_plan("fiesta").requests_per_minute == 500
    assert (limits.plan_name, limits.requests_per_minute) == ("fiesta", 500)
    assert limits.set(42) == 500
    assert limits.plan_name == "custom"
    limits.set(250)
    assert limits.plan_name == "picnic"  # the limits of a named plan again
    limits.set_data(0)
    assert limits.data_requests_per_minute == 0 and limits.plan_name == "custom"
    assert all(limits.admit("GET", "/data/pinList") is None for _ in range(100))  # 0: none


# -- the pre-mint check's use of Pinata's last answer ------------------------------------------


async def test_a_refused_jwt_is_asked_again_while_a_fresh_answer_stands() -> None:
    import httpx

    from mintsaga.ipfs.pinata import PinataClient

    answers = [401, 200, 503]
    asked: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        status = answers.pop(0)
        return httpx.Response(status, json={"error": {"reason": "X", "details": "y"}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        pinata = PinataClient("http://pinata", "jwt", http, data_budget=DataBudget(30))
        with pytest.raises(ServiceError) as refused:
            await pinata.reachable()
        assert refused.value.kind is ErrorKind.NEEDS_OPERATOR
        await pinata.reachable()  # a refusal is not trusted: asked again, accepted now
        await pinata.reachable()  # that answer is fresh: nothing asked
        assert asked == ["/data/testAuthentication"] * 2
        with pytest.raises(ServiceError):  # that answer stale: asked, 503
            await pinata.reachable(fresh_s=0.0)
        with pytest.raises(ServiceError) as failing:  # and the 503 stands a while: not asked
            await pinata.reachable()
        assert failing.value.kind is ErrorKind.TRANSIENT
    assert asked == ["/data/testAuthentication"] * 3


async def test_a_cancelled_check_hands_the_checks_waiting_on_it_a_retryable_answer() -> None:
    asked = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        asked.set()
        await asyncio.sleep(3600)  # Pinata takes its time; the asking step is cancelled
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(hang)) as http:
        pinata = PinataClient("http://pinata", "jwt", http)
        first = asyncio.create_task(pinata.reachable())
        await asked.wait()
        second = asyncio.create_task(pinata.reachable())  # shares the check in flight
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        with pytest.raises(ServiceError) as waited:
            await second
    assert waited.value.code == "PinataCheckAbandoned" and waited.value.retryable
