"""``jsonParsed`` account data for SPL Token and Token-2022, as Agave's account decoder emits it.

Only the shapes the product reads are parsed (mints, token accounts, and the extensions an
NFT or a collection carries: metadata and token-group); anything else falls back to base64,
which is what a real node does for an account it has no parser for.
"""

from __future__ import annotations

import struct
from decimal import Decimal
from typing import Any

from solders.account import Account
from solders.pubkey import Pubkey

TOKEN_PROGRAM_ID = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
TOKEN_2022_PROGRAM_ID = Pubkey.from_string("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")
PROGRAM_NAMES = {TOKEN_PROGRAM_ID: "spl-token", TOKEN_2022_PROGRAM_ID: "spl-token-2022"}

MINT_SIZE = 82
ACCOUNT_SIZE = 165
MULTISIG_SIZE = 355
ACCOUNT_TYPE_MINT = 1
ACCOUNT_TYPE_ACCOUNT = 2
_ACCOUNT_STATES = {0: "uninitialized", 1: "initialized", 2: "frozen"}


class NotParsable(ValueError):
    """The account has no parser here: answer in base64."""


def _coption_pubkey(data: bytes, offset: int) -> str | None:
    (tag,) = struct.unpack_from("<I", data, offset)
    return str(Pubkey(data[offset + 4 : offset + 36])) if tag == 1 else None


def _optional_nonzero_pubkey(raw: bytes) -> str | None:
    return None if raw == bytes(32) else str(Pubkey(raw))


def ui_token_amount(amount: int, decimals: int) -> dict[str, Any]:
    """``UiTokenAmount``: the raw amount as a string plus its decimal forms."""
    value = Decimal(amount).scaleb(-decimals)
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return {
        "uiAmount": float(value),
        "decimals": decimals,
        "amount": str(amount),
        "uiAmountString": text,
    }


