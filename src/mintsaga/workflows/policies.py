"""Every activity of the saga and its retry policy, in one place: a row per step, in saga order.

The numbers are the spec's ("Exponential Backoff Implementation" and "Integrated Retry
Orchestration"): Solana 2 s base, 8 s cap; IPFS 1 s base, 16 s cap; database 0.5 s base, 2 s
cap (`resilience.backoff`); each step's attempt count from the orchestration table. Temporal's
`RetryPolicy` is the only durable retry loop; failover between endpoints happens inside one
attempt.

Each row is a `Step` (workflows.steps): the activity's name, its input and output models, the
service it leans on, attempts, timeouts, and the provider queue it runs on. The activity's
decorator, the workflow's call and this table all read the same object.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from mintsaga.workflows import activity_models as io
from mintsaga.workflows.steps import Step

__all__ = [
    "MAX_RESIGNS",
    "PINATA",
    "PINATA_STEPS",
    "SAGA_STEPS",
    "STEPS",
    "Step",
    "provider_task_queue",
]


def provider_task_queue(task_queue: str, provider: str) -> str:
    """The task queue of a rate-limited provider's steps, next to the saga's own queue: the
    worker serves it with Temporal's task-queue-wide activity rate limit (worker.py)."""
    return f"{task_queue}-{provider}"


S = timedelta(seconds=1)
ADMISSION_WAIT_S = 60  # one admit_mint attempt's wait for a slot before the saga asks again
PINATA = "pinata"  # 180 requests a minute per account (settings.PINATA_*)

