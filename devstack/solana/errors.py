"""JSON-RPC errors and transaction errors, worded and shaped as an Agave node words them."""

from __future__ import annotations

import json
import re
from typing import Any

from solders.rpc.responses import RpcSimulateTransactionResult
from solders.transaction_status import (
    InstructionErrorCustom,
    InstructionErrorFieldless,
    TransactionErrorFieldless,
    TransactionErrorInstructionError,
    TransactionErrorInsufficientFundsForRent,
    TransactionErrorType,
)

# JSON-RPC 2.0 codes, and the server codes Solana defines (solana-rpc-client-api custom_error.rs).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SEND_TRANSACTION_PREFLIGHT_FAILURE = -32002
TRANSACTION_SIGNATURE_VERIFICATION_FAILURE = -32003
NODE_UNHEALTHY = -32005
TRANSACTION_HISTORY_NOT_AVAILABLE = -32011
MIN_CONTEXT_SLOT_NOT_REACHED = -32016


class RpcError(Exception):
    """Raised by a method handler; becomes the ``error`` member of the JSON-RPC answer."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def invalid_params(detail: str) -> RpcError:
    return RpcError(INVALID_PARAMS, f"Invalid params: {detail}")


def min_context_slot_not_reached(context_slot: int) -> RpcError:
    return RpcError(
        MIN_CONTEXT_SLOT_NOT_REACHED,
        "Minimum context slot has not been reached",
        {"contextSlot": context_slot},
    )


def node_behind(num_slots_behind: int) -> RpcError:
    """Agave's NodeUnhealthy with a known lag (custom_error.rs: the message names the lag)."""
    return RpcError(
        NODE_UNHEALTHY,
        f"Node is behind by {num_slots_behind} slots",
        {"numSlotsBehind": num_slots_behind},
    )


def err_json(err: TransactionErrorType | None) -> Any:
    """A transaction error as JSON (``"BlockhashNotFound"``, ``{"InstructionError": ...}``)."""
    if err is None:
        return None
    return json.loads(RpcSimulateTransactionResult(err=err).to_json())["err"]


_TX_ERROR_TEXT = {
    "AccountInUse": "Account in use",
    "AccountLoadedTwice": "Account loaded twice",
    "AccountNotFound": "Attempt to debit an account but found no record of a prior credit.",
    "ProgramAccountNotFound": "Attempt to load a program that does not exist",
    "InsufficientFundsForFee": "Insufficient funds for fee",
    "InvalidAccountForFee": "This account may not be used to pay transaction fees",
    "AlreadyProcessed": "This transaction has already been processed",
    "BlockhashNotFound": "Blockhash not found",
    "CallChainTooDeep": "Loader call chain is too deep",
    "MissingSignatureForFee": "Transaction requires a fee but has no signature present",
    "InvalidAccountIndex": "Transaction contains an invalid account reference",
    "SignatureFailure": "Transaction did not pass signature verification",
    "InvalidProgramForExecution": "This program may not be used for executing instructions",
    "SanitizeFailure": "Transaction failed to sanitize accounts offsets correctly",
    "ClusterMaintenance": ("Transactions are currently disabled due to cluster maintenance"),
    "AccountBorrowOutstanding": (
        "Transaction processing left an account with an outstanding borrowed reference"
    ),
    "WouldExceedMaxBlockCostLimit": "Transaction would exceed max Block Cost Limit",
    "UnsupportedVersion": "Transaction version is unsupported",
    "InvalidWritableAccount": "Transaction loads a writable account that cannot be written",
    "TooManyAccountLocks": "Transaction locked too many accounts",
    "InvalidRentPayingAccount": (
        "Transaction leaves an account with a lower balance than rent-exempt minimum"
    ),
}

_IX_ERROR_TEXT = {
    "GenericError": "generic instruction error",
    "InvalidArgument": "invalid program argument",
    "InvalidInstructionData": "invalid instruction data",
    "InvalidAccountData": "invalid account data for instruction",
    "AccountDataTooSmall": "account data too small for instruction",
    "InsufficientFunds": "insufficient funds for instruction",
    "IncorrectProgramId": "incorrect program id for instruction",
    "MissingRequiredSignature": "missing required signature for instruction",
    "AccountAlreadyInitialized": "instruction requires an uninitialized account",
    "UninitializedAccount": "instruction requires an initialized account",
    "UnbalancedInstruction": "sum of account balances before and after instruction do not match",
    "ModifiedProgramId": "instruction illegally modified the program id of an account",
    "ExternalAccountLamportSpend": (
        "instruction spent from the balance of an account it does not own"
    ),
    "ExternalAccountDataModified": "instruction modified data of an account it does not own",
    "ReadonlyLamportChange": "instruction changed the balance of a read-only account",
    "ReadonlyDataModified": "instruction modified data of a read-only account",
    "DuplicateAccountIndex": "instruction contains duplicate accounts",
    "ExecutableModified": "instruction changed executable bit of an account",
    "NotEnoughAccountKeys": "insufficient account keys for instruction",
    "AccountDataSizeChanged": (
        "program other than the account's owner changed the size of the account data"
    ),
    "AccountNotExecutable": "instruction expected an executable account",
    "InvalidSeeds": "Provided seeds do not result in a valid address",
    "IllegalOwner": "Provided owner is not allowed",
    "InvalidAccountOwner": "Invalid account owner",
    "ArithmeticOverflow": "Program arithmetic overflowed",
    "Immutable": "Account is immutable",
    "IncorrectAuthority": "Incorrect authority provided",
    "InvalidRealloc": "Failed to reallocate account data",
    "ComputationalBudgetExceeded": "Computational budget exceeded",
    "PrivilegeEscalation": "Cross-program invocation with unauthorized signer or writable account",
    "ProgramFailedToComplete": "Program failed to complete",
    "MissingAccount": "An account required by the instruction is missing",
}


def _words(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()


def instruction_error_text(err: Any) -> str:
    if isinstance(err, InstructionErrorCustom):
        return f"custom program error: {err.code:#x}"
    if isinstance(err, InstructionErrorFieldless):
        name = str(err).rsplit(".", 1)[-1]
        return _IX_ERROR_TEXT.get(name, _words(name))
    return str(err)


def transaction_error_text(err: TransactionErrorType) -> str:
    """``Display`` of ``TransactionError``: what follows "Transaction simulation failed: "."""
    if isinstance(err, TransactionErrorInstructionError):
        index, ix_err = err.index, err.err
        return f"Error processing Instruction {index}: {instruction_error_text(ix_err)}"
    if isinstance(err, TransactionErrorInsufficientFundsForRent):
        index = err.account_index
        return f"Transaction results in an account ({index}) with insufficient funds for rent"
    if isinstance(err, TransactionErrorFieldless):
        name = str(err).rsplit(".", 1)[-1]
        return _TX_ERROR_TEXT.get(name, _words(name))
    return str(err)


def lands_on_chain(err: TransactionErrorType | None) -> bool:
    """Whether a block would include this transaction (fee charged) despite the error.

    Errors raised while executing instructions land (the fee is taken, the status says why);
    errors found while loading or checking the transaction mean no leader includes it.
    """
    if err is None:
        return True
    return isinstance(
        err, TransactionErrorInstructionError | TransactionErrorInsufficientFundsForRent
    )
