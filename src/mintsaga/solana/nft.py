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

Collections use the token-group interface, implemented inside Token-2022 (no separate group
program). A collection is an NFT whose mint also carries GroupPointer -> itself and a
TokenGroup (update authority, size, max size); a member NFT's mint carries GroupMemberPointer ->
itself and a TokenGroupMember (group, member number), written by ``InitializeMember``, which
needs the group update authority's signature and increments the group's size in the same
instruction. Sources read (github.com/solana-labs/solana-program-library and its successors
github.com/solana-program/token-2022 and github.com/solana-program/token-group):

- token/program-2022/src/instruction.rs: ``TokenInstruction`` tags 39 MetadataPointerExtension,
  40 GroupPointerExtension, 41 GroupMemberPointerExtension.
- token/program-2022/src/extension/group_pointer/instruction.rs (group_member_pointer/ likewise):
  ``Initialize`` = sub-instruction 0, data ``authority: OptionalNonZeroPubkey`` + the address,
  one account (the mint, writable); "Fails if the mint has already been initialized, so must be
  called before InitializeMint".
- token-group/interface/src/instruction.rs: each instruction is an 8-byte discriminator,
  ``sha256("spl_token_group_interface:<name>")[:8]`` with names ``initialize_token_group``,
  ``update_group_max_size``, ``update_authority``, ``initialize_member``, then a Pod body;
  account lists as built below.
- token-group/interface/src/state.rs (solana-program/token-group): ``TokenGroup`` = update
  authority (32, zero = none), mint (32), size (u64), max_size (u64) = 80 bytes;
  ``TokenGroupMember`` = mint (32), group (32), member_number (u64) = 72 bytes.
- program/src/extension/token_group/processor.rs (solana-program/token-2022): InitializeGroup
  requires group == mint, the mint authority's signature and the GroupPointer extension;
  InitializeMember requires member == member mint, the member mint authority's signature,
  the GroupMemberPointer extension, and the group update authority's signature; both write
  their TLV with ``alloc_and_serialize`` (a realloc) and "assume that there's enough SOL for
  the new rent-exemption". The older solana-labs processor used ``init_value`` (no realloc:
  the space had to be there up front). The Token-2022 that LiteSVM bundles (solders 0.29.0;
  the devstack's chain is that LiteSVM) reallocs, and refuses ``InitializeMint2`` on an account
  created with the final size (InvalidAccountData) -- both shown by
  tests/unit/solana/test_solana_nft_group.py. So, as with the metadata, ``create_account``
  gets the space of the fixed-size pointer extensions only (302 bytes for a collection and for
  a member) and the lamports of the final size (``collection_mint_account_size``,
  ``nft_mint_account_size(..., member=True)``); short lamports fail the transaction with
  InsufficientFundsForRent.

A member NFT's order: create_account, MetadataPointer, GroupMemberPointer, InitializeMint2,
TokenMetadata Initialize, ``InitializeMember`` (needs the payer still mint authority), then 5-7.
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
IX_GROUP_POINTER_EXTENSION = 40
IX_GROUP_MEMBER_POINTER_EXTENSION = 41
METADATA_POINTER_INITIALIZE = 0
POINTER_INITIALIZE = 0  # the Initialize sub-instruction of every pointer extension
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


def _group_discriminator(name: str) -> bytes:
    """An spl-token-group-interface instruction discriminator (interface/src/instruction.rs)."""
    return hashlib.sha256(f"spl_token_group_interface:{name}".encode()).digest()[:8]


TOKEN_GROUP_INITIALIZE_DISCRIMINATOR = _group_discriminator("initialize_token_group")
TOKEN_GROUP_UPDATE_MAX_SIZE_DISCRIMINATOR = _group_discriminator("update_group_max_size")
TOKEN_GROUP_UPDATE_AUTHORITY_DISCRIMINATOR = _group_discriminator("update_authority")
TOKEN_GROUP_INITIALIZE_MEMBER_DISCRIMINATOR = _group_discriminator("initialize_member")

# Sizes, in bytes, of a Token-2022 mint account.
MINT_BASE_SIZE = 82  # the classic SPL mint
ACCOUNT_TYPE_OFFSET = 165  # a mint with extensions is padded to a token account's size
TLV_HEADER_SIZE = 4  # u16 type + u16 length
METADATA_POINTER_SIZE = 64  # authority + metadata address (zero = none)
MINT_WITH_POINTER_SIZE = ACCOUNT_TYPE_OFFSET + 1 + TLV_HEADER_SIZE + METADATA_POINTER_SIZE  # 234
GROUP_POINTER_SIZE = 64  # authority + group address
GROUP_MEMBER_POINTER_SIZE = 64  # authority + member address
TOKEN_GROUP_SIZE = 80  # update authority + mint + size u64 + max_size u64
TOKEN_GROUP_MEMBER_SIZE = 72  # mint + group + member_number u64
# create_account space of a collection / a member NFT: the pointers, fixed-size, set up before
# InitializeMint2; the metadata and group TLVs are added later by reallocs (302 bytes each).
COLLECTION_MINT_WITH_POINTERS_SIZE = MINT_WITH_POINTER_SIZE + TLV_HEADER_SIZE + GROUP_POINTER_SIZE
MEMBER_MINT_WITH_POINTERS_SIZE = (
    MINT_WITH_POINTER_SIZE + TLV_HEADER_SIZE + GROUP_MEMBER_POINTER_SIZE
)

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
    *,
    member: bool = False,
) -> int:
    """Final size of the mint account once the metadata TLV is written.

    The rent-exempt minimum for this size must be paid at ``create_account`` time: the
    metadata realloc inside Token-2022 does not top the account up. ``update_authority`` and
    ``mint`` are fixed-size fields, so their values do not change the size; they are accepted
    so a caller can pass the full metadata it is about to write. ``member=True``: the NFT is
    a collection member (``build_nft_instructions(collection=...)``), which adds the
    GroupMemberPointer and TokenGroupMember TLVs (68 + 76 bytes).
    """
    del update_authority, mint
    size = MINT_WITH_POINTER_SIZE + TLV_HEADER_SIZE + token_metadata_size(name, symbol, uri)
    if member:
        size += (
            TLV_HEADER_SIZE + GROUP_MEMBER_POINTER_SIZE + TLV_HEADER_SIZE + TOKEN_GROUP_MEMBER_SIZE
        )
    return size


