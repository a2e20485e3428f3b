"""IPFS steps: the image's CID, the two uploads, gateway checks, and the unpin compensation.

Each pin is recorded against its mint *before* the upload (for both providers, since failover
decides the provider inside the call), so the compensation finds every pin a timed-out upload
may have left. Compensation unpins only what no other live mint holds: it claims those pins
under the CIDs' pin locks (which recording a pin takes too), unpins with no database connection
held, then records the unpins (`MintStore.release_pins`). A provider's other CID for the same
bytes (another layout, ipfs/uploads.py) is recorded the moment the provider answers it, before
its blocks are checked and before the content is pinned again under it.
"""

from __future__ import annotations

import asyncio
import functools
from typing import cast

from temporalio import activity

from mintsaga.activities.failures import classified, permanent
from mintsaga.db.mint_store import MintStore
from mintsaga.errors import ServiceError
from mintsaga.ipfs.cid import compute_cid
from mintsaga.ipfs.gateways import GatewayReader
from mintsaga.ipfs.images import ImageLoader
from mintsaga.ipfs.kubo import KuboClient
from mintsaga.ipfs.metadata import CollectionRef, ContentLinks, metaplex_metadata
from mintsaga.ipfs.pinata import PinataClient
from mintsaga.ipfs.uploads import IpfsUploader, Provider
from mintsaga.workflows import activity_models as io
from mintsaga.workflows.policies import (
    CHECK_GATEWAYS,
    CHECK_IPFS,
    COMPUTE_IMAGE_CID,
    RELEASE_PINS,
    UPLOAD_ASSETS,
    UPLOAD_IMAGE,
    UPLOAD_METADATA,
)

PROVIDERS = ("pinata", "kubo")
METADATA_MAX_BYTES = 1 * 2**20


