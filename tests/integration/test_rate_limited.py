"""Every endpoint on a hosted plan's rate limit (issue 15): 100 mints in flight on one worker.

The devstack's `rate-limited` profile (devstack/profiles.py) answers as Helius' Free plan does:
10 requests a second and 1 `sendTransaction` a second per endpoint, HTTP 429 past them. The
worker is told the plan (SOLANA_RPC_REQUESTS_PER_S=10, SOLANA_RPC_SENDS_PER_S=1) and otherwise
runs its default settings. Every mint must end MINTED, and the endpoints' own counters must show
the limits kept: the calls the plan refused (429) are only those the client could not foresee
(a provider counts arrivals, the client departures), each followed by the wait its 429 asked for
and a slower budget (AIMD), so they stay a small share of the calls.

Before the request budget, the shared status poll and the batched statuses, each pending mint
sent a status and a block-height request every second and a send to every endpoint every 2 s:
100 mints in flight asked ~250 requests a second of a 30-a-second pool.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest
from temporalio.client import Client

import mintsaga
from devstack.config import SOLANA_ENDPOINTS, StackConfig
from devstack.requests import mint_request
from mintsaga.resilience.breaker import BreakerRegistry
from mintsaga.workflows.models import MintStatus
from tests.saga_support import running_worker

pytestmark = pytest.mark.integration

MINTS = 100
REQUESTS_PER_S = 10  # Helius' Free plan (devstack/profiles.py, [H-RL])
SENDS_PER_S = 1


def set_profile(stack: StackConfig, endpoint: str, name: str) -> None:
    url = f"{stack.url('admin')}/solana/{endpoint}/profile"
    httpx.put(url, json={"profile": name}, timeout=10).raise_for_status()


def counters(stack: StackConfig, endpoint: str) -> dict[str, Any]:
    url = f"{stack.url('admin')}/solana/{endpoint}/profile"
    body = httpx.get(url, timeout=10).json()
    return dict(body["counters"])


async def test_a_hundred_mints_on_free_plans_all_mint_within_the_limits(
    stack: StackConfig, client: Client
) -> None:
    for endpoint in SOLANA_ENDPOINTS:
        set_profile(stack, endpoint, "rate-limited")  # counters start from zero
    queue = f"limited-{uuid.uuid4().hex[:8]}"
    env = {
        "SOLANA_RPC_REQUESTS_PER_S": str(REQUESTS_PER_S),
        "SOLANA_RPC_SENDS_PER_S": str(SENDS_PER_S),
    }
    try:
        async with running_worker(stack, client, queue, breakers=BreakerRegistry(), env=env):
            began = time.monotonic()
            handles = await asyncio.gather(
                *(
                    mintsaga.start_mint(client, mint_request(stack), queue=queue)
                    for _ in range(MINTS)
                )
            )
            results = await asyncio.gather(*(handle.result() for handle in handles))
            took = time.monotonic() - began
        seen = {endpoint: counters(stack, endpoint) for endpoint in SOLANA_ENDPOINTS}
    finally:
        for endpoint in SOLANA_ENDPOINTS:
            set_profile(stack, endpoint, "default")
    statuses = [result.status for result in results]
    assert statuses == [MintStatus.MINTED] * MINTS, [r for r in results if r.status != "MINTED"]
    accepted = sum(c["accepted"] for c in seen.values())
    refused = sum(c["refused"] for c in seen.values())
    print(
        f"{MINTS} mints in {took:.0f} s: {accepted} requests accepted "
        f"({accepted / MINTS:.1f} a mint), {refused} refused; per endpoint {seen}"
    )
    for endpoint, count in seen.items():
        # The plan's own window admitted them: never more than the limit in a second.
        assert max(count["accepted_per_second"].values()) <= REQUESTS_PER_S, endpoint
        assert max(count["send_accepted_per_second"].values(), default=0) <= SENDS_PER_S
    # What went past the plan: a small share of the calls, each 429 obeyed.
    assert refused <= 0.02 * accepted, seen
