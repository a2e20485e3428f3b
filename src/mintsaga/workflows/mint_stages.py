"""The stages of MintSaga, each a method: what `MintSaga.run` (workflows.mint_saga) calls in order.

Kept apart from the workflow's module so that the sandbox shares them: the sandbox imports a
workflow's own module again for every run (its code objects were 41 KB of each cached run's
memory), and passes this one through like every module the workflow module imports inside
`imports_passed_through()`. Deterministic workflow code all the same: no module state, no I/O,
activities only through their `Step`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools

from temporalio import workflow
from temporalio.exceptions import ActivityError, CancelledError

with workflow.unsafe.imports_passed_through():
    # By full name: the SDK passes `from package import module` through only in part.
    import mintsaga.workflows.activity_models as io
    from mintsaga.notices import NoticeType
    from mintsaga.stages import MintStage
    from mintsaga.workflows.mint_state import MintState
    from mintsaga.workflows.models import (
        ErrorInfo,
        MintStatus,
    )
    from mintsaga.workflows.policies import (
        ADMISSION_WAIT_S,
        ADMIT_MINT,
        AWAIT_CONFIRMATION,
        CHECK_DATABASE,
        CHECK_DB_CONSISTENCY,
        CHECK_GATEWAYS,
        CHECK_IPFS,
        CHECK_PARTNER_VIEW,
        CHECK_RPC,
        CLAIM_MINT,
        COMPUTE_IMAGE_CID,
        FINISH_MINT,
        LOOK_UP_MINT,
        MAX_RESIGNS,
        OPEN_MINT,
        PREPARE_TRANSACTION,
        RECORD_MINTED,
        RECORD_UPLOADS,
        RELEASE_PINS,
        ROLLBACK_MINT,
        SEND_TRANSACTION,
        UPLOAD_ASSETS,
        UPLOAD_IMAGE,
        UPLOAD_METADATA,
        VERIFY_NFT,
        WAIT_OUT_MAINTENANCE,
    )
    from mintsaga.workflows.saga import HandledError
    from mintsaga.workflows.steps import execute

__all__ = ["EndedBefore", "MintStages"]


class EndedBefore(Exception):
    """The claim found the mint ended (MINTED or ROLLED_BACK) with this request."""

    def __init__(self, ended: io.RecordedMint) -> None:
        super().__init__(ended.status)
        self.ended = ended


class MintStages(MintState):
    """The stage methods of MintSaga (its run, handlers and queries are in workflows.mint_saga)."""

    async def _open(self) -> io.RecordedMint | None:
        """The lean saga's first step (`open_mint`): the database check, the row if the mint
        ended with this request, and whether maintenance mode is on."""
        req = self._req
        arg = io.ClaimIn(mint_id=req.mint_id, user_id=req.user_id, wallet=req.wallet)
        try:  # quietly first: a mint that ended before tells the backend nothing again
            opened = await execute(
                OPEN_MINT, arg, summary=OPEN_MINT.name, local=True, fallback=False
            )
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise asyncio.CancelledError from err
            # The database did not answer: from here on the backend is told (a delay, an
            # operator's wait), as it was when the database check failed.
            self._begin_notices(req.mint_id, delay_notice_s=req.options.delay_notice_s)
            opened = await self._step(OPEN_MINT, arg)
        self._maintenance = opened.maintenance
        return opened.ended

    async def _look_up(self) -> io.RecordedMint | None:
        """The row, if the mint ended with this request. Best effort: when the database does
        not answer, the saga runs, and its claim looks again (`EndedBefore`)."""
        req = self._req
        try:
            looked = await execute(
                LOOK_UP_MINT,
                io.ClaimIn(mint_id=req.mint_id, user_id=req.user_id, wallet=req.wallet),
                summary=LOOK_UP_MINT.name,
                local=self._local(LOOK_UP_MINT),
            )
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise asyncio.CancelledError from err
            workflow.logger.warning("look_up_mint failed (%s): the claim looks again", err)
            return None
        return looked.ended

    # ---------------------------------------------------------------- 0. maintenance mode

    async def _wait_out_maintenance(self) -> None:
        ref = io.MintRef(mint_id=self._req.mint_id)
        if self._lean:  # open_mint looked: the wait only when maintenance mode is on
            if self._maintenance:
                self._set_details("waiting while maintenance mode is on")
                await self._step(WAIT_OUT_MAINTENANCE, ref)
            return
        # Mints started before maintenance mode existed have no such step in their history.
        if workflow.patched("maintenance-gate"):
            self._set_details("waiting while maintenance mode is on (returns at once when off)")
            await self._step(WAIT_OUT_MAINTENANCE, ref)

    # ---------------------------------------------------------------- 1. pre-mint checks

    async def _pre_mint_checks(self) -> None:
        ref = io.MintRef(mint_id=self._req.mint_id)
        if self._lean:  # the database answered open_mint
            await self._all(self._step(CHECK_IPFS, ref), self._step(CHECK_RPC, ref))
            return
        await self._all(
            self._step(CHECK_IPFS, ref),
            self._step(CHECK_DATABASE, ref),
            self._step(CHECK_RPC, ref),
        )

    async def _check_image_and_claim(self) -> None:
        # The image first: a bad reference (a private host, too big, not an image, outside
        # MINT_IMAGE_DIR) ends the mint before anything is written, pinned or sent. Mints
        # started before this change claimed their row first; their histories replay that way.
        if self._patched("image-before-claim"):
            await self._compute_image_cid()
            await self._claim()
        else:
            await self._claim()
            await self._compute_image_cid()

    async def _compute_image_cid(self) -> None:
        req = self._req
        self._set_details("loading the image and computing its CID")
        self._image = await self._step(
            COMPUTE_IMAGE_CID, io.ImageIn(mint_id=req.mint_id, image=req.image)
        )

    async def _claim(self) -> None:
        req = self._req
        self._register(
            ROLLBACK_MINT,
            lambda reason: io.RollbackIn(
                mint_id=req.mint_id, user_id=req.user_id, wallet=req.wallet, reason=reason
            ),
        )
        if not self._patched("admission-control"):  # mints started before it
            claimed = await self._step(
                CLAIM_MINT,
                io.ClaimIn(
                    mint_id=req.mint_id,
                    user_id=req.user_id,
                    wallet=req.wallet,
                    collection=req.collection,
                ),
            )
            self._mint_address = claimed.mint_address
            return
        self._mint_address = await self._admit()

    async def _admit(self) -> str:
        """Claim once a slot between claim and pivot is free (MINT_ADMISSION_LIMIT); until
        then the mint is QUEUED, having claimed, pinned and sent nothing."""
        req = self._req
        wait_s = 0.0  # the first look answers at once, so a queued mint is shown as such
        while True:
            admitted = await self._step(
                ADMIT_MINT,
                io.AdmitIn(
                    mint_id=req.mint_id,
                    user_id=req.user_id,
                    wallet=req.wallet,
                    collection=req.collection,
                    wait_s=wait_s,
                ),
                remote=wait_s > 0,  # a queued mint waits in a regular activity
            )
            if admitted.ended is not None:
                raise EndedBefore(admitted.ended)
            if not admitted.queued:
                assert admitted.mint_address is not None
                if wait_s:  # it was queued
                    self._set_status(MintStatus.IN_PROGRESS)
                    self._notify(NoticeType.IN_PROGRESS, admitted=True)
                return admitted.mint_address
            if not wait_s:
                self._set_status(MintStatus.QUEUED)
                self._set_details("queued: the fleet's admission limit is reached")
                self._notify(NoticeType.QUEUED)
            wait_s = float(ADMISSION_WAIT_S)

    # ---------------------------------------------------------------- 2. uploads

    async def _upload(self) -> None:
        req, image = self._req, self._image
        assert image is not None
        self._image_cid, self._image_type = image.cid, image.content_type
        # Pins are recorded against the mint before each upload, so this undoes them all.
        self._register(RELEASE_PINS, lambda _reason: io.MintRef(mint_id=req.mint_id))
        self._set_details(f"uploading image {image.cid} and its metadata to IPFS")
        if self._lean:  # one activity; it names the CID the provider pinned
            assets = await self._step(
                UPLOAD_ASSETS,
                io.UploadAssetsIn(
                    image=io.UploadImageIn(
                        mint_id=req.mint_id, image=req.image, expected_cid=image.cid
                    ),
                    metadata=self._metadata_input(image.cid),
                ),
            )
            self._image_cid = assets.image.cid
            self._uploaded(assets.metadata)
            return
        uploaded, metadata = await self._all(
            self._step(
                UPLOAD_IMAGE,
                io.UploadImageIn(mint_id=req.mint_id, image=req.image, expected_cid=image.cid),
            ),
            self._step(UPLOAD_METADATA, self._metadata_input(image.cid)),
        )
        # A provider may store the image under another layout's CID (accepted only when its
        # blocks prove the bytes, ipfs/provider_cids.py): the NFT must name the CID that is
        # pinned, so the metadata is uploaded again naming it (both pins are the mint's).
        # Mints started before this change named the CID computed locally.
        if self._patched("image-cid-from-upload") and uploaded.cid != image.cid:
            self._image_cid = uploaded.cid
            self._set_details(
                f"the image is pinned as {uploaded.cid}: uploading its metadata again"
            )
            metadata = await self._step(UPLOAD_METADATA, self._metadata_input(uploaded.cid))
        self._uploaded(metadata)

    def _uploaded(self, metadata: io.UploadOut) -> None:
        self._metadata_cid = metadata.cid
        # The worker chooses how the NFT links its metadata (METADATA_URI_STYLE); mints that
        # uploaded before this change link it as ipfs://<cid>, and replay that way.
        if self._patched("metadata-uri-from-upload"):
            self._metadata_link = metadata.uri
        self._enter(MintStage.IPFS_UPLOADED, f"image and metadata pinned; metadata {metadata.cid}")

    def _metadata_input(self, image_cid: str) -> io.UploadMetadataIn:
        # One builder for the three uploads that send it (upload_assets, upload_metadata and
        # its second round naming the CID the provider pinned).
        req, image = self._req, self._image
        assert image is not None
        return io.UploadMetadataIn(
            mint_id=req.mint_id,
            name=req.name,
            symbol=req.symbol,
            description=req.description,
            attributes=req.attributes,
            image_cid=image_cid,
            image_content_type=image.content_type,
            external_url=req.external_url,
        )

    # ---------------------------------------------------------------- 3. database record

    async def _record_uploads(self) -> None:
        await self._step(
            RECORD_UPLOADS,
            io.RecordUploadsIn(
                mint_id=self._req.mint_id,
                image_cid=self._image_cid or "",
                metadata_cid=self._metadata_cid or "",
            ),
        )
        self._enter(MintStage.DATABASE_UPDATED, "building and signing the mint transaction")

    # ---------------------------------------------------------------- 4. the transaction

    async def _prepare_transaction(self) -> None:
        # A function, not a model: an operator's retry may bring a new priority fee.
        self._prepared = await self._step(PREPARE_TRANSACTION, self._prepare_input)

    async def _land_transaction(self) -> None:
        """Send, confirm, and re-sign only once the old blockhash has expired unseen."""
        resigns_since_operator = 0
        while True:
            prepared = self._prepared
            assert prepared is not None
            if prepared.already_minted is not None:
                self._pivoted = True  # the NFT exists: nothing may be undone
                self._signature = prepared.already_minted.signature
                self._slot = prepared.already_minted.slot
                break
            self._enter(MintStage.BLOCKCHAIN_SUBMITTED, f"sending transaction {prepared.signature}")
            self._pivoted = True
            # Refused as expired by every endpoint (BlockhashNotFound) is handled by waiting:
            # only the confirmation wait may conclude the blockhash expired (block height past
            # lastValidBlockHeight, signature unseen); a node behind the others says the same.
            with contextlib.suppress(HandledError):
                await self._step(
                    SEND_TRANSACTION,
                    functools.partial(self._send_input, prepared),
                    handled=("BlockhashNotFound",),
                )
            self._set_details(f"waiting for {prepared.signature} to confirm")
            confirmed = await self._step(
                AWAIT_CONFIRMATION,
                io.ConfirmIn(
                    mint_id=self._req.mint_id,
                    signature=prepared.signature,
                    tx_base64=prepared.tx_base64,
                    last_valid_block_height=prepared.last_valid_block_height,
                    wait_s=self._req.options.confirmation_wait_s,
                ),
            )
            if confirmed.outcome == "confirmed":
                self._signature, self._slot = prepared.signature, confirmed.slot
                break
            if confirmed.outcome == "failed":
                await self._await_operator(
                    "await_confirmation",
                    ErrorInfo(
                        step="await_confirmation",
                        type="TransactionFailed",
                        message=confirmed.error or "the transaction landed with an error",
                        kind="needs_operator",
                    ),
                )
            self._resigns += 1
            resigns_since_operator += 1
            if resigns_since_operator > MAX_RESIGNS:
                await self._await_operator(
                    "prepare_transaction",
                    ErrorInfo(
                        step="prepare_transaction",
                        type="TooManyResigns",
                        message=f"blockhash expired {self._resigns} times, the mint never landed",
                        kind="needs_operator",
                    ),
                )
                resigns_since_operator = 0
            self._set_details("blockhash expired unseen: signing again with a fresh one")
            await self._prepare_transaction()
        self._enter(MintStage.BLOCKCHAIN_CONFIRMED, f"confirmed in slot {self._slot}")

    async def _record_minted(self) -> None:
        await self._step(
            RECORD_MINTED,
            io.RecordMintedIn(
                mint_id=self._req.mint_id,
                signature=self._signature,
                slot=self._slot,
                mint_address=self._mint_address or "",
            ),
        )

    # ---------------------------------------------------------------- 5. on-chain verification

    async def _verify(self) -> None:
        req = self._req
        self._set_details("reading the NFT back from the chain")
        await self._step(
            VERIFY_NFT,
            io.VerifyIn(
                mint_id=req.mint_id,
                mint_address=self._mint_address or "",
                owner=req.wallet,
                name=req.name,
                symbol=req.symbol,
                uri=self._metadata_uri or "",
            ),
        )
        self._enter(MintStage.VERIFIED, "checking gateways, the wallet's view and the database")

    # ---------------------------------------------------------------- 6. post-mint checks

    async def _post_mint_checks(self) -> None:
        req = self._req
        image_cid, metadata_cid = self._image_cid or "", self._metadata_cid or ""
        await self._all(
            self._step(
                CHECK_GATEWAYS,
                io.GatewayCheckIn(mint_id=req.mint_id, cids=(image_cid, metadata_cid)),
            ),
            self._step(
                CHECK_PARTNER_VIEW,
                io.PartnerViewIn(
                    mint_id=req.mint_id,
                    mint_address=self._mint_address or "",
                    owner=req.wallet,
                    metadata_cid=metadata_cid,
                    image_cid=image_cid,
                    uri=self._metadata_uri,
                ),
            ),
            self._step(
                CHECK_DB_CONSISTENCY,
                io.ConsistencyIn(
                    mint_id=req.mint_id, mint_address=self._mint_address or "", owner=req.wallet
                ),
            ),
        )

    async def _finish(self) -> None:
        await self._step(FINISH_MINT, io.FinishIn(mint_id=self._req.mint_id))
        self._enter(MintStage.MINTED, f"minted {self._mint_address} for {self._req.wallet}")
        self._set_status(MintStatus.MINTED)
        self._notify(NoticeType.MINTED)
