"""Webhook delivery against the devstack's Postgres and a real HTTP receiver on 127.0.0.1
(tests/tools/webhook_receiver.py, which verifies each signature with its own hashlib/hmac code,
not the package the product signs with).

Notices are recorded with ``MintStore.record_notice`` (as the saga's step does), for mints of
fresh ids; the database lives for the whole session, so other tests' notices may reach these
receivers too and every check looks at its own mints only. Dispatchers use the default retry
schedule except where a test says it drives time through a short schedule of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from devstack.config import StackConfig
from mintsaga.db.mint_store import MintStore
from mintsaga.db.webhook_deliveries import WebhookDeliveryStore
from mintsaga.errors import endpoint_name
from mintsaga.notices import NoticeType
from mintsaga.observability.metrics import sample_value
from mintsaga.webhooks.dispatcher import REQUEST_TIMEOUT, Dispatcher, sample_backlog
from mintsaga.webhooks.schedule import RetrySchedule
from mintsaga.worker import mint_activities
from tests.integration.test_readme_snippets import snippet
from tests.paths import ROOT
from tests.saga_support import settings_for
from tests.tools.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

# Two secrets (rotation): 32 random bytes each, fixed so a failure is reproducible.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo="
OLD_SECRET = "whsec_c2VjcmV0LWJ5dGVzLXRoYXQtYXJlLXJvdGF0ZWQtb3V0LTEyMw=="
SECRETS = (SECRET, OLD_SECRET)
STAGES = ("INITIATED", "IPFS_UPLOADED", "DATABASE_UPDATED")


def new_id(prefix: str = "wh") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def store(stack: StackConfig) -> AsyncIterator[MintStore]:
    mint_store = await MintStore.connect(stack.database_url, min_size=1, max_size=4)
    try:
        yield mint_store
    finally:
        await mint_store.close()


@pytest.fixture
async def deliveries(stack: StackConfig) -> AsyncIterator[WebhookDeliveryStore]:
    one = await WebhookDeliveryStore.connect(stack.database_url, max_size=4)
    try:
        yield one
    finally:
        await one.close()


FROM_NOW = """INSERT INTO webhook_cursors (endpoint, after_id)
               SELECT $1, COALESCE(max(id), 0) FROM mint_events WHERE type IS NOT NULL
               ON CONFLICT (endpoint) DO UPDATE SET after_id = EXCLUDED.after_id"""


async def only_from_now(deliveries: WebhookDeliveryStore, urls: Sequence[str]) -> None:
    """Each endpoint's cursor at the newest notice: it gets the notices recorded after this."""
    async with deliveries._db.pool.acquire() as conn:
        for url in urls:
            await conn.execute(FROM_NOW, endpoint_name(url))


@contextlib.asynccontextmanager
async def dispatcher_running(
    deliveries: WebhookDeliveryStore,
    urls: Sequence[str],
    secrets: Sequence[str] = SECRETS,
    *,
    from_now: bool = True,
    **options: Any,
) -> AsyncIterator[Dispatcher]:
    """A dispatcher over a real httpx client (the product's timeouts, no redirects), for
    notices recorded from now on: a new endpoint would otherwise start with the day's notices
    (every other test's mints in this shared database), and this test's would wait behind."""
    if from_now:
        await only_from_now(deliveries, urls)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT, follow_redirects=False) as http:
        dispatcher = Dispatcher(deliveries, urls, secrets, http=http, **options)
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop))
        try:
            yield dispatcher
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)


async def record_mint(store: MintStore, mint_id: str, *, minted: bool = True) -> list[int]:
    """The notices a mint of three stages records, oldest first: their cursors."""
    cursors = []
    for stage in STAGES:
        cursor = await store.record_notice(
            mint_id, NoticeType.IN_PROGRESS, event_key=f"status:{stage}", data={"stage": stage}
        )
        assert cursor is not None
        cursors.append(cursor)
    if minted:
        cursor = await store.record_notice(
            mint_id,
            NoticeType.MINTED,
            event_key="status:MINTED",
            data={"stage": "VERIFIED", "mint_address": "Mint111", "signature": "sig"},
        )
        assert cursor is not None
        cursors.append(cursor)
    return cursors


