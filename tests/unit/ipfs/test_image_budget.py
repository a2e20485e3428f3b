"""ByteBudget, the worker's memory budget for images in flight, and ImageLoader holding it:
the cap while loading, the image's size while the caller keeps the bytes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from mintsaga.errors import ServiceError
from mintsaga.ipfs.images import ByteBudget, ImageLoader

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"png-body"


async def waiters(budget: ByteBudget, count: int) -> None:
    """Let the other tasks run until `count` holds wait for room (they do at once)."""
    for _ in range(100):
        if budget.waiting >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{budget.waiting} holds wait, not {count}")


async def test_holds_within_the_capacity_do_not_wait() -> None:
    budget = ByteBudget(100)
    async with budget.hold(60), budget.hold(40):
        assert budget.held == 100
    assert budget.held == 0


async def test_a_hold_that_does_not_fit_waits_for_a_release() -> None:
    budget = ByteBudget(100)
    order: list[str] = []
    first_in = asyncio.Event()
    release_first = asyncio.Event()

    async def first() -> None:
        async with budget.hold(70):
            first_in.set()
            order.append("first in")
            await release_first.wait()
        order.append("first out")

    async def second() -> None:
        await first_in.wait()
        async with budget.hold(70):
            order.append("second in")

    tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
    await first_in.wait()
    await waiters(budget, 1)
    assert order == ["first in"] and budget.held == 70
    release_first.set()
    await asyncio.gather(*tasks)
    assert order == ["first in", "first out", "second in"]
    assert budget.held == 0


async def test_first_come_first_served() -> None:
    budget = ByteBudget(100)
    order: list[int] = []
    big = budget.hold(100)
    await big.__aenter__()

    async def take(size: int) -> None:
        async with budget.hold(size):
            order.append(size)

    large = asyncio.create_task(take(90))
    await waiters(budget, 1)
    small = asyncio.create_task(take(5))  # fits beside 90, but comes after it
    await waiters(budget, 2)
    await big.__aexit__(None, None, None)
    await asyncio.gather(large, small)
    assert order[0] == 90


async def test_a_hold_larger_than_the_budget_waits_for_all_of_it() -> None:
    budget = ByteBudget(10)
    async with budget.hold(1000) as held:
        assert held.size == 10 and budget.held == 10


async def test_shrink_releases_what_is_not_needed() -> None:
    budget = ByteBudget(100)
    async with budget.hold(100) as held:
        held.shrink(30)
        assert budget.held == 30
        async with budget.hold(70):
            assert budget.held == 100
        held.shrink(50)  # never grows
        assert held.size == 30
    assert budget.held == 0


async def test_a_cancelled_wait_gives_nothing_away() -> None:
    budget = ByteBudget(100)
    async with budget.hold(100):
        waiter = asyncio.create_task(budget.hold(50).__aenter__())
        await waiters(budget, 1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert budget.waiting == 0
    assert budget.held == 0


async def test_the_loader_holds_the_cap_while_loading_then_the_image_size(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    budget = ByteBudget(1000)
    seen: list[int] = []

    async def resolver(host: str, port: int) -> list[str]:
        seen.append(budget.held)  # while loading
        return ["93.184.216.34"]

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=PNG, headers={"Content-Type": "image/png"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        loader = ImageLoader(tmp_path, http, max_bytes=400, budget=budget, resolver=resolver)
        async with loader.loaded({"url": "https://cdn.example/a.png"}) as image:
            assert seen == [400]
            assert budget.held == len(image.data) == len(PNG)
        assert budget.held == 0
        async with loader.loaded({"path": "a.png"}):
            assert budget.held == len(PNG)
        assert (await loader.load({"path": "a.png"})).data == PNG
        assert budget.held == 0


async def test_a_refused_image_releases_its_hold(tmp_path: Path) -> None:
    budget = ByteBudget(1000)
    async with httpx.AsyncClient() as http:
        loader = ImageLoader(tmp_path, http, max_bytes=400, budget=budget)
        with pytest.raises(ServiceError, match=r"image\.path"):
            await loader.load({"path": "missing.png"})
    assert budget.held == 0


async def test_loads_beyond_the_budget_wait_their_turn() -> None:
    budget = ByteBudget(800)  # two loads of a 400-byte cap at once
    in_flight = 0
    most = 0
    gate = asyncio.Event()

    async def resolver(host: str, port: int) -> list[str]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await gate.wait()
        in_flight -= 1
        return ["93.184.216.34"]

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=PNG, headers={"Content-Type": "image/png"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        loader = ImageLoader(None, http, max_bytes=400, budget=budget, resolver=resolver)
        loads = [
            asyncio.create_task(loader.load({"url": f"https://cdn.example/{i}.png"}))
            for i in range(5)
        ]
        await waiters(budget, 3)
        assert in_flight == 2
        gate.set()
        images = await asyncio.gather(*loads)
    assert most == 2 and all(image.data == PNG for image in images)
    assert budget.held == 0