class IpfsActivities:
    def __init__(
        self,
        *,
        pinata: PinataClient,
        kubo: KuboClient,
        uploader: IpfsUploader,
        gateways: GatewayReader,
        images: ImageLoader,
        store: MintStore,
        links: ContentLinks | None = None,
    ) -> None:
        self._links = links or ContentLinks()  # METADATA_URI_STYLE, METADATA_GATEWAY_URL
        self._pinata = pinata
        self._kubo = kubo
        self._uploader = uploader
        self._gateways = gateways
        self._images = images
        self._store = store

    @activity.defn(name=CHECK_IPFS.name)
    async def check_ipfs(self, ref: io.MintRef) -> io.StepOut:
        """Some provider can take the upload: Pinata, or Kubo when Pinata is unavailable; when
        both failed, the one our own breaker refused (opened by itself) is asked anyway, as
        the upload would (ipfs/uploads.py).

        Pinata is not asked per mint (its /data/ routes allow 30 requests a minute): its answer
        to this worker's last call, if under a minute old, stands for it (`reachable`), and only
        without one does a testAuthentication ask (docs/design.md, "The pre-mint IPFS check")."""
        with classified():
            try:
                await self._pinata.reachable()
            except ServiceError as primary:
                if not primary.retryable:
                    raise  # a bad PINATA_JWT is for a person to fix, not for failover to hide
                try:
                    await self._kubo.version()
                except ServiceError as backup:
                    if not backup.retryable:
                        raise
                    if primary.code.endswith("CircuitOpen"):
                        try:
                            await self._pinata.test_authentication(last_resort=True)
                        except ServiceError as again:
                            if not again.retryable:
                                raise  # a bad PINATA_JWT, found at last
                        else:
                            return io.StepOut(attempt=activity.info().attempt)
                    if not backup.code.endswith("CircuitOpen"):
                        raise
                    await self._kubo.version(last_resort=True)
        return io.StepOut(attempt=activity.info().attempt)

    @activity.defn(name=COMPUTE_IMAGE_CID.name)
    async def compute_image_cid(self, arg: io.ImageIn) -> io.ImageCidOut:
        async with classified(heartbeat=True), self._images.loaded(arg.image.model_dump()) as image:
            cid = await compute_cid(image.data)
        return io.ImageCidOut(
            attempt=activity.info().attempt,
            cid=cid,
            content_type=image.content_type,
            filename=image.filename,
            size=len(image.data),
        )

    @activity.defn(name=UPLOAD_IMAGE.name)
    async def upload_image(self, arg: io.UploadImageIn) -> io.UploadOut:
        # The image's bytes count against the worker's memory budget until they are uploaded.
        async with classified(heartbeat=True), self._images.loaded(arg.image.model_dump()) as image:
            cid = await compute_cid(image.data)
            if cid != arg.expected_cid:
                raise permanent(
                    f"the image changed since its CID was computed ({arg.expected_cid} -> {cid})",
                    "ImageChanged",
                    "image",
                )
            await self._record_pins(arg.mint_id, cid)
            upload = await self._uploader.upload(
                image.data,
                content_type=image.content_type,
                filename=image.filename,
                name=f"{arg.mint_id}-image",
                keyvalues={"mint_id": arg.mint_id, "kind": "image"},
                on_other_cid=functools.partial(self._record_pins, arg.mint_id),
            )
            await self._confirm_held(upload.cid, upload.provider)
        return io.UploadOut(
            attempt=activity.info().attempt, cid=upload.cid, provider=upload.provider
        )

    @activity.defn(name=UPLOAD_METADATA.name)
    async def upload_metadata(self, arg: io.UploadMetadataIn) -> io.UploadOut:
        async with classified(heartbeat=True):
            # The collection the mint joins, as its claim recorded it (an immutable row: a
            # retried upload writes the same bytes).
            joins = await self._store.collection_of(arg.mint_id)
            document = metaplex_metadata(
                name=arg.name,
                symbol=arg.symbol,
                description=arg.description,
                image_cid=arg.image_cid,
                attributes=[(a.trait_type, a.value) for a in arg.attributes],
                image_content_type=arg.image_content_type,
                links=self._links,
                external_url=arg.external_url,
                collection=None
                if joins is None
                else CollectionRef(
                    name=joins.name, family=joins.symbol, address=joins.address, key=joins.key
                ),
            )
            local = await compute_cid(document)
            await self._record_pins(arg.mint_id, local)
            upload = await self._uploader.upload(
                document,
                content_type="application/json",
                filename="metadata.json",
                name=f"{arg.mint_id}-metadata",
                keyvalues={"mint_id": arg.mint_id, "kind": "metadata"},
                on_other_cid=functools.partial(self._record_pins, arg.mint_id),
            )
            await self._confirm_held(upload.cid, upload.provider)
        return io.UploadOut(
            attempt=activity.info().attempt,
            cid=upload.cid,
            provider=upload.provider,
            uri=self._links.uri(upload.cid),
        )

    @activity.defn(name=UPLOAD_ASSETS.name)
    async def upload_assets(self, arg: io.UploadAssetsIn) -> io.UploadAssetsOut:
        """The lean saga's uploads in one activity: the image and its metadata at once, each
        as its own step would (pins recorded first, idempotent by CID); when the provider
        pinned the image under another layout's CID, the metadata again, naming that one."""
        uploads = await asyncio.gather(
            self.upload_image(arg.image), self.upload_metadata(arg.metadata), return_exceptions=True
        )
        for outcome in uploads:  # both ran to their end: nothing is left uploading
            if isinstance(outcome, BaseException):
                raise outcome
        image, metadata = cast(tuple[io.UploadOut, io.UploadOut], tuple(uploads))
        if image.cid != arg.metadata.image_cid:
            named = arg.metadata.model_copy(update={"image_cid": image.cid})
            metadata = await self.upload_metadata(named)
        return io.UploadAssetsOut(attempt=activity.info().attempt, image=image, metadata=metadata)

    async def _unpin(self, cid: str, provider: str) -> None:
        """What `MintStore.release_pins` calls for each pin it releases (repeatable)."""
        if provider not in PROVIDERS:
            raise permanent(
                f"mint pin on unknown IPFS provider {provider!r}", "UnknownProvider", "ipfs"
            )
        await self._uploader.unpin(cid, cast(Provider, provider))

    async def _confirm_held(self, cid: str, provider: str) -> None:
        """Note where the upload landed (db/pin_repair.py), so the pin repair finds what only
        Kubo holds without asking Pinata. Best effort: when this write fails, the repair asks
        Pinata's pinList about the CID instead; the upload itself succeeded."""
        try:
            await self._store.confirm_held(cid, provider)
        except ServiceError as exc:
            activity.logger.warning("could not note %s as held by %s: %s", cid, provider, exc)

    async def _record_pins(self, mint_id: str, cid: str) -> None:
        await self._store.record_pins(mint_id, cid, PROVIDERS)

    @activity.defn(name=CHECK_GATEWAYS.name)
    async def check_gateways(self, arg: io.GatewayCheckIn) -> io.StepOut:
        """Both CIDs' content, verified by block hashes, is served by the dedicated gateway
        (IPFS_DEDICATED_GATEWAY): blocking, paced inside the attempt (a 504 or a young 404
        asked again after its Retry-After; ipfs/gateways.py). The public gateways are asked
        once each and reported (log, ``mintsaga_gateway_checks_total``), never blocking and
        never waited on. Without a dedicated gateway, one public gateway serving it is enough,
        and when none does the read goes over them all, paced. The spec's "retry 3x across
        gateways" is this step's attempts."""
        # The pins were recorded before the uploads, which came before this step was scheduled.
        pinned_by = activity.info().scheduled_time.timestamp()
        max_bytes = self._images.max_bytes
        async with classified(heartbeat=True):
            for cid in arg.cids:
                if self._gateways.dedicated:
                    # Both run to their end (the report's metrics too) before a failure is raised.
                    served, reported = await asyncio.gather(
                        self._gateways.check_dedicated(
                            cid, max_bytes=max_bytes, pinned_at=pinned_by
                        ),
                        self._gateways.report_public(cid, max_bytes=max_bytes),
                        return_exceptions=True,
                    )
                    for outcome in (reported, served):
                        if isinstance(outcome, BaseException):
                            raise outcome
                    assert isinstance(reported, dict)
                    public = reported
                else:
                    public = await self._gateways.report_public(cid, max_bytes=max_bytes)
                    if not any(public.values()):
                        await self._gateways.check_dedicated(
                            cid, max_bytes=max_bytes, pinned_at=pinned_by
                        )
                missing = [url for url, ok in public.items() if not ok]
                if missing:
                    activity.logger.warning("%s not served by %s", cid, ", ".join(missing))
        return io.StepOut(attempt=activity.info().attempt)

    @activity.defn(name=RELEASE_PINS.name)
    async def release_pins(self, arg: io.MintRef) -> io.ReleaseOut:
        """Compensation: unpin this mint's CIDs that no other live mint holds.

        The store claims the pins to unpin, then unpins holding no connection (see
        `MintStore.release_pins`); another mint recording the same CID meanwhile waits until
        the claim is given back, and its upload pins it again.
        """
        async with classified(heartbeat=True):
            released = await self._store.release_pins(arg.mint_id, self._unpin)
        return io.ReleaseOut(
            attempt=activity.info().attempt, unpinned=tuple(sorted({cid for cid, _ in released}))
        )
