"""A CID two mints share (tier images: same bytes, same CID) survives one mint's compensation.

The release_pins activity and the upload activity run for real against the devstack's
Postgres, Pinata and Kubo; only the order is forced: mint A's unpin is held at a gate while
mint B records its pin and uploads the same image. The pin B relies on must still be there
when both are done, which needs A's check-and-unpin and B's record to exclude each other.

A release holds no connection while it unpins (claim, unpin, record: three steps); the last
tests slow the providers' unpins with the devstack's faults and kill a release between its
steps. Every test uploads content unique to the run, so no other pin can make it pass.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.testing import ActivityEnvironment

from devstack.config import StackConfig
from mintsaga.activities.ipfs import IpfsActivities
from mintsaga.db.mint_store import MintStore
from mintsaga.db.pins import _PIN_LOCK_CLASS
from mintsaga.db.rows import Pin
from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.ipfs.cid import compute_cid
from mintsaga.ipfs.gateways import GatewayReader
from mintsaga.ipfs.images import ImageLoader
from mintsaga.ipfs.kubo import KuboClient
from mintsaga.ipfs.pinata import PinataClient
from mintsaga.ipfs.uploads import IpfsUploader, Provider
from mintsaga.resilience.breaker import BreakerRegistry
from mintsaga.workflows import activity_models as io
from mintsaga.workflows.models import ImageRef
from tests.saga_support import add_fault, faults_fired

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
IMAGE = "tier.png"


class GatedUploader(IpfsUploader):
    """The real uploader, whose unpins wait at `gate` (when set) after saying they started."""

    def __init__(self, pinata: PinataClient, kubo: KuboClient) -> None:
        super().__init__(pinata, kubo)
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.unpinned: list[Pin] = []

    async def unpin(self, cid: str, provider: Provider) -> bool:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        self.unpinned.append(Pin(cid, provider))
        return await super().unpin(cid, provider)


@dataclass
class Wired:
    stack: StackConfig
    store: MintStore
    pinata: PinataClient
    kubo: KuboClient
    uploader: GatedUploader
    ipfs: IpfsActivities
    content: bytes
    cid: str

    async def claim(self) -> str:
        mint_id = f"mint-{uuid.uuid4().hex[:12]}"
        await self.store.claim(
            mint_id, f"user-{uuid.uuid4().hex[:12]}", "wallet", f"addr-{mint_id}"
        )
        return mint_id

    async def upload(self, mint_id: str) -> io.UploadOut:
        """The upload_image activity: record the pins, then pin the shared image."""
        arg = io.UploadImageIn(mint_id=mint_id, image=ImageRef(path=IMAGE), expected_cid=self.cid)
        return await ActivityEnvironment().run(self.ipfs.upload_image, arg)

    async def release(self, mint_id: str) -> io.ReleaseOut:
        """The release_pins compensation activity."""
        return await ActivityEnvironment().run(self.ipfs.release_pins, io.MintRef(mint_id=mint_id))

    async def pin_rows(self, mint_id: str) -> list[asyncpg.Record]:
        """This mint's pins: released, unpinned, claimed (a live claim), by provider."""
        return await direct_fetch(
            self.stack,
            """SELECT provider, released_at IS NOT NULL AS released,
                      unpinned_at IS NOT NULL AS unpinned,
                      coalesce(unpin_claimed_until > clock_timestamp(), false) AS claimed
               FROM mint_pins WHERE mint_id = $1 ORDER BY provider""",
            mint_id,
        )

    async def released_rows(self, mint_id: str) -> list[bool]:
        return [
            r["released"]
            for r in await direct_fetch(
                self.stack,
                "SELECT released_at IS NOT NULL AS released FROM mint_pins"
                " WHERE mint_id = $1 ORDER BY provider",
                mint_id,
            )
        ]


async def direct_fetch(stack: StackConfig, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Read around the fault proxy."""
    conn = await asyncpg.connect(stack.direct_database_url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def waiting_for_pin_lock(stack: StackConfig, cid: str) -> bool:
    """Whether some session waits for `cid`'s pin lock (record_pin or release_pins)."""
    rows = await direct_fetch(
        stack,
        """SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objsubid = 2
           AND classid::bigint = $1 AND objid::bigint = hashtext($2) & 4294967295""",
        _PIN_LOCK_CLASS,
        cid,
    )
    return bool(rows)


@pytest.fixture
async def wired(stack: StackConfig, tmp_path: Path) -> AsyncIterator[Wired]:
    content = PNG + f"mintsaga-shared-pins-{uuid.uuid4()}".encode()
    (tmp_path / IMAGE).write_bytes(content)
    store = await MintStore.connect(stack.database_url, min_size=2, max_size=5)
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0)) as http:
            pinata = PinataClient(stack.url("pinata"), stack.pinata_jwt, http)
            kubo = KuboClient(stack.url("kubo"), http)
            uploader = GatedUploader(pinata, kubo)
            ipfs = IpfsActivities(
                pinata=pinata,
                kubo=kubo,
                uploader=uploader,
                gateways=GatewayReader([stack.url("gateway-1")], http),
                images=ImageLoader(tmp_path, http),
                store=store,
            )
            yield Wired(
                stack, store, pinata, kubo, uploader, ipfs, content, await compute_cid(content)
            )
    finally:
        await store.close()


