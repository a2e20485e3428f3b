"""The local chain: LiteSVM for execution, plus what a cluster adds around it.

LiteSVM executes transactions with the real SPL programs but has no slots, no blockhash
window and no signature history to speak of. This module supplies those the way a cluster
behaves to a client: slots advance with wall time, each slot brings a new blockhash that
stays valid for 150 blocks, a signature lands at most once, a transaction rejected in
preflight never lands, one sent with ``skipPreflight`` lands even when it fails (its fee is
taken), and ``finalized`` reads trail the tip by 32 slots.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import random
import struct
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from solders.account import Account
from solders.clock import Clock
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import (
    FailedTransactionMetadata,
    SimulatedTransactionInfo,
    TransactionMetadata,
)
from solders.transaction_status import TransactionErrorFieldless

from devstack.solana.errors import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    SEND_TRANSACTION_PREFLIGHT_FAILURE,
    TRANSACTION_SIGNATURE_VERIFICATION_FAILURE,
    RpcError,
    err_json,
    lands_on_chain,
    transaction_error_text,
)
from devstack.solana.fee_market import (
    MAX_LOOKBACK_SLOTS,
    BackgroundBlock,
    FeeMarketLoad,
    Landed,
    background_block,
    helius_estimate,
    includes,
)
from devstack.solana.history import FINALITY_SLOTS, TxRecord, inner_instructions_json
from devstack.solana.persistence import LedgerStore
from devstack.solana.versions import AccountVersions

log = logging.getLogger("devstack.solana")

MAX_PROCESSING_AGE = 150  # blocks a blockhash stays usable (Agave's MAX_PROCESSING_AGE)
_BLOCKHASHES_KEPT = MAX_PROCESSING_AGE + FINALITY_SLOTS + 20
GENESIS_SLOT = 100
GENESIS_BLOCK_HEIGHT = 90  # a few skipped slots at genesis, so slot != block height
FAUCET_LAMPORTS = 10**18
LAMPORTS_PER_SIGNATURE = 5000
DEFAULT_COMPUTE_UNIT_LIMIT = 200_000
MAX_COMPUTE_UNIT_LIMIT = 1_400_000
_RECENT_RECORDS = 50_000  # signature records kept in memory; older ones are read from sqlite

COMPUTE_BUDGET_PROGRAM_ID = Pubkey.from_string("ComputeBudget111111111111111111111111111111")
MEMO_PROGRAM_ID = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")

Commitment = str  # "processed" | "confirmed" | "finalized"


def epoch_of(slot: int) -> int:
    """Epoch under Agave's default schedule with warm-up (32-slot first epoch, doubling)."""
    first_normal_slot, first_normal_epoch, slots_per_epoch = 524_256, 14, 432_000
    if slot >= first_normal_slot:
        return first_normal_epoch + (slot - first_normal_slot) // slots_per_epoch
    return (slot + 32).bit_length() - 6


def writable_indexes(message: Message | MessageV0) -> list[int]:
    header = message.header
    keys = len(message.account_keys)
    signed = header.num_required_signatures
    return [
        i
        for i in range(keys)
        if i < signed - header.num_readonly_signed_accounts
        or signed <= i < keys - header.num_readonly_unsigned_accounts
    ]


def compute_budget(message: Message | MessageV0) -> tuple[int, int | None]:
    """(micro-lamports per compute unit, explicit compute unit limit) from ComputeBudget ixs."""
    keys = message.account_keys
    price, limit = 0, None
    for ix in message.instructions:
        if keys[ix.program_id_index] != COMPUTE_BUDGET_PROGRAM_ID:
            continue
        data = bytes(ix.data)
        if data[:1] == b"\x03" and len(data) >= 9:
            price = struct.unpack_from("<Q", data, 1)[0]
        elif data[:1] == b"\x02" and len(data) >= 5:
            limit = struct.unpack_from("<I", data, 1)[0]
    return price, limit


