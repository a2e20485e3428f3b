"""Shared fixtures: one devstack for the whole test session, started the way a developer does.

The stack runs in a temporary state folder on ports shifted by ``DEVSTACK_TEST_PORT_OFFSET``
(default 10000), so it never touches a developer's own stack on the default ports.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import settings as hypothesis_settings
from temporalio.client import Client

from devstack.config import StackConfig
from mintsaga.activities.call_hooks import install_call_hooks
from mintsaga.resilience.breaker import BreakerRegistry
from tests.saga_support import running_worker, temporal_client

# `make test` explores the same examples on every run (a failure there is a bug, never luck);
# `HYPOTHESIS_PROFILE=explore` searches afresh with many more examples.
hypothesis_settings.register_profile("repeatable", derandomize=True)
hypothesis_settings.register_profile("explore", max_examples=5_000, derandomize=False)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

# The worker's hooks (activity deadline and heartbeat, spans and metrics) for every guarded call,
# as `mint_activities` installs them: tests that call clients directly see what a worker sees.
install_call_hooks()

TEST_PORT_OFFSET = int(os.environ.get("DEVSTACK_TEST_PORT_OFFSET", "10000"))
SAGA_QUEUE = "saga-tests"


def _devstack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devstack", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackConfig]:
    """A running devstack; every fault is cleared again after each test that uses it."""
    state_dir: Path = tmp_path_factory.mktemp("devstack")
    env_database_url = os.environ.pop("DATABASE_URL", None)  # the test stack runs its own
    try:
        started = _devstack(
            "--state-dir", str(state_dir), "up", "--detach", "--port-offset", str(TEST_PORT_OFFSET)
        )
        if started.returncode != 0:
            _devstack("--state-dir", str(state_dir), "down")
            pytest.fail(f"devstack did not start:\n{started.stderr}")
        yield StackConfig.load(state_dir)
    finally:
        stopped = _devstack("--state-dir", str(state_dir), "down")
        if env_database_url is not None:
            os.environ["DATABASE_URL"] = env_database_url
        assert stopped.returncode == 0, stopped.stderr


@pytest.fixture(autouse=True)
def _clear_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "stack" in request.fixturenames:
        config: StackConfig = request.getfixturevalue("stack")
        httpx.delete(config.url("admin") + "/faults", timeout=10).raise_for_status()


@pytest.fixture(scope="session")
async def client(stack: StackConfig) -> Client:
    """A Temporal client with the product's pydantic converter."""
    return await temporal_client(stack)


SESSION_BREAKERS = BreakerRegistry()


@pytest.fixture(scope="session")
async def worker(stack: StackConfig, client: Client) -> AsyncIterator[str]:
    """The product's worker, in this process, for the whole session; yields its task queue.

    Its circuit breakers are closed again after each test (`_reset_breakers`), as an operator
    would after an outage, so one test's injected outage does not slow the next.
    """
    async with running_worker(stack, client, SAGA_QUEUE, breakers=SESSION_BREAKERS):
        yield SAGA_QUEUE


@pytest.fixture(autouse=True)
def _reset_breakers() -> Iterator[None]:
    yield
    SESSION_BREAKERS.reset_all("reset between tests")
