"""Reading the NFT back from the chain: the Token-2022 mint account and the owner's token account
decoded into an :class:`NftState` (docs/design.md, "The NFT").

Only what verification needs is decoded: the base mint (supply, decimals, authorities), the
MetadataPointer and TokenMetadata extensions, the collection extensions (GroupPointer,
TokenGroup, GroupMemberPointer, TokenGroupMember; layouts in solana/nft.py's docstring), and the
balance of the owner's associated token account. An account that is not Token-2022's, or that
cannot be decoded, is a ``ServiceError`` naming the address, never a guess.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from typing import Any

from solders.pubkey import Pubkey

from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.solana.nft import (
    ACCOUNT_TYPE_OFFSET,
    MINT_BASE_SIZE,
    TLV_HEADER_SIZE,
    TOKEN_2022_PROGRAM_ID,
    TOKEN_GROUP_MEMBER_SIZE,
    TOKEN_GROUP_SIZE,
)
from mintsaga.solana.rpc_errors import SERVICE

__all__ = [
    "GroupExtensions",
    "NftState",
    "TokenGroupMemberState",
    "TokenGroupState",
    "decode_group_extensions",
    "decode_nft_mint",
    "nft_state_from_accounts",
]

ACCOUNT_TYPE_MINT = 1
EXTENSION_METADATA_POINTER = 18
EXTENSION_TOKEN_METADATA = 19
# spl_token_2022::extension::ExtensionType (u16 TLV types)
EXTENSION_GROUP_POINTER = 20
EXTENSION_TOKEN_GROUP = 21
EXTENSION_GROUP_MEMBER_POINTER = 22
EXTENSION_TOKEN_GROUP_MEMBER = 23
TOKEN_ACCOUNT_MIN_SIZE = 165


@dataclass(frozen=True)
class TokenGroupState:
    """A collection: the TokenGroup extension of its mint."""

    update_authority: str | None  # None: immutable, no member can be added
    mint: str
    size: int  # members so far
    max_size: int


@dataclass(frozen=True)
class TokenGroupMemberState:
    """A collection member: the TokenGroupMember extension of its mint."""

    mint: str
    group: str  # the collection's group address (its mint)
    member_number: int  # 1 for the first member


@dataclass(frozen=True)
class GroupExtensions:
    """The collection extensions of one mint (each None when absent)."""

    group_pointer_authority: str | None
    group_address: str | None  # where the GroupPointer points (the mint itself)
    group: TokenGroupState | None
    member_pointer_authority: str | None
    member_address: str | None  # where the GroupMemberPointer points (the mint itself)
    member: TokenGroupMemberState | None


NO_GROUP_EXTENSIONS = GroupExtensions(None, None, None, None, None, None)


@dataclass(frozen=True)
class NftState:
    """The mint as the chain has it, with the owner's token balance."""

    mint: str
    supply: int
    decimals: int
    is_initialized: bool
    mint_authority: str | None  # None once removed: the supply is fixed
    freeze_authority: str | None
    metadata_address: str | None  # where the MetadataPointer points (the mint itself)
    update_authority: str | None
    name: str | None  # None when there is no TokenMetadata extension
    symbol: str | None
    uri: str | None
    owner: str
    owner_balance: int  # tokens in the owner's associated token account (0 if none)
    slot: int  # the context slot both accounts were read at
    groups: GroupExtensions = NO_GROUP_EXTENSIONS  # the collection extensions of the mint

    @property
    def member(self) -> TokenGroupMemberState | None:
        """The NFT's collection membership, None outside any collection."""
        return self.groups.member

    @property
    def group(self) -> TokenGroupState | None:
        """The collection this mint is (the TokenGroup it holds), None for a plain NFT."""
        return self.groups.group

    @property
    def is_fixed_supply_nft(self) -> bool:
        """One token, no decimals, nobody able to mint more."""
        return self.supply == 1 and self.decimals == 0 and self.mint_authority is None


# -- account decoding ------------------------------------------------------------------------


