"""Every retry policy and timeout of the saga, in one place: a table per service, a row per step.

The numbers are the spec's ("Exponential Backoff Implementation" and "Integrated Retry
Orchestration"): Solana 2 s base, 8 s cap; IPFS 1 s base, 16 s cap; database 0.5 s base, 2 s
cap; each step's attempt count from the orchestration table. Temporal's `RetryPolicy` is the
only durable retry loop; failover between endpoints happens inside one attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio.common import RetryPolicy

# One backoff table (base, cap, jitter) per service, shared with activities.pacing, which
# computes the jittered delay each failed attempt asks for.
from mintsaga.resilience.backoff import BACKOFF_BY_SERVICE


@dataclass(frozen=True)
class Step:
    """One activity's place in the saga: which service it leans on and how hard to retry."""

    service: str
    attempts: int
    timeout: timedelta
    heartbeat: timedelta | None = None
    # A rate-limited provider the step calls: the step runs on that provider's task queue,
    # where Temporal holds the provider's rate for the whole fleet (`provider_task_queue`).
    provider: str | None = None

    def retry_policy(self) -> RetryPolicy:
        backoff = BACKOFF_BY_SERVICE[self.service]
        return RetryPolicy(
            initial_interval=timedelta(seconds=backoff.base_s),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=backoff.cap_s),
            maximum_attempts=self.attempts,
        )

    def options(self) -> dict[str, object]:
        """Keyword arguments for `workflow.execute_activity`."""
        return {
            "start_to_close_timeout": self.timeout,
            "heartbeat_timeout": self.heartbeat,
            "retry_policy": self.retry_policy(),
        }


def provider_task_queue(task_queue: str, provider: str) -> str:
    """The task queue of a rate-limited provider's steps, next to the saga's own queue: the
    worker serves it with Temporal's task-queue-wide activity rate limit (worker.py)."""
    return f"{task_queue}-{provider}"


S = timedelta(seconds=1)
PINATA = "pinata"  # 180 requests a minute per account (clients.settings.PINATA_*)

STEPS: dict[str, Step] = {
    # 0. maintenance mode: new mints wait here (unlimited attempts, heartbeats while waiting)
    "wait_out_maintenance": Step("db", attempts=0, timeout=24 * 3600 * S, heartbeat=30 * S),
    # 1. pre-mint checks (in parallel)
    "check_ipfs": Step("ipfs", attempts=3, timeout=10 * S, provider=PINATA),
    "check_database": Step("db", attempts=2, timeout=10 * S),
    "check_rpc": Step("solana", attempts=3, timeout=10 * S),
    "claim_mint": Step("db", attempts=3, timeout=10 * S),
    # 2. uploads: the image's CID is computed first so both uploads run in parallel
    "compute_image_cid": Step("ipfs", attempts=5, timeout=60 * S, heartbeat=10 * S),
    "upload_image": Step("ipfs", attempts=5, timeout=120 * S, heartbeat=10 * S, provider=PINATA),
    "upload_metadata": Step("ipfs", attempts=5, timeout=60 * S, heartbeat=10 * S, provider=PINATA),
    # 3. database record
    "record_uploads": Step("db", attempts=3, timeout=10 * S),
    # 4. the transaction; the pivot is the first send
    "prepare_transaction": Step("solana", attempts=3, timeout=30 * S),
    "send_transaction": Step("solana", attempts=3, timeout=30 * S),
    # The spec's 60 s confirmation wait (MintOptions.confirmation_wait_s) lives inside the
    # activity; the timeout bounds the longest wait allowed (600 s) plus its last round.
    "await_confirmation": Step("solana", attempts=3, timeout=660 * S, heartbeat=10 * S),
    "record_minted": Step("db", attempts=3, timeout=10 * S),
    # 5. on-chain verification, each attempt against the next endpoint
    "verify_nft": Step("solana", attempts=5, timeout=30 * S),
    # 6. post-mint checks (in parallel), then the final record
    "check_gateways": Step("ipfs", attempts=3, timeout=60 * S, heartbeat=10 * S),
    "check_partner_view": Step("ipfs", attempts=2, timeout=60 * S),
    "check_db_consistency": Step("db", attempts=2, timeout=30 * S),
    "finish_mint": Step("db", attempts=3, timeout=10 * S),
    # compensations: idempotent, so they may retry more than the steps they undo
    "release_pins": Step("ipfs", attempts=10, timeout=60 * S, heartbeat=10 * S, provider=PINATA),
    "rollback_mint": Step("db", attempts=10, timeout=10 * S),
}

# The steps that call Pinata (a health probe's calls are paced by its schedule instead).
PINATA_STEPS = frozenset(name for name, step in STEPS.items() if step.provider == PINATA)

MAX_RESIGNS = 5  # fresh blockhashes after expiry before a person is asked to look