def _borsh_string(data: bytes, offset: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<I", data, offset)
    start = offset + 4
    return data[start : start + length].decode("utf-8"), start + length


def _token_metadata(value: bytes) -> dict[str, Any]:
    offset = 64
    name, offset = _borsh_string(value, offset)
    symbol, offset = _borsh_string(value, offset)
    uri, offset = _borsh_string(value, offset)
    (count,) = struct.unpack_from("<I", value, offset)
    offset += 4
    additional: list[list[str]] = []
    for _ in range(count):
        key, offset = _borsh_string(value, offset)
        val, offset = _borsh_string(value, offset)
        additional.append([key, val])
    return {
        "updateAuthority": _optional_nonzero_pubkey(value[0:32]),
        "mint": str(Pubkey(value[32:64])),
        "name": name,
        "symbol": symbol,
        "uri": uri,
        "additionalMetadata": additional,
    }


# The token-group extensions. Type numbers: spl token-2022's ``ExtensionType`` enum
# (github.com/solana-program/token-2022 interface/src/extension/mod.rs, counted from
# Uninitialized = 0): GroupPointer = 20, TokenGroup = 21, GroupMemberPointer = 22,
# TokenGroupMember = 23. Value layouts: GroupPointer and GroupMemberPointer are two 32-byte
# OptionalNonZeroPubkey (authority, then group/member address); TokenGroup and
# TokenGroupMember are the Pod structs of spl-token-group-interface
# (github.com/solana-program/token-group interface/src/state.rs): update_authority
# (MaybeNull, 32) + mint (32) + size (u64 LE) + max_size (u64 LE) = 80 bytes, and mint (32) +
# group (32) + member_number (u64 LE) = 72 bytes.
# Rendering: Agave's account decoder (github.com/anza-xyz/agave account-decoder/src/
# parse_token_extension.rs, convert_group_pointer / convert_group_member_pointer /
# convert_token_group / convert_token_group_member, and the Ui* structs in
# account-decoder-client-types/src/token.rs, all ``rename_all = "camelCase"``; the
# ``UiExtension`` enum is tagged ``extension`` with content ``state``): optional pubkeys become
# a base58 string or null, ``mint``/``group`` of a member and ``mint`` of a group are plain
# strings, and ``size``, ``maxSize``, ``memberNumber`` are ``u64`` fields, so JSON numbers (not
# strings, unlike a mint's ``supply``).
EXT_GROUP_POINTER = 20
EXT_TOKEN_GROUP = 21
EXT_GROUP_MEMBER_POINTER = 22
EXT_TOKEN_GROUP_MEMBER = 23
GROUP_POINTER_LEN = 64
TOKEN_GROUP_LEN = 80
TOKEN_GROUP_MEMBER_LEN = 72


def _group_extension(ext_type: int, value: bytes) -> dict[str, Any] | None:
    """A token-group ``UiExtension``; None for any other type.

    A value of the wrong length is ``unparseableExtension``: Agave's ``get_extension`` fails on
    it and the decoder falls back to ``UiExtension::UnparseableExtension``.
    """
    if ext_type in (EXT_GROUP_POINTER, EXT_GROUP_MEMBER_POINTER):
        if len(value) != GROUP_POINTER_LEN:
            return {"extension": "unparseableExtension"}
        address_field = "groupAddress" if ext_type == EXT_GROUP_POINTER else "memberAddress"
        name = "groupPointer" if ext_type == EXT_GROUP_POINTER else "groupMemberPointer"
        return {
            "extension": name,
            "state": {
                "authority": _optional_nonzero_pubkey(value[0:32]),
                address_field: _optional_nonzero_pubkey(value[32:64]),
            },
        }
    if ext_type == EXT_TOKEN_GROUP:
        if len(value) != TOKEN_GROUP_LEN:
            return {"extension": "unparseableExtension"}
        size, max_size = struct.unpack_from("<QQ", value, 64)
        return {
            "extension": "tokenGroup",
            "state": {
                "updateAuthority": _optional_nonzero_pubkey(value[0:32]),
                "mint": str(Pubkey(value[32:64])),
                "size": size,
                "maxSize": max_size,
            },
        }
    if ext_type == EXT_TOKEN_GROUP_MEMBER:
        if len(value) != TOKEN_GROUP_MEMBER_LEN:
            return {"extension": "unparseableExtension"}
        (member_number,) = struct.unpack_from("<Q", value, 64)
        return {
            "extension": "tokenGroupMember",
            "state": {
                "mint": str(Pubkey(value[0:32])),
                "group": str(Pubkey(value[32:64])),
                "memberNumber": member_number,
            },
        }
    return None


def _extension(ext_type: int, value: bytes) -> dict[str, Any]:
    """One ``UiExtension``: ``{"extension": name}`` plus ``"state"`` when it carries data."""
    if ext_type == 0:
        return {"extension": "uninitialized"}
    if ext_type == 3:
        return {
            "extension": "mintCloseAuthority",
            "state": {"closeAuthority": _optional_nonzero_pubkey(value[0:32])},
        }
    if ext_type == 7:
        return {"extension": "immutableOwner"}
    if ext_type == 9:
        return {"extension": "nonTransferable"}
    if ext_type == 12:
        return {
            "extension": "permanentDelegate",
            "state": {"delegate": _optional_nonzero_pubkey(value[0:32])},
        }
    if ext_type == 13:
        return {"extension": "nonTransferableAccount"}
    if ext_type == 18:
        return {
            "extension": "metadataPointer",
            "state": {
                "authority": _optional_nonzero_pubkey(value[0:32]),
                "metadataAddress": _optional_nonzero_pubkey(value[32:64]),
            },
        }
    if ext_type == 19:
        return {"extension": "tokenMetadata", "state": _token_metadata(value)}
    group_extension = _group_extension(ext_type, value)
    if group_extension is not None:
        return group_extension
    return {"extension": "unparseableExtension"}


def _extensions(data: bytes) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    offset = ACCOUNT_SIZE + 1
    while offset + 4 <= len(data):
        ext_type, length = struct.unpack_from("<HH", data, offset)
        value = data[offset + 4 : offset + 4 + length]
        if ext_type == 0 and length == 0 and not any(data[offset:]):
            break  # zero padding after the last extension
        out.append(_extension(ext_type, value))
        offset += 4 + length
    return out


def _account_type(data: bytes, program: Pubkey) -> str:
    if len(data) == MINT_SIZE:
        return "mint"
    if len(data) == ACCOUNT_SIZE:
        return "account"
    if len(data) == MULTISIG_SIZE:
        return "multisig"
    if program == TOKEN_2022_PROGRAM_ID and len(data) > ACCOUNT_SIZE:
        kind = data[ACCOUNT_SIZE]
        if kind == ACCOUNT_TYPE_MINT:
            return "mint"
        if kind == ACCOUNT_TYPE_ACCOUNT:
            return "account"
    raise NotParsable("not a token account layout")


def parse_mint(data: bytes, program: Pubkey) -> dict[str, Any]:
    supply, decimals, initialized = struct.unpack_from("<QB?", data, 36)
    if not initialized:
        raise NotParsable("uninitialized mint")
    info: dict[str, Any] = {
        "mintAuthority": _coption_pubkey(data, 0),
        "supply": str(supply),
        "decimals": decimals,
        "isInitialized": True,
        "freezeAuthority": _coption_pubkey(data, 46),
    }
    if program == TOKEN_2022_PROGRAM_ID and len(data) > ACCOUNT_SIZE:
        extensions = _extensions(data)
        if extensions:
            info["extensions"] = extensions
    return info


def mint_decimals(data: bytes) -> int:
    return data[44]


def parse_token_account(data: bytes, program: Pubkey, decimals: int) -> dict[str, Any]:
    amount = struct.unpack_from("<Q", data, 64)[0]
    delegate = _coption_pubkey(data, 72)
    state = data[108]
    if state == 0:
        raise NotParsable("uninitialized token account")
    native_tag, native_reserve = struct.unpack_from("<IQ", data, 109)
    delegated_amount = struct.unpack_from("<Q", data, 121)[0]
    info: dict[str, Any] = {
        "mint": str(Pubkey(data[0:32])),
        "owner": str(Pubkey(data[32:64])),
        "tokenAmount": ui_token_amount(amount, decimals),
    }
    if delegate is not None:
        info["delegate"] = delegate
    info["state"] = _ACCOUNT_STATES.get(state, "uninitialized")
    info["isNative"] = native_tag == 1
    if native_tag == 1:
        info["rentExemptReserve"] = ui_token_amount(native_reserve, decimals)
    if delegate is not None:
        info["delegatedAmount"] = ui_token_amount(delegated_amount, decimals)
    close_authority = _coption_pubkey(data, 129)
    if close_authority is not None:
        info["closeAuthority"] = close_authority
    if program == TOKEN_2022_PROGRAM_ID and len(data) > ACCOUNT_SIZE:
        extensions = _extensions(data)
        if extensions:
            info["extensions"] = extensions
    return info


def parse_account(account: Account, lookup_mint: Any) -> dict[str, Any]:
    """The ``data`` member of a ``jsonParsed`` account, or ``NotParsable``.

    ``lookup_mint(pubkey) -> Account | None`` supplies the mint of a token account: its
    decimals shape ``tokenAmount``, and a real node cannot parse the account without it.
    """
    program = account.owner
    name = PROGRAM_NAMES.get(program)
    if name is None:
        raise NotParsable("no parser for this program")
    data = bytes(account.data)
    kind = _account_type(data, program)
    if kind == "mint":
        info = parse_mint(data, program)
    elif kind == "account":
        mint = lookup_mint(Pubkey(data[0:32]))
        if mint is None or mint.owner != program or len(mint.data) < MINT_SIZE:
            raise NotParsable("token account without its mint")
        info = parse_token_account(data, program, mint_decimals(bytes(mint.data)))
    else:
        raise NotParsable("multisig accounts are not parsed here")
    return {"program": name, "parsed": {"info": info, "type": kind}, "space": len(data)}
