"""Solana steps: prepare (sign), send, and wait for confirmation without ever minting twice.

`prepare_transaction` first asks the chain whether the mint already exists (a derived mint
address can hold one NFT only), and records the signature and `lastValidBlockHeight` in the
database before the transaction can be sent. `send_transaction` sends the bytes to every
endpoint at once; a send no endpoint answered is indeterminate, not failed (the node may have
taken it), and goes on like a sent one. `await_confirmation` polls the signature and
rebroadcasts the same signed bytes, to every endpoint, until the transaction confirms or its
blockhash expires unseen; only then may the workflow sign again.
"""

from __future__ import annotations

import time

from temporalio import activity

from mintsaga.activities.failures import classified
from mintsaga.activities.heartbeat import attempt_time_left
from mintsaga.db.mint_store import MintStore
from mintsaga.db.wallet_spend import spend_breaker_open
from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.observability.metrics import record_finalization_timeout, record_spend
from mintsaga.settings import DEFAULT_SOLANA_COMMITMENT
from mintsaga.solana.mint_keys import seed_mismatch
from mintsaga.solana.minter import SigStatus, SolanaMinter
from mintsaga.solana.prepare import CollectionTarget
from mintsaga.stages import MintStage
from mintsaga.workflows import activity_models as io
from mintsaga.workflows.policies import (
    AWAIT_CONFIRMATION,
    CHECK_RPC,
    PREPARE_TRANSACTION,
    SEND_TRANSACTION,
)

REBROADCAST_S = 2.0
# A rebroadcast waits at most this long for the endpoints' answers (its requests are out).
REBROADCAST_WITHIN_S = 2.0
# What a send attempt keeps of its time to record the outcome after the broadcast.
SEND_RECORD_MARGIN_S = 5.0
# With SOLANA_COMMITMENT=finalized, a transaction seen `confirmed` is waited for until it is
# `finalized`: under Tower BFT a block is rooted 31+ confirmed blocks later (~13 s on mainnet;
# https://docs.anza.xyz/consensus/commitments). The wait is stretched to at least this long
# after the first confirmed status, so one confirmed late in the wait is still finalized in
# the same attempt: the longest wait (600 s) plus this fits AWAIT_CONFIRMATION's 660 s timeout.
FINALIZATION_GRACE_S = 30.0


