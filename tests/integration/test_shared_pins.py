"""A CID two mints share (tier images: same bytes, same CID) survives one mint's compensation.

The release_pins activity and the upload activity run for real against the devstack's
Postgres, Pinata and Kubo; only the order is forced: mint A's unpin is held at a gate while
mint B records its pin and uploads the same image. The pin B relies on must still be there
when both are done, which needs A's check-and-unpin and B's record to exclude each other.

Every test uploads content unique to the run, so no other pin can make it pass.
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
    # B either gets through (record and upload: the lost pin to come) or waits for A's lock.
    for _ in range(200):
        if upload.done() or await waiting_for_pin_lock(wired.stack, wired.cid):
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("mint B neither uploaded nor waited for the CID's pin lock")
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


async def test_a_hung_unpin_gives_the_lock_back_and_releases_nothing(wired: Wired) -> None:
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
    assert await wired.released_rows(first) == [False]  # rolled back: a retry does it all


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
    assert await wired.released_rows(mint_id) == [False]

    calls: list[Pin] = []

    async def works(cid: str, provider: str) -> None:
        calls.append(Pin(cid, provider))

    assert await wired.store.release_pins(mint_id, works) == [Pin(wired.cid, "pinata")]
    assert calls == [Pin(wired.cid, "pinata")]
    assert await wired.released_rows(mint_id) == [True]