def readme_verify() -> Any:
    """The README's receiver snippet (`webhook-verify`), run as a reader copies it."""
    language, code = snippet("webhook-verify")
    assert language == "python"
    namespace: dict[str, Any] = {"__name__": "readme_snippet"}
    exec(compile(code, "README.md#webhook-verify", "exec"), namespace)
    return namespace["verify_webhook"]


async def test_notices_arrive_signed_in_order_once_each(
    store: MintStore, deliveries: WebhookDeliveryStore
) -> None:
    # Every message signed with both secrets (rotation), verified independently, and again
    # with the README's snippet; each mint's notices in the order recorded, each id once.
    mints = [new_id() for _ in range(3)]
    expected: dict[str, list[int]] = {m: [] for m in mints}
    async with WebhookReceiver(SECRETS, require_all=True) as receiver:
        await only_from_now(deliveries, [receiver.url])
        for stage in STAGES:  # interleaved, as concurrent mints record them
            for mint_id in mints:
                cursor = await store.record_notice(
                    mint_id,
                    NoticeType.IN_PROGRESS,
                    event_key=f"status:{stage}",
                    data={"stage": stage},
                )
                assert cursor is not None
                expected[mint_id].append(cursor)
        async with dispatcher_running(deliveries, [receiver.url], from_now=False):
            for mint_id in mints:
                cursor = await store.record_notice(
                    mint_id, NoticeType.MINTED, event_key="status:MINTED", data={"stage": "X"}
                )
                assert cursor is not None
                expected[mint_id].append(cursor)
            await receiver.wait_for(
                lambda r: all(len(r.for_mint(m)) == 4 for m in mints), timeout_s=60
            )
            await asyncio.sleep(2)  # room for a duplicate to show up, were one sent
    assert receiver.rejected == []
    verify = readme_verify()
    notices = {n.cursor: n for m in mints for n in await store.mint_notices(m)}
    for mint_id in mints:
        got = receiver.for_mint(mint_id)
        assert [m.id for m in got] == [f"evt_{c}" for c in expected[mint_id]]
        assert [m.type for m in got] == ["mint.in_progress"] * 3 + ["mint.minted"]
        for message in got:
            notice = notices[int(message.id.removeprefix("evt_"))]
            assert message.body == notice.body_bytes()
            assert message.json["data"]["mint_id"] == mint_id
            assert len(message.headers["webhook-signature"].split(" ")) == 2
            for secret in SECRETS:
                assert verify(secret, message.headers, message.body) == message.json
        # Sent once each: no duplicate in normal operation.
        ids = [m.id for m in receiver.messages if m.mint_id == mint_id]
        assert len(ids) == len(set(ids)) == 4
    rows = [r for m in mints for r in await deliveries.deliveries(mint_id=m)]
    assert {(r.state, r.attempts, r.last_status) for r in rows} == {("delivered", 1, 204)}
    assert {r.endpoint for r in rows} == {endpoint_name(receiver.url)}


async def test_the_readme_snippet_refuses_a_tampered_message(
    store: MintStore, deliveries: WebhookDeliveryStore
) -> None:
    mint_id = new_id()
    async with (
        WebhookReceiver(SECRETS) as receiver,
        dispatcher_running(deliveries, [receiver.url]),
    ):
        await record_mint(store, mint_id, minted=False)
        await receiver.wait_for(lambda r: len(r.for_mint(mint_id)) == 3, timeout_s=60)
    verify = readme_verify()
    message = receiver.for_mint(mint_id)[0]
    assert verify(SECRET, message.headers, message.body)["type"] == "mint.in_progress"
    tampered = message.body.replace(b"in_progress", b"minted_____")
    with pytest.raises(ValueError, match="signature"):
        verify(SECRET, message.headers, tampered)
    other = "whsec_" + "QUJD" * 8
    with pytest.raises(ValueError, match="signature"):
        verify(other, message.headers, message.body)
    stale = {**message.headers, "webhook-timestamp": str(int(time.time()) - 3600)}
    with pytest.raises(ValueError, match="timestamp"):
        verify(SECRET, stale, message.body)