async def test_a_release_paused_before_its_unpin_cannot_unpin_a_pin_recorded_meanwhile(
    wired: Wired,
) -> None:
    first, second = await wired.claim(), await wired.claim()
    assert (await wired.upload(first)).provider == "pinata"
    assert await wired.pinata.is_pinned(wired.cid)

    wired.uploader.gate = gate = asyncio.Event()
    release = asyncio.create_task(wired.release(first))
    await asyncio.wait_for(wired.uploader.entered.wait(), 10)  # A decided to unpin; held
    upload = asyncio.create_task(wired.upload(second))
    # A claimed the CID before unpinning (and holds no lock now): B's record waits for the
    # claim to be given back, so B neither records nor uploads while A's unpin is pending.
    await asyncio.sleep(1.5)
    assert not upload.done(), "mint B recorded and uploaded while A's unpin was pending"
    assert await wired.pin_rows(second) == []
    assert not await waiting_for_pin_lock(wired.stack, wired.cid)  # B polls; it holds nothing
    gate.set()
    released = await asyncio.wait_for(release, 30)
    uploaded = await asyncio.wait_for(upload, 30)

    assert released.unpinned == (wired.cid,)  # A was the only holder when it checked
    assert uploaded.provider == "pinata"
    assert await wired.pinata.is_pinned(wired.cid), "B's shared image lost its pin"
    assert await wired.released_rows(second) == [False, False]

    # B is the last holder: its own compensation unpins the CID for real.
    wired.uploader.gate = None
    assert (await wired.release(second)).unpinned == (wired.cid,)
    assert not await wired.pinata.is_pinned(wired.cid)


async def test_a_pin_recorded_first_keeps_the_cid_and_the_last_holder_unpins_it(
    wired: Wired,
) -> None:
    first, second = await wired.claim(), await wired.claim()
    await wired.upload(first)
    await wired.upload(second)
    assert (await wired.release(first)).unpinned == ()
    assert wired.uploader.unpinned == []
    assert await wired.pinata.is_pinned(wired.cid)

    assert (await wired.release(second)).unpinned == (wired.cid,)
    assert not await wired.pinata.is_pinned(wired.cid)
    assert not await wired.kubo.is_pinned(wired.cid)
    # A retry (its first answer lost) unpins again, harmlessly.
    assert (await wired.release(second)).unpinned == (wired.cid,)
    assert wired.uploader.unpinned == [Pin(wired.cid, "kubo"), Pin(wired.cid, "pinata")] * 2


async def test_a_hung_unpin_gives_its_claim_back_at_the_budget(wired: Wired) -> None:
    first, second = await wired.claim(), await wired.claim()
    await wired.store.record_pin(first, wired.cid, "pinata")
    hung = asyncio.Event()

    async def hang(cid: str, provider: str) -> None:
        hung.set()
        await asyncio.Event().wait()

    release = asyncio.create_task(wired.store.release_pins(first, hang, unpin_budget_s=1.0))
    await asyncio.wait_for(hung.wait(), 10)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(wired.store.record_pin(second, wired.cid, "pinata"), 10)
    assert loop.time() - started < 5  # waited for the budget, not for the hung call
    with pytest.raises(ServiceError) as caught:
        await release
    assert (caught.value.kind, caught.value.code) == (ErrorKind.TRANSIENT, "UnpinTimeout")
    # Released (decided), nothing recorded unpinned, the claim given back: a retry unpins it,
    # unless a live holder (second, recorded since) keeps the CID.
    [row] = await wired.pin_rows(first)
    assert (row["released"], row["unpinned"], row["claimed"]) == (True, False, False)
    assert await wired.store.release_pins(first, hang, unpin_budget_s=1.0) == []