def collection_mint_account_size(name: str, symbol: str, uri: str) -> int:
    """Final size of a collection's mint account: the NFT's plus GroupPointer (68) and TokenGroup
    (84) TLVs. Its rent-exempt minimum is paid at ``create_account`` time, as for an NFT."""
    return (
        nft_mint_account_size(name, symbol, uri)
        + TLV_HEADER_SIZE
        + GROUP_POINTER_SIZE
        + TLV_HEADER_SIZE
        + TOKEN_GROUP_SIZE
    )


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


def initialize_group_pointer_ix(
    mint: Pubkey, authority: Pubkey | None, group_address: Pubkey | None
) -> Instruction:
    """GroupPointer ``Initialize`` (``[40, 0]``); before ``InitializeMint2``."""
    data = (
        bytes([IX_GROUP_POINTER_EXTENSION, POINTER_INITIALIZE])
        + _optional_pubkey(authority)
        + _optional_pubkey(group_address)
    )
    return Instruction(TOKEN_2022_PROGRAM_ID, data, [AccountMeta(mint, False, True)])


def initialize_group_member_pointer_ix(
    mint: Pubkey, authority: Pubkey | None, member_address: Pubkey | None
) -> Instruction:
    """GroupMemberPointer ``Initialize`` (``[41, 0]``); before ``InitializeMint2``."""
    data = (
        bytes([IX_GROUP_MEMBER_POINTER_EXTENSION, POINTER_INITIALIZE])
        + _optional_pubkey(authority)
        + _optional_pubkey(member_address)
    )
    return Instruction(TOKEN_2022_PROGRAM_ID, data, [AccountMeta(mint, False, True)])


def initialize_group_ix(
    *,
    group: Pubkey,
    mint: Pubkey,
    mint_authority: Pubkey,
    update_authority: Pubkey | None,
    max_size: int,
) -> Instruction:
    """token-group ``InitializeGroup``: ``group`` must be ``mint`` itself (Token-2022 keeps the
    group in the mint); signed by the mint authority; ``update_authority`` None = immutable."""
    data = (
        TOKEN_GROUP_INITIALIZE_DISCRIMINATOR
        + _optional_pubkey(update_authority)
        + struct.pack("<Q", max_size)
    )
    accounts = [
        AccountMeta(group, False, True),
        AccountMeta(mint, False, False),
        AccountMeta(mint_authority, True, False),
    ]
    return Instruction(TOKEN_2022_PROGRAM_ID, data, accounts)


