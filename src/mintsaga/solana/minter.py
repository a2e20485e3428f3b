"""The Solana minter the activities use: prepare, send and read back the one-transaction NFT
(docs/design.md, "The NFT").

The steps are separate on purpose: the workflow's activities decide when to prepare, send,
rebroadcast, poll and re-sign, with heartbeats in between. Nothing here sleeps or loops on
the chain; every method is one round of calls through the ``SolanaRpc`` pool.

``SolanaMinter`` is a ``MintPreparer`` (solana/prepare.py: fees, simulation, signing) that can
also send what it signed and read the chain: signature statuses, block height, balances, and
the NFT itself (decoded by solana/nft_state.py). No key material or seed appears in an
exception, a repr or a log line.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from mintsaga.errors import ErrorKind, ServiceError, endpoint_name, redact_url
from mintsaga.resilience.guard import keep_alive
from mintsaga.solana.nft import associated_token_address
from mintsaga.solana.nft_state import NftState, nft_state_from_accounts
from mintsaga.solana.prepare import MintPreparer
from mintsaga.solana.prepare_checks import COMMITMENT
from mintsaga.solana.rpc import BUDGET_EXHAUSTED
from mintsaga.solana.rpc_errors import SERVICE
from mintsaga.solana.status_poller import StatusPoller

__all__ = ["Broadcast", "SigStatus", "SolanaMinter"]

ALREADY_PROCESSED = "AlreadyProcessed"
# A send with no answer at all: the connection was cut after the request went out, or nothing
# came back in time. The node may have taken (and forwarded) the transaction.
NO_ANSWER_CODES = frozenset({"SolanaTimeout", "SolanaConnectionLost"})
# Once a broadcast's outcome leads to the confirmation wait (one endpoint took the bytes, or one
# never answered), the endpoints still sending get this long to finish.
SEND_GRACE_S = 1.0


@dataclass(frozen=True)
class SigStatus:
    """What ``getSignatureStatuses`` knows about one signature (history searched)."""

    found: bool
    slot: int | None = None
    err: Any = None  # the transaction error as JSON, None when it succeeded
    confirmation_status: str | None = None  # "processed" | "confirmed" | "finalized"


SendOutcome = Literal["sent", "indeterminate", "failed"]


@dataclass(frozen=True)
class Broadcast:
    """What the endpoints made of one signed transaction sent to all of them at once.

    When they disagree, the first of these wins:

    1. ``sent``: some endpoint took the bytes (answered the signature, or "already processed":
       an earlier send landed). A rejection elsewhere (a node behind or ahead simulating on
       another bank) cannot undo a transaction that can land only once; the confirmation wait
       reads what the chain made of it, a landed failure included.
    2. ``indeterminate``: some endpoint never answered (connection cut after the request, or no
       answer in time), so it may have the transaction; the saga goes on to the confirmation
       wait, which polls and rebroadcasts these bytes until they confirm or their blockhash
       expires unseen. A lost answer outranks another node's rejection: one node's preflight
       can be wrong (a node behind sees no funds, or no blockhash), and the chain decides; a
       transaction that really is bad expires unseen and its re-sign fails in simulation.
    3. ``failed``: every endpoint answered without taking it. ``failure()`` is the first
       answer about the transaction that no retry can change (a rejected transaction, an
       underfunded system wallet), in priority order; else the last retryable one (a later
       attempt may find an endpoint back: the sequential pool's rule, an open circuit last);
       else an endpoint's own "cannot serve sends" (a refused key: an operator must act).
    """

    signature: str
    accepted: tuple[str, ...] = ()  # endpoints that took the bytes
    unanswered: tuple[str, ...] = ()  # endpoints that never answered: they may have them
    refused: tuple[ServiceError, ...] = ()  # the others' answers, in priority order

    @classmethod
    def of(cls, signature: str, answers: Sequence[tuple[str, ServiceError | None]]) -> Broadcast:
        """From each endpoint's answer, in priority order: None when it took the bytes."""
        return cls(
            signature=signature,
            accepted=tuple(name for name, error in answers if error is None),
            unanswered=tuple(
                name
                for name, error in answers
                if error is not None and error.code in NO_ANSWER_CODES
            ),
            refused=tuple(
                error
                for _, error in answers
                if error is not None and error.code not in NO_ANSWER_CODES
            ),
        )

    @property
    def outcome(self) -> SendOutcome:
        if self.accepted:
            return "sent"
        if self.unanswered:
            return "indeterminate"
        return "failed"

    @property
    def none_asked(self) -> bool:
        """Every endpoint was skipped, by its open breaker or for want of room in its request
        budget: none was asked."""
        return bool(self.refused) and all(
            e.code.endswith("CircuitOpen") or e.code == BUDGET_EXHAUSTED for e in self.refused
        )

    def failure(self) -> ServiceError:
        """The error to raise for a broadcast that did not go out (``outcome`` != "sent")."""
        if self.outcome == "sent":
            raise ValueError(f"{self.signature} was sent: there is no failure")
        if self.outcome == "indeterminate":
            return ServiceError(
                f"sendTransaction {self.signature}: no answer from "
                f"{', '.join(self.unanswered)}; it may have been taken (the confirmation wait "
                "decides)",
                service=SERVICE,
                kind=ErrorKind.TRANSIENT,
                code="SendIndeterminate",
            )
        refused = self.refused
        about_tx = [e for e in refused if not e.retryable and not _endpoints_own(e)]
        if about_tx:
            return about_tx[0]
        retryable = [e for e in refused if e.retryable]
        asked = [
            e
            for e in retryable
            if not e.code.endswith("CircuitOpen") and e.code != BUDGET_EXHAUSTED
        ]
        return (asked or retryable or list(refused))[-1]

    def detail(self) -> dict[str, Any]:
        """For the mint's event and log line: who took it, who never answered, who refused."""
        return {
            "send": self.outcome,
            "accepted_by": list(self.accepted),
            "unanswered": list(self.unanswered),
            "refused": {e.endpoint or "?": e.code for e in self.refused},
        }


def _not_landed(status: SigStatus) -> bool:
    """Not seen, or seen only at ``processed``: its blockhash may still expire."""
    return status.confirmation_status not in ("confirmed", "finalized")


def _sig_status(value: Any) -> SigStatus:
    """One entry of ``getSignatureStatuses``' answer (null: unknown)."""
    if value is None:
        return SigStatus(found=False)
    return SigStatus(
        found=True,
        slot=int(value["slot"]),
        err=value.get("err"),
        confirmation_status=value.get("confirmationStatus"),
    )


def _endpoints_own(error: ServiceError) -> bool:
    """A failure of the endpoint, not of the transaction: it cannot serve sends at all (a
    refused key, a read-only node; ``ServiceError.unusable``)."""
    return getattr(error, "unusable", None) is not None


def _silent(endpoint: str) -> ServiceError:
    """An endpoint still sending when the broadcast stopped waiting: a read timeout."""
    return ServiceError(
        "sendTransaction: no answer within the broadcast's time",
        service=SERVICE,
        kind=ErrorKind.TRANSIENT,
        code="SolanaTimeout",
        endpoint=endpoint,
    )


async def _gather_answers(
    sends: Mapping[int, Awaitable[ServiceError | None]], within_s: float | None
) -> dict[int, ServiceError | None]:
    """Run the sends together; each finished one's answer by its key.

    Stops waiting ``within_s`` after the start, or ``SEND_GRACE_S`` after the first answer
    that sends the saga on to the confirmation wait (taken, or no answer); the sends still
    running then are cancelled (their requests are out) and left out of the answers.
    """
    loop = asyncio.get_running_loop()
    tasks = {asyncio.ensure_future(send): key for key, send in sends.items()}
    deadline = None if within_s is None else loop.time() + max(0.0, within_s)
    decided_at: float | None = None
    answers: dict[int, ServiceError | None] = {}
    pending = set(tasks)
    try:
        while pending:
            limits = [t for t in (deadline, decided_at) if t is not None]
            timeout = None if not limits else max(0.0, min(limits) - loop.time())
            done, pending = await asyncio.wait(
                pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                break
            for task in done:
                answer = answers[tasks[task]] = task.result()
                if decided_at is None and (answer is None or answer.code in NO_ANSWER_CODES):
                    decided_at = loop.time() + SEND_GRACE_S
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    return answers


class SolanaMinter(MintPreparer):
    """Mints the NFT (docs/design.md, "The NFT") with ``payer`` as system wallet and fee payer
    (the metadata's update authority is another key, ``MINT_UPDATE_AUTHORITY``): ``prepare``
    (inherited) signs it, ``send`` sends it, the reads follow it on
    the chain."""

    _poller: StatusPoller[SigStatus] | None = None

    # -- reads -------------------------------------------------------------------------------

    async def nft_state(
        self, mint_address: str, owner: str, *, start_at: int | None = None
    ) -> NftState | None:
        """The mint and the owner's balance, read together; None if the mint does not exist.

        ``start_at`` asks that endpoint first (failing over to the next ones, open circuits
        skipped), so a repeated verification can ask a node other than the one before.
        """
        only = None if start_at is None else self.rpc.rotated(start_at)
        _index, state = await self.nft_state_answered(mint_address, owner, only=only)
        return state

    async def nft_state_answered(
        self,
        mint_address: str,
        owner: str,
        *,
        only: list[int] | None = None,
        commitment: str = COMMITMENT,
    ) -> tuple[int, NftState | None]:
        """``nft_state`` from the endpoints ``only`` names (in that order), at ``commitment``,
        with the index of the endpoint that answered: to ask another node for a second opinion,
        or the same one at ``finalized``."""
        mint_key = Pubkey.from_string(mint_address)
        owner_key = Pubkey.from_string(owner)
        ata = associated_token_address(owner_key, mint_key)

        def parse(result: Any) -> tuple[int, Any, Any]:
            values = result["value"]
            if not isinstance(values, list) or len(values) != 2:
                raise ValueError("getMultipleAccounts answered the wrong number of accounts")
            return int(result["context"]["slot"]), values[0], values[1]

        index, (slot, mint_value, ata_value) = await self.rpc.call_answered(
            "getMultipleAccounts",
            [[str(mint_key), str(ata)], {"encoding": "base64", "commitment": commitment}],
            parse=parse,
            only=only,
        )
        return index, nft_state_from_accounts(mint_address, owner, slot, mint_value, ata_value)

    async def signature_status(
        self, signature: str, *, endpoint_index: int | None = None, history: bool = False
    ) -> SigStatus:
        """Where ``signature`` stands. Without ``history`` the node reads its recent status
        cache only (every active slot and the last 300 rooted ones: enough while the
        transaction's blockhash is valid, and what a node without history serves); with it,
        the node's ledger too, on an endpoint that keeps it (one that answers -32011 is left
        for the next: ``solana/rpc.py``), or the status cache when none does."""

        def parse(result: Any) -> SigStatus:
            (value,) = result["value"]
            return _sig_status(value)

        only = None if endpoint_index is None else [endpoint_index]
        if history:
            try:
                searched: SigStatus = await self.rpc.call(
                    "getSignatureStatuses",
                    [[signature], {"searchTransactionHistory": True}],
                    parse=parse,
                    only=only,
                )
                return searched
            except ServiceError as exc:
                if exc.unusable is None:
                    raise
                # No endpoint searches its history: the status cache still holds a transaction
                # for 300 rooted slots, twice its blockhash's life, so the expiry decision stays
                # sound; an older one reads as unknown, and a re-sign then finds the mint (its
                # address is derived) before it signs.
        status: SigStatus = await self.rpc.call(
            "getSignatureStatuses", [[signature]], parse=parse, only=only
        )
        return status

    async def signature_statuses(self, signatures: list[str]) -> list[SigStatus]:
        """The status of each of ``signatures`` (at most 256), in one call, from the nodes'
        status caches (no history search)."""

        def parse(result: Any) -> list[SigStatus]:
            values = result["value"]
            if not isinstance(values, list) or len(values) != len(signatures):
                raise ValueError("getSignatureStatuses answered the wrong number of statuses")
            return [_sig_status(value) for value in values]

        statuses: list[SigStatus] = await self.rpc.call(
            "getSignatureStatuses", [signatures], parse=parse
        )
        return statuses

    async def poll_status(self, signature: str) -> tuple[SigStatus, int | None]:
        """``signature``'s status and the block height from the worker's next shared poll
        round (solana/status_poller.py): one batched call serves every pending mint. The
        height is asked, and given, only while the transaction has not landed (voted)."""
        if self._poller is None:
            self._poller = StatusPoller(
                self.signature_statuses,
                self.block_height,
                keep_alive=keep_alive,
                needs_height=_not_landed,
            )
        return await self._poller.poll(signature)

    async def block_height(self) -> int:
        height: int = await self.rpc.call("getBlockHeight", [{"commitment": COMMITMENT}], parse=int)
        return height

    async def slot(self) -> int:
        slot: int = await self.rpc.call("getSlot", [{"commitment": COMMITMENT}], parse=int)
        return slot

    async def is_blockhash_valid(self, blockhash: str) -> bool:
        """Whether a transaction with ``blockhash`` can still land (at confirmed)."""

        def parse(result: Any) -> bool:
            value = result["value"]
            if not isinstance(value, bool):
                raise TypeError("isBlockhashValid answered a non-boolean")
            return value

        valid: bool = await self.rpc.call(
            "isBlockhashValid", [blockhash, {"commitment": COMMITMENT}], parse=parse
        )
        return valid

    async def balance(self, pubkey: str) -> int:
        """Lamports held by ``pubkey`` (at confirmed)."""
        lamports: int = await self.rpc.call(
            "getBalance",
            [str(pubkey), {"commitment": COMMITMENT}],
            parse=lambda result: int(result["value"]),
        )
        return lamports

    async def health(self) -> None:
        """Raise unless some endpoint reports itself healthy (``getHealth`` = "ok")."""

        def parse(result: Any) -> None:
            if result != "ok":
                raise ValueError(f"getHealth answered {str(result)[:50]!r}")

        await self.rpc.call("getHealth", None, parse=parse)

    # -- sending ---------------------------------------------------------------------------------

    async def send(self, tx_base64: str, *, prefer: str | None = None) -> str:
        """Send the signed bytes to every endpoint at once (``broadcast``); return the signature
        once one took them. Raises what the endpoints answered when none did, or a transient
        ``SendIndeterminate`` when some never answered (the transaction may be on its way)."""
        sent = await self.broadcast(tx_base64, prefer=prefer)
        if sent.outcome == "sent":
            return sent.signature
        raise sent.failure()

    async def broadcast(
        self,
        tx_base64: str,
        *,
        prefer: str | None = None,
        within_s: float | None = None,
        queue: bool = True,
    ) -> Broadcast:
        """Send the signed bytes (preflight at confirmed, no node retries) to every endpoint in
        parallel and say what each made of them (see ``Broadcast`` for who wins when they
        disagree).

        The same bytes everywhere: one signature, one derived mint address, so however many
        nodes take them the NFT is minted at most once. Endpoints whose breaker is open are
        skipped (they answer ``SolanaCircuitOpen`` at once); ``prefer`` (an operator's
        ``retry --endpoint``) is asked first and always. Once one endpoint took the bytes, or
        one never answered (the saga goes on to the confirmation wait either way), the others
        get ``SEND_GRACE_S`` more; ``within_s`` bounds the whole broadcast, and an endpoint
        still silent then counts as unanswered (a read timeout: it may have the transaction).
        An endpoint without room in its request budget now (``solana/budget.py``) is skipped
        like an open one. ``queue``: when every endpoint was skipped, send through the pool
        once, which waits for the first to be probed, or for room in a budget, if the
        activity attempt has the time (off for rebroadcasts, which must not hold up the
        confirmation wait's polling, and go only where there is room now).
        """
        try:
            tx = VersionedTransaction.from_bytes(base64.b64decode(tx_base64, validate=True))
        except (ValueError, binascii.Error) as exc:
            raise ValueError("tx_base64 is not a base64 signed transaction") from exc
        signature = str(tx.signatures[0])
        fee_payer = str(tx.message.account_keys[0])
        names = self.rpc.endpoints
        order = self._preferred_first(prefer) or list(range(len(names)))
        params = [
            tx_base64,
            {
                "encoding": "base64",
                "skipPreflight": False,
                "preflightCommitment": COMMITMENT,
                "maxRetries": 0,
            },
        ]

        def parse(result: Any) -> str:
            if result != signature:
                raise ValueError(f"sendTransaction answered another signature: {result!r}")
            return signature

        async def send_to(index: int) -> ServiceError | None:
            """None when the endpoint took the bytes, else what it answered."""
            try:
                await self.rpc.call(
                    "sendTransaction",
                    params,
                    parse=parse,
                    fee_payer=fee_payer,
                    only=[index],
                    wait_for_budget=False,
                )
            except ServiceError as exc:
                return None if exc.code == ALREADY_PROCESSED else exc
            return None

        answers = await _gather_answers({i: send_to(i) for i in order}, within_s)
        sent = Broadcast.of(
            signature,
            [(names[i], answers[i] if i in answers else _silent(names[i])) for i in order],
        )
        if queue and sent.outcome == "failed" and sent.none_asked:
            # No endpoint may be called now: the pool's own call queues for a half-open one,
            # or for room in a request budget.
            return await self._send_queued(signature, params, parse, fee_payer, order)
        return sent

    async def _send_queued(
        self,
        signature: str,
        params: list[Any],
        parse: Callable[[Any], str],
        fee_payer: str,
        order: list[int],
    ) -> Broadcast:
        try:
            index, _ = await self.rpc.call_answered(
                "sendTransaction", params, parse=parse, fee_payer=fee_payer, only=order
            )
        except ServiceError as exc:
            answer: ServiceError | None = None if exc.code == ALREADY_PROCESSED else exc
            return Broadcast.of(signature, [(exc.endpoint or "the pool", answer)])
        return Broadcast.of(signature, [(self.rpc.name(index), None)])

    def _preferred_first(self, prefer: str | None) -> list[int] | None:
        """The pool's order with the endpoint an operator named (as configured or as shown,
        redacted) moved to the front; None keeps the pool's own order."""
        if prefer is None:
            return None
        names = self.rpc.endpoints
        matches = [i for i, name in enumerate(names) if name in (prefer, endpoint_name(prefer))]
        if not matches:
            raise ServiceError(
                f"preferred endpoint {redact_url(prefer)} is not one of {', '.join(names)}",
                service=SERVICE,
                kind=ErrorKind.PERMANENT,
                code="UnknownEndpoint",
            )
        return [matches[0], *(i for i in range(len(names)) if i != matches[0])]
