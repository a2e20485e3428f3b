"""The JSON-RPC 2.0 face of the local chain, answering as an Agave 2.x node answers.

Shapes follow the real node closely enough for solders' ``from_json`` (what solana-py's
``AsyncClient`` parses with): results with a context are ``{"context": {"slot",
"apiVersion"}, "value"}``, errors carry the node's codes and messages. Every call first
passes the endpoint's provider profile (devstack.profiles: a provider's 401/403/429 before
the node, then the node's own refusals per call), then fault injection, keyed by the JSON-RPC
method (a batch by its first method; ``behind`` and ``drop_transaction`` per call).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from solders.account import Account
from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.signature import Signature

from devstack.faults import Fault, FaultRegistry, serve_with_faults
from devstack.profiles import SolanaProfiles
from devstack.solana.codec import b58decode, b58encode
from devstack.solana.errors import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    RpcError,
    invalid_params,
    min_context_slot_not_reached,
    node_behind,
)
from devstack.solana.ledger import SolanaLedger, decode_transaction, epoch_of
from devstack.solana.parsed import NotParsable, parse_account, ui_token_amount

log = logging.getLogger("devstack.solana.rpc")

API_VERSION = "2.2.16"
FEATURE_SET = 3294202862
GENESIS_HASH = str(Hash(hashlib.sha256(b"mintsaga devstack genesis").digest()))
MAX_MULTIPLE_ACCOUNTS = 100
MAX_SIGNATURE_STATUSES = 256
UNSUPPORTED_TRANSACTION_VERSION = -32015

_COMMITMENTS = {
    "processed": "processed",
    "confirmed": "confirmed",
    "finalized": "finalized",
    # Deprecated names some clients still send.
    "recent": "processed",
    "single": "confirmed",
    "singleGossip": "confirmed",
    "max": "finalized",
    "root": "finalized",
}

Params = list[Any]

# The calls a node that is behind answers differently (Agave: getHealth and the preflight
# health check of sendTransaction refuse; reads of the tip see its stale bank).
_BEHIND_METHODS = ("getHealth", "sendTransaction", "getSlot", "getBlockHeight", "getEpochInfo")


def _param(params: Params, index: int, name: str) -> Any:
    if index >= len(params):
        raise invalid_params(f"missing required parameter {name!r} at position {index}")
    return params[index]


def _config(params: Params, index: int) -> dict[str, Any]:
    if index >= len(params) or params[index] is None:
        return {}
    config = params[index]
    if not isinstance(config, dict):
        raise invalid_params(f"expected a configuration object at position {index}")
    return config


def _pubkey(value: Any) -> Pubkey:
    if not isinstance(value, str):
        raise invalid_params(f"expected a base58 public key, got {type(value).__name__}")
    try:
        return Pubkey.from_string(value)
    except ValueError:
        raise invalid_params(f"invalid public key {value!r}") from None


def _signature(value: Any) -> Signature:
    if not isinstance(value, str):
        raise invalid_params(f"expected a base58 signature, got {type(value).__name__}")
    try:
        return Signature.from_string(value)
    except ValueError:
        raise invalid_params(f"invalid signature {value!r}") from None


def _commitment(config: dict[str, Any]) -> str | None:
    value = config.get("commitment")
    if value is None:
        return None
    try:
        return _COMMITMENTS[value]
    except (KeyError, TypeError):
        raise invalid_params(f"unknown commitment {value!r}") from None


def _u64(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise invalid_params(f"{name} must be an unsigned 64-bit integer")
    return value


def _decode_wire(data: Any, encoding: str) -> bytes:
    if not isinstance(data, str):
        raise invalid_params("expected an encoded transaction string")
    try:
        if encoding == "base64":
            return base64.b64decode(data, validate=True)
        if encoding == "base58":
            return b58decode(data)
    except ValueError as exc:
        raise invalid_params(f"invalid {encoding} encoding: {exc}") from None
    raise invalid_params(f"unsupported encoding: {encoding}. Supported encodings: base58, base64")


class RpcMethods:
    """The methods, each taking the JSON ``params`` array and returning the JSON result."""

    def __init__(
        self,
        ledger: SolanaLedger,
        *,
        target: str | None = None,
        registry: FaultRegistry | None = None,
        profiles: SolanaProfiles | None = None,
    ) -> None:
        self.ledger = ledger
        self.target = target
        self.registry = registry
        self.profiles = profiles
        self.table: dict[str, Callable[[Params], Any]] = {
            "getHealth": self.get_health,
            "getVersion": self.get_version,
            "getGenesisHash": self.get_genesis_hash,
            "getSlot": self.get_slot,
            "getBlockHeight": self.get_block_height,
            "getEpochInfo": self.get_epoch_info,
            "getLatestBlockhash": self.get_latest_blockhash,
            "isBlockhashValid": self.is_blockhash_valid,
            "getBalance": self.get_balance,
            "getAccountInfo": self.get_account_info,
            "getMultipleAccounts": self.get_multiple_accounts,
            "getTokenAccountBalance": self.get_token_account_balance,
            "getTokenSupply": self.get_token_supply,
            "getMinimumBalanceForRentExemption": self.get_minimum_balance_for_rent_exemption,
            "requestAirdrop": self.request_airdrop,
            "sendTransaction": self.send_transaction,
            "simulateTransaction": self.simulate_transaction,
            "getSignatureStatuses": self.get_signature_statuses,
            "getTransaction": self.get_transaction,
            "getRecentPrioritizationFees": self.get_recent_prioritization_fees,
            "getFeeForMessage": self.get_fee_for_message,
            # Helius' method (not Agave's): devstack.solana.fee_market says what it answers.
            "getPriorityFeeEstimate": self.get_priority_fee_estimate,
        }

    # -- dispatch ----------------------------------------------------------------------------

    def call(self, request: Any) -> dict[str, Any]:
        """Answer one JSON-RPC request object."""
        if (
            not isinstance(request, dict)
            or request.get("jsonrpc") != "2.0"
            or not isinstance(request.get("method"), str)
        ):
            return _error_body(None, RpcError(INVALID_REQUEST, "Invalid request"))
        request_id = request.get("id")
        handler = self.table.get(request["method"])
        if handler is None:
            return _error_body(request_id, RpcError(METHOD_NOT_FOUND, "Method not found"))
        params = request.get("params", [])
        if params is None:
            params = []
        if not isinstance(params, list):
            return _error_body(request_id, invalid_params("params must be an array"))
        try:
            result = self._answer(request["method"], params, handler)
        except RpcError as exc:
            return _error_body(request_id, exc)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            return _error_body(request_id, invalid_params(str(exc)))
        except Exception:
            log.exception("%s failed", request["method"])
            return _error_body(request_id, RpcError(INTERNAL_ERROR, "Internal error"))
        return {"jsonrpc": "2.0", "result": result, "id": request_id}

    def _answer(self, method: str, params: Params, handler: Callable[[Params], Any]) -> Any:
        """One call through the endpoint's profile and its call-level faults."""
        if self.target is None:
            return handler(params)
        if self.profiles is not None:
            refused = self.profiles.refusal(self.target, method, params)
            if refused is not None:
                raise RpcError(*refused)
        fault = self._call_fault(method, params)
        if fault is None:
            return handler(params)
        if fault.kind == "drop_transaction":
            return self.send_transaction(params, execute=False)
        # "behind"
        lag = fault.slots or 0
        if method in ("getHealth", "sendTransaction"):
            raise node_behind(lag)
        result = handler(params)
        if method in ("getSlot", "getBlockHeight"):
            return max(0, int(result) - lag)
        if method == "getEpochInfo":
            return {
                **result,
                "absoluteSlot": max(0, result["absoluteSlot"] - lag),
                "blockHeight": max(0, result["blockHeight"] - lag),
                "slotIndex": max(0, result["slotIndex"] - lag),
            }
        return result

    def _call_fault(self, method: str, params: Params) -> Fault | None:
        if self.registry is None or self.target is None:
            return None
        kinds: tuple[str, ...] = ()
        if method == "sendTransaction":
            config = params[1] if len(params) > 1 else None
            preflight = not (isinstance(config, dict) and config.get("skipPreflight"))
            # A node skips its health check with the preflight (Agave transaction_preflight).
            kinds = ("behind", "drop_transaction") if preflight else ("drop_transaction",)
        elif method in _BEHIND_METHODS:
            kinds = ("behind",)
        if not kinds:
            return None
        return self.registry.pick(self.target, method, only_kinds=kinds)

    def answer(self, body: Any) -> Any:
        if isinstance(body, list):
            if not body:
                return _error_body(None, RpcError(INVALID_REQUEST, "Invalid request"))
            return [self.call(item) for item in body]
        return self.call(body)

    # -- helpers -----------------------------------------------------------------------------

    def _context(self, slot: int, value: Any) -> dict[str, Any]:
        return {"context": {"slot": slot, "apiVersion": API_VERSION}, "value": value}

    def _bank(self, config: dict[str, Any]) -> tuple[str | None, int, int]:
        """(commitment, slot, height) of the bank a call reads, checking ``minContextSlot``."""
        commitment = _commitment(config)
        slot, height = self.ledger.view(commitment)
        min_slot = config.get("minContextSlot")
        if min_slot is not None and _u64(min_slot, "minContextSlot") > slot:
            raise min_context_slot_not_reached(slot)
        return commitment, slot, height

    def _lookup_mint(self, commitment: str | None) -> Callable[[Pubkey], Account | None]:
        return lambda pubkey: self.ledger.get_account(pubkey, commitment)

    def account_json(
        self,
        pubkey: Pubkey | None,
        account: Account,
        config: dict[str, Any],
        commitment: str | None,
    ) -> dict[str, Any]:
        del pubkey
        encoding = config.get("encoding", "base64") or "base64"
        data = bytes(account.data)
        rendered: Any = None
        if encoding == "jsonParsed":
            try:
                rendered = parse_account(account, self._lookup_mint(commitment))
            except (NotParsable, ValueError, IndexError):
                rendered = None  # a real node falls back to base64 too
            encoding = "base64"
        if rendered is None:
            data_slice = config.get("dataSlice")
            if data_slice:
                offset = _u64(data_slice.get("offset", 0), "dataSlice.offset")
                length = _u64(data_slice.get("length", 0), "dataSlice.length")
                data = data[offset : offset + length]
            if encoding == "base64":
                rendered = [base64.b64encode(data).decode(), "base64"]
            elif encoding == "base58":
                if len(data) > 128:
                    raise invalid_params(
                        "Encoded binary (base 58) data should be less than 128 bytes, "
                        "please use Base64 encoding."
                    )
                rendered = [b58encode(data), "base58"]
            else:
                raise invalid_params(
                    f"unsupported encoding {encoding!r}; supported: base58, base64, jsonParsed"
                )
        return {
            "lamports": account.lamports,
            "data": rendered,
            "owner": str(account.owner),
            "executable": account.executable,
            "rentEpoch": account.rent_epoch,
            "space": len(account.data),
        }

    def _parsed_token(self, pubkey: Pubkey, commitment: str | None, kind: str) -> dict[str, Any]:
        account = self.ledger.get_account(pubkey, commitment)
        if account is None:
            raise invalid_params("Invalid param: could not find account")
        try:
            parsed = parse_account(account, self._lookup_mint(commitment))
        except (NotParsable, ValueError, IndexError):
            parsed = None
        if parsed is None or parsed["parsed"]["type"] != kind:
            expected = "Token account" if kind == "account" else "Token mint"
            raise invalid_params(f"Invalid param: not a {expected}")
        return parsed["parsed"]["info"]

    # -- cluster -----------------------------------------------------------------------------

    def get_health(self, params: Params) -> str:
        return "ok"

    def get_version(self, params: Params) -> dict[str, Any]:
        return {"solana-core": API_VERSION, "feature-set": FEATURE_SET}

    def get_genesis_hash(self, params: Params) -> str:
        return GENESIS_HASH

    def get_slot(self, params: Params) -> int:
        return self._bank(_config(params, 0))[1]

    def get_block_height(self, params: Params) -> int:
        return self._bank(_config(params, 0))[2]

    def get_epoch_info(self, params: Params) -> dict[str, Any]:
        _, slot, height = self._bank(_config(params, 0))
        epoch = epoch_of(slot)
        first = 0 if epoch == 0 else (2 ** (epoch + 5) - 32)
        return {
            "absoluteSlot": slot,
            "blockHeight": height,
            "epoch": epoch,
            "slotIndex": slot - first,
            "slotsInEpoch": 2 ** (epoch + 5),
            "transactionCount": self.ledger.transactions_landed,
        }

    # -- blockhashes -------------------------------------------------------------------------

    def get_latest_blockhash(self, params: Params) -> dict[str, Any]:
        commitment, _, _ = self._bank(_config(params, 0))
        blockhash, last_valid, slot = self.ledger.latest_blockhash(commitment)
        return self._context(
            slot, {"blockhash": str(blockhash), "lastValidBlockHeight": last_valid}
        )

    def is_blockhash_valid(self, params: Params) -> dict[str, Any]:
        raw = _param(params, 0, "blockhash")
        try:
            blockhash = Hash.from_string(raw)
        except (ValueError, TypeError):
            raise invalid_params(f"invalid blockhash {raw!r}") from None
        commitment, slot, _ = self._bank(_config(params, 1))
        return self._context(slot, self.ledger.blockhash_valid(blockhash, commitment))

    # -- accounts ----------------------------------------------------------------------------

    def get_balance(self, params: Params) -> dict[str, Any]:
        pubkey = _pubkey(_param(params, 0, "pubkey"))
        commitment, slot, _ = self._bank(_config(params, 1))
        account = self.ledger.get_account(pubkey, commitment)
        return self._context(slot, 0 if account is None else account.lamports)

    def get_account_info(self, params: Params) -> dict[str, Any]:
        pubkey = _pubkey(_param(params, 0, "pubkey"))
        config = _config(params, 1)
        commitment, slot, _ = self._bank(config)
        account = self.ledger.get_account(pubkey, commitment)
        value = None if account is None else self.account_json(pubkey, account, config, commitment)
        return self._context(slot, value)

    def get_multiple_accounts(self, params: Params) -> dict[str, Any]:
        keys = _param(params, 0, "pubkeys")
        if not isinstance(keys, list):
            raise invalid_params("expected an array of public keys")
        if len(keys) > MAX_MULTIPLE_ACCOUNTS:
            raise invalid_params(f"Too many inputs provided; max {MAX_MULTIPLE_ACCOUNTS}")
        pubkeys = [_pubkey(k) for k in keys]
        config = _config(params, 1)
        commitment, slot, _ = self._bank(config)
        values = []
        for pubkey in pubkeys:
            account = self.ledger.get_account(pubkey, commitment)
            values.append(
                None if account is None else self.account_json(pubkey, account, config, commitment)
            )
        return self._context(slot, values)

    def get_token_account_balance(self, params: Params) -> dict[str, Any]:
        pubkey = _pubkey(_param(params, 0, "pubkey"))
        commitment, slot, _ = self._bank(_config(params, 1))
        info = self._parsed_token(pubkey, commitment, "account")
        return self._context(slot, info["tokenAmount"])

    def get_token_supply(self, params: Params) -> dict[str, Any]:
        pubkey = _pubkey(_param(params, 0, "pubkey"))
        commitment, slot, _ = self._bank(_config(params, 1))
        info = self._parsed_token(pubkey, commitment, "mint")
        return self._context(slot, ui_token_amount(int(info["supply"]), info["decimals"]))

    def get_minimum_balance_for_rent_exemption(self, params: Params) -> int:
        size = _u64(_param(params, 0, "dataSize"), "dataSize")
        self._bank(_config(params, 1))
        return self.ledger.minimum_balance_for_rent_exemption(size)

    # -- transactions ------------------------------------------------------------------------

    def request_airdrop(self, params: Params) -> str:
        pubkey = _pubkey(_param(params, 0, "pubkey"))
        lamports = _u64(_param(params, 1, "lamports"), "lamports")
        _config(params, 2)
        return self.ledger.airdrop(pubkey, lamports)

    def send_transaction(self, params: Params, *, execute: bool = True) -> str:
        config = _config(params, 1)
        raw = _decode_wire(_param(params, 0, "transaction"), config.get("encoding") or "base58")
        skip_preflight = bool(config.get("skipPreflight", False))
        if config.get("maxRetries") is not None:
            _u64(config["maxRetries"], "maxRetries")
        preflight = config.get("preflightCommitment")
        commitment = _commitment({"commitment": preflight})
        if not skip_preflight:
            self._bank({"commitment": preflight, "minContextSlot": config.get("minContextSlot")})
        return self.ledger.send(
            raw, skip_preflight=skip_preflight, preflight_commitment=commitment, execute=execute
        )

    def simulate_transaction(self, params: Params) -> dict[str, Any]:
        config = _config(params, 1)
        raw = _decode_wire(_param(params, 0, "transaction"), config.get("encoding") or "base58")
        commitment, slot, _ = self._bank(config)
        addresses = None
        accounts_config = config.get("accounts")
        render = None
        if accounts_config:
            addresses = [_pubkey(a) for a in accounts_config.get("addresses") or []]
            account_config = {"encoding": accounts_config.get("encoding") or "base64"}

            def render(account: Account) -> dict[str, Any]:
                return self.account_json(None, account, account_config, "processed")

        value = self.ledger.simulate(
            raw,
            sig_verify=bool(config.get("sigVerify", False)),
            replace_recent_blockhash=bool(config.get("replaceRecentBlockhash", False)),
            commitment=commitment,
            account_addresses=addresses,
            inner_instructions=bool(config.get("innerInstructions", False)),
            render_account=render,
        )
        return self._context(slot, value)

    def get_signature_statuses(self, params: Params) -> dict[str, Any]:
        raw = _param(params, 0, "signatures")
        if not isinstance(raw, list):
            raise invalid_params("expected an array of signatures")
        if len(raw) > MAX_SIGNATURE_STATUSES:
            raise invalid_params(f"Too many inputs provided; max {MAX_SIGNATURE_STATUSES}")
        signatures = [str(_signature(s)) for s in raw]
        search = bool(_config(params, 1).get("searchTransactionHistory", False))
        values = [self.ledger.status(s, search_history=search) for s in signatures]
        return self._context(self.ledger.slot, values)

    def get_transaction(self, params: Params) -> dict[str, Any] | None:
        signature = str(_signature(_param(params, 0, "signature")))
        config = params[1] if len(params) > 1 else {}
        if isinstance(config, str):  # the deprecated form: the encoding alone
            config = {"encoding": config}
        config = config or {}
        encoding = config.get("encoding") or "json"
        if encoding not in ("json", "base64", "base58"):
            raise invalid_params(
                f"unsupported encoding {encoding!r}; supported: json, base58, base64"
            )
        commitment = _commitment(config) or "finalized"
        if commitment == "processed":
            raise invalid_params("Method does not support commitment below `confirmed`")
        record = self.ledger.record(signature)
        if record is None:
            return None
        if commitment == "finalized" and not record.is_finalized(self.ledger.slot):
            return None
        value = record.transaction_json(encoding)
        max_version = config.get("maxSupportedTransactionVersion")
        if value["version"] != "legacy" and (max_version is None or max_version < value["version"]):
            raise RpcError(
                UNSUPPORTED_TRANSACTION_VERSION,
                f"Transaction version ({value['version']}) is not supported by the requesting "
                "client. Please try the request again with the following configuration "
                'parameter: "maxSupportedTransactionVersion": 0',
            )
        if max_version is None:
            del value["version"]  # a legacy-only client gets no version field
        return value

    def get_recent_prioritization_fees(self, params: Params) -> list[dict[str, int]]:
        accounts: list[Pubkey] = []
        if params and params[0] is not None:
            addresses = params[0]
            if not isinstance(addresses, list) or len(addresses) > 128:
                raise invalid_params("expected at most 128 account addresses")
            accounts = [_pubkey(address) for address in addresses]
        return self.ledger.recent_prioritization_fees(accounts)

    def get_priority_fee_estimate(self, params: Params) -> dict[str, Any]:
        """Helius' ``getPriorityFeeEstimate``: ``[{"accountKeys": [...] | "transaction": "...",
        "options": {...}}]`` (helius.dev/docs/priority-fee, the account-keys and serialized-
        transaction methods)."""
        request = _config(params, 0)
        options = request.get("options") or {}
        if not isinstance(options, dict):
            raise invalid_params("options must be an object")
        if "transaction" in request:
            encoding = options.get("transactionEncoding", "base58")
            raw = _decode_wire(request["transaction"], str(encoding).lower())
            accounts = list(decode_transaction(raw).message.account_keys)
        elif isinstance(request.get("accountKeys"), list):
            accounts = [_pubkey(address) for address in request["accountKeys"]]
        else:
            raise invalid_params("either transaction or accountKeys must be provided")
        return self.ledger.priority_fee_estimate(accounts, options)

    def get_fee_for_message(self, params: Params) -> dict[str, Any]:
        raw = _decode_wire(_param(params, 0, "message"), "base64")
        commitment, slot, _ = self._bank(_config(params, 1))
        return self._context(slot, self.ledger.fee_for_message(raw, commitment))


