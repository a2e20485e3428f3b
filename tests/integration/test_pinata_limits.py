"""The product's Pinata client against the devstack's Pinata (issue 16), counted by Pinata's own
counters (`GET /pinata/plan`): no testAuthentication per pre-mint check, the JWT checked when a
worker starts, unpin's "not pinned", pinList by `cid`, and the uploads' content types."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from devstack.config import StackConfig
from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.ipfs.cid import compute_cid
from mintsaga.ipfs.kubo import KuboClient
from mintsaga.ipfs.pinata import PinataClient
from mintsaga.ipfs.pinata_data import DataBudget
from mintsaga.ipfs.uploads import IpfsUploader
from tests.paths import ROOT
from tests.saga_support import add_fault

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


def counters(stack: StackConfig) -> dict[str, Any]:
    answer = httpx.get(stack.url("admin") + "/pinata/plan", timeout=10)
    answer.raise_for_status()
    body: dict[str, Any] = answer.json()
    return body


def auth_calls_since(stack: StackConfig, before: dict[str, Any]) -> int:
    return int(counters(stack)["test_authentication_calls"] - before["test_authentication_calls"])


def client(
    stack: StackConfig,
    http: httpx.AsyncClient,
    jwt: str | None = None,
    budget: DataBudget | None = None,
) -> PinataClient:
    # The process's /data/ budget unless given, as every client of the suite: the devstack's
    # /data/ bucket (30 a minute) is shared by all of them.
    return PinataClient(stack.url("pinata"), jwt or stack.pinata_jwt, http, data_budget=budget)


async def test_pre_mint_checks_share_one_authentication_and_then_trust_pinatas_answers(
    stack: StackConfig, http: httpx.AsyncClient
) -> None:
    pinata = client(stack, http)
    before = counters(stack)
    # Ten checks at once on a client that has heard nothing from Pinata: one request for all.
    await asyncio.gather(*(pinata.reachable() for _ in range(10)))
    assert auth_calls_since(stack, before) == 1
    # An upload answers for Pinata: the checks after it ask nothing.
    data = PNG + uuid.uuid4().bytes
    await pinata.pin_file(data, filename="a.png", name="a", keyvalues={}, cid_version=1)
    for _ in range(20):
        await pinata.reachable()
    assert auth_calls_since(stack, before) == 1
    # Once the last answer is older than the freshness window, one check asks again.
    await pinata.reachable(fresh_s=0.0)
    assert auth_calls_since(stack, before) == 2


async def test_a_failing_answer_stands_for_pinata_until_a_fresh_one(
    stack: StackConfig, http: httpx.AsyncClient
) -> None:
    pinata = client(stack, http)
    add_fault(stack, target="pinata", kind="status", status=503, match="/data/")
    before = counters(stack)
    with pytest.raises(ServiceError) as first:
        await pinata.reachable()
    assert first.value.kind is ErrorKind.TRANSIENT
    with pytest.raises(ServiceError) as again:  # the 503 a moment ago stands: no new request
        await pinata.reachable()
    assert again.value.code == first.value.code
    # (the fault answers before Pinata's counters: neither call reached them)
    assert auth_calls_since(stack, before) == 0


async def test_a_refused_jwt_is_for_an_operator_not_for_failover(
    stack: StackConfig, http: httpx.AsyncClient
) -> None:
    pinata = client(stack, http, jwt="not-the-devstack-jwt")
    with pytest.raises(ServiceError) as refused:
        await pinata.reachable()
    assert refused.value.kind is ErrorKind.NEEDS_OPERATOR
    assert "PINATA_JWT" in refused.value.message
    assert "not-the-devstack-jwt" not in str(refused.value)


async def test_unpin_of_a_cid_never_pinned_is_false_and_pin_list_asks_by_cid(
    stack: StackConfig, http: httpx.AsyncClient
) -> None:
    pinata = client(stack, http)
    never = await compute_cid(uuid.uuid4().bytes)
    assert await pinata.unpin(never) is False
    data = PNG + uuid.uuid4().bytes
    cid = await pinata.pin_file(data, filename="b.png", name="b", keyvalues={}, cid_version=1)
    before = counters(stack)
    assert await pinata.is_pinned(cid)
    after = counters(stack)
    assert (
        after["requests_by_route"]["GET /data/pinList"]
        - before["requests_by_route"].get("GET /data/pinList", 0)
        == 1
    )
    assert await pinata.unpin(cid) is True
    assert not await pinata.is_pinned(cid)


async def test_uploads_declare_the_images_type_and_json_for_metadata(
    stack: StackConfig, http: httpx.AsyncClient
) -> None:
    pinata = client(stack, http)
    uploader = IpfsUploader(pinata, KuboClient(stack.url("kubo"), http))
    image = PNG + uuid.uuid4().bytes
    metadata = f'{{"name": "{uuid.uuid4()}"}}'.encode()
    got_image = await uploader.upload(
        image, filename="i.png", name="i", keyvalues={}, content_type="image/png"
    )
    got_json = await uploader.upload(
        metadata,
        filename="metadata.json",
        name="m",
        keyvalues={},
        content_type="application/json",
    )
    for upload, mime in ((got_image, "image/png"), (got_json, "application/json")):
        assert upload.provider == "pinata"
        answer = await http.get(
            f"{stack.url('pinata')}/data/pinList",
            params={"cid": upload.cid},
            headers={"Authorization": f"Bearer {stack.pinata_jwt}"},
        )
        (row,) = answer.json()["rows"]
        assert row["mime_type"] == mime


def worker_process(stack: StackConfig, **env: str) -> subprocess.CompletedProcess[str]:
    """`worker.py` until it exits (or 60 s: then it started polling, and is stopped)."""
    full = {
        **os.environ,
        **stack.worker_env(),
        "HEALTH_CHECK_INTERVAL_S": "0",
        "PIN_REPAIR_INTERVAL_S": "0",
        **env,
    }
    try:
        return subprocess.run(
            [sys.executable, "worker.py"],
            cwd=ROOT,
            env=full,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the worker did not exit: {exc.stderr!r}") from None


def test_a_worker_with_a_refused_jwt_does_not_start_and_names_the_setting(
    stack: StackConfig,
) -> None:
    ran = worker_process(stack, PINATA_JWT="wrong-token-for-this-test")
    assert ran.returncode == 2, ran.stderr
    assert "PINATA_JWT" in ran.stderr and "refused" in ran.stderr
    assert "wrong-token-for-this-test" not in ran.stderr + ran.stdout


async def test_a_worker_starts_while_pinata_is_down_and_says_so(stack: StackConfig) -> None:
    from chaos.processes import Workers

    add_fault(stack, target="pinata", kind="status", status=503, match="/data/testAuthentication")
    workers = Workers(stack, f"pinata-down-{uuid.uuid4().hex[:6]}", 1, name="pinata-down")
    try:
        await workers.start_all()  # returns once it polls its task queue
    finally:
        await asyncio.to_thread(workers.stop_all)
    log = workers.log_path(0).read_text()
    assert "did not confirm PINATA_JWT at start" in log


async def test_the_health_row_reports_a_full_data_minute_as_pinata_answering(
    stack: StackConfig, http: httpx.AsyncClient
) -> None:
    """Pinata's /data/ bucket full (the account's other calls): the health probe's 429 is not an
    outage; a refused JWT still is."""
    from mintsaga.activities.health import HealthActivities

    def probe(pinata: PinataClient) -> HealthActivities:
        return HealthActivities(
            solana_urls=list,
            solana_timeout_s=1.0,
            store=None,  # type: ignore[arg-type]  # health_pinata uses the Pinata client alone
            database="",
            pinata=pinata,
            uploader=None,  # type: ignore[arg-type]
            gateways=[],
            http=http,
        )

    admin = stack.url("admin")
    limits = {"data_requests_per_minute": 1}
    assert (await http.post(f"{admin}/pinata/limits", json=limits)).status_code == 200
    try:
        # Budgets of their own: the 429s asked for here must not hold the process's budget.
        answers = [
            (await probe(client(stack, http, budget=DataBudget(30))).health_pinata()).rows[0]
            for _ in range(2)
        ]
        wrong = client(stack, http, jwt="not-the-jwt", budget=DataBudget(30))
        refused = (await probe(wrong).health_pinata()).rows[0]
    finally:
        back = {"data_requests_per_minute": stack.pinata_data_requests_per_minute}
        assert (await http.post(f"{admin}/pinata/limits", json=back)).status_code == 200
    assert all(row.ok for row in answers), answers
    assert "/data/ limit reached" in answers[-1].detail and "429" in answers[-1].detail
    assert not refused.ok and refused.detail.startswith("NEEDS OPERATOR:")
