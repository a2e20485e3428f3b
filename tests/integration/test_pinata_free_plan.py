"""Issue 16's done-means on Pinata's free plan: 60 mints started within one minute on a fleet of
two `worker.py` processes all end MINTED, and Pinata's own counters (the devstack's, `GET
/pinata/plan`) show no 429 in either bucket and no `testAuthentication` call per mint.

The workers are told the plan (PINATA_REQUESTS_PER_MINUTE=60) and nothing else: the Pinata
queue's fleet-wide rate (0.4 activities a second, two requests each) comes from it. 60 mints
make 120 uploads in 60 upload_assets activities, so
the batch takes three to four minutes: marked slow, it runs in `make fleet` (CI), not in
`make test`.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from devstack.config import StackConfig
from devstack.requests import mint_request
from mintsaga.worker_tuning import pinata_activities_per_second
from mintsaga.workflows.models import MintStatus
from tests.integration.test_fleet import admin, fleet, start_all

MINTS = 60
WORKERS = 2
FREE_PLAN_RPM = 60


async def room_in_both_buckets(stack: StackConfig, within_s: float = 75.0) -> None:
    """Wait until Pinata's sliding minutes hold nothing: the earlier tests' requests must not
    count against this batch's plan."""
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient(timeout=10) as http:
        while True:
            plan = (await http.get(stack.url("admin") + "/pinata/plan")).json()
            held = {b: v["requests_in_window"] for b, v in plan["buckets"].items()}
            if not any(held.values()):
                return
            assert time.monotonic() < deadline, f"Pinata's windows stayed busy: {held}"
            await asyncio.sleep(1.0)


def delta(before: dict[str, Any], after: dict[str, Any], key: str) -> Any:
    if isinstance(after[key], dict):
        return {k: v - before[key].get(k, 0) for k, v in after[key].items()}
    return after[key] - before[key]


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(1200)
async def test_sixty_mints_in_a_minute_on_the_free_plan_all_mint_without_a_429(
    stack: StackConfig, client: Client
) -> None:
    admin(stack, "PUT", "/pinata/plan", json={"plan": "free"})
    queue = f"pinata-free-{uuid.uuid4().hex[:6]}"
    try:
        # Earlier tests' requests out of the window first: from here on, every request is ours
        # (the workers' start and health checks included).
        await room_in_both_buckets(stack)
        # The health schedule on, as in production: its probes share the plan's headroom.
        async with fleet(
            stack,
            queue,
            WORKERS,
            PINATA_REQUESTS_PER_MINUTE=str(FREE_PLAN_RPM),
            HEALTH_CHECK_INTERVAL_S="60",
        ) as workers:
            before = admin(stack, "GET", "/pinata/plan")
            requests = [mint_request(stack) for _ in range(MINTS)]
            began = time.monotonic()
            handles = await start_all(client, requests, queue)
            started_within = time.monotonic() - began
            results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 1000)
            wall_s = time.monotonic() - began
            after = admin(stack, "GET", "/pinata/plan")
            logs = "".join(path.read_text() for path in workers.logs)
    finally:
        admin(stack, "PUT", "/pinata/plan", json={"plan": stack.pinata_plan})
        admin(
            stack,
            "POST",
            "/pinata/limits",
            json={"requests_per_minute": stack.pinata_requests_per_minute},
        )

    assert started_within < 60, f"the batch took {started_within:.0f} s to start"
    assert Counter(r.status for r in results) == {MintStatus.MINTED: MINTS}
    # The workers paced themselves by the plan they were told, with no rate given.
    rate = pinata_activities_per_second(FREE_PLAN_RPM)
    assert f"at most {rate:g} activities a second" in logs
    refused = delta(before, after, "rate_limited")
    assert refused == {"general": 0, "data": 0}, refused
    routes = delta(before, after, "requests_by_route")
    uploads = routes.get("POST /pinning/pinFileToIPFS", 0)
    assert uploads >= 2 * MINTS  # every image and metadata went to Pinata (no failover)
    # No testAuthentication per mint: a worker asks only when it has heard nothing from Pinata
    # for a minute (shared by its checks in flight), and the health schedule once a minute.
    minutes = math.ceil(wall_s / 60)
    auth_calls = delta(before, after, "test_authentication_calls")
    assert auth_calls <= WORKERS * (minutes + 1) + minutes + 1, (auth_calls, wall_s)
    assert auth_calls < MINTS // 4
    print(
        f"\nfree plan: {MINTS} mints on {WORKERS} workers in {wall_s:.0f} s; Pinata requests"
        f" {dict(sorted(routes.items()))}; testAuthentication {auth_calls}; 429s {refused}"
    )