def _error_body(request_id: Any, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": error.to_json(), "id": request_id}


def _first_method(body: Any) -> str | None:
    first = body[0] if isinstance(body, list) and body else body
    method = first.get("method") if isinstance(first, dict) else None
    return method if isinstance(method, str) else None


def _first_id(body: Any) -> Any:
    first = body[0] if isinstance(body, list) and body else body
    return first.get("id") if isinstance(first, dict) else None


def _methods_of(body: Any) -> list[str]:
    items = body if isinstance(body, list) else [body]
    out = []
    for item in items:
        method = item.get("method") if isinstance(item, dict) else None
        out.append(method if isinstance(method, str) else "")
    return out


def build_rpc_app(
    ledger: SolanaLedger,
    registry: FaultRegistry,
    target: str,
    profiles: SolanaProfiles | None = None,
) -> web.Application:
    """One RPC endpoint (``target``) over the shared ledger, with its profile and faults."""
    methods = RpcMethods(ledger, target=target, registry=registry, profiles=profiles)

    async def handle(request: web.Request) -> web.StreamResponse:
        text = await request.text()
        try:
            body = json.loads(text)
        except ValueError:
            body = None
            parse_failed = True
        else:
            parse_failed = False
        registry.record_methods(target, _methods_of(body))

        if profiles is not None:
            refused = profiles.gate(target, _methods_of(body), _first_id(body))
            if refused is not None:
                registry.record_request(target)
                return refused

        def injected_error() -> web.StreamResponse:
            error = RpcError(INTERNAL_ERROR, "Internal error")
            return web.json_response(_error_body(_first_id(body), error), status=500)

        def injected_rpc_error(fault: Fault) -> web.StreamResponse:
            error = fault.rpc_error()
            if isinstance(body, list) and body:
                return web.json_response(
                    [
                        {
                            "jsonrpc": "2.0",
                            "error": error,
                            "id": item.get("id") if isinstance(item, dict) else None,
                        }
                        for item in body
                    ]
                )
            return web.json_response({"jsonrpc": "2.0", "error": error, "id": _first_id(body)})

        async def produce() -> web.StreamResponse:
            if parse_failed:
                return web.json_response(_error_body(None, RpcError(PARSE_ERROR, "Parse error")))
            return web.json_response(methods.answer(body))

        return await serve_with_faults(
            registry,
            target,
            _first_method(body),
            request,
            produce,
            error_response=injected_error,
            rpc_error_response=injected_rpc_error,
        )

    async def health(request: web.Request) -> web.StreamResponse:
        """Agave's ``GET /health``: "ok", or "behind" (rpc_service.rs health_check), HTTP 200."""
        if profiles is not None:
            refused = profiles.gate(target, [], None)
            if refused is not None:
                registry.record_request(target)
                return refused

        async def produce() -> web.StreamResponse:
            behind = registry.pick(target, "/health", only_kinds=("behind",))
            return web.Response(text="behind" if behind is not None else "ok")

        def injected_rpc_error(fault: Fault) -> web.StreamResponse:
            return web.json_response({"jsonrpc": "2.0", "error": fault.rpc_error(), "id": None})

        return await serve_with_faults(
            registry, target, "/health", request, produce, rpc_error_response=injected_rpc_error
        )

    app = web.Application(client_max_size=2 * 1024 * 1024)
    app.router.add_post("/", handle)
    app.router.add_get("/health", health)
    app["ledger"] = ledger
    return app
