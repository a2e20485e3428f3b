"""What a mint holds while its saga runs, and the views of it: the result, the status query's
answer, the notices' fields, and each step's input built from it.

`MintState` is the ground `MintSaga` (workflows.mint_saga) stands on: the story there, the
mint's fields and their views here, the machinery in `workflows.saga`. Deterministic code
only, like every workflow module.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    # By full name: the SDK passes `from package import module` through only in part.
    import mintsaga.workflows.activity_models as io
    from mintsaga.stages import MintStage
    from mintsaga.workflows.models import MintRequest, MintResult, MintStatus, StatusView
    from mintsaga.workflows.saga import Saga

__all__ = ["MintState"]


class MintState(Saga):
    def __init__(self) -> None:
        super().__init__()
        self._request: MintRequest | None = None
        self._mint_address: str | None = None
        self._image: io.ImageCidOut | None = None  # checked and hashed, not uploaded yet
        self._image_cid: str | None = None
        self._image_type = "application/octet-stream"
        self._metadata_cid: str | None = None
        self._metadata_link: str | None = None  # the upload's uri; None: ipfs://<cid>
        self._prepared: io.PreparedTx | None = None
        self._resigns = 0
        self._signature: str | None = None
        self._slot: int | None = None
        self._maintenance = False  # open_mint found maintenance mode on (the lean saga)

    def _answer_from_row(self, ended: io.RecordedMint) -> MintResult:
        """The result of a mint that ended before, as its row recorded it; nothing ran."""
        self._mint_address, self._signature, self._slot = (
            ended.mint_address,
            ended.signature,
            ended.slot,
        )
        self._image_cid, self._metadata_cid = ended.image_cid, ended.metadata_cid
        self._metadata_link, self._reason = ended.metadata_uri, ended.reason
        status = MintStatus(ended.status)
        self._enter(MintStage(ended.status), f"ended before: {ended.status}, from its record")
        self._settled = True  # told already, when it ended
        self._set_status(status)
        return self._result(status)

    def _prepare_input(self) -> io.PrepareIn:
        req = self._req
        fee = self._overrides.priority_fee_micro_lamports
        return io.PrepareIn(
            mint_id=req.mint_id,
            owner=req.wallet,
            name=req.name,
            symbol=req.symbol,
            uri=self._metadata_uri or "",
            priority_fee_micro_lamports=req.options.priority_fee_micro_lamports
            if fee is None
            else fee,
            resign=self._resigns,
            # Only the activity's input changes (no command does): no patch marker needed.
            fee_from_operator=fee is not None,
        )

    def _send_input(self, prepared: io.PreparedTx) -> io.SendIn:
        # A function too: an operator's retry may name the endpoint to send to first.
        return io.SendIn(
            mint_id=self._req.mint_id,
            signature=prepared.signature,
            tx_base64=prepared.tx_base64,
            preferred_endpoint=self._overrides.preferred_endpoint,
        )

    def _status_view(self) -> StatusView:
        """What the `status` query answers."""
        req = self._req
        return StatusView(
            mint_id=req.mint_id,
            status=self._published_status,
            stage=self._stage,
            mint_address=self._mint_address,
            owner=req.wallet,
            image_cid=self._image_cid,
            metadata_cid=self._metadata_cid,
            signature=self._signature,
            attempts=dict(self._attempts),
            last_error=self._last_error,
            awaiting_operator=bool(self._waiting),
            awaiting_step=self._waiting[0] if self._waiting else None,
            awaiting_steps=tuple(self._waiting),
            awaiting_since=self._awaiting_since,
            past_pivot=self._pivoted,
            reason=self._reason,
            collection=req.collection,
        )

    # ---------------------------------------------------------------- bookkeeping

    @property
    def _req(self) -> MintRequest:
        assert self._request is not None
        return self._request

    def _notice_data(self) -> dict[str, Any]:
        req = self._req
        return {
            "user_id": req.user_id,
            "owner": req.wallet,
            "mint_address": self._mint_address,
            "image_cid": self._image_cid,
            "metadata_cid": self._metadata_cid,
            "metadata_uri": self._metadata_uri,
            "signature": self._signature,
            "slot": self._slot,
        }

    @property
    def _metadata_uri(self) -> str | None:
        if self._metadata_link is not None:
            return self._metadata_link
        return f"ipfs://{self._metadata_cid}" if self._metadata_cid else None

    def _result(self, status: MintStatus) -> MintResult:
        return MintResult(
            mint_id=self._req.mint_id,
            status=status,
            mint_address=self._mint_address,
            owner=self._req.wallet,
            signature=self._signature,
            slot=self._slot,
            image_cid=self._image_cid,
            metadata_cid=self._metadata_cid,
            metadata_uri=self._metadata_uri,
            stage_seconds={k: round(v, 3) for k, v in self._stage_seconds.items()},
            retries=dict(self._retries),
            reason=self._reason,
            collection=self._req.collection,
        )
