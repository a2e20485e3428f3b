"""The contract between the saga and its activities: one input and one output model per step.

The workflow calls activities by name with these models, so it never imports the activity
module (and through it no network library). Outputs carry the attempt that succeeded, which is
how the saga counts retries per service for `MintResult.retries`. A failed attempt says the same
in its `FailureDetails`. Which step takes which models is `workflows.policies`.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializerFunctionWrapHandler,
    StrictInt,
    StrictStr,
    ValidationError,
    model_serializer,
)
from temporalio.exceptions import ApplicationError

from mintsaga.workflows.models import Attribute, ImageRef


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StepOut(_Model):
    attempt: int = 1


class FailureDetails(BaseModel):
    """What a failed attempt says besides its `type` and message: the first (only) detail of the
    activity's `ApplicationError` (`activities.failures` sets every field).

    On the wire a JSON object, `{"kind", "service", "endpoint", "attempt"}`, as every stored
    history holds it. Read field by field (`of`), as the saga always has: a field that is
    missing or malformed reads as None and the reader falls back to what the error itself says
    (its retry flag; the step's attempt limit), an unknown field is ignored. So a detail written
    by hand (`{"kind": "needs_operator"}`, as tests and other SDKs' activities do) still says
    what it says, and a history replays the way it ran.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: StrictStr | None = None  # an ErrorKind: transient, rate_limited, permanent, ...
    service: StrictStr | None = None
    endpoint: StrictStr | None = None
    attempt: StrictInt | None = None  # the attempt that failed

    @classmethod
    def of(cls, error: ApplicationError) -> Self | None:
        """The details `error` carries (None when its first detail is no JSON object)."""
        first = error.details[0] if error.details else None
        if isinstance(first, cls):
            return first
        if not isinstance(first, dict):
            return None
        try:
            return cls.model_validate(first)
        except ValidationError as exc:
            malformed = {problem["loc"][0] for problem in exc.errors() if problem["loc"]}
            return cls.model_validate({k: v for k, v in first.items() if k not in malformed})

    def as_detail(self) -> dict[str, object]:
        """The plain JSON object to attach: the same bytes whatever the data converter."""
        return self.model_dump(mode="json")


class MintRef(_Model):
    mint_id: str


class ClaimIn(_Model):
    mint_id: str
    user_id: str
    wallet: str
    collection: str | None = None  # the collection's key: the claim takes one of its slots

    @model_serializer(mode="wrap")
    def _without_unset_collection(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Left out when None: a worker not yet upgraded reads it as before (rolling deploy).
        data = handler(self)
        if isinstance(data, dict) and self.collection is None:
            data.pop("collection", None)
        return data


class ClaimOut(StepOut):
    mint_address: str


class RecordedMint(_Model):
    """What the mints row says of a mint that ended (MINTED or ROLLED_BACK) with this request."""

    status: Literal["MINTED", "ROLLED_BACK"]
    mint_address: str | None = None
    signature: str | None = None
    slot: int | None = None
    image_cid: str | None = None
    metadata_cid: str | None = None
    metadata_uri: str | None = None
    reason: str | None = None


class AdmitIn(ClaimIn):
    """A claim that waits at admission (MINT_ADMISSION_LIMIT): up to `wait_s` seconds in this
    attempt for a slot between claim and pivot; 0: one look, then the answer."""

    wait_s: float = 0.0


class AdmitOut(StepOut):
    """Claimed (`mint_address` set), still queued behind the admission limit, or found ended
    (`ended`: the row is MINTED or ROLLED_BACK with this request; nothing is claimed)."""

    queued: bool = False
    mint_address: str | None = None
    ended: RecordedMint | None = None


class NoticeIn(_Model):
    """One status change a backend is told about (mintsaga.notices), recorded once per key."""

    type: str  # a NoticeType value
    event_key: str
    data: dict[str, Any]


class NoticesIn(_Model):
    """The notices waiting to be recorded, oldest first (recorded in that order)."""

    mint_id: str
    notices: tuple[NoticeIn, ...]


class LookupOut(StepOut):
    """The mint as recorded, if it ended with this request; None: run the saga."""

    ended: RecordedMint | None = None


class OpenOut(LookupOut):
    """`open_mint`: the database answered; the ended row, if any; maintenance mode now."""

    maintenance: bool = False


class ImageIn(_Model):
    mint_id: str
    image: ImageRef


class ImageCidOut(StepOut):
    cid: str
    content_type: str
    filename: str
    size: int


class UploadImageIn(_Model):
    mint_id: str
    image: ImageRef
    expected_cid: str


class UploadMetadataIn(_Model):
    mint_id: str
    name: str
    symbol: str
    description: str
    attributes: tuple[Attribute, ...]
    image_cid: str
    image_content_type: str
    external_url: str | None = None  # the request's; None in histories before issue 18

    @model_serializer(mode="wrap")
    def _without_unset_external_url(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Left out when None: a worker not yet upgraded reads it as before (rolling deploy).
        data = handler(self)
        if isinstance(data, dict) and self.external_url is None:
            data.pop("external_url", None)
        return data


class UploadOut(StepOut):
    cid: str
    provider: str
    # The link to ``cid`` the NFT uses (METADATA_URI_STYLE), for the metadata upload; None from
    # workers before issue 16 (and for the image): ``ipfs://<cid>``.
    uri: str | None = None


class UploadAssetsIn(_Model):
    """Both uploads of the lean saga: the image, and its metadata naming the computed CID."""

    image: UploadImageIn
    metadata: UploadMetadataIn


class UploadAssetsOut(StepOut):
    image: UploadOut
    metadata: UploadOut  # names `image.cid`, the CID the provider pinned


class RecordUploadsIn(_Model):
    mint_id: str
    image_cid: str
    metadata_cid: str


class PrepareIn(_Model):
    mint_id: str
    owner: str
    name: str
    symbol: str
    uri: str
    priority_fee_micro_lamports: int | None = None  # None: from recent fees, capped
    resign: int = 0  # signatures made before this one; each raises the priority fee
    # The fee is an operator's (a retry's override): capped by SOLANA_OPERATOR_PRIORITY_FEE_CAP;
    # a request's is capped by SOLANA_PRIORITY_FEE_CAP.
    fee_from_operator: bool = False

    @model_serializer(mode="wrap")
    def _without_default_flag(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Left out when false, so the payload a worker not yet upgraded (extra fields
        # forbidden) receives during a rolling deploy is what it was before the field existed.
        data = handler(self)
        if isinstance(data, dict) and not self.fee_from_operator:
            data.pop("fee_from_operator", None)
        return data


class OnChain(_Model):
    """A mint found already on chain, and the transaction that created it."""

    signature: str | None
    slot: int | None


class PreparedTx(StepOut):
    signature: str
    tx_base64: str
    blockhash: str
    last_valid_block_height: int
    already_minted: OnChain | None = None


class SendIn(_Model):
    mint_id: str
    signature: str
    tx_base64: str
    preferred_endpoint: str | None = None


class ConfirmIn(_Model):
    mint_id: str
    signature: str
    tx_base64: str
    last_valid_block_height: int
    wait_s: float


class ConfirmOut(StepOut):
    outcome: Literal["confirmed", "expired", "failed"]
    slot: int | None = None
    error: str | None = None


class RecordMintedIn(_Model):
    mint_id: str
    signature: str | None
    slot: int | None
    mint_address: str


class VerifyIn(_Model):
    mint_id: str
    mint_address: str
    owner: str
    name: str
    symbol: str
    uri: str


class GatewayCheckIn(_Model):
    mint_id: str
    cids: tuple[str, ...]


class PartnerViewIn(_Model):
    mint_id: str
    mint_address: str
    owner: str
    metadata_cid: str
    image_cid: str
    uri: str | None = None  # the on-chain uri expected; None: ``ipfs://<metadata_cid>``


class ConsistencyIn(_Model):
    mint_id: str
    mint_address: str
    owner: str


class FinishIn(_Model):
    mint_id: str


class RollbackIn(_Model):
    mint_id: str
    reason: str
    # The request's own identity: a row another request holds (same mint_id) is not undone.
    user_id: str | None = None
    wallet: str | None = None


class ReleaseOut(StepOut):
    unpinned: tuple[str, ...] = ()