class SolanaActivities:
    def __init__(
        self,
        *,
        minter: SolanaMinter,
        store: MintStore,
        spend_limit_lamports: int,
        commitment: str = DEFAULT_SOLANA_COMMITMENT,
    ) -> None:
        self._minter = minter
        self._store = store
        self._spend_limit = spend_limit_lamports  # SOLANA_SPEND_LIMIT_SOL_PER_HOUR
        self._commitment = commitment  # SOLANA_COMMITMENT: what the confirmation wait waits for

    @activity.defn(name=CHECK_RPC.name)
    async def check_rpc(self, ref: io.MintRef) -> io.StepOut:
        with classified():
            await self._minter.health()
        return io.StepOut(attempt=activity.info().attempt)

    @activity.defn(name=PREPARE_TRANSACTION.name)
    async def prepare_transaction(self, arg: io.PrepareIn) -> io.PreparedTx:
        attempt = activity.info().attempt
        with classified():
            await self._check_claimed_address(arg.mint_id)
            existing = await self._already_minted(arg.mint_id, arg.owner)
            if existing is not None:
                return io.PreparedTx(
                    attempt=attempt,
                    signature=existing.signature or "",
                    tx_base64="",
                    blockhash="",
                    last_valid_block_height=0,
                    already_minted=existing,
                )
            joins = await self._store.collection_of(arg.mint_id)
            # None: the minter bids from recent fees (raised per re-sign); a number is an
            # explicit price (the request's, or an operator's override).
            signed = await self._minter.prepare(
                arg.mint_id,
                owner=arg.owner,
                name=arg.name,
                symbol=arg.symbol,
                uri=arg.uri,
                priority_fee_micro_lamports=arg.priority_fee_micro_lamports,
                resign=arg.resign,
                reserve=lambda cost: self._reserve_spend(arg.mint_id, cost),
                fee_from_operator=arg.fee_from_operator,
                collection=None
                if joins is None
                else CollectionTarget(joins.key, joins.address, joins.group_authority),
            )
            activity.logger.info(
                "signed %s: priority fee %d micro-lamports/CU, compute unit limit %d (%s)",
                signed.signature,
                signed.priority_fee_micro_lamports,
                signed.compute_unit_limit,
                "fallback"
                if signed.simulated_units is None
                else f"simulated {signed.simulated_units}",
            )
            # Recorded before it can be sent: whatever happens next, the signature is known.
            await self._store.record_submission(
                arg.mint_id, signed.signature, signed.last_valid_block_height, signed.blockhash
            )
        return io.PreparedTx(
            attempt=attempt,
            signature=signed.signature,
            tx_base64=signed.tx_base64,
            blockhash=signed.blockhash,
            last_valid_block_height=signed.last_valid_block_height,
        )

    async def _reserve_spend(self, mint_id: str, lamports: int) -> None:
        """The fleet-wide spend breaker: reserve the transaction's cost, or refuse to sign."""
        window = await self._store.reserve_spend(
            self._minter.payer, mint_id, lamports, limit_lamports=self._spend_limit
        )
        record_spend(
            reserved_lamports=lamports,
            window_lamports=window.reserved_lamports,
            limit_lamports=window.limit_lamports,
            granted=window.granted,
        )
        if not window.granted:
            raise spend_breaker_open(mint_id, lamports, window, endpoint=None)

    async def _check_claimed_address(self, mint_id: str) -> None:
        """Nothing is signed unless this worker derives the address recorded at claim."""
        row = await self._store.get(mint_id)
        if row is not None and row.mint_address:
            derived = self._minter.mint_address(mint_id)
            mismatch = seed_mismatch(mint_id, claimed=row.mint_address, derived=derived)
            if mismatch is not None:
                raise mismatch

    async def _already_minted(self, mint_id: str, owner: str) -> io.OnChain | None:
        state = await self._minter.nft_state(self._minter.mint_address(mint_id), owner)
        if state is None:
            return None
        for submission in reversed(await self._store.submissions(mint_id)):
            # An old submission may be out of the status cache: the node's history decides.
            status = await self._minter.signature_status(submission.signature, history=True)
            if status.found and status.err is None:
                return io.OnChain(signature=submission.signature, slot=status.slot)
        return io.OnChain(signature=None, slot=state.slot)

    @activity.defn(name=SEND_TRANSACTION.name)
    async def send_transaction(self, arg: io.SendIn) -> io.StepOut:
        """The signed bytes to every endpoint at once (``SolanaMinter.broadcast``).

        Sent (some endpoint took them) or indeterminate (some never answered, so it may have
        them) both return: the workflow goes on to the confirmation wait, which polls and
        rebroadcasts the same bytes, and re-signs only once their blockhash expired unseen.
        A lost answer does not spend this step's attempts or wait for an operator. Only a
        send every endpoint answered without taking the bytes fails the attempt.
        """
        with classified():
            left = attempt_time_left()
            sent = await self._minter.broadcast(
                arg.tx_base64,
                prefer=arg.preferred_endpoint,
                # Room left in the attempt to record the outcome (0: no attempt deadline).
                within_s=max(1.0, left - SEND_RECORD_MARGIN_S) if left > 0 else None,
            )
            if sent.outcome == "failed":
                raise sent.failure()
            detail = sent.detail()
            if sent.outcome == "indeterminate":
                activity.logger.warning(
                    "send of %s indeterminate: no answer from %s (%s); "
                    "the confirmation wait decides",
                    arg.signature,
                    ", ".join(sent.unanswered),
                    detail,
                )
            else:
                activity.logger.info("sent %s: %s", arg.signature, detail)
            await self._store.set_stage(
                arg.mint_id,
                MintStage.BLOCKCHAIN_SUBMITTED,
                event_key=f"submitted:{arg.signature}",
                detail=detail,
                signature=arg.signature,
            )
        return io.StepOut(attempt=activity.info().attempt)

    @activity.defn(name=AWAIT_CONFIRMATION.name)
    async def await_confirmation(self, arg: io.ConfirmIn) -> io.ConfirmOut:
        """Confirmed (at SOLANA_COMMITMENT: with ``finalized``, a ``confirmed`` status waits on
        until ``finalized``), failed, or expired unseen; a transient error if the wait runs out
        first."""
        attempt = activity.info().attempt
        deadline = time.monotonic() + arg.wait_s
        next_broadcast = time.monotonic() + REBROADCAST_S
        confirmed_at: float | None = None  # first seen confirmed, not yet at the commitment
        confirmed_slot: int | None = None
        with classified():
            while True:
                activity.heartbeat()
                # One shared round a second for every pending mint of this worker. A round that
                # failed (every endpoint, this once) is polled again until the wait's end.
                try:
                    status, height = await self._minter.poll_status(arg.signature)
                except ServiceError as exc:
                    if not exc.retryable:
                        raise
                    if time.monotonic() >= deadline:  # the wait's own verdict, not the poll's
                        raise _wait_ran_out(
                            arg, self._commitment, confirmed_at, confirmed_slot
                        ) from exc
                    activity.logger.info("status poll failed (%s): polling on", exc.code)
                    continue
                outcome = _outcome(status, attempt, self._commitment)
                if outcome is not None:
                    return outcome
                # Once seen confirmed, a node that has not seen it yet cannot call it expired.
                if (
                    confirmed_at is None
                    and not _voted(status)
                    and height is not None
                    and height > arg.last_valid_block_height
                ):
                    # Expired: one last look, since it may have landed just before (in the
                    # node's history too: the expiry decision may re-sign).
                    status = await self._minter.signature_status(arg.signature, history=True)
                    outcome = _outcome(status, attempt, self._commitment)
                    if outcome is not None:
                        return outcome
                    if not _voted(status):
                        return io.ConfirmOut(attempt=attempt, outcome="expired")
                if confirmed_at is None and _voted(status):
                    # Landed (a supermajority voted): its blockhash no longer matters, nor do
                    # rebroadcasts; the wait goes on until the block is finalized.
                    confirmed_at, confirmed_slot = time.monotonic(), status.slot
                    deadline = max(deadline, confirmed_at + FINALIZATION_GRACE_S)
                    activity.logger.info(
                        "%s confirmed in slot %s: waiting for %s",
                        arg.signature,
                        status.slot,
                        self._commitment,
                    )
                if time.monotonic() >= deadline:
                    raise _wait_ran_out(arg, self._commitment, confirmed_at, confirmed_slot)
                if confirmed_at is None and time.monotonic() >= next_broadcast:
                    await self._rebroadcast(arg.tx_base64)
                    next_broadcast = time.monotonic() + REBROADCAST_S

    async def _rebroadcast(self, tx_base64: str) -> None:
        """The same signed bytes again, to every endpoint; anything but "sent" only means we
        poll on (bounded, so a hung endpoint does not hold up the polling)."""
        try:
            sent = await self._minter.broadcast(
                tx_base64, within_s=REBROADCAST_WITHIN_S, queue=False
            )
        except ServiceError as exc:
            activity.logger.info("rebroadcast not sent: %s", exc.code)
            return
        if sent.outcome != "sent":
            activity.logger.info("rebroadcast %s: %s", sent.outcome, sent.detail())