async def test_a_failing_mint_holds_back_only_its_own_later_notices(
    store: MintStore, deliveries: WebhookDeliveryStore
) -> None:
    # The receiver refuses one mint's messages: that mint's first notice is tried again and
    # again, its later ones never sent meanwhile; another mint's arrive at once.
    stuck, other = new_id(), new_id()
    async with WebhookReceiver(SECRETS) as receiver:
        receiver.fail_with(500, only_mint=stuck)
        async with dispatcher_running(deliveries, [receiver.url]):
            stuck_cursors = await record_mint(store, stuck)
            await record_mint(store, other)
            await receiver.wait_for(lambda r: len(r.for_mint(other)) == 4, timeout_s=60)
            await receiver.wait_for(
                lambda r: sum(a.id == f"evt_{stuck_cursors[0]}" for a in r.attempts) >= 2,
                timeout_s=60,
            )
            tried = {a.id for a in receiver.attempts}
            assert tried & {f"evt_{c}" for c in stuck_cursors} == {f"evt_{stuck_cursors[0]}"}
            receiver.fail_with(None)
            # The next attempt is on the default schedule: 5 s, then 10 s (x 0.8-1.2).
            await receiver.wait_for(lambda r: len(r.for_mint(stuck)) == 4, timeout_s=60)
    assert [m.id for m in receiver.for_mint(stuck)] == [f"evt_{c}" for c in stuck_cursors]
    first = (await deliveries.deliveries(mint_id=stuck))[-1]
    assert first.notice_id == stuck_cursors[0]
    assert first.state == "delivered" and first.attempts >= 3


async def test_two_dispatchers_share_the_work_without_double_sends(
    store: MintStore, deliveries: WebhookDeliveryStore, stack: StackConfig
) -> None:
    # Two workers' dispatchers on the same endpoint: FOR UPDATE SKIP LOCKED gives each row to
    # one of them; per-mint order holds across both.
    mints = [new_id() for _ in range(6)]
    second = await WebhookDeliveryStore.connect(stack.database_url, max_size=4)
    try:
        async with (
            WebhookReceiver(SECRETS) as receiver,
            dispatcher_running(deliveries, [receiver.url]),
            dispatcher_running(second, [receiver.url]),
        ):
            expected = {m: await record_mint(store, m) for m in mints}
            await receiver.wait_for(
                lambda r: all(len(r.for_mint(m)) == 4 for m in mints), timeout_s=90
            )
            await asyncio.sleep(2)
    finally:
        await second.close()
    for mint_id, cursors in expected.items():
        assert [m.id for m in receiver.for_mint(mint_id)] == [f"evt_{c}" for c in cursors]
    sent = [m.id for m in receiver.messages if m.mint_id in expected]
    assert len(sent) == len(set(sent)) == 24


@pytest.mark.timeout(300)
async def test_every_notice_arrives_after_an_outage_and_the_backlog_shows_meanwhile(
    store: MintStore, deliveries: WebhookDeliveryStore
) -> None:
    # The default schedule (5 s doubling, jitter): with the receiver answering 500 for 25 s,
    # every notice arrives after it recovers, in order, and the backlog gauges showed the wait
    # meanwhile. (The two-minute outage, with a real mint, is test_backend_contract.py.)
    mint_id = new_id()
    async with WebhookReceiver(SECRETS) as receiver:
        receiver.fail_with(500)
        async with dispatcher_running(deliveries, [receiver.url]):
            cursors = await record_mint(store, mint_id)
            started = time.monotonic()
            await asyncio.sleep(22)
            await sample_backlog(deliveries)
            backlog = sample_value("mintsaga_webhook_backlog")
            oldest = sample_value("mintsaga_webhook_oldest_pending_seconds")
            assert backlog is not None and backlog >= 4
            assert oldest is not None and oldest >= 20
            rows = await deliveries.deliveries(mint_id=mint_id, state="pending")
            assert len(rows) == 4
            first = next(r for r in rows if r.notice_id == cursors[0])
            assert first.last_status == 500 and first.last_error == "HTTP 500 Internal Server Error"
            assert 2 <= first.attempts <= 4  # 0, 5, 15 s (+-20 %)
            assert {r.attempts for r in rows if r.notice_id != cursors[0]} == {0}
            await asyncio.sleep(max(0.0, 25 - (time.monotonic() - started)))
            receiver.fail_with(None)
            recovered = time.monotonic()
            # The next attempt after 15 s (+-20 %) comes 20 s (+-20 %) later: by 45 s.
            await receiver.wait_for(lambda r: len(r.for_mint(mint_id)) == 4, timeout_s=90)
            arrived = time.monotonic()
    assert [m.id for m in receiver.for_mint(mint_id)] == [f"evt_{c}" for c in cursors]
    assert arrived - recovered < 90
    # Only the mint's first notice was tried during the outage: the others waited their turn.
    ours = {f"evt_{c}" for c in cursors}
    failed = [a for a in receiver.attempts if a.status == 500 and a.id in ours]
    assert {a.id for a in failed} == {f"evt_{cursors[0]}"}
    rows = await deliveries.deliveries(mint_id=mint_id)
    assert {r.state for r in rows} == {"delivered"}


