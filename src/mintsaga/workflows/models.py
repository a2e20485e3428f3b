"""What a backend sends (`MintRequest`), what it gets back (`MintResult`), and what an operator
sees and sends while a mint runs. Frozen pydantic v2 models, carried by Temporal's pydantic
converter; `python -m mintsaga.workflows.models` prints the request's JSON Schema for other
languages.

Nothing here is secret: keys and tokens live in the worker's environment, never in a model.
"""

from __future__ import annotations

import enum
import json
import math
import re
import unicodedata
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)
from solders import sysvar
from solders.pubkey import Pubkey

from mintsaga.errors import endpoint_name
from mintsaga.settings import MAX_PRIORITY_FEE_MICRO_LAMPORTS
from mintsaga.stages import MintStage

MAX_NAME_BYTES = 32  # Token-2022 metadata as wallets display it; the Metaplex convention
MAX_SYMBOL_BYTES = 10
MAX_DESCRIPTION_CHARS = 2_000
MAX_ATTRIBUTES = 32  # wallets and marketplaces show a handful; more is a runaway backend
MAX_TRAIT_TYPE_CHARS = 64
MAX_ATTRIBUTE_VALUE_CHARS = 256
DEFAULT_OPERATOR_TIMEOUT_S = 24 * 3600

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")

# Keys a wallet can never be: programs and sysvars. Several are valid curve points (the System
# Program's all-zero key is one), so the on-curve check alone lets them through; an NFT sent
# there is lost. The ids are the programs' published addresses (solders' constants where it
# has them).
NOT_WALLETS: dict[str, str] = {
    "11111111111111111111111111111111": "the System Program",
    "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA": "the SPL Token program",
    "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb": "the Token-2022 program",
    "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL": "the Associated Token Account program",
    "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr": "the Memo program",
    "ComputeBudget111111111111111111111111111111": "the Compute Budget program",
    "Stake11111111111111111111111111111111111111": "the Stake program",
    "Vote111111111111111111111111111111111111111": "the Vote program",
    "Config1111111111111111111111111111111111111": "the Config program",
    "BPFLoaderUpgradeab1e11111111111111111111111": "the upgradeable BPF loader",
    "BPFLoader2111111111111111111111111111111111": "the BPF loader",
    "NativeLoader1111111111111111111111111111111": "the native loader",
    "AddressLookupTab1e1111111111111111111111111": "the Address Lookup Table program",
    "metaqbxxUerdq28cj1RbAWkYQm3ybzjb6a8bt518x1s": "the Metaplex Token Metadata program",
    **{
        str(key): f"the {name.lower().replace('_', ' ')} sysvar"
        for name, key in (
            ("CLOCK", sysvar.CLOCK),
            ("EPOCH_SCHEDULE", sysvar.EPOCH_SCHEDULE),
            ("INSTRUCTIONS", sysvar.INSTRUCTIONS),
            ("RECENT_BLOCKHASHES", sysvar.RECENT_BLOCKHASHES),
            ("RENT", sysvar.RENT),
            ("REWARDS", sysvar.REWARDS),
            ("SLOT_HASHES", sysvar.SLOT_HASHES),
            ("STAKE_HISTORY", sysvar.STAKE_HISTORY),
        )
    },
}


def invisible_characters(text: str) -> list[str]:
    """The control and format characters in `text` (NUL, bidi overrides such as U+202E,
    zero-width spaces and joiners), as `U+XXXX` names: a wallet would show the text other than
    it reads, and Postgres refuses NUL."""
    return [
        f"U+{ord(c):04X}" for c in dict.fromkeys(text) if unicodedata.category(c) in ("Cc", "Cf")
    ]


def _visible(value: str, field: str = "") -> str:
    """`value`, or a ValueError naming its invisible characters (and `field`, when given)."""
    found = invisible_characters(value)
    if found:
        where = f"{field}: " if field else ""
        raise ValueError(
            f"{where}control or invisible characters are not allowed ({', '.join(found)})"
        )
    return value


class _Frozen(BaseModel):
    # NaN and Infinity would pass as numbers and serialise as null: refused like any bad value.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class _Answer(BaseModel):
    """What a worker answers (results, queries): a starter older than the worker ignores the
    fields it does not know yet, so a rolling deploy does not break `status` or `result`."""

    model_config = ConfigDict(frozen=True, extra="ignore")


DEFAULT_DELAY_NOTICE_S = 300.0  # five minutes: a happy mint takes seconds


class MintStatus(enum.StrEnum):
    """The `MintStatus` search attribute: where a mint stands, for people and queries."""

    IN_PROGRESS = "IN_PROGRESS"
    QUEUED = "QUEUED"  # waiting at admission (MINT_ADMISSION_LIMIT): nothing claimed yet
    AWAITING_OPERATOR = "AWAITING_OPERATOR"
    MINTED = "MINTED"
    ROLLED_BACK = "ROLLED_BACK"
    FAILED = "FAILED"


