"""A primary endpoint that cannot serve the mints, on the devstack with the worker's default
settings (issue 15): an expired key (HTTP 401 to everything), no transaction history (-32011 on
`getSignatureStatuses` with history search), a primary that hangs on every call.

The devstack's provider profiles (devstack/profiles.py) and faults make the endpoint answer as
the providers document; mints complete on the backups, and the endpoint is reported as needing
an operator (`mintsaga_rpc_endpoint_unusable_total`, the health table). Each test runs its own
worker, so what its pool learnt about an endpoint leaves with it.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from prometheus_client import REGISTRY
from temporalio.client import Client

import mintsaga
from devstack.config import StackConfig
from devstack.requests import mint_request
from mintsaga.activities.health import NEEDS_OPERATOR
from mintsaga.api import health as health_checks
from mintsaga.errors import redact_url
from mintsaga.resilience.breaker import BreakerRegistry
from mintsaga.workflows.health import HealthRow
from mintsaga.workflows.models import MintStatus
from tests.saga_support import add_fault, clear_faults, running_worker

pytestmark = pytest.mark.integration

PRIMARY = "solana-1"


@contextlib.contextmanager
def profile(stack: StackConfig, endpoint: str, name: str) -> Iterator[None]:
    """The endpoint answers as the named provider profile while the block runs."""

    def put(profile_name: str) -> None:
        url = f"{stack.url('admin')}/solana/{endpoint}/profile"
        httpx.put(url, json={"profile": profile_name}, timeout=10).raise_for_status()

    put(name)
    try:
        yield
    finally:
        put("default")


@contextlib.asynccontextmanager
async def own_worker(stack: StackConfig, client: Client) -> AsyncIterator[str]:
    """A worker with the default settings (no SOLANA_TIMEOUT_MS) and breakers of its own."""
    queue = f"unusable-{uuid.uuid4().hex[:8]}"
    async with running_worker(stack, client, queue, breakers=BreakerRegistry()):
        yield queue


def refusals(stack: StackConfig, reason: str) -> float:
    """`mintsaga_rpc_endpoint_unusable_total` for the primary and `reason`, every method."""
    name = redact_url(stack.url(PRIMARY))
    return sum(
        sample.value
        for family in REGISTRY.collect()
        if family.name == "mintsaga_rpc_endpoint_unusable"
        for sample in family.samples
        if sample.name.endswith("_total")
        and sample.labels.get("endpoint") == name
        and sample.labels.get("reason") == reason
    )


async def primary_row(stack: StackConfig, client: Client, queue: str) -> HealthRow:
    _, rows = await health_checks.run_health_check(client, queue)
    name = redact_url(stack.url(PRIMARY))
    [row] = [row for row in rows if row.check == "solana_rpc" and row.target == name]
    others = [row for row in rows if row.check == "solana_rpc" and row.target != name]
    assert others and all(other.ok for other in others), others
    return row


async def test_a_primary_whose_key_expired_is_passed_over_and_reported(
    stack: StackConfig, client: Client
) -> None:
    before = refusals(stack, "unauthorized")
    with profile(stack, PRIMARY, "expired-key"):
        async with own_worker(stack, client) as queue:
            request = mint_request(stack)
            handle = await mintsaga.start_mint(client, request, queue=queue)
            result = await handle.result()
            assert result.status == MintStatus.MINTED, result
            assert refusals(stack, "unauthorized") > before
            row = await primary_row(stack, client, queue)
    assert not row.ok and row.detail.startswith(f"{NEEDS_OPERATOR} SolanaUnauthorized"), row


async def test_a_primary_without_history_serves_the_polls_and_mints_complete(
    stack: StackConfig, client: Client
) -> None:
    with profile(stack, PRIMARY, "no-history"):
        async with own_worker(stack, client) as queue:
            request = mint_request(stack)
            handle = await mintsaga.start_mint(client, request, queue=queue)
            result = await handle.result()
            assert result.status == MintStatus.MINTED, result
            row = await primary_row(stack, client, queue)
    assert not row.ok
    assert row.detail.startswith(f"{NEEDS_OPERATOR} TransactionHistoryNotAvailable"), row
    assert "behind the highest" in row.detail  # it still serves reads


async def test_a_primary_that_hangs_on_every_call_leaves_a_mint_done_within_a_minute(
    stack: StackConfig, client: Client
) -> None:
    async with own_worker(stack, client) as queue:
        add_fault(stack, target=PRIMARY, kind="hang")
        try:
            request = mint_request(stack)
            started = time.monotonic()
            handle = await mintsaga.start_mint(client, request, queue=queue)
            result = await handle.result()
            took = time.monotonic() - started
        finally:
            clear_faults(stack)
    assert result.status == MintStatus.MINTED, result
    assert took < 60, took
