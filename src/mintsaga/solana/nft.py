"""The one-transaction NFT: a Token-2022 mint carrying its own metadata.

Only SPL programs are used (Token-2022 with the MetadataPointer and TokenMetadata extensions,
and the associated-token program), so the same instructions land on the local devstack,
devnet and mainnet. The token instructions are encoded here by hand: their layouts are small
and fixed, and this keeps the product free of an SPL client dependency.

Instruction order (see docs/design.md, "The NFT"):

1. ``system_program.create_account`` for the mint, with ``space`` for the mint plus the
   pointer extension (234 bytes) but lamports for the final size: the metadata TLV is added
   later by a realloc inside Token-2022 that transfers no lamports.
2. MetadataPointer ``Initialize`` (``[39, 0]``), pointing at the mint itself. Must precede
   ``InitializeMint2``: extensions are initialised on an uninitialised mint.
3. ``InitializeMint2`` (``[20, ...]``), 0 decimals, no freeze authority.
4. TokenMetadata ``Initialize`` (name, symbol, uri). Needs the mint authority's signature,
   so it comes after the mint is initialised.
5. Associated token account, create-idempotent (a rebroadcast or retry never fails on it).
6. ``MintToChecked`` 1.
7. ``SetAuthority(MintTokens, None)``: the supply is fixed at 1 for good.
"""

from __future__ import annotations

import hashlib
import struct

from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.system_program import CreateAccountParams, create_account

TOKEN_PROGRAM_ID = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
TOKEN_2022_PROGRAM_ID = Pubkey.from_string("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")
ASSOCIATED_TOKEN_PROGRAM_ID = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")

# Token-2022 instruction tags (spl_token_2022::instruction::TokenInstruction).
IX_SET_AUTHORITY = 6
IX_MINT_TO_CHECKED = 14
IX_INITIALIZE_MINT2 = 20
IX_METADATA_POINTER_EXTENSION = 39
METADATA_POINTER_INITIALIZE = 0
AUTHORITY_TYPE_MINT_TOKENS = 0
# Associated-token program: 0 = Create, 1 = CreateIdempotent.
ATA_CREATE_IDEMPOTENT = 1

# spl-token-metadata-interface instructions are identified by an 8-byte hash prefix.
TOKEN_METADATA_INITIALIZE_DISCRIMINATOR = hashlib.sha256(
    b"spl_token_metadata_interface:initialize_account"
).digest()[:8]
# The TLV type of the TokenMetadata entry: the same hash over its type name.
TOKEN_METADATA_TLV_DISCRIMINATOR = hashlib.sha256(
    b"spl_token_metadata_interface:token_metadata"
).digest()[:8]

# Sizes, in bytes, of a Token-2022 mint account.
MINT_BASE_SIZE = 82  # the classic SPL mint
ACCOUNT_TYPE_OFFSET = 165  # a mint with extensions is padded to a token account's size
TLV_HEADER_SIZE = 4  # u16 type + u16 length
METADATA_POINTER_SIZE = 64  # authority + metadata address (zero = none)
MINT_WITH_POINTER_SIZE = ACCOUNT_TYPE_OFFSET + 1 + TLV_HEADER_SIZE + METADATA_POINTER_SIZE  # 234

NFT_DECIMALS = 0


def _borsh_string(value: str) -> bytes:
    raw = value.encode("utf-8")
    return struct.pack("<I", len(raw)) + raw


def token_metadata_size(name: str, symbol: str, uri: str) -> int:
    """Borsh size of a TokenMetadata with no additional metadata (what the TLV value holds)."""
    return (
        32  # update authority (OptionalNonZeroPubkey)
        + 32  # mint
        + len(_borsh_string(name))
        + len(_borsh_string(symbol))
        + len(_borsh_string(uri))
        + 4  # empty additional_metadata vec
    )


def nft_mint_account_size(
    name: str,
    symbol: str,
    uri: str,
    update_authority: Pubkey | None = None,
    mint: Pubkey | None = None,
) -> int:
    """Final size of the mint account once the metadata TLV is written.

    The rent-exempt minimum for this size must be paid at ``create_account`` time: the
    metadata realloc inside Token-2022 does not top the account up. ``update_authority`` and
    ``mint`` are fixed-size fields, so their values do not change the size; they are accepted
    so a caller can pass the full metadata it is about to write.
    """
    del update_authority, mint
    return MINT_WITH_POINTER_SIZE + TLV_HEADER_SIZE + token_metadata_size(name, symbol, uri)


def associated_token_address(
    owner: Pubkey, mint: Pubkey, token_program: Pubkey = TOKEN_2022_PROGRAM_ID
) -> Pubkey:
    """The owner's associated token account for ``mint`` (depends on the token program)."""
    address, _bump = Pubkey.find_program_address(
        [bytes(owner), bytes(token_program), bytes(mint)], ASSOCIATED_TOKEN_PROGRAM_ID
    )
    return address


def _optional_pubkey(key: Pubkey | None) -> bytes:
    """``OptionalNonZeroPubkey``: 32 bytes, all zero meaning none."""
    return bytes(key) if key is not None else bytes(32)