def message_fee(message: Message | MessageV0) -> int:
    """Base fee plus prioritization fee, as the runtime charges them."""
    price, limit = compute_budget(message)
    if limit is None:
        others = sum(
            1
            for ix in message.instructions
            if message.account_keys[ix.program_id_index] != COMPUTE_BUDGET_PROGRAM_ID
        )
        limit = min(MAX_COMPUTE_UNIT_LIMIT, DEFAULT_COMPUTE_UNIT_LIMIT * others)
    priority = (price * limit + 999_999) // 1_000_000
    return LAMPORTS_PER_SIGNATURE * message.header.num_required_signatures + priority


def decode_transaction(raw: bytes) -> VersionedTransaction:
    try:
        tx = VersionedTransaction.from_bytes(raw)
    except Exception as exc:  # solders raises its own error types
        raise RpcError(
            INVALID_PARAMS,
            f"failed to deserialize solana_transaction::versioned::VersionedTransaction: {exc}",
        ) from None
    try:
        tx.sanitize()
    except Exception:
        raise RpcError(
            INVALID_PARAMS,
            "invalid transaction: Transaction failed to sanitize accounts offsets correctly",
        ) from None
    return tx


def signatures_verify(tx: VersionedTransaction) -> bool:
    try:
        results = tx.verify_with_results()
    except Exception:
        return False
    return len(results) == tx.message.header.num_required_signatures and all(results)


@dataclass
class SlotFees:
    """The prices (micro-lamports per CU) paid by the transactions of one slot's block."""

    slot: int
    block_min: int
    account_min: dict[Pubkey, int]  # per write-locked account, the lowest price paid
    landed: list[Landed] = field(default_factory=list)  # each transaction (for Helius' method)

    def note(self, landed: Landed) -> None:
        self.block_min = min(self.block_min, landed.price)
        for key in landed.writable:
            self.account_min[key] = min(self.account_min.get(key, landed.price), landed.price)
        self.landed.append(landed)