def _outcome(
    status: SigStatus, attempt: int, commitment: str = DEFAULT_SOLANA_COMMITMENT
) -> io.ConfirmOut | None:
    """The wait's answer from one status: landed with an error, or landed at ``commitment``
    (``confirmed`` takes a finalized status too); None while it is unseen or below it."""
    if not status.found:
        return None
    if status.err is not None:
        return io.ConfirmOut(
            attempt=attempt, outcome="failed", slot=status.slot, error=str(status.err)
        )
    reached = ("finalized",) if commitment == "finalized" else ("confirmed", "finalized")
    if status.confirmation_status in reached:
        return io.ConfirmOut(attempt=attempt, outcome="confirmed", slot=status.slot)
    return None


def _voted(status: SigStatus) -> bool:
    """Landed without an error in a block a supermajority voted on (``confirmed`` or more): it
    can no longer expire, whatever its blockhash (``processed`` can: its block may be skipped)."""
    return (
        status.found
        and status.err is None
        and status.confirmation_status in ("confirmed", "finalized")
    )


def _wait_ran_out(
    arg: io.ConfirmIn, commitment: str, confirmed_at: float | None, slot: int | None
) -> ServiceError:
    """The transient error of a wait that ran out: unseen (ConfirmationTimeout), or confirmed
    and not yet finalized (FinalizationTimeout: the next attempt waits on, nothing re-signed)."""
    if confirmed_at is None:
        return ServiceError(
            f"{arg.signature} neither confirmed nor expired within {arg.wait_s:.0f} s",
            service="solana",
            kind=ErrorKind.TRANSIENT,
            code="ConfirmationTimeout",
        )
    waited = time.monotonic() - confirmed_at
    record_finalization_timeout()
    return ServiceError(
        f"{arg.signature} confirmed in slot {slot} but not {commitment} {waited:.0f} s later",
        service="solana",
        kind=ErrorKind.TRANSIENT,
        code="FinalizationTimeout",
    )