async def test_a_delivery_given_up_is_listed_and_requeued_by_the_cli(
    store: MintStore, deliveries: WebhookDeliveryStore, stack: StackConfig
) -> None:
    # 410 Gone ends a delivery at once (the spec: stop sending); `webhooks list --state failed`
    # shows it, `webhooks retry EVENT_ID` sends it again.
    mint_id = new_id()
    async with WebhookReceiver(SECRETS) as receiver:
        receiver.fail_with(410)
        async with dispatcher_running(deliveries, [receiver.url]):
            cursors = await record_mint(store, mint_id, minted=False)
            await receiver.wait_for(
                lambda r: {a.id for a in r.attempts} >= {f"evt_{c}" for c in cursors},
                timeout_s=60,
            )
            await wait_rows(deliveries, mint_id, "failed", 3)
            listed = await cli(
                stack, "webhooks", "list", "--state", "failed", "--mint", mint_id, "--json"
            )
            rows = json.loads(listed.stdout.splitlines()[-1])["deliveries"]
            assert [r["event_id"] for r in rows] == [f"evt_{c}" for c in reversed(cursors)]
            assert {(r["last_status"], r["last_error"], r["attempts"]) for r in rows} == {
                (410, "HTTP 410 Gone", 1)
            }
            table = (await cli(stack, "webhooks", "list", "--mint", mint_id)).stdout
            assert f"evt_{cursors[0]}" in table and "failed" in table
            receiver.fail_with(None)
            again = await cli(stack, "webhooks", "retry", f"evt_{cursors[0]}")
            assert f"requeued evt_{cursors[0]}" in again.stdout
            await receiver.wait_for(lambda r: len(r.for_mint(mint_id)) == 1, timeout_s=30)
            rest = await cli(stack, "webhooks", "retry", "--failed")
            assert f"requeued evt_{cursors[2]}" in rest.stdout
            await receiver.wait_for(lambda r: len(r.for_mint(mint_id)) == 3, timeout_s=30)
    assert [m.id for m in receiver.for_mint(mint_id)] == [f"evt_{c}" for c in cursors]
    nothing = await cli(stack, "webhooks", "retry", f"evt_{cursors[0]}", check=False)
    assert nothing.returncode == 1 and "no failed delivery" in nothing.stdout
    bad = await cli(stack, "webhooks", "retry", "not-an-id", check=False)
    assert bad.returncode == 2 and "'not-an-id' is not an event id" in bad.stderr


async def test_a_short_schedule_gives_up_and_the_time_limit_holds(
    store: MintStore, deliveries: WebhookDeliveryStore
) -> None:
    # Time driven through the dispatcher's schedule (not the default): a receiver that never
    # recovers gets attempts until give_up_after, then the delivery is failed, never retried.
    schedule = RetrySchedule(first_delay_s=0.5, max_delay_s=1.0, give_up_after=timedelta(seconds=4))
    mint_id = new_id()
    async with WebhookReceiver(SECRETS) as receiver:
        receiver.fail_with(503, retry_after="1")
        async with dispatcher_running(deliveries, [receiver.url], schedule=schedule):
            cursors = await record_mint(store, mint_id, minted=False)
            await wait_rows(deliveries, mint_id, "failed", 3, timeout_s=60)
            # This mint's attempts only: a new endpoint also gets the day's other notices
            # (other tests' mints, in a shared database), which it keeps trying.
            ours = {f"evt_{c}" for c in cursors}
            count = len([a for a in receiver.attempts if a.id in ours])
            await asyncio.sleep(3)
            assert len([a for a in receiver.attempts if a.id in ours]) == count  # none after
    rows = {r.notice_id: r for r in await deliveries.deliveries(mint_id=mint_id)}
    first = rows[cursors[0]]
    assert first.attempts >= 3 and first.last_status == 503
    # The last attempt falls at the time limit (due then, claimed within a poll), none after.
    assert first.last_attempt_at is not None
    assert first.give_up_at <= first.last_attempt_at <= first.give_up_at + timedelta(seconds=3)