class Attribute(_Frozen):
    trait_type: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TRAIT_TYPE_CHARS)]
    value: Annotated[
        str | int | float,
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "maxLength": MAX_ATTRIBUTE_VALUE_CHARS},
                    {"type": "integer"},
                    {"type": "number"},
                ],
                "title": "Value",
            }
        ),
    ]

    @field_validator("value", mode="before")
    @classmethod
    def _value_is_finite(cls, value: object) -> object:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number (NaN and Infinity are not)")
        return value

    @field_validator("value")
    @classmethod
    def _value_fits(cls, value: str | int | float) -> str | int | float:
        if isinstance(value, str) and len(value) > MAX_ATTRIBUTE_VALUE_CHARS:
            raise ValueError(f"at most {MAX_ATTRIBUTE_VALUE_CHARS} characters, not {len(value)}")
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("NUL (U+0000) is not allowed")
        return value

    @field_validator("trait_type")
    @classmethod
    def _trait_type_is_visible(cls, value: str) -> str:
        return _visible(value)


class ImageRef(_Frozen):
    """Where the image is, never the image itself: bytes stay out of workflow history."""

    path: str | None = Field(default=None, description="a file inside MINT_IMAGE_DIR")
    url: str | None = Field(default=None, description="an http(s) URL the worker fetches")
    sha256: str | None = Field(default=None, description="hex digest the bytes must match")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Self:
        if (self.path is None) == (self.url is None):
            raise ValueError("image: give exactly one of `path` or `url`")
        if self.url is not None and not self.url.startswith(("https://", "http://")):
            raise ValueError("image.url: must be an http(s) URL")
        if self.path is not None and (not self.path or self.path.startswith("/")):
            raise ValueError("image.path: must be a relative path inside MINT_IMAGE_DIR")
        if self.sha256 is not None and not _SHA256_HEX.match(self.sha256):
            raise ValueError("image.sha256: must be 64 lowercase hex characters")
        return self


class MintOptions(_Frozen):
    """Per-mint knobs with safe defaults; a backend rarely sets them."""

    operator_timeout_s: float = Field(
        default=DEFAULT_OPERATOR_TIMEOUT_S,
        gt=0,
        description="how long a mint waits for an operator before compensating on its own",
    )
    priority_fee_micro_lamports: int | None = Field(
        default=None,
        ge=0,
        le=MAX_PRIORITY_FEE_MICRO_LAMPORTS,
        description=(
            "micro-lamports per compute unit, at most the worker's SOLANA_PRIORITY_FEE_CAP;"
            " unset: a percentile of recent fees, capped"
        ),
    )
    confirmation_wait_s: float = Field(
        default=60.0, gt=0, le=600, description="how long one confirmation wait lasts (spec: 60 s)"
    )
    delay_notice_s: float = Field(
        default=DEFAULT_DELAY_NOTICE_S,
        gt=0,
        le=86_400,
        description="a mint not minted this long after its start tells its backend (mint.delayed)",
    )