class SolanaLedger:
    """One chain, shared by every RPC endpoint of the devstack."""

    def __init__(self, state_dir: Path, *, slot_ms: int = 400) -> None:
        self.state_dir = Path(state_dir)
        self.slot_ms = slot_ms
        self.slot = GENESIS_SLOT
        self.block_height = GENESIS_BLOCK_HEIGHT
        self.svm: LiteSVM = self._new_svm()
        self._store: LedgerStore | None = None
        self._task: asyncio.Task[None] | None = None
        self._hash_seed = os.urandom(32)
        self._hash_at_height: dict[int, Hash] = {}
        self._height_of_hash: dict[Hash, int] = {}
        self._records: OrderedDict[str, TxRecord] = OrderedDict()
        self._versions = AccountVersions()
        self._slot_fees: deque[SlotFees] = deque(maxlen=MAX_PROCESSING_AGE)
        # The fee market's background load (devstack.solana.fee_market), per slot it made busy,
        # kept apart from the real transactions so that an operator can take it away again.
        self.fee_market = FeeMarketLoad()
        self._fee_rng = random.Random()
        self._load: dict[int, BackgroundBlock] = {}
        # Transactions a busy slot did not include: signature -> (tx, wire bytes), in arrival
        # order; each later slot offers them again until their blockhash expires.
        self._waiting: OrderedDict[str, tuple[VersionedTransaction, bytes]] = OrderedDict()
        self._faucet = Keypair.from_seed(hashlib.sha256(b"mintsaga devstack faucet").digest())
        self._airdrops = 0
        self.transactions_landed = 0
        self._register_blockhash()

    @staticmethod
    def _new_svm() -> LiteSVM:
        # The blockhash window, signature checks and duplicate detection are ours (see above).
        return (
            LiteSVM().with_blockhash_check(False).with_sigverify(False).with_transaction_history(0)
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the state folder, restore accounts and the slot counter, start the clock."""
        self._store = LedgerStore(self.state_dir)
        restored = 0
        for pubkey, account in self._store.accounts():
            self.svm.set_account(pubkey, account)
            restored += 1
        if self.svm.get_account(self._faucet.pubkey()) is None:
            self.svm.set_account(
                self._faucet.pubkey(),
                Account(lamports=FAUCET_LAMPORTS, data=b"", owner=Pubkey.default()),
            )
        slot = self._store.chain_value("slot")
        height = self._store.chain_value("block_height")
        if slot is not None and height is not None:
            self.slot, self.block_height = slot, height
        self._hash_at_height.clear()
        self._height_of_hash.clear()
        self._advance(1)
        log.info(
            "solana ledger at slot %d (height %d), %d accounts restored from %s",
            self.slot,
            self.block_height,
            restored,
            self.state_dir,
        )
        self._task = asyncio.create_task(self._run_clock(), name="solana-slot-clock")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._store is not None:
            self._store.save_chain(self.slot, self.block_height)
            self._store.close()
            self._store = None

    async def _run_clock(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.slot_ms / 1000
        next_at = loop.time() + period
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            self._advance(1)
            next_at += period
            if loop.time() - next_at > 5 * period:  # the loop was blocked: do not burst
                next_at = loop.time() + period

    # -- slots and blockhashes ---------------------------------------------------------------

    def warp(self, slots: int) -> dict[str, int]:
        """Advance ``slots`` slots now (blockhashes older than 150 blocks expire)."""
        if slots < 0:
            raise ValueError("slots must be >= 0")
        if slots:
            self._advance(slots)
        return {"slot": self.slot, "block_height": self.block_height}

    def _advance(self, slots: int) -> None:
        if self.fee_market.on or self._waiting:
            # Slot by slot: each new slot gets its load, then offers the waiting transactions.
            for _ in range(slots):
                self._advance_slots(1)
                self._new_busy_slot()
                self._offer_waiting()
        else:
            self._advance_slots(slots)

    def _advance_slots(self, slots: int) -> None:
        first_new = self.block_height + 1
        self.slot += slots
        self.block_height += slots
        # Every new block brings a blockhash; only the last ones can still matter.
        for height in range(
            max(first_new, self.block_height - _BLOCKHASHES_KEPT), self.block_height + 1
        ):
            self._register_blockhash(height)
        oldest = self.block_height - _BLOCKHASHES_KEPT
        for height in [h for h in self._hash_at_height if h < oldest]:
            self._height_of_hash.pop(self._hash_at_height.pop(height), None)
        self.svm.set_clock(
            Clock(
                slot=self.slot,
                epoch_start_timestamp=0,
                epoch=epoch_of(self.slot),
                leader_schedule_epoch=epoch_of(self.slot) + 1,
                unix_timestamp=int(time.time()),
            )
        )
        self._versions.prune(self.finalized_slot)
        if self._store is not None:
            self._store.save_chain(self.slot, self.block_height)

    def _register_blockhash(self, height: int | None = None) -> None:
        height = self.block_height if height is None else height
        # Random per process (LiteSVM's own hashes repeat across restarts): a transaction
        # signed before a restart can never become valid again after it.
        blockhash = Hash(hashlib.sha256(self._hash_seed + height.to_bytes(8, "little")).digest())
        self._hash_at_height[height] = blockhash
        self._height_of_hash[blockhash] = height

    @property
    def finalized_slot(self) -> int:
        return max(GENESIS_SLOT, self.slot - FINALITY_SLOTS)

    def view(self, commitment: Commitment | None) -> tuple[int, int]:
        """(slot, block height) of the bank a read at ``commitment`` sees."""
        if commitment == "finalized" or commitment is None:
            lag = min(
                FINALITY_SLOTS, self.slot - GENESIS_SLOT, self.block_height - GENESIS_BLOCK_HEIGHT
            )
            return self.slot - lag, self.block_height - lag
        return self.slot, self.block_height

    def latest_blockhash(self, commitment: Commitment | None) -> tuple[Hash, int, int]:
        """(blockhash, lastValidBlockHeight, context slot) for a bank at ``commitment``."""
        slot, height = self.view(commitment)
        for h in range(height, min(self._hash_at_height, default=height) - 1, -1):
            blockhash = self._hash_at_height.get(h)
            if blockhash is not None:
                return blockhash, h + MAX_PROCESSING_AGE, slot
        # Just restarted: the finalized bank's hashes are gone; the tip's is the best answer.
        return self._hash_at_height[self.block_height], self.block_height + MAX_PROCESSING_AGE, slot

    def blockhash_valid(self, blockhash: Hash, commitment: Commitment | None) -> bool:
        """Whether a bank at ``commitment`` still accepts transactions built on ``blockhash``."""
        _, height = self.view(commitment)
        issued = self._height_of_hash.get(blockhash)
        return issued is not None and issued <= height <= issued + MAX_PROCESSING_AGE

    # -- accounts ----------------------------------------------------------------------------

    def get_account(self, pubkey: Pubkey, commitment: Commitment | None = None) -> Account | None:
        account: Account | None
        if commitment in (None, "finalized"):
            changed, account = self._versions.at(pubkey, self.view(commitment)[0])
            if not changed:
                account = self.svm.get_account(pubkey)
        else:
            account = self.svm.get_account(pubkey)
        if account is None or account.lamports == 0:
            return None
        return account

    def minimum_balance_for_rent_exemption(self, data_len: int) -> int:
        return self.svm.minimum_balance_for_rent_exemption(data_len)

    # -- signatures --------------------------------------------------------------------------

    def record(self, signature: str) -> TxRecord | None:
        found = self._records.get(signature)
        if found is None and self._store is not None:
            found = self._store.signature(signature)
        return found

    def status(self, signature: str, *, search_history: bool) -> dict[str, Any] | None:
        found = self._records.get(signature)
        if found is None and search_history and self._store is not None:
            found = self._store.signature(signature)
        return None if found is None else found.status_json(self.slot)

    def _known(self, signature: str) -> bool:
        return self.record(signature) is not None

    # -- transactions ------------------------------------------------------------------------

    def send(
        self,
        raw: bytes,
        *,
        skip_preflight: bool = False,
        preflight_commitment: Commitment | None = None,
        execute: bool = True,
    ) -> str:
        """``sendTransaction``: the signature, or the preflight failure a node would report.

        ``execute=False`` is a node that accepts the transaction and drops it: the same checks
        and answer, and nothing lands."""
        tx = decode_transaction(raw)
        signature = str(tx.signatures[0])
        message = tx.message
        if not skip_preflight:
            if not signatures_verify(tx):
                raise RpcError(
                    TRANSACTION_SIGNATURE_VERIFICATION_FAILURE,
                    "Transaction signature verification failure",
                )
            if not self.blockhash_valid(
                message.recent_blockhash, preflight_commitment or "finalized"
            ):
                raise self._preflight_failure(TransactionErrorFieldless.BlockhashNotFound)
            if self._known(signature):
                raise self._preflight_failure(TransactionErrorFieldless.AlreadyProcessed)
            simulated = self.svm.simulate_transaction(tx)
            if isinstance(simulated, FailedTransactionMetadata):
                raise self._preflight_failure(simulated.err(), simulated.meta())
            if execute:
                self._offer(tx, raw)
            return signature
        # skipPreflight: the leader does what it does; the client only learns the signature.
        if (
            execute
            and signatures_verify(tx)
            and self.blockhash_valid(message.recent_blockhash, "processed")
            and not self._known(signature)
        ):
            self._offer(tx, raw)
        return signature

    def _preflight_failure(self, err: Any, meta: TransactionMetadata | None = None) -> RpcError:
        data = self._simulation_json(err, meta)
        return RpcError(
            SEND_TRANSACTION_PREFLIGHT_FAILURE,
            f"Transaction simulation failed: {transaction_error_text(err)}",
            data,
        )

    @staticmethod
    def _simulation_json(
        err: Any,
        meta: TransactionMetadata | None,
        *,
        accounts: list[Any] | None = None,
        inner: bool = False,
        replacement: dict[str, Any] | None = None,
        fee: int | None = None,
    ) -> dict[str, Any]:
        """An ``RpcSimulateTransactionResult`` as JSON."""
        return_data = None
        if meta is not None:
            ret = meta.return_data()
            if bytes(ret.data):
                return_data = {
                    "programId": str(ret.program_id),
                    "data": [base64.b64encode(bytes(ret.data)).decode(), "base64"],
                }
        return {
            "err": err_json(err),
            "logs": list(meta.logs()) if meta is not None else [],
            "accounts": accounts,
            "unitsConsumed": meta.compute_units_consumed() if meta is not None else 0,
            "loadedAccountsDataSize": None,
            "returnData": return_data,
            "innerInstructions": (
                inner_instructions_json(meta.inner_instructions())
                if inner and meta is not None
                else None
            ),
            "replacementBlockhash": replacement,
            "fee": fee,
            "preBalances": None,
            "postBalances": None,
            "preTokenBalances": None,
            "postTokenBalances": None,
            "loadedAddresses": None,
        }

    def simulate(
        self,
        raw: bytes,
        *,
        sig_verify: bool = False,
        replace_recent_blockhash: bool = False,
        commitment: Commitment | None = None,
        account_addresses: list[Pubkey] | None = None,
        inner_instructions: bool = False,
        render_account: Any = None,
    ) -> dict[str, Any]:
        """``simulateTransaction``'s value (errors are part of the value, not RPC errors)."""
        if sig_verify and replace_recent_blockhash:
            raise RpcError(INVALID_PARAMS, "sigVerify may not be used with replaceRecentBlockhash")
        tx = decode_transaction(raw)
        if sig_verify and not signatures_verify(tx):
            raise RpcError(
                TRANSACTION_SIGNATURE_VERIFICATION_FAILURE,
                "Transaction signature verification failure",
            )
        replacement = None
        if replace_recent_blockhash:
            blockhash, last_valid, _ = self.latest_blockhash(commitment)
            replacement = {"blockhash": str(blockhash), "lastValidBlockHeight": last_valid}
        elif not self.blockhash_valid(tx.message.recent_blockhash, commitment or "finalized"):
            return self._simulation_json(TransactionErrorFieldless.BlockhashNotFound, None)
        if self._known(str(tx.signatures[0])):
            return self._simulation_json(TransactionErrorFieldless.AlreadyProcessed, None)
        result = self.svm.simulate_transaction(tx)
        if isinstance(result, FailedTransactionMetadata):
            return self._simulation_json(
                result.err(), result.meta(), inner=inner_instructions, replacement=replacement
            )
        assert isinstance(result, SimulatedTransactionInfo)
        accounts = None
        if account_addresses is not None:
            post = dict(result.post_accounts())
            accounts = []
            for address in account_addresses:
                account = post.get(address) or self.svm.get_account(address)
                live = account is not None and account.lamports > 0
                accounts.append(render_account(account) if live and render_account else None)
        return self._simulation_json(
            None,
            result.meta(),
            accounts=accounts,
            inner=inner_instructions,
            replacement=replacement,
            fee=message_fee(tx.message),
        )

    def fee_for_message(self, raw_message: bytes, commitment: Commitment | None) -> int | None:
        try:
            message: Message | MessageV0
            if raw_message[:1] and raw_message[0] & 0x80:
                message = MessageV0.from_bytes(raw_message[1:])
            else:
                message = Message.from_bytes(raw_message)
        except Exception:
            raise RpcError(INVALID_PARAMS, "invalid message") from None
        if not self.blockhash_valid(message.recent_blockhash, commitment):
            return None
        return message_fee(message)

    def airdrop(self, to: Pubkey, lamports: int) -> str:
        """``requestAirdrop``: a real transfer from the devstack faucet, recorded like any other."""
        self._airdrops += 1
        blockhash = self._hash_at_height[self.block_height]
        memo = Instruction(MEMO_PROGRAM_ID, f"devstack airdrop {self._airdrops}".encode(), [])
        instructions = [
            transfer(
                TransferParams(from_pubkey=self._faucet.pubkey(), to_pubkey=to, lamports=lamports)
            ),
            memo,
        ]
        message = Message.new_with_blockhash(instructions, self._faucet.pubkey(), blockhash)
        tx = VersionedTransaction(message, [self._faucet])
        if self._execute(tx, bytes(tx)) is None:
            raise RpcError(INTERNAL_ERROR, "airdrop request failed")
        return str(tx.signatures[0])

    def _execute(self, tx: VersionedTransaction, raw: bytes) -> TxRecord | None:
        """Run ``tx`` on the chain; if a block would include it, record and persist it."""
        message = tx.message
        keys = list(message.account_keys)
        writable = [keys[i] for i in writable_indexes(message)]
        before = {key: self.svm.get_account(key) for key in writable}
        pre_balances = [self.svm.get_balance(key) or 0 for key in keys]
        result = self.svm.send_transaction(tx)
        if isinstance(result, FailedTransactionMetadata):
            err, meta = result.err(), result.meta()
        else:
            err, meta = None, result
        if not lands_on_chain(err):
            return None
        slot = self.slot
        record = TxRecord(
            signature=str(tx.signatures[0]),
            slot=slot,
            block_time=int(time.time()),
            tx_bytes=raw,
            err=err_json(err),
            fee=meta.fee(),
            logs=list(meta.logs()),
            pre_balances=pre_balances,
            post_balances=[self.svm.get_balance(key) or 0 for key in keys],
            compute_units=meta.compute_units_consumed(),
            inner_instructions=inner_instructions_json(meta.inner_instructions()),
        )
        ret = meta.return_data()
        if bytes(ret.data):
            record.return_data = {
                "programId": str(ret.program_id),
                "data": [base64.b64encode(bytes(ret.data)).decode(), "base64"],
            }
        after = [(key, self.svm.get_account(key)) for key in writable]
        for key, account in after:
            self._versions.record(key, before[key], account, slot)
        self._records[record.signature] = record
        if len(self._records) > _RECENT_RECORDS:
            self._records.popitem(last=False)
        self._note_fee(slot, compute_budget(message)[0], writable, keys)
        if self._store is not None:
            self._store.save_transaction(record, after)
        self.transactions_landed += 1
        return record

    def _note_fee(self, slot: int, price: int, writable: list[Pubkey], keys: list[Pubkey]) -> None:
        """Keep, per slot, the lowest price of its block and of each write-locked account."""
        if not self._slot_fees or self._slot_fees[-1].slot != slot:
            self._slot_fees.append(SlotFees(slot, price, {}))
        self._slot_fees[-1].note(Landed(price, frozenset(writable), frozenset(keys)))

    # -- the fee market (devstack.solana.fee_market) -----------------------------------------

    def set_fee_market(self, load: FeeMarketLoad, *, forget: bool = False) -> None:
        """Switch the background load. Turned on, the last 150 slots look as if it had run
        through them (an estimator has a full window at once); ``forget`` drops the samples an
        earlier load left, so the window shows only real transactions again."""
        self.fee_market = load
        self._fee_rng = random.Random(load.seed)
        if forget:
            self._load.clear()
        if load.on:
            first = max(GENESIS_SLOT, self.slot - MAX_PROCESSING_AGE + 1)
            for slot in range(first, self.slot + 1):
                self._new_busy_slot(slot)

    def _new_busy_slot(self, slot: int | None = None) -> None:
        slot = self.slot if slot is None else slot
        block = background_block(self.fee_market, self._fee_rng)
        if block is None:
            self._load.pop(slot, None)
        else:
            self._load[slot] = block
        oldest = self.slot - MAX_PROCESSING_AGE
        for old in [s for s in self._load if s <= oldest]:
            del self._load[old]

    def clearing_price(self, slot: int | None = None) -> int:
        """The lowest price an ordinary transaction must bid to be included in ``slot`` (the
        current one by default): the load's clearing price on a busy slot, else 0."""
        block = self._load.get(self.slot if slot is None else slot)
        return 0 if block is None else block.clearing_price

    def waiting(self) -> list[str]:
        """The signatures sent and not included yet (a busy slot's leader passed them over)."""
        return list(self._waiting)

    def _offer(self, tx: VersionedTransaction, raw: bytes) -> None:
        """Hand ``tx`` to the current slot's leader: included when its price clears the slot,
        else it waits for a later slot (a second send of the same signature changes nothing)."""
        signature = str(tx.signatures[0])
        if includes(compute_budget(tx.message)[0], self.clearing_price()):
            self._waiting.pop(signature, None)
            self._execute(tx, raw)
        elif signature not in self._waiting:
            self._waiting[signature] = (tx, raw)

    def _offer_waiting(self) -> None:
        for signature, (tx, raw) in list(self._waiting.items()):
            if self._known(signature) or not self.blockhash_valid(
                tx.message.recent_blockhash, "processed"
            ):
                del self._waiting[signature]  # landed another way, or expired: never lands
            elif includes(compute_budget(tx.message)[0], self.clearing_price()):
                del self._waiting[signature]
                self._execute(tx, raw)

    def recent_prioritization_fees(
        self, accounts: list[Pubkey] | None = None
    ) -> list[dict[str, int]]:
        """Per recent slot, what Agave's prioritization fee cache answers: the lowest price
        (micro-lamports per CU) paid in the slot's block, raised to the highest of the lowest
        prices paid by the transactions that write-locked each of ``accounts``; 0 for a slot
        without transactions. So busy accounts show what it took to land next to them."""
        first = max(GENESIS_SLOT, self.slot - MAX_PROCESSING_AGE + 1)
        answer = []
        for slot, fees in self._fees_by_slot(first).items():
            fee = 0
            if fees is not None:
                fee = max(
                    [fees.block_min]
                    + [fees.account_min[key] for key in accounts or () if key in fees.account_min]
                )
            answer.append({"slot": slot, "prioritizationFee": fee})
        return answer

    def _fees_by_slot(self, first: int) -> dict[int, SlotFees | None]:
        """Slot -> its block's fees (real transactions and the load's together), oldest first,
        from ``first`` to the current slot; None for a slot without transactions."""
        real = {fees.slot: fees for fees in self._slot_fees}
        out: dict[int, SlotFees | None] = {}
        for slot in range(first, self.slot + 1):
            own, load = real.get(slot), self._load.get(slot)
            if load is None:
                out[slot] = own
                continue
            merged = SlotFees(slot, load.transactions[0].price, {})
            for landed in [*load.transactions, *(own.landed if own is not None else ())]:
                merged.note(landed)
            out[slot] = merged
        return out

    def priority_fee_estimate(self, accounts: list[Pubkey], options: dict[str, Any]) -> Any:
        """Helius' ``getPriorityFeeEstimate`` over the recent blocks (fee_market's rules)."""
        lookback = options.get("lookbackSlots", MAX_LOOKBACK_SLOTS)
        if isinstance(lookback, bool) or not isinstance(lookback, int) or lookback < 1:
            raise ValueError("lookbackSlots must be a positive integer")
        first = max(GENESIS_SLOT, self.slot - min(lookback, MAX_LOOKBACK_SLOTS) + 1)
        blocks = [f.landed for f in self._fees_by_slot(first).values() if f is not None]
        return helius_estimate(blocks, accounts, options)