async def test_an_unpin_failure_is_raised_as_is_and_not_held_against_the_database(
    wired: Wired,
) -> None:
    breakers = BreakerRegistry()
    wired.store.guard(breakers)
    mint_id = await wired.claim()
    await wired.store.record_pin(mint_id, wired.cid, "pinata")
    outage = ServiceError(
        "pinata is down", service="pinata", kind=ErrorKind.TRANSIENT, code="PinataUnavailable"
    )

    async def failing(cid: str, provider: str) -> None:
        raise outage

    for _ in range(4):  # the database's breaker opens after 3 failures in a row
        with pytest.raises(ServiceError) as caught:
            await wired.store.release_pins(mint_id, failing)
        assert caught.value is outage
    assert wired.store.breaker is not None and wired.store.breaker.state == "closed"
    [row] = await wired.pin_rows(mint_id)
    assert (row["released"], row["unpinned"], row["claimed"]) == (True, False, False)

    calls: list[Pin] = []

    async def works(cid: str, provider: str) -> None:
        calls.append(Pin(cid, provider))

    assert await wired.store.release_pins(mint_id, works) == [Pin(wired.cid, "pinata")]
    assert calls == [Pin(wired.cid, "pinata")]
    [row] = await wired.pin_rows(mint_id)
    assert (row["released"], row["unpinned"], row["claimed"]) == (True, True, False)


async def test_no_connection_transaction_or_lock_is_held_while_a_slow_provider_unpins(
    wired: Wired,
) -> None:
    """The devstack slows Pinata's and Kubo's unpins (a latency fault on their unpin paths).
    While the release_pins activity waits for them, no session is idle in a transaction, and
    another session takes the CID's pin lock and the mint's row locks at once (NOWAIT)."""
    mint_id = await wired.claim()
    await wired.upload(mint_id)
    for target, path in (("pinata", "/pinning/unpin"), ("kubo", "/api/v0/pin/rm")):
        add_fault(wired.stack, target=target, kind="latency", delay_ms=3_000, match=path)
    release = asyncio.create_task(wired.release(mint_id))
    await asyncio.wait_for(wired.uploader.entered.wait(), 10)  # step 1 committed: unpinning
    await asyncio.sleep(0.5)  # well inside the first slow answer
    conn = await asyncpg.connect(wired.stack.direct_database_url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL lock_timeout = '500ms'")
            idle_in_transaction = await conn.fetchval(
                """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                   AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"""
            )
            assert idle_in_transaction == 0
            assert await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock($1::int, hashtext($2::text))",
                _PIN_LOCK_CLASS,
                wired.cid,
            ), "release_pins holds the CID's pin lock while it unpins"
            await conn.execute("SELECT 1 FROM mints WHERE mint_id = $1 FOR UPDATE NOWAIT", mint_id)
            await conn.execute(
                "SELECT 1 FROM mint_pins WHERE mint_id = $1 FOR UPDATE NOWAIT", mint_id
            )
    finally:
        await conn.close()
    assert not release.done(), "the unpins were not slow: nothing was checked during them"
    assert faults_fired(wired.stack, "kubo:latency") >= 1

    assert (await asyncio.wait_for(release, 30)).unpinned == (wired.cid,)
    assert not await wired.pinata.is_pinned(wired.cid)
    rows = await wired.pin_rows(mint_id)
    assert [(r["released"], r["unpinned"], r["claimed"]) for r in rows] == [(True, True, False)] * 2


class Killed(BaseException):
    """The worker dies mid-release: nothing of release_pins runs after this (not an Exception)."""


async def test_a_release_killed_between_its_steps_is_completed_by_a_retry(wired: Wired) -> None:
    first, second = await wired.claim(), await wired.claim()
    await wired.store.record_pin(first, wired.cid, "pinata")

    async def killed(cid: str, provider: str) -> None:
        raise Killed

    with pytest.raises(Killed):
        await wired.store.release_pins(first, killed)
    # Step 1 committed (released, the pin claimed), step 3 never ran.
    [row] = await wired.pin_rows(first)
    assert (row["released"], row["unpinned"], row["claimed"]) == (True, False, True)
    # Another mint pinning the CID now waits for the claim: the dead release may have unpinned.
    recording = asyncio.create_task(wired.store.record_pin(second, wired.cid, "pinata"))
    await asyncio.sleep(1.0)
    assert not recording.done() and await wired.pin_rows(second) == []

    calls: list[Pin] = []

    async def works(cid: str, provider: str) -> None:
        calls.append(Pin(cid, provider))

    assert await wired.store.release_pins(first, works) == [Pin(wired.cid, "pinata")]  # retry
    assert calls == [Pin(wired.cid, "pinata")]
    [row] = await wired.pin_rows(first)
    assert (row["released"], row["unpinned"], row["claimed"]) == (True, True, False)
    await asyncio.wait_for(recording, 5)  # the claim given back: the other mint records now
    assert [r["provider"] for r in await wired.pin_rows(second)] == ["pinata"]
    # It is a live holder: the first mint's release, retried again, claims and unpins nothing.
    assert await wired.store.release_pins(first, works) == []
    assert calls == [Pin(wired.cid, "pinata")]