# A collection's key, as `mintsaga collection create --key` takes it: a short lower-case name.
COLLECTION_KEY_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class MintRequest(_Frozen):
    """One NFT for one user. `mint_id` is the idempotency key end to end."""

    mint_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
    user_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    wallet: str = Field(description="the owner's base58 ed25519 public key")
    name: Annotated[str, StringConstraints(min_length=1)]
    symbol: Annotated[str, StringConstraints(min_length=1)]
    description: Annotated[str, StringConstraints(max_length=MAX_DESCRIPTION_CHARS)] = ""
    attributes: tuple[Attribute, ...] = Field(default=(), max_length=MAX_ATTRIBUTES)
    image: ImageRef
    collection: Annotated[str, StringConstraints(pattern=COLLECTION_KEY_PATTERN)] | None = Field(
        default=None,
        description=(
            "the key of a collection made with `mintsaga collection create` (never an address):"
            " the NFT joins it in its own transaction"
        ),
    )
    external_url: str | None = Field(
        default=None,
        max_length=200,
        pattern=r"^https://[^\s@]+$",
        description="an https page about the NFT, written as the metadata's external_url",
    )
    options: MintOptions = MintOptions()

    @model_serializer(mode="wrap")
    def _without_unset_new_fields(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Issue 18's fields are left out when unset, so a worker not yet upgraded (extra fields
        # forbidden) still reads every request that does not use them during a rolling deploy.
        data = handler(self)
        if isinstance(data, dict):
            for name in ("collection", "external_url"):
                if data.get(name) is None:
                    data.pop(name, None)
        return data

    @field_validator("wallet")
    @classmethod
    def _wallet_is_an_ed25519_key(cls, value: str) -> str:
        try:
            key = Pubkey.from_string(value)
        except ValueError as exc:
            raise ValueError("wallet: not a base58 public key of 32 bytes") from exc
        if not key.is_on_curve():
            raise ValueError(
                "wallet: not an ed25519 public key (off the curve: a program address?)"
            )
        if value in NOT_WALLETS:
            raise ValueError(f"wallet: {value} is {NOT_WALLETS[value]}, not a wallet")
        return value

    @field_validator("name")
    @classmethod
    def _name_fits(cls, value: str) -> str:
        if len(value.encode()) > MAX_NAME_BYTES:
            raise ValueError(f"name: at most {MAX_NAME_BYTES} bytes of UTF-8")
        return _visible(value, "name")

    @field_validator("symbol")
    @classmethod
    def _symbol_fits(cls, value: str) -> str:
        if len(value.encode()) > MAX_SYMBOL_BYTES:
            raise ValueError(f"symbol: at most {MAX_SYMBOL_BYTES} bytes of UTF-8")
        return _visible(value, "symbol")

    @field_validator("description")
    @classmethod
    def _description_has_no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("description: NUL (U+0000) is not allowed")
        return value

    @property
    def workflow_id(self) -> str:
        return workflow_id_for(self.mint_id)


def workflow_id_for(mint_id: str) -> str:
    return f"mint-{mint_id}"


class ErrorInfo(_Answer):
    """The last error a step saw, as an operator needs it."""

    step: str
    type: str
    message: str
    kind: str = Field(description="transient, rate_limited, permanent or needs_operator")


class MintResult(_Answer):
    mint_id: str
    status: MintStatus
    mint_address: str | None = None
    owner: str
    signature: str | None = None
    slot: int | None = None
    image_cid: str | None = None
    metadata_cid: str | None = None
    metadata_uri: str | None = None
    stage_seconds: dict[str, float] = {}
    retries: dict[str, int] = {}
    reason: str | None = Field(default=None, description="why it was rolled back or failed")
    collection: str | None = Field(default=None, description="the collection's key, if any")


class StatusView(_Answer):
    """The `status` query: everything the UI and `starter.py status` show."""

    mint_id: str
    status: MintStatus
    stage: MintStage
    mint_address: str | None
    owner: str
    image_cid: str | None
    metadata_cid: str | None
    signature: str | None
    attempts: dict[str, int]
    last_error: ErrorInfo | None
    awaiting_operator: bool
    awaiting_step: str | None
    awaiting_steps: tuple[str, ...] = ()  # every step waiting (parallel ones wait together)
    # Since when a step (or a failed compensation) waits for an operator; None while none does.
    awaiting_since: datetime | None = None
    past_pivot: bool
    reason: str | None
    collection: str | None = None  # the collection's key the request named


class RetryOverrides(_Frozen):
    """What an operator may change when retrying a step.

    The overrides a retry brings apply until the next operator decision: a later retry without
    `keep_overrides` drops them (a plain retry runs with none), one with it keeps the earlier
    ones, its own fields replacing theirs. (Mints whose history decided before this rule, with
    no `operator-overrides-per-retry` marker, keep every override until another replaces it.)
    """

    # Clamped by the worker to SOLANA_OPERATOR_PRIORITY_FEE_CAP.
    priority_fee_micro_lamports: int | None = Field(
        default=None, ge=0, le=MAX_PRIORITY_FEE_MICRO_LAMPORTS
    )
    # The endpoint's name (its URL as `endpoints list` shows it): a URL given with its key keeps
    # only the name, so no key enters the workflow's history.
    preferred_endpoint: str | None = None
    keep_overrides: bool = False  # keep the earlier retries' overrides (else they are dropped)

    @field_validator("preferred_endpoint")
    @classmethod
    def _endpoint_name(cls, value: str | None) -> str | None:
        return None if value is None else endpoint_name(value)

    @model_serializer(mode="wrap")
    def _without_default_keep(self, handler: SerializerFunctionWrapHandler) -> Any:
        # A plain retry's payload stays what it was before the field existed, so a worker not
        # yet upgraded (extra fields forbidden) still accepts it during a rolling deploy.
        data = handler(self)
        if isinstance(data, dict) and not self.keep_overrides:
            data.pop("keep_overrides", None)
        return data

    @property
    def changes(self) -> RetryOverrides:
        """Only what this retry overrides (without `keep_overrides`)."""
        return RetryOverrides(
            priority_fee_micro_lamports=self.priority_fee_micro_lamports,
            preferred_endpoint=self.preferred_endpoint,
        )

    def over(self, earlier: RetryOverrides) -> RetryOverrides:
        """This retry's overrides on top of `earlier`: its own fields win, the rest are kept."""
        return RetryOverrides(
            priority_fee_micro_lamports=earlier.priority_fee_micro_lamports
            if self.priority_fee_micro_lamports is None
            else self.priority_fee_micro_lamports,
            preferred_endpoint=self.preferred_endpoint or earlier.preferred_endpoint,
        )


class OperatorDecision(_Frozen):
    action: Literal["retry", "compensate"]
    overrides: RetryOverrides = RetryOverrides()
    decided_by: str = "operator"


if __name__ == "__main__":
    print(json.dumps(MintRequest.model_json_schema(), indent=2))


def request_problems(exc: ValidationError) -> str:
    """A request's validation errors as one line, each starting with the field as the request
    spells it (`attributes[3].value: at most 256 characters`)."""
    return "; ".join(_named_problem(error) for error in exc.errors())


def _named_problem(error: Any) -> str:
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
    field = field.removeprefix(".") or "request"
    message = str(error["msg"]).removeprefix("Value error, ")
    # The model's own messages already start with the field (`image.url: ...`).
    return message if message.startswith(field) else f"{field}: {message}"