async def test_secrets_never_reach_the_rows_or_the_logs(
    store: MintStore,
    deliveries: WebhookDeliveryStore,
    stack: StackConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # URLs carrying keys (query, path) and the signing secrets: none in a stored row, a log
    # record or the CLI's output, whether the endpoint answers 500 or refuses the connection.
    key = "sk_live_9f8e7d6c5b4a39281706"
    path_key = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
    mint_id = new_id()
    caplog.set_level(logging.DEBUG, logger="mintsaga")
    async with WebhookReceiver(SECRETS) as receiver:
        receiver.fail_with(500)
        keyed = f"{receiver.url}?token={key}"
        dead = f"http://127.0.0.1:9/hooks/{path_key}"  # discard port: refused
        async with dispatcher_running(deliveries, [keyed, dead]):
            await record_mint(store, mint_id, minted=False)
            await receiver.wait_for(lambda r: len(r.attempts) >= 2, timeout_s=60)
            await wait_for_error(deliveries, mint_id, endpoint_name(dead))
    conn = await asyncpg.connect(stack.direct_database_url)
    try:
        dumped = await conn.fetchval(
            "SELECT string_agg(row_to_json(d)::text, ' ') FROM webhook_deliveries d"
            " WHERE mint_id = $1",
            mint_id,
        )
        cursors = await conn.fetchval("SELECT string_agg(endpoint, ' ') FROM webhook_cursors")
    finally:
        await conn.close()
    listed = (await cli(stack, "webhooks", "list", "--mint", mint_id, "--json")).stdout
    logs = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    bare = [s.removeprefix("whsec_") for s in SECRETS]
    for text in (dumped, cursors, listed, logs):
        for secret in (key, path_key, *SECRETS, *bare):
            assert secret not in text
    assert "?token" not in dumped and "Connect" in dumped  # the refused endpoint's error


async def test_the_worker_runs_the_dispatcher_while_it_runs_when_webhook_url_is_set(
    store: MintStore, stack: StackConfig
) -> None:
    # The worker's own wiring (worker.mint_activities, the worker's default settings): with
    # WEBHOOK_URL set, notices arrive while it runs; once it has stopped, the dispatcher is gone
    # (no task left, nothing sent).
    mint_id = new_id()
    async with WebhookReceiver(SECRETS, require_all=True) as receiver:
        settings = settings_for(stack, WEBHOOK_URL=receiver.url, WEBHOOK_SECRET=" ".join(SECRETS))
        async with mint_activities(settings):
            cursors = await record_mint(store, mint_id, minted=False)
            await receiver.wait_for(lambda r: len(r.for_mint(mint_id)) == 3, timeout_s=60)
        assert [t for t in asyncio.all_tasks() if t.get_name() == "webhook dispatcher"] == []
        await store.record_notice(
            mint_id, NoticeType.MINTED, event_key="status:MINTED", data={"stage": "VERIFIED"}
        )
        await asyncio.sleep(3)
    assert [m.id for m in receiver.for_mint(mint_id)] == [f"evt_{c}" for c in cursors]
    assert receiver.rejected == []


async def wait_rows(
    deliveries: WebhookDeliveryStore, mint_id: str, state: str, count: int, timeout_s: float = 60
) -> None:
    async with asyncio.timeout(timeout_s):  # Postgres has no event to wait on
        while True:
            if len(await deliveries.deliveries(mint_id=mint_id, state=state)) >= count:
                return
            await asyncio.sleep(0.2)


async def wait_for_error(
    deliveries: WebhookDeliveryStore, mint_id: str, endpoint: str, timeout_s: float = 60
) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            rows = await deliveries.deliveries(mint_id=mint_id)
            if any(r.endpoint == endpoint and r.last_error for r in rows):
                return
            await asyncio.sleep(0.2)


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


async def cli(stack: StackConfig, *args: str, check: bool = True) -> Ran:
    """`mintsaga ARGS` as its own process (awaited: the dispatcher on this loop keeps going)."""
    env = {**os.environ, "DATABASE_URL": stack.database_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mintsaga.cli.main",
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    ran = Ran(process.returncode, out.decode(), err.decode())
    if check:
        assert ran.returncode == 0, f"{args}: exit {ran.returncode}\n{ran.stdout}\n{ran.stderr}"
    return ran