# 0. maintenance mode: new mints wait here (unlimited attempts, heartbeats while waiting)
WAIT_OUT_MAINTENANCE = Step(
    "wait_out_maintenance",
    io.MintRef,
    io.StepOut,
    "db",
    attempts=0,
    timeout=24 * 3600 * S,
    heartbeat=30 * S,
)
# The lean saga's first step, a local activity with the database health check's policy
# (spec: 2 attempts): the database answers, the mint's row if it ended with this request, and
# whether maintenance mode is on (only then does the saga wait in WAIT_OUT_MAINTENANCE).
OPEN_MINT = Step("open_mint", io.ClaimIn, io.OpenOut, "db", attempts=2, timeout=10 * S, local=True)
# 1. pre-mint checks (in parallel), the image, and the mint's row
CHECK_IPFS = Step(
    "check_ipfs",
    io.MintRef,
    io.StepOut,
    "ipfs",
    attempts=3,
    timeout=10 * S,
    provider=PINATA,
    local=True,
)
CHECK_DATABASE = Step(
    "check_database", io.MintRef, io.StepOut, "db", attempts=2, timeout=10 * S, local=True
)
CHECK_RPC = Step(
    "check_rpc", io.MintRef, io.StepOut, "solana", attempts=3, timeout=10 * S, local=True
)
CLAIM_MINT = Step("claim_mint", io.ClaimIn, io.ClaimOut, "db", attempts=3, timeout=10 * S)
# The claim behind the admission limit: each attempt waits up to AdmitIn.wait_s for a slot
# (ADMISSION_WAIT_S), heartbeating while it polls.
ADMIT_MINT = Step(
    "admit_mint",
    io.AdmitIn,
    io.AdmitOut,
    "db",
    attempts=3,
    timeout=ADMISSION_WAIT_S * S + 30 * S,
    heartbeat=15 * S,
    local=True,
)
# The first step: a mint that already ended with this request (its history may be gone: the
# namespace's retention) answers from its row, and nothing runs.
LOOK_UP_MINT = Step(
    "look_up_mint", io.ClaimIn, io.LookupOut, "db", attempts=3, timeout=10 * S, local=True
)
# The backend's notices (mintsaga.notices), recorded in order off the mint's critical path;
# retried without limit (a notice is never dropped), each attempt short.
RECORD_NOTICES = Step(
    "record_notices", io.NoticesIn, io.StepOut, "db", attempts=0, timeout=15 * S, local=True
)
# 2. uploads: the image's CID is computed first so both uploads run in parallel
COMPUTE_IMAGE_CID = Step(
    "compute_image_cid",
    io.ImageIn,
    io.ImageCidOut,
    "ipfs",
    attempts=5,
    timeout=60 * S,
    heartbeat=10 * S,
    local=True,
)
UPLOAD_IMAGE = Step(
    "upload_image",
    io.UploadImageIn,
    io.UploadOut,
    "ipfs",
    attempts=5,
    timeout=120 * S,
    heartbeat=10 * S,
    provider=PINATA,
)
UPLOAD_METADATA = Step(
    "upload_metadata",
    io.UploadMetadataIn,
    io.UploadOut,
    "ipfs",
    attempts=5,
    timeout=60 * S,
    heartbeat=10 * S,
    provider=PINATA,
)
# The lean saga's uploads, one activity: the image and its metadata at once (the spec gives
# both "5x with failover", so one policy serves both), on the Pinata queue; two Pinata
# requests an activity (settings.PINATA_REQUESTS_PER_ACTIVITY).
UPLOAD_ASSETS = Step(
    "upload_assets",
    io.UploadAssetsIn,
    io.UploadAssetsOut,
    "ipfs",
    attempts=5,
    timeout=180 * S,
    heartbeat=10 * S,
    provider=PINATA,
)
# 3. database record
RECORD_UPLOADS = Step(
    "record_uploads",
    io.RecordUploadsIn,
    io.StepOut,
    "db",
    attempts=3,
    timeout=10 * S,
    local=True,
)
# 4. the transaction; the pivot is the first send
PREPARE_TRANSACTION = Step(
    "prepare_transaction",
    io.PrepareIn,
    io.PreparedTx,
    "solana",
    attempts=3,
    timeout=30 * S,
    local=True,
)
SEND_TRANSACTION = Step(
    "send_transaction", io.SendIn, io.StepOut, "solana", attempts=3, timeout=30 * S
)
# The spec's 60 s confirmation wait (MintOptions.confirmation_wait_s) lives inside the
# activity; the timeout bounds the longest wait allowed (600 s) plus its last round.
AWAIT_CONFIRMATION = Step(
    "await_confirmation",
    io.ConfirmIn,
    io.ConfirmOut,
    "solana",
    attempts=3,
    timeout=660 * S,
    heartbeat=10 * S,
)
RECORD_MINTED = Step(
    "record_minted",
    io.RecordMintedIn,
    io.StepOut,
    "db",
    attempts=3,
    timeout=10 * S,
    local=True,
)
# 5. on-chain verification, each attempt against the next endpoint
VERIFY_NFT = Step(
    "verify_nft", io.VerifyIn, io.StepOut, "solana", attempts=5, timeout=30 * S, local=True
)
# 6. post-mint checks (in parallel), then the final record
CHECK_GATEWAYS = Step(
    "check_gateways",
    io.GatewayCheckIn,
    io.StepOut,
    "ipfs",
    attempts=3,
    timeout=60 * S,
    heartbeat=10 * S,
    local=True,
)
CHECK_PARTNER_VIEW = Step(
    "check_partner_view",
    io.PartnerViewIn,
    io.StepOut,
    "ipfs",
    attempts=2,
    timeout=60 * S,
    local=True,
)
CHECK_DB_CONSISTENCY = Step(
    "check_db_consistency",
    io.ConsistencyIn,
    io.StepOut,
    "db",
    attempts=2,
    timeout=30 * S,
    local=True,
)
FINISH_MINT = Step(
    "finish_mint", io.FinishIn, io.StepOut, "db", attempts=3, timeout=10 * S, local=True
)
# compensations: idempotent, so they may retry more than the steps they undo
RELEASE_PINS = Step(
    "release_pins",
    io.MintRef,
    io.ReleaseOut,
    "ipfs",
    attempts=10,
    timeout=60 * S,
    heartbeat=10 * S,
    provider=PINATA,
)
ROLLBACK_MINT = Step(
    "rollback_mint", io.RollbackIn, io.StepOut, "db", attempts=10, timeout=10 * S, local=True
)

SAGA_STEPS: tuple[Step[Any, Any], ...] = (
    WAIT_OUT_MAINTENANCE,
    CHECK_IPFS,
    CHECK_DATABASE,
    CHECK_RPC,
    CLAIM_MINT,
    COMPUTE_IMAGE_CID,
    UPLOAD_IMAGE,
    UPLOAD_METADATA,
    RECORD_UPLOADS,
    PREPARE_TRANSACTION,
    SEND_TRANSACTION,
    AWAIT_CONFIRMATION,
    RECORD_MINTED,
    VERIFY_NFT,
    CHECK_GATEWAYS,
    CHECK_PARTNER_VIEW,
    CHECK_DB_CONSISTENCY,
    FINISH_MINT,
    RELEASE_PINS,
    ROLLBACK_MINT,
    ADMIT_MINT,
    LOOK_UP_MINT,
    RECORD_NOTICES,
    OPEN_MINT,
    UPLOAD_ASSETS,
)
# Looked up by activity name (activities.failures, bench, chaos).
STEPS: dict[str, Step[Any, Any]] = {step.name: step for step in SAGA_STEPS}

# The steps that call Pinata (a health probe's calls are paced by its schedule instead).
PINATA_STEPS = frozenset(step.name for step in SAGA_STEPS if step.provider == PINATA)

MAX_RESIGNS = 5  # fresh blockhashes after expiry before a person is asked to look
