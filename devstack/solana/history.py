"""The signature history: one record per landed transaction, and its RPC renderings."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from solders.message import Message, MessageV0
from solders.transaction import VersionedTransaction

from devstack.solana.codec import b58encode

# Agave marks a block finalized ("rooted") about 32 slots after it was confirmed; until
# then ``confirmations`` counts the blocks built on top of it.
FINALITY_SLOTS = 32


@dataclass
class TxRecord:
    signature: str
    slot: int
    block_time: int
    tx_bytes: bytes
    err: Any  # the error's JSON form, None on success
    fee: int
    logs: list[str]
    pre_balances: list[int]
    post_balances: list[int]
    compute_units: int
    inner_instructions: list[dict[str, Any]] = field(default_factory=list)
    return_data: dict[str, Any] | None = None

    # -- storage -----------------------------------------------------------------------------

    def stored_meta(self) -> dict[str, Any]:
        return {
            "err": self.err,
            "fee": self.fee,
            "logs": self.logs,
            "pre": self.pre_balances,
            "post": self.post_balances,
            "cu": self.compute_units,
            "inner": self.inner_instructions,
            "ret": self.return_data,
        }

    @classmethod
    def from_stored(
        cls, signature: str, slot: int, block_time: int, tx_bytes: bytes, meta: dict[str, Any]
    ) -> TxRecord:
        return cls(
            signature=signature,
            slot=slot,
            block_time=block_time,
            tx_bytes=tx_bytes,
            err=meta["err"],
            fee=meta["fee"],
            logs=meta["logs"],
            pre_balances=meta["pre"],
            post_balances=meta["post"],
            compute_units=meta["cu"],
            inner_instructions=meta.get("inner") or [],
            return_data=meta.get("ret"),
        )

    # -- renderings --------------------------------------------------------------------------

    def is_finalized(self, current_slot: int) -> bool:
        return current_slot - self.slot >= FINALITY_SLOTS

    def status_json(self, current_slot: int) -> dict[str, Any]:
        """One entry of ``getSignatureStatuses``."""
        finalized = self.is_finalized(current_slot)
        return {
            "slot": self.slot,
            "confirmations": None if finalized else max(0, current_slot - self.slot),
            "err": self.err,
            "status": {"Ok": None} if self.err is None else {"Err": self.err},
            "confirmationStatus": "finalized" if finalized else "confirmed",
        }

    def meta_json(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "err": self.err,
            "status": {"Ok": None} if self.err is None else {"Err": self.err},
            "fee": self.fee,
            "preBalances": self.pre_balances,
            "postBalances": self.post_balances,
            "innerInstructions": self.inner_instructions,
            "logMessages": self.logs,
            "preTokenBalances": [],
            "postTokenBalances": [],
            "rewards": [],
            "loadedAddresses": {"writable": [], "readonly": []},
            "computeUnitsConsumed": self.compute_units,
        }
        if self.return_data is not None:
            meta["returnData"] = self.return_data
        return meta

    def transaction_json(self, encoding: str) -> dict[str, Any]:
        """The ``getTransaction`` result for ``encoding`` ("json", "base64" or "base58")."""
        tx = VersionedTransaction.from_bytes(self.tx_bytes)
        message = tx.message
        version: Any = 0 if isinstance(message, MessageV0) else "legacy"
        if encoding == "base64":
            transaction: Any = [base64.b64encode(self.tx_bytes).decode(), "base64"]
        elif encoding == "base58":
            transaction = [b58encode(self.tx_bytes), "base58"]
        else:
            transaction = {
                "signatures": [str(s) for s in tx.signatures],
                "message": message_json(message),
            }
        return {
            "slot": self.slot,
            "blockTime": self.block_time,
            "transaction": transaction,
            "meta": self.meta_json(),
            "version": version,
        }


def compiled_instruction_json(ix: Any, stack_height: int | None = None) -> dict[str, Any]:
    return {
        "programIdIndex": ix.program_id_index,
        "accounts": list(bytes(ix.accounts)),
        "data": b58encode(bytes(ix.data)),
        "stackHeight": stack_height,
    }


def message_json(message: Message | MessageV0) -> dict[str, Any]:
    header = message.header
    out: dict[str, Any] = {
        "header": {
            "numRequiredSignatures": header.num_required_signatures,
            "numReadonlySignedAccounts": header.num_readonly_signed_accounts,
            "numReadonlyUnsignedAccounts": header.num_readonly_unsigned_accounts,
        },
        "accountKeys": [str(k) for k in message.account_keys],
        "recentBlockhash": str(message.recent_blockhash),
        "instructions": [compiled_instruction_json(ix) for ix in message.instructions],
    }
    if isinstance(message, MessageV0):
        out["addressTableLookups"] = [
            {
                "accountKey": str(lookup.account_key),
                "writableIndexes": list(bytes(lookup.writable_indexes)),
                "readonlyIndexes": list(bytes(lookup.readonly_indexes)),
            }
            for lookup in message.address_table_lookups
        ]
    return out


def inner_instructions_json(inner: list[list[Any]]) -> list[dict[str, Any]]:
    """LiteSVM's inner instructions (one list per outer instruction) as ``innerInstructions``."""
    return [
        {
            "index": index,
            "instructions": [
                compiled_instruction_json(item.instruction(), item.stack_height()) for item in items
            ],
        }
        for index, items in enumerate(inner)
        if items
    ]