def _coption_pubkey(key: Pubkey | None) -> bytes:
    """Token-2022's packed ``COption<Pubkey>`` in instruction data: ``0`` or ``1 + key``."""
    return b"\x00" if key is None else b"\x01" + bytes(key)


def initialize_metadata_pointer_ix(
    mint: Pubkey, authority: Pubkey | None, metadata_address: Pubkey | None
) -> Instruction:
    data = (
        bytes([IX_METADATA_POINTER_EXTENSION, METADATA_POINTER_INITIALIZE])
        + _optional_pubkey(authority)
        + _optional_pubkey(metadata_address)
    )
    return Instruction(TOKEN_2022_PROGRAM_ID, data, [AccountMeta(mint, False, True)])


def initialize_mint2_ix(
    mint: Pubkey, decimals: int, mint_authority: Pubkey, freeze_authority: Pubkey | None = None
) -> Instruction:
    data = (
        bytes([IX_INITIALIZE_MINT2, decimals])
        + bytes(mint_authority)
        + _coption_pubkey(freeze_authority)
    )
    return Instruction(TOKEN_2022_PROGRAM_ID, data, [AccountMeta(mint, False, True)])


def initialize_token_metadata_ix(
    *,
    mint: Pubkey,
    update_authority: Pubkey,
    mint_authority: Pubkey,
    name: str,
    symbol: str,
    uri: str,
) -> Instruction:
    """TokenMetadata ``Initialize``; the metadata lives in the mint account itself."""
    data = (
        TOKEN_METADATA_INITIALIZE_DISCRIMINATOR
        + _borsh_string(name)
        + _borsh_string(symbol)
        + _borsh_string(uri)
    )
    accounts = [
        AccountMeta(mint, False, True),  # metadata
        AccountMeta(update_authority, False, False),
        AccountMeta(mint, False, False),
        AccountMeta(mint_authority, True, False),
    ]
    return Instruction(TOKEN_2022_PROGRAM_ID, data, accounts)


def create_associated_token_account_idempotent_ix(
    *, payer: Pubkey, owner: Pubkey, mint: Pubkey, token_program: Pubkey = TOKEN_2022_PROGRAM_ID
) -> Instruction:
    accounts = [
        AccountMeta(payer, True, True),
        AccountMeta(associated_token_address(owner, mint, token_program), False, True),
        AccountMeta(owner, False, False),
        AccountMeta(mint, False, False),
        AccountMeta(SYSTEM_PROGRAM_ID, False, False),
        AccountMeta(token_program, False, False),
    ]
    return Instruction(ASSOCIATED_TOKEN_PROGRAM_ID, bytes([ATA_CREATE_IDEMPOTENT]), accounts)


def mint_to_checked_ix(
    *, mint: Pubkey, destination: Pubkey, authority: Pubkey, amount: int, decimals: int
) -> Instruction:
    data = bytes([IX_MINT_TO_CHECKED]) + struct.pack("<QB", amount, decimals)
    accounts = [
        AccountMeta(mint, False, True),
        AccountMeta(destination, False, True),
        AccountMeta(authority, True, False),
    ]
    return Instruction(TOKEN_2022_PROGRAM_ID, data, accounts)


def remove_mint_authority_ix(*, mint: Pubkey, current_authority: Pubkey) -> Instruction:
    """``SetAuthority(MintTokens, None)``: nobody can mint again, so the supply stays 1."""
    data = bytes([IX_SET_AUTHORITY, AUTHORITY_TYPE_MINT_TOKENS]) + _coption_pubkey(None)
    accounts = [AccountMeta(mint, False, True), AccountMeta(current_authority, True, False)]
    return Instruction(TOKEN_2022_PROGRAM_ID, data, accounts)


def build_nft_instructions(
    *,
    payer: Pubkey,
    mint: Pubkey,
    owner: Pubkey,
    name: str,
    symbol: str,
    uri: str,
    rent_lamports: int,
    update_authority: Pubkey | None = None,
) -> list[Instruction]:
    """Every instruction of the NFT transaction, in the order Token-2022 needs them.

    Signers: ``payer`` (fee payer, funds the accounts, temporary mint authority) and ``mint``
    (the new account). ``rent_lamports`` must cover ``nft_mint_account_size(...)``.
    ``update_authority`` (default: ``payer``) may later fix the metadata and the pointer.
    """
    authority = update_authority if update_authority is not None else payer
    return [
        create_account(
            CreateAccountParams(
                from_pubkey=payer,
                to_pubkey=mint,
                lamports=rent_lamports,
                space=MINT_WITH_POINTER_SIZE,
                owner=TOKEN_2022_PROGRAM_ID,
            )
        ),
        initialize_metadata_pointer_ix(mint, authority, mint),
        initialize_mint2_ix(mint, NFT_DECIMALS, payer, None),
        initialize_token_metadata_ix(
            mint=mint,
            update_authority=authority,
            mint_authority=payer,
            name=name,
            symbol=symbol,
            uri=uri,
        ),
        create_associated_token_account_idempotent_ix(payer=payer, owner=owner, mint=mint),
        mint_to_checked_ix(
            mint=mint,
            destination=associated_token_address(owner, mint),
            authority=payer,
            amount=1,
            decimals=NFT_DECIMALS,
        ),
        remove_mint_authority_ix(mint=mint, current_authority=payer),
    ]