def _coption_pubkey(data: bytes, offset: int) -> str | None:
    (tag,) = struct.unpack_from("<I", data, offset)
    return str(Pubkey(data[offset + 4 : offset + 36])) if tag == 1 else None


def _nonzero_pubkey(raw: bytes) -> str | None:
    return None if raw == bytes(32) else str(Pubkey(raw))


def _borsh_string(data: bytes, offset: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<I", data, offset)
    start = offset + 4
    if start + length > len(data):
        raise ValueError("string runs past the end of the metadata")
    return data[start : start + length].decode("utf-8"), start + length


def _extensions(data: bytes) -> dict[int, bytes]:
    """Token-2022 TLV extensions of a mint: type -> value bytes."""
    if len(data) <= ACCOUNT_TYPE_OFFSET or data[ACCOUNT_TYPE_OFFSET] != ACCOUNT_TYPE_MINT:
        return {}
    found: dict[int, bytes] = {}
    offset = ACCOUNT_TYPE_OFFSET + 1
    while offset + TLV_HEADER_SIZE <= len(data):
        ext_type, length = struct.unpack_from("<HH", data, offset)
        if ext_type == 0:  # uninitialised: the rest is padding
            break
        start = offset + TLV_HEADER_SIZE
        found[ext_type] = data[start : start + length]
        offset = start + length
    return found


def _pointer(value: bytes | None) -> tuple[str | None, str | None]:
    """(authority, address) of a 64-byte pointer extension; (None, None) when absent."""
    if value is None:
        return None, None
    if len(value) < 64:
        raise ValueError(f"pointer extension holds {len(value)} bytes, not 64")
    return _nonzero_pubkey(value[0:32]), _nonzero_pubkey(value[32:64])


def decode_group_extensions(mint: str, data: bytes) -> GroupExtensions:
    """The GroupPointer, TokenGroup, GroupMemberPointer and TokenGroupMember extensions of a
    Token-2022 mint account's raw bytes (``NO_GROUP_EXTENSIONS`` for a mint with none).

    Raises ``ValueError`` naming ``mint`` when an extension present is too short.
    """
    extensions = _extensions(data)
    group_pointer_authority, group_address = _pointer(extensions.get(EXTENSION_GROUP_POINTER))
    member_pointer_authority, member_address = _pointer(
        extensions.get(EXTENSION_GROUP_MEMBER_POINTER)
    )
    group = None
    raw = extensions.get(EXTENSION_TOKEN_GROUP)
    if raw is not None:
        if len(raw) < TOKEN_GROUP_SIZE:
            raise ValueError(f"the TokenGroup of mint {mint} holds {len(raw)} bytes, not 80")
        size, max_size = struct.unpack_from("<QQ", raw, 64)
        group = TokenGroupState(
            update_authority=_nonzero_pubkey(raw[0:32]),
            mint=str(Pubkey(raw[32:64])),
            size=size,
            max_size=max_size,
        )
    member = None
    raw = extensions.get(EXTENSION_TOKEN_GROUP_MEMBER)
    if raw is not None:
        if len(raw) < TOKEN_GROUP_MEMBER_SIZE:
            raise ValueError(f"the TokenGroupMember of mint {mint} holds {len(raw)} bytes, not 72")
        (member_number,) = struct.unpack_from("<Q", raw, 64)
        member = TokenGroupMemberState(
            mint=str(Pubkey(raw[0:32])),
            group=str(Pubkey(raw[32:64])),
            member_number=member_number,
        )
    return GroupExtensions(
        group_pointer_authority=group_pointer_authority,
        group_address=group_address,
        group=group,
        member_pointer_authority=member_pointer_authority,
        member_address=member_address,
        member=member,
    )


def decode_nft_mint(
    mint: str, data: bytes
) -> tuple[int, int, bool, str | None, str | None, dict[str, Any]]:
    """(supply, decimals, is_initialized, mint_authority, freeze_authority, metadata fields)."""
    if len(data) < MINT_BASE_SIZE:
        raise ValueError(f"mint account {mint} holds {len(data)} bytes, fewer than a mint")
    mint_authority = _coption_pubkey(data, 0)
    (supply,) = struct.unpack_from("<Q", data, 36)
    decimals = data[44]
    is_initialized = data[45] == 1
    freeze_authority = _coption_pubkey(data, 46)
    extensions = _extensions(data)
    meta: dict[str, Any] = {
        "metadata_address": None,
        "update_authority": None,
        "name": None,
        "symbol": None,
        "uri": None,
    }
    pointer = extensions.get(EXTENSION_METADATA_POINTER)
    if pointer is not None and len(pointer) >= 64:
        meta["metadata_address"] = _nonzero_pubkey(pointer[32:64])
    token_metadata = extensions.get(EXTENSION_TOKEN_METADATA)
    if token_metadata is not None and len(token_metadata) >= 64:
        meta["update_authority"] = _nonzero_pubkey(token_metadata[0:32])
        offset = 64
        meta["name"], offset = _borsh_string(token_metadata, offset)
        meta["symbol"], offset = _borsh_string(token_metadata, offset)
        meta["uri"], offset = _borsh_string(token_metadata, offset)
    return supply, decimals, is_initialized, mint_authority, freeze_authority, meta


def _account_bytes(value: dict[str, Any]) -> bytes:
    data = value["data"]
    if not (isinstance(data, list) and len(data) == 2 and data[1] == "base64"):
        raise ValueError("expected base64 account data")
    return base64.b64decode(data[0])


def nft_state_from_accounts(
    mint_address: str, owner: str, slot: int, mint_value: Any, ata_value: Any
) -> NftState | None:
    """The NFT as ``getMultipleAccounts`` read it at ``slot``: the mint account's value and the
    owner's associated token account's (either None when absent); None if the mint does not
    exist.

    Raises NEEDS_OPERATOR ``MintAddressOccupied`` when the account at the mint address is not
    Token-2022's, and PERMANENT ``MintAccountUndecodable`` when its bytes make no mint.
    """
    mint_key = Pubkey.from_string(mint_address)
    if mint_value is None:
        return None
    if mint_value.get("owner") != str(TOKEN_2022_PROGRAM_ID):
        raise ServiceError(
            f"the account at mint address {mint_address} is owned by "
            f"{mint_value.get('owner')}, not Token-2022: it is not this service's mint",
            service=SERVICE,
            kind=ErrorKind.NEEDS_OPERATOR,
            code="MintAddressOccupied",
        )
    try:
        mint_data = _account_bytes(mint_value)
        supply, decimals, initialized, mint_auth, freeze_auth, meta = decode_nft_mint(
            mint_address, mint_data
        )
        groups = decode_group_extensions(mint_address, mint_data)
        balance = 0
        if ata_value is not None and ata_value.get("owner") == str(TOKEN_2022_PROGRAM_ID):
            ata_data = _account_bytes(ata_value)
            if len(ata_data) >= TOKEN_ACCOUNT_MIN_SIZE and ata_data[0:32] == bytes(mint_key):
                (balance,) = struct.unpack_from("<Q", ata_data, 64)
    except (ValueError, KeyError, struct.error, binascii.Error) as exc:
        raise ServiceError(
            f"the mint account {mint_address} could not be decoded ({exc})",
            service=SERVICE,
            kind=ErrorKind.PERMANENT,
            code="MintAccountUndecodable",
        ) from exc
    return NftState(
        mint=mint_address,
        supply=supply,
        decimals=decimals,
        is_initialized=initialized,
        mint_authority=mint_auth,
        freeze_authority=freeze_auth,
        metadata_address=meta["metadata_address"],
        update_authority=meta["update_authority"],
        name=meta["name"],
        symbol=meta["symbol"],
        uri=meta["uri"],
        owner=owner,
        owner_balance=balance,
        slot=slot,
        groups=groups,
    )
