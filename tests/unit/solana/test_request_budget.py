"""The request budget per endpoint and the shared status poll (issue 15).

solana/budget.py keeps a worker's calls within each endpoint's plan, counted the way providers
count (a sliding second), and slows down on 429s (AIMD); solana/status_poller.py serves every
pending mint's status from one batched call and one block height per round. Both are pure logic
with a clock; the pool's use of the budget runs over real sockets against small JSON-RPC servers
(tests/unit/solana/rpc_nodes.py), and on the devstack's rate-limited profile in
tests/integration/test_rate_limited.py.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from mintsaga.errors import ServiceError
from mintsaga.solana.budget import JITTER_S, MIN_RATE, EndpointBudget, RateWindow
from mintsaga.solana.rpc import BUDGET_EXHAUSTED, SolanaRpc
from mintsaga.solana.status_poller import MAX_SIGNATURES, StatusPoller
from tests.unit.solana.rpc_nodes import http, result, serving


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def admit_all(window: RateWindow, clock: Clock, seconds: float, step: float) -> list[float]:
    """Take every call the window admits, trying every `step` s for `seconds`: their times."""
    taken = []
    end = clock.now + seconds
    while clock.now < end:
        if window.wait_for() == 0:
            window.take()
            taken.append(clock.now)
        else:
            clock.now += step
    return taken


def most_in_any_second(times: list[float]) -> int:
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


def test_a_window_never_admits_more_than_its_limit_in_any_sliding_second() -> None:
    clock = Clock()
    window = RateWindow(10, clock=clock)
    taken = admit_all(window, clock, 5.0, 0.013)
    assert most_in_any_second(taken) == 10
    assert 45 <= len(taken) <= 51  # and it does admit that many


def test_a_limit_below_one_a_second_spaces_the_calls() -> None:
    clock = Clock()
    window = RateWindow(0.5, clock=clock)
    taken = admit_all(window, clock, 10.0, 0.1)
    gaps = [b - a for a, b in itertools.pairwise(taken)]
    assert len(taken) == 5 and min(gaps) >= 2.0 - 1e-9


def test_no_limit_admits_everything() -> None:
    window = RateWindow(None, clock=Clock())
    for _ in range(1000):
        assert window.wait_for() == 0
        window.take()


def test_a_429_halves_the_limit_and_holds_for_retry_after_then_it_grows_back() -> None:
    clock = Clock()
    window = RateWindow(10, clock=clock)
    window.throttled(retry_after=3.0)
    assert window.limit == 5
    assert window.wait_for() == pytest.approx(3.0)
    clock.now += 3.0
    assert window.wait_for() == 0
    window.throttled(retry_after=None)  # no Retry-After: held 1 s
    assert window.limit == 2.5 and window.wait_for() == pytest.approx(1.0)
    for _ in range(10):
        window.throttled(retry_after=0)
    assert window.limit == MIN_RATE  # never below a call every 2 s
    clock.now += 3.0
    window.succeeded()  # three seconds without a 429: +1 a second
    assert window.limit == MIN_RATE + 3
    clock.now += 60.0
    window.succeeded()
    assert window.limit == 10  # never above the plan


def test_an_unconfigured_endpoint_slows_down_on_a_429_and_is_unlimited_again_later() -> None:
    clock = Clock()
    window = RateWindow(None, clock=clock)
    for _ in range(8):
        window.take()
    window.throttled(retry_after=None)
    assert window.limit == 4  # half the rate it was refused at
    clock.now += 5.0
    window.succeeded()
    assert window.limit == 9
    clock.now += 10.0
    window.succeeded()
    assert window.limit is None  # past twice the refused rate: no limit again


def test_a_send_counts_in_both_windows_and_its_429_slows_the_sends_only() -> None:
    clock = Clock()
    budget = EndpointBudget.of(10, 1, clock=clock)
    budget.take("sendTransaction")
    assert budget.wait_for("sendTransaction") == pytest.approx(1.0 + JITTER_S)
    assert budget.wait_for("getSlot") == 0
    assert budget.requests.sent_last_second() == 1
    budget.throttled("sendTransaction", None)
    assert (budget.requests.limit, budget.sends.limit) == (10, MIN_RATE)
    assert budget.limited


# -- the pool keeps within the budget ------------------------------------------------------------


async def test_the_pool_spreads_calls_over_endpoints_by_their_room() -> None:
    async with serving(result(1), result(2)) as nodes:
        async with SolanaRpc(nodes.urls, requests_per_s=(2, 2)) as rpc:
            answers = [await rpc.call("getSlot", wait_for_budget=False) for _ in range(4)]
            assert answers == [1, 1, 2, 2]
            with pytest.raises(ServiceError) as exhausted:
                await rpc.call("getSlot", wait_for_budget=False)
        assert exhausted.value.code == BUDGET_EXHAUSTED
        assert exhausted.value.retry_after is not None and exhausted.value.retry_after <= 1.05
        assert len(nodes[0].seen) == len(nodes[1].seen) == 2  # nothing sent past the plan


async def test_a_call_waits_for_room_rather_than_exceed_the_plan() -> None:
    async with serving(result(1)) as nodes:
        async with SolanaRpc(nodes.urls, requests_per_s=(3,)) as rpc:
            for _ in range(7):
                assert await rpc.call("getSlot") == 1
        arrived = nodes[0].arrived
        assert most_in_any_second(arrived) <= 3
        assert arrived[-1] - arrived[0] >= 2.0  # 7 calls at 3 a second


async def test_a_429_moves_the_call_on_and_slows_that_endpoint() -> None:
    async with serving(http(429, "Too Many Requests"), result(2)) as nodes:
        async with SolanaRpc(nodes.urls) as rpc:
            assert await rpc.call("getSlot") == 2
            assert rpc.budget(0).requests.limit == MIN_RATE  # unconfigured: half of 1 a second
            assert rpc.budget(0).wait_for("getSlot") > 0  # held: the next call skips it
            assert await rpc.call("getSlot") == 2
        assert len(nodes[0].seen) == 1


# -- the shared status poll ----------------------------------------------------------------------


async def test_every_pending_wait_is_served_by_one_round() -> None:
    asked: list[list[str]] = []
    heights = 0

    async def statuses(signatures: list[str]) -> list[str]:
        asked.append(signatures)
        await asyncio.sleep(0.01)
        return [f"status of {s}" for s in signatures]

    async def height() -> int:
        nonlocal heights
        heights += 1
        return 77

    poller = StatusPoller(statuses, height, interval_s=0.05)
    signatures = [f"sig{i}" for i in range(MAX_SIGNATURES + 44)]
    answers = await asyncio.gather(*(poller.poll(s) for s in signatures))
    assert answers == [(f"status of {s}", 77) for s in signatures]
    assert [len(batch) for batch in asked] == [MAX_SIGNATURES, 44]  # two calls for 300
    assert heights == 1 and poller.rounds == 1
    again = await asyncio.gather(poller.poll("sig0"), poller.poll("sig0"))
    assert again == [("status of sig0", 77)] * 2
    assert poller.rounds == 2 and asked[-1] == ["sig0"]  # one signature asked once


async def test_a_failed_round_fails_its_waits_and_the_next_round_runs() -> None:
    calls = 0

    async def statuses(signatures: list[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("every endpoint failed")
        return ["ok" for _ in signatures]

    async def height() -> int:
        return 5

    poller = StatusPoller(statuses, height, interval_s=0.01)
    with pytest.raises(ValueError, match="every endpoint failed"):
        await poller.poll("a")
    assert await poller.poll("a") == ("ok", 5)


async def test_the_block_height_is_asked_only_when_a_status_needs_it() -> None:
    """Landed transactions need no expiry decision: a round of them asks no block height."""
    heights = 0

    async def statuses(signatures: list[str]) -> list[str]:
        return ["confirmed" if s.startswith("landed") else "unseen" for s in signatures]

    async def height() -> int:
        nonlocal heights
        heights += 1
        return 9

    poller = StatusPoller(statuses, height, interval_s=0.01, needs_height=lambda s: s == "unseen")
    assert await poller.poll("landed-1") == ("confirmed", None)
    assert heights == 0
    both = await asyncio.gather(poller.poll("landed-2"), poller.poll("pending"))
    assert both == [("confirmed", 9), ("unseen", 9)] and heights == 1


def test_a_plan_slower_than_one_call_in_two_seconds_is_kept_too() -> None:
    clock = Clock()
    window = RateWindow(0.2, clock=clock)
    taken = admit_all(window, clock, 21.0, 0.1)
    assert len(taken) == 5 and min(b - a for a, b in itertools.pairwise(taken)) >= 5.0 - 1e-9
    window.throttled(retry_after=0)
    assert window.limit == 0.2  # a 429 never raises the rate above the plan


def test_an_unlimited_window_forgets_old_calls_as_it_goes() -> None:
    clock = Clock()
    window = RateWindow(None, clock=clock)
    for _ in range(10_000):
        window.take()
        clock.now += 0.01
    assert window.sent_last_second() <= 101
    assert len(window._admitted) < 400  # not one entry per call for the worker's life


async def test_a_fresh_signature_is_asked_at_once_and_a_repeated_one_paced() -> None:
    """A one-at-a-time mint's first poll must not wait for the last mint's pace (the
    benchmark's lone mint spent 0.2 s there), while one signature is asked once a second."""
    asked: list[tuple[float, list[str]]] = []

    async def statuses(signatures: list[str]) -> list[str]:
        asked.append((time.monotonic(), list(signatures)))
        return ["unseen" for _ in signatures]

    async def height() -> int:
        return 1

    poller = StatusPoller(statuses, height, interval_s=1.0)
    began = time.monotonic()
    await poller.poll("a")
    await poller.poll("b")  # fresh: at once, though "a" was asked a moment ago
    assert time.monotonic() - began < 0.5
    await poller.poll("b")  # repeated: a second after its last ask
    assert asked[-1][0] - asked[-2][0] >= 1.0 - 0.01
    assert [names for _, names in asked] == [["a"], ["b"], ["b"]]