def initialize_member_ix(
    *,
    member: Pubkey,
    member_mint: Pubkey,
    member_mint_authority: Pubkey,
    group: Pubkey,
    group_update_authority: Pubkey,
) -> Instruction:
    """token-group ``InitializeMember``: ``member`` must be ``member_mint`` itself; signed by the
    member mint's authority and the group's update authority; increments the group's size."""
    accounts = [
        AccountMeta(member, False, True),
        AccountMeta(member_mint, False, False),
        AccountMeta(member_mint_authority, True, False),
        AccountMeta(group, False, True),
        AccountMeta(group_update_authority, True, False),
    ]
    return Instruction(TOKEN_2022_PROGRAM_ID, TOKEN_GROUP_INITIALIZE_MEMBER_DISCRIMINATOR, accounts)


def update_group_max_size_ix(
    *, group: Pubkey, update_authority: Pubkey, max_size: int
) -> Instruction:
    """token-group ``UpdateGroupMaxSize``; fails below the current size."""
    data = TOKEN_GROUP_UPDATE_MAX_SIZE_DISCRIMINATOR + struct.pack("<Q", max_size)
    accounts = [AccountMeta(group, False, True), AccountMeta(update_authority, True, False)]
    return Instruction(TOKEN_2022_PROGRAM_ID, data, accounts)


def update_group_authority_ix(
    *, group: Pubkey, current_authority: Pubkey, new_authority: Pubkey | None
) -> Instruction:
    """token-group ``UpdateGroupAuthority``; ``new_authority`` None makes the group immutable
    (no member can be added any more)."""
    data = TOKEN_GROUP_UPDATE_AUTHORITY_DISCRIMINATOR + _optional_pubkey(new_authority)
    accounts = [AccountMeta(group, False, True), AccountMeta(current_authority, True, False)]
    return Instruction(TOKEN_2022_PROGRAM_ID, data, accounts)


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


# spl-token-metadata-interface's UpdateAuthority: the hash of its instruction name.
TOKEN_METADATA_UPDATE_AUTHORITY_DISCRIMINATOR = hashlib.sha256(
    b"spl_token_metadata_interface:update_the_authority"
).digest()[:8]


def update_metadata_authority_ix(
    *, metadata: Pubkey, current_authority: Pubkey, new_authority: Pubkey | None
) -> Instruction:
    """TokenMetadata ``UpdateAuthority``, signed by the current update authority; None: the
    metadata is immutable for good. (``Initialize`` refuses an all-zero authority, so immutable
    metadata is initialised with the payer, then handed to none in the same transaction: seen
    on the devstack's Token-2022 and in tests/unit/solana/test_solana_nft_group.py.)"""
    accounts = [AccountMeta(metadata, False, True), AccountMeta(current_authority, True, False)]
    data = TOKEN_METADATA_UPDATE_AUTHORITY_DISCRIMINATOR + _optional_pubkey(new_authority)
    return Instruction(TOKEN_2022_PROGRAM_ID, data, accounts)


