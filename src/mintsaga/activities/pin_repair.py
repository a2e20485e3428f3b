"""The pin repair's steps: content pinned on Kubo only, pinned to Pinata once it answers again.

While Pinata is down, uploads fail over to Kubo (ipfs/uploads.py). Unless that Kubo node is
reachable from the public IPFS network, wallets and marketplaces may never find those NFTs'
files, so the `PinRepair` workflow (workflows/pin_repair.py) pins them to Pinata later.

How: the bytes are read from our Kubo (`/api/v0/cat`, at most `max_bytes`) and uploaded with
`pinFileToIPFS`, and the CID Pinata answers must be the CID the mint recorded. Not pin by CID
(`pinByHash`): "For this operation to succeed, the content for the hash you provide must already
be pinned by another node on the IPFS network" (https://docs.pinata.cloud/api-pinning/pin-by-hash);
its job is "searching" the network and "expired" when Pinata "wasn't able to find your content
after a day of searching" (https://docs.pinata.cloud/reference/get_pinning-pinjobs). Its
`hostNodes` option takes the external multiaddresses of nodes holding the content
(https://docs.pinata.cloud/api-reference/endpoint/ipfs/pin-by-cid), which a private Kubo behind
a firewall does not have. Re-uploading works whatever Kubo's reachability, for a file's bytes
once, and `pinFileToIPFS` of content the account already holds is harmless (Pinata answers
`isDuplicate`).

Safe with compensation running at the same time: the upload happens under the repair's hold
on the CID (db/pin_repair.py), taken under the same pin lock as `record_pins` and
`release_pins`; a CID whose mints were compensated is never pinned again, and one compensated
while the repair uploaded is unpinned by the repair itself when it gives its hold back.
Idempotent: a CID is confirmed on Pinata once (its `mint_pins` rows), and every step can run
again.

Pinata's rate: every step runs on the Pinata task queue and makes at most one Pinata request
(the check: one pinList, a `/data/*` call paced by the worker's `/data` budget too; the repin:
one pinFileToIPFS, and an unpin only when the content's mints were compensated meanwhile). The
check is skipped for content whose upload is known to have landed on Kubo
(workflows/pin_repair.py says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from temporalio import activity

from mintsaga.activities.failures import classified
from mintsaga.db.mint_store import MintStore
from mintsaga.db.pin_repair import repair_holder
from mintsaga.errors import ServiceError
from mintsaga.ipfs.kubo import KuboClient
from mintsaga.ipfs.pinata import PinataClient
from mintsaga.observability.metrics import IPFS_SINGLE_PROVIDER_CIDS, record_pin_repair
from mintsaga.resilience.breaker import CircuitBreaker
from mintsaga.resilience.guard import refuse_if_forced_open
from mintsaga.workflows.pin_repair import (
    PIN_REPAIR_CHECK,
    PIN_REPAIR_REPIN,
    PIN_REPAIR_SCAN,
    CheckOut,
    RepinOut,
    ScanOut,
)

__all__ = ["PinRepairActivities"]

# A CID recorded this recently may still be uploading: its upload confirms it itself.
CANDIDATE_AGE_S = 60.0
# A CID the repair could not confirm (not readable on Kubo, another CID from Pinata) is tried
# again this long after: each try may spend a pinList (/data/*: 30 requests a minute).
RETRY_AFTER_S = 3600.0
# CIDs whose upload was not noted get at most this many pinList look-ups a run: Pinata's
# /data/* routes allow 30 requests a minute for the whole account (health checks included).
LOOKUPS_PER_RUN = 5
# A hold older than this was left by a repair that died (a repin takes at most 180 s).
STALE_HOLD_S = 600.0
STALE_HOLDS_PER_RUN = 10
# The gauge disappears this long after its last scan unless a newer one refreshes it (a
# worker that no longer runs the repair must not keep reporting an old count).
GAUGE_STALE_S = 3 * 3600.0
_gauge_stamp: dict[str, float] = {}


def _set_gauge(provider: str, value: int, stale_s: float) -> None:
    IPFS_SINGLE_PROVIDER_CIDS.labels(provider).set(value)
    stamp = _gauge_stamp[provider] = time.monotonic()

    def expire() -> None:
        if _gauge_stamp.get(provider) == stamp:
            _gauge_stamp.pop(provider, None)
            with contextlib.suppress(KeyError):
                IPFS_SINGLE_PROVIDER_CIDS.remove(provider)

    with contextlib.suppress(RuntimeError):  # no running loop: nothing expires
        asyncio.get_running_loop().call_later(stale_s, expire)


class PinRepairActivities:
    """The repair's steps, over clients of their own without circuit breakers (as the health
    probes'): the first run after Pinata is back repairs, whatever the mints' breaker still
    thinks, and a repair's failing call during an outage (one a run: the run then ends) never
    counts towards the breakers mints depend on. An operator's force-open of Pinata's breaker
    (`pinata_breaker`, e.g. emergency mode) is respected: the steps are refused."""

    def __init__(
        self,
        *,
        pinata: PinataClient,
        kubo: KuboClient,
        store: MintStore,
        max_bytes: int,
        pinata_breaker: CircuitBreaker | None = None,
        batch: int = 25,
        gauge_stale_s: float = GAUGE_STALE_S,
    ) -> None:
        self._pinata = pinata
        self._kubo = kubo
        self._store = store
        self._max_bytes = max_bytes
        self._pinata_breaker = pinata_breaker
        self._batch = batch
        self._gauge_stale_s = gauge_stale_s

    @activity.defn(name=PIN_REPAIR_SCAN.name)
    async def pin_repair_scan(self) -> ScanOut:
        """Give back holds a dead repair left, set the gauge, pick the batch."""
        released = 0
        with classified():
            for holder in await self._store.stale_repair_holds(STALE_HOLD_S, STALE_HOLDS_PER_RUN):
                await self._store.release_pins(holder, self._unpin)
                released += 1
            single = await self._store.single_provider_cids()
            _set_gauge("kubo", single, self._gauge_stale_s)
            found = await self._store.pin_repair_candidates(
                self._batch, older_than_s=CANDIDATE_AGE_S, retry_after_s=RETRY_AFTER_S
            )
        unknown = [cid for cid, on_kubo in found if not on_kubo][:LOOKUPS_PER_RUN]
        found = [(cid, on_kubo) for cid, on_kubo in found if on_kubo or cid in unknown]
        cids = [cid for cid, _ in found]
        if cids or released:
            activity.logger.info(
                "pin repair: %d CIDs to check, %d held by kubo only, %d stale holds released",
                len(cids),
                single,
                released,
            )
        return ScanOut(
            cids=cids,
            kubo_only=[cid for cid, on_kubo in found if on_kubo],
            single_provider=single,
            holds_released=released,
        )

    @activity.defn(name=PIN_REPAIR_CHECK.name)
    async def pin_repair_check(self, cid: str) -> CheckOut:
        """Whether Pinata holds ``cid`` (its pinList); if so, the CID's rows are confirmed."""
        with classified():
            refuse_if_forced_open(self._pinata_breaker, "pinata")
            pinned = await self._pinata.is_pinned(cid)
            if pinned:
                await self._store.confirm_held(cid, "pinata")
                record_pin_repair("already_pinned")
        return CheckOut(pinned=pinned)

    @activity.defn(name=PIN_REPAIR_REPIN.name)
    async def pin_repair_repin(self, cid: str) -> RepinOut:
        """Hold ``cid``, read it from Kubo, upload it to Pinata, check the CID, confirm it,
        give the hold back (which unpins when the CID's mints were compensated meanwhile).
        Raises only when Pinata or the database failed (the run ends there)."""
        async with classified(heartbeat=True):
            refuse_if_forced_open(self._pinata_breaker, "pinata")
            state = await self._store.hold_for_repair(cid)
            if state != "held":
                record_pin_repair(state)
                return RepinOut(outcome=state, detail=_HOLD_DETAIL[state])
            try:
                out = await self._repin(cid)
            finally:
                # Given back whatever happened: with no live holder left, this unpins.
                unpinned = await self._store.release_pins(repair_holder(cid), self._unpin)
            if unpinned and out.outcome == "repinned":
                out = RepinOut(
                    outcome="released",
                    detail="its mints were compensated while the repair uploaded; unpinned again",
                )
        record_pin_repair(out.outcome)
        if out.outcome != "repinned":
            activity.logger.warning("pin repair of %s: %s: %s", cid, out.outcome, out.detail)
        return out

    async def _repin(self, cid: str) -> RepinOut:
        try:
            data = await self._kubo.cat(cid, max_bytes=self._max_bytes)
        except ServiceError as exc:
            await self._store.note_repair_tried(cid)
            return RepinOut(outcome="kubo_failed", detail=f"{exc.code}: {exc.message}"[:300])
        got = await self._pinata.pin_file(
            data,
            filename=cid,
            name=f"pin-repair-{cid}",
            keyvalues={"purpose": "pin-repair"},
        )
        if got != cid:
            await self._store.note_repair_tried(cid)
            return RepinOut(
                outcome="cid_mismatch",
                detail=f"pinata stored kubo's bytes of {cid} as {got} (another layout)",
            )
        await self._store.confirm_held(cid, "pinata")
        return RepinOut(outcome="repinned", detail=f"{len(data)} bytes from kubo")

    async def _unpin(self, cid: str, provider: str) -> Any:
        """What release_pins calls for the repair's holder rows (one per provider)."""
        if provider == "pinata":
            return await self._pinata.unpin(cid)
        if provider == "kubo":
            return await self._kubo.pin_rm(cid)
        raise ValueError(f"a repair hold on provider {provider!r}")


_HOLD_DETAIL = {
    "claimed": "a compensation is unpinning it now; a later run looks again",
    "released": "no live or minted mint holds it at pinata any more (compensated)",
}
