"""What ``SolanaMinter.prepare`` keeps between calls: the rent per account size and the latest
blockhash (clients/solana_cache.py).

Requests are counted where they arrive: a 1 ms latency fault per endpoint, limited to one
JSON-RPC method, counts its hits on the devstack's servers. The minters run on a clock of the
test's own, so stepping past a window takes no waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from devstack.config import StackConfig
from mintsaga.errors import ServiceError
from mintsaga.solana.cache import SharedCache
from mintsaga.solana.minter import SolanaMinter
from mintsaga.solana.prepare import BLOCKHASH_REUSE_S, RENT_TTL_S
from mintsaga.solana.rpc import SolanaRpc
from tests.integration.test_solana_minter import (
    ENDPOINTS,
    add_fault,
    admin,
    assert_one_nft,
    fault_hits,
    fresh_mint_id,
    fresh_owner,
    funded_minter,
    prepare,
    wait_confirmed,
)


class FakeClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def count_requests(stack: StackConfig, method: str) -> Callable[[], int]:
    """How many ``method`` requests the endpoints have received since this call."""
    faults = [
        add_fault(stack, target=name, kind="latency", delay_ms=1, match=method)
        for name in ENDPOINTS
    ]
    return lambda: sum(fault_hits(stack, fault) for fault in faults)


def next_blockhash(stack: StackConfig) -> None:
    """A new slot now, so a fetch from here on answers another blockhash."""
    admin(stack, "POST", "/solana/warp", {"slots": 1})


@pytest.fixture
async def rpc(stack: StackConfig) -> AsyncIterator[SolanaRpc]:
    async with SolanaRpc([stack.url(name) for name in ENDPOINTS], timeout=2) as pool:
        yield pool


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def minter(rpc: SolanaRpc, clock: FakeClock) -> SolanaMinter:
    return await funded_minter(rpc, clock=clock)


# -- the blockhash ---------------------------------------------------------------------------


@pytest.mark.integration
async def test_prepares_within_the_window_share_one_blockhash_and_both_land(
    stack: StackConfig, minter: SolanaMinter, clock: FakeClock
) -> None:
    blockhashes = count_requests(stack, "getLatestBlockhash")
    slots = count_requests(stack, "getSlot")
    owner = fresh_owner()
    first = await prepare(minter, fresh_mint_id(), owner)
    next_blockhash(stack)
    clock.now += BLOCKHASH_REUSE_S - 0.01
    second = await prepare(minter, fresh_mint_id(), owner)

    assert second.blockhash == first.blockhash
    assert second.last_valid_block_height == first.last_valid_block_height
    assert blockhashes() == 1
    assert slots() == len(ENDPOINTS)  # one highest_slot_index: a getSlot per endpoint
    for signed in (first, second):  # two mints on one blockhash: both land
        assert await minter.send(signed.tx_base64) == signed.signature
        await wait_confirmed(minter, signed.signature)
        await assert_one_nft(minter, signed.mint_address, owner)


@pytest.mark.integration
async def test_after_the_window_a_new_blockhash_is_fetched(
    stack: StackConfig, minter: SolanaMinter, clock: FakeClock
) -> None:
    blockhashes = count_requests(stack, "getLatestBlockhash")
    first = await prepare(minter, fresh_mint_id(), fresh_owner())
    next_blockhash(stack)
    clock.now += BLOCKHASH_REUSE_S
    second = await prepare(minter, fresh_mint_id(), fresh_owner())

    assert blockhashes() == 2
    assert second.blockhash != first.blockhash
    assert second.last_valid_block_height > first.last_valid_block_height


@pytest.mark.integration
async def test_a_resign_always_fetches_a_fresh_blockhash_which_is_then_shared(
    stack: StackConfig, minter: SolanaMinter
) -> None:
    blockhashes = count_requests(stack, "getLatestBlockhash")
    owner = fresh_owner()
    first = await prepare(minter, fresh_mint_id(), owner)
    next_blockhash(stack)
    resigned = await prepare(minter, fresh_mint_id(), owner, resign=1)
    assert blockhashes() == 2
    assert resigned.blockhash != first.blockhash

    next_blockhash(stack)
    again = await prepare(minter, fresh_mint_id(), owner, resign=1)
    assert blockhashes() == 3
    assert again.blockhash not in (first.blockhash, resigned.blockhash)

    later = await prepare(minter, fresh_mint_id(), owner)  # the clock has not moved
    assert later.blockhash == again.blockhash
    assert blockhashes() == 3


@pytest.mark.integration
async def test_concurrent_prepares_with_an_empty_cache_make_one_fetch(
    stack: StackConfig, minter: SolanaMinter
) -> None:
    blockhashes = count_requests(stack, "getLatestBlockhash")
    slots = count_requests(stack, "getSlot")
    rents = count_requests(stack, "getMinimumBalanceForRentExemption")
    owner = fresh_owner()
    signed = await asyncio.gather(*(prepare(minter, fresh_mint_id(), owner) for _ in range(8)))

    assert len({s.blockhash for s in signed}) == 1
    assert len({s.signature for s in signed}) == 8
    assert (blockhashes(), slots(), rents()) == (1, len(ENDPOINTS), 1)


@pytest.mark.integration
async def test_the_same_mint_again_an_endpoint_switch_or_forgetting_fetch_anew(
    stack: StackConfig, rpc: SolanaRpc, minter: SolanaMinter
) -> None:
    blockhashes = count_requests(stack, "getLatestBlockhash")
    mint_id, owner = fresh_mint_id(), fresh_owner()
    first = await prepare(minter, mint_id, owner)
    next_blockhash(stack)
    # A second signing of one mint is a new transaction, not the first one's bytes again.
    second = await prepare(minter, mint_id, owner)
    assert blockhashes() == 2
    assert (second.blockhash, second.signature) != (first.blockhash, first.signature)
    assert second.mint_address == first.mint_address

    await rpc.set_endpoints([stack.url(name) for name in reversed(ENDPOINTS)])
    await prepare(minter, fresh_mint_id(), owner)
    assert blockhashes() == 3

    minter.forget_blockhash()
    await prepare(minter, fresh_mint_id(), owner)
    assert blockhashes() == 4


@pytest.mark.integration
async def test_a_failed_fetch_is_not_kept(stack: StackConfig, minter: SolanaMinter) -> None:
    refusals = [
        add_fault(stack, target=name, kind="status", status=400, match="getLatestBlockhash")
        for name in ENDPOINTS
    ]
    with pytest.raises(ServiceError) as raised:  # a 400 ends the call: no failover
        await prepare(minter, fresh_mint_id(), fresh_owner())
    assert raised.value.code == "SolanaRejected"
    assert sum(fault_hits(stack, fault) for fault in refusals) == 1
    admin(stack, "DELETE", "/faults")

    blockhashes = count_requests(stack, "getLatestBlockhash")
    await prepare(minter, fresh_mint_id(), fresh_owner())
    assert blockhashes() == 1


# -- the rent --------------------------------------------------------------------------------


@pytest.mark.integration
async def test_the_rent_for_one_size_is_fetched_once_until_it_ages(
    stack: StackConfig, minter: SolanaMinter, clock: FakeClock
) -> None:
    rents = count_requests(stack, "getMinimumBalanceForRentExemption")
    owner = fresh_owner()
    await prepare(minter, fresh_mint_id(), owner)
    await prepare(minter, fresh_mint_id(), owner, resign=1)  # a re-sign reuses the rent
    assert rents() == 1

    longer = await minter.prepare(
        fresh_mint_id(), owner=owner, name="Saga #4242", symbol="SAGA", uri="ipfs://x"
    )
    assert rents() == 2  # another account size
    clock.now += RENT_TTL_S - 1
    await prepare(minter, fresh_mint_id(), owner)
    assert rents() == 2

    clock.now += 1
    await prepare(minter, fresh_mint_id(), owner)
    assert rents() == 3
    assert await minter.send(longer.tx_base64) == longer.signature  # its rent was right
    await wait_confirmed(minter, longer.signature)
    await assert_one_nft(minter, longer.mint_address, owner)


# -- the cache itself (no server) ------------------------------------------------------------


async def test_shared_cache_concurrent_misses_share_one_fetch_and_its_failure() -> None:
    cache: SharedCache[str, int] = SharedCache(10, clock=FakeClock())
    calls = 0
    release = asyncio.Event()

    async def failing() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        raise RuntimeError("node down")

    waiters = [asyncio.ensure_future(cache.get("k", failing)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert calls == 1
    assert all(isinstance(r, RuntimeError) for r in results)

    async def answering() -> int:
        nonlocal calls
        calls += 1
        return 7

    assert await cache.get("k", answering) == 7  # the failure was not kept
    assert await cache.get("k", answering) == 7
    assert calls == 2


async def test_shared_cache_a_cancelled_waiter_leaves_the_fetch_to_the_others() -> None:
    clock = FakeClock()
    cache: SharedCache[str, object] = SharedCache(10, clock=clock)
    release = asyncio.Event()
    answer = object()

    async def slow() -> object:
        await release.wait()
        return answer

    cancelled = asyncio.ensure_future(cache.get("k", slow))
    other = asyncio.ensure_future(cache.get("k", slow))
    await asyncio.sleep(0)
    cancelled.cancel()
    release.set()
    assert await other is answer
    assert cancelled.cancelled()

    async def unexpected() -> object:
        raise AssertionError("fetched although a fresh value is kept")

    assert await cache.get("k", unexpected) is answer
    clock.now += 10
    with pytest.raises(AssertionError):
        await cache.get("k", unexpected)
    assert await cache.get("k", slow, fresh=True) is answer