def _metadata(
    *, payer: Pubkey, mint: Pubkey, authority: Pubkey | None, name: str, symbol: str, uri: str
) -> list[Instruction]:
    """TokenMetadata ``Initialize`` with ``authority``; None: with the payer, then handed to
    none (immutable metadata)."""
    initialize = initialize_token_metadata_ix(
        mint=mint,
        update_authority=authority if authority is not None else payer,
        mint_authority=payer,
        name=name,
        symbol=symbol,
        uri=uri,
    )
    if authority is not None:
        return [initialize]
    return [
        initialize,
        update_metadata_authority_ix(metadata=mint, current_authority=payer, new_authority=None),
    ]


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
    collection: tuple[Pubkey, Pubkey] | None = None,
    immutable_metadata: bool = False,
) -> list[Instruction]:
    """Every instruction of the NFT transaction, in the order Token-2022 needs them.

    Signers: ``payer`` (fee payer, funds the accounts, temporary mint authority) and ``mint``
    (the new account). ``rent_lamports`` must cover ``nft_mint_account_size(...)``.
    ``update_authority`` (default: ``payer``) may later fix the metadata and the pointer;
    ``immutable_metadata``: nobody may (``update_authority`` is then ignored).

    ``collection`` = ``(group, group_update_authority)`` makes the NFT a member of that
    collection in the same transaction: GroupMemberPointer -> the mint (before
    ``InitializeMint2``) and ``InitializeMember`` (before the mint authority is removed, which
    it needs); ``group_update_authority`` then signs too, and ``rent_lamports`` must cover
    ``nft_mint_account_size(..., member=True)``. Without it the instructions are exactly those
    of an NFT outside any collection.
    """
    authority = (
        None if immutable_metadata else (payer if update_authority is None else update_authority)
    )
    space = MINT_WITH_POINTER_SIZE if collection is None else MEMBER_MINT_WITH_POINTERS_SIZE
    instructions = [
        create_account(
            CreateAccountParams(
                from_pubkey=payer,
                to_pubkey=mint,
                lamports=rent_lamports,
                space=space,
                owner=TOKEN_2022_PROGRAM_ID,
            )
        ),
        initialize_metadata_pointer_ix(mint, authority, mint),
    ]
    if collection is not None:
        instructions.append(initialize_group_member_pointer_ix(mint, authority, mint))
    instructions.append(initialize_mint2_ix(mint, NFT_DECIMALS, payer, None))
    instructions += _metadata(
        payer=payer, mint=mint, authority=authority, name=name, symbol=symbol, uri=uri
    )
    if collection is not None:
        group, group_update_authority = collection
        instructions.append(
            initialize_member_ix(
                member=mint,
                member_mint=mint,
                member_mint_authority=payer,
                group=group,
                group_update_authority=group_update_authority,
            )
        )
    instructions += _mint_one_and_fix_supply(payer=payer, mint=mint, owner=owner)
    return instructions


def _mint_one_and_fix_supply(*, payer: Pubkey, mint: Pubkey, owner: Pubkey) -> list[Instruction]:
    """The owner's token account, one token into it, then no mint authority ever again."""
    return [
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


def build_collection_instructions(
    *,
    payer: Pubkey,
    mint: Pubkey,
    owner: Pubkey,
    name: str,
    symbol: str,
    uri: str,
    rent_lamports: int,
    group_update_authority: Pubkey,
    max_size: int,
    update_authority: Pubkey | None = None,
    immutable_metadata: bool = False,
) -> list[Instruction]:
    """Every instruction of a collection NFT's transaction: an NFT (as ``build_nft_instructions``)
    whose mint also holds the collection's TokenGroup.

    Order: create_account (space for MetadataPointer + GroupPointer, lamports for
    ``collection_mint_account_size(...)``), MetadataPointer -> self, GroupPointer -> self
    (authority: the metadata's, ``update_authority``, none when immutable), InitializeMint2,
    TokenMetadata Initialize,
    InitializeGroup(``max_size``, ``group_update_authority``), the owner's ATA, MintToChecked 1,
    SetAuthority(MintTokens, None). Signers: ``payer`` (temporary mint authority) and ``mint``;
    neither ``update_authority`` (default ``payer``) nor ``group_update_authority`` signs here.
    ``immutable_metadata``: nobody may change its metadata (``update_authority`` is ignored).
    """
    authority = (
        None if immutable_metadata else (payer if update_authority is None else update_authority)
    )
    return [
        create_account(
            CreateAccountParams(
                from_pubkey=payer,
                to_pubkey=mint,
                lamports=rent_lamports,
                space=COLLECTION_MINT_WITH_POINTERS_SIZE,
                owner=TOKEN_2022_PROGRAM_ID,
            )
        ),
        initialize_metadata_pointer_ix(mint, authority, mint),
        # The pointer (who may repoint the collection at another group account) answers to the
        # metadata's cold authority, not the hot group key: a stolen worker key must not be
        # able to unhook the collection, even after the group authority is rotated away.
        initialize_group_pointer_ix(mint, authority, mint),
        initialize_mint2_ix(mint, NFT_DECIMALS, payer, None),
        *_metadata(payer=payer, mint=mint, authority=authority, name=name, symbol=symbol, uri=uri),
        initialize_group_ix(
            group=mint,
            mint=mint,
            mint_authority=payer,
            update_authority=group_update_authority,
            max_size=max_size,
        ),
        *_mint_one_and_fix_supply(payer=payer, mint=mint, owner=owner),
    ]
