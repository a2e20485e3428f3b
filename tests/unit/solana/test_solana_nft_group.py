"""Collections on chain (solana/nft.py, nft_state.py): the token-group interface of Token-2022.

The byte layouts are checked against the SPL sources' literals, and every transaction is sent
to LiteSVM, in process, which runs the real SPL Token-2022 and associated-token programs (the
ones the devstack's chain loads). Facts these tests pin down:

- Token-2022 reallocs the mint for TokenGroup and TokenGroupMember (``alloc_and_serialize``):
  ``create_account`` gets only the fixed pointer extensions' space (302 bytes for a collection
  and for a member) and the lamports of the final size; space for them up front fails
  ``InitializeMint2`` with InvalidAccountData.
- Error codes (spl-token-group-interface ``TokenGroupError``, numbered from 3_406_457_176 in
  github.com/solana-program/token-group interface/src/error.rs): SizeExceedsMaxSize =
  3406457177 (0xcb0a6959), ImmutableGroup = 3406457178, IncorrectUpdateAuthority = 3406457180.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Any

import pytest
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, create_account
from solders.transaction import VersionedTransaction
from solders.transaction_status import (
    InstructionErrorCustom,
    InstructionErrorFieldless,
    TransactionErrorInstructionError,
    TransactionErrorInsufficientFundsForRent,
)

from mintsaga.solana.nft import (
    COLLECTION_MINT_WITH_POINTERS_SIZE,
    MEMBER_MINT_WITH_POINTERS_SIZE,
    TOKEN_2022_PROGRAM_ID,
    TOKEN_GROUP_INITIALIZE_DISCRIMINATOR,
    TOKEN_GROUP_INITIALIZE_MEMBER_DISCRIMINATOR,
    TOKEN_GROUP_UPDATE_AUTHORITY_DISCRIMINATOR,
    TOKEN_GROUP_UPDATE_MAX_SIZE_DISCRIMINATOR,
    associated_token_address,
    build_collection_instructions,
    build_nft_instructions,
    collection_mint_account_size,
    initialize_group_member_pointer_ix,
    initialize_group_pointer_ix,
    nft_mint_account_size,
    update_group_authority_ix,
    update_group_max_size_ix,
)
from mintsaga.solana.nft_state import (
    NO_GROUP_EXTENSIONS,
    TokenGroupMemberState,
    TokenGroupState,
    decode_group_extensions,
    nft_state_from_accounts,
)

# spl-token-group-interface TokenGroupError codes (see the module docstring).
SIZE_EXCEEDS_MAX_SIZE = 3_406_457_177
IMMUTABLE_GROUP = 3_406_457_178
INCORRECT_UPDATE_AUTHORITY = 3_406_457_180

COLLECTION = ("Saga Gold", "GOLD", "ipfs://bafycollection")
MEMBER = ("Saga #1", "SAGA", "ipfs://bafymember")


def _error(result: Any) -> Any:
    """The transaction error of a LiteSVM result, None when it landed."""
    return result.err() if hasattr(result, "err") else None


def _custom(index: int, code: int) -> TransactionErrorInstructionError:
    return TransactionErrorInstructionError(index, InstructionErrorCustom(code))


class Chain:
    """A LiteSVM with a funded fee payer and a collection (max size 2) on it."""

    def __init__(self, max_size: int = 2) -> None:
        self.svm = LiteSVM()
        self.payer = Keypair()
        self.svm.airdrop(self.payer.pubkey(), 10**11)
        self.owner = Keypair().pubkey()
        self.metadata_authority = Keypair()  # never signs anything below
        self.group_authority = Keypair()
        self.collection = Keypair()
        size = collection_mint_account_size(*COLLECTION)
        result = self.send(
            build_collection_instructions(
                payer=self.payer.pubkey(),
                mint=self.collection.pubkey(),
                owner=self.owner,
                name=COLLECTION[0],
                symbol=COLLECTION[1],
                uri=COLLECTION[2],
                rent_lamports=self.svm.minimum_balance_for_rent_exemption(size),
                update_authority=self.metadata_authority.pubkey(),
                group_update_authority=self.group_authority.pubkey(),
                max_size=max_size,
            ),
            [self.payer, self.collection],
        )
        assert _error(result) is None, result

    def send(self, instructions: list[Instruction], signers: list[Keypair]) -> Any:
        message = Message.new_with_blockhash(
            instructions, self.payer.pubkey(), self.svm.latest_blockhash()
        )
        result = self.svm.send_transaction(VersionedTransaction(message, signers))
        self.svm.expire_blockhash()
        return result

    def member_instructions(self, mint: Pubkey, group_authority: Pubkey) -> list[Instruction]:
        size = nft_mint_account_size(*MEMBER, member=True)
        return build_nft_instructions(
            payer=self.payer.pubkey(),
            mint=mint,
            owner=self.owner,
            name=MEMBER[0],
            symbol=MEMBER[1],
            uri=MEMBER[2],
            rent_lamports=self.svm.minimum_balance_for_rent_exemption(size),
            update_authority=self.metadata_authority.pubkey(),
            collection=(self.collection.pubkey(), group_authority),
        )

    def mint_member(self) -> tuple[Keypair, Any]:
        mint = Keypair()
        ixs = self.member_instructions(mint.pubkey(), self.group_authority.pubkey())
        return mint, self.send(ixs, [self.payer, mint, self.group_authority])

    def data(self, address: Pubkey) -> bytes:
        account = self.svm.get_account(address)
        assert account is not None, f"no account at {address}"
        return bytes(account.data)

    def group(self) -> TokenGroupState | None:
        collection = str(self.collection.pubkey())
        return decode_group_extensions(collection, self.data(self.collection.pubkey())).group

    def rpc_value(self, address: Pubkey) -> dict[str, Any] | None:
        """The account as ``getMultipleAccounts`` (base64 encoding) returns it."""
        account = self.svm.get_account(address)
        if account is None:
            return None
        encoded = base64.b64encode(bytes(account.data)).decode()
        return {"owner": str(account.owner), "data": [encoded, "base64"]}


# -- encodings --------------------------------------------------------------------------------


def test_group_discriminators_are_the_interface_hashes():
    # The literals published by spl-token-group's JS client, each commented there as
    # `await splDiscriminate('spl_token_group_interface:<name>')`.
    assert bytes([121, 113, 108, 39, 54, 51, 0, 4]) == TOKEN_GROUP_INITIALIZE_DISCRIMINATOR
    assert (
        bytes([152, 32, 222, 176, 223, 237, 116, 134])
        == TOKEN_GROUP_INITIALIZE_MEMBER_DISCRIMINATOR
    )
    assert bytes([108, 37, 171, 143, 248, 30, 18, 110]) == TOKEN_GROUP_UPDATE_MAX_SIZE_DISCRIMINATOR
    assert (
        bytes([161, 105, 88, 1, 237, 221, 216, 203]) == TOKEN_GROUP_UPDATE_AUTHORITY_DISCRIMINATOR
    )


def test_pointer_initialize_layouts():
    mint, authority = Keypair().pubkey(), Keypair().pubkey()
    group = initialize_group_pointer_ix(mint, authority, mint)
    assert bytes(group.data) == bytes([40, 0]) + bytes(authority) + bytes(mint)
    member = initialize_group_member_pointer_ix(mint, None, mint)
    assert bytes(member.data) == bytes([41, 0]) + bytes(32) + bytes(mint)
    for ix in (group, member):
        assert ix.program_id == TOKEN_2022_PROGRAM_ID
        assert [(m.pubkey, m.is_signer, m.is_writable) for m in ix.accounts] == [
            (mint, False, True)
        ]


def test_account_sizes():
    name, symbol, uri = COLLECTION
    nft = nft_mint_account_size(name, symbol, uri)
    # + GroupPointer TLV (4 + 64) + TokenGroup TLV (4 + 80)
    assert collection_mint_account_size(name, symbol, uri) == nft + 68 + 84
    # + GroupMemberPointer TLV (4 + 64) + TokenGroupMember TLV (4 + 72)
    assert nft_mint_account_size(name, symbol, uri, member=True) == nft + 68 + 76
    assert COLLECTION_MINT_WITH_POINTERS_SIZE == MEMBER_MINT_WITH_POINTERS_SIZE == 234 + 68


def _canonical_digest(instructions: list[Instruction]) -> str:
    digest = hashlib.sha256()
    for ix in instructions:
        digest.update(bytes(ix.program_id))
        for meta in ix.accounts:
            digest.update(bytes(meta.pubkey) + bytes([meta.is_signer, meta.is_writable]))
        data = bytes(ix.data)
        digest.update(struct.pack("<I", len(data)) + data)
    return digest.hexdigest()


@pytest.mark.parametrize(
    ("update_authority", "expected"),
    [
        (None, "9c99f050597758b89929d10b07d059cf469b469d210552c3c045e69613357679"),
        (
            Pubkey.from_string("SysvarRent111111111111111111111111111111111"),
            "d687481dd3fe945144d6c8942a583a321335935962f745bb33ecfaa25d9d6928",
        ),
    ],
)
def test_without_a_collection_the_instructions_are_unchanged(update_authority, expected):
    # The digests were computed from build_nft_instructions before collections existed, with
    # these exact arguments: an NFT outside any collection is byte for byte the same.
    args: dict[str, Any] = dict(
        payer=Pubkey.from_string("9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"),
        mint=Pubkey.from_string("So11111111111111111111111111111111111111112"),
        owner=Pubkey.from_string("Vote111111111111111111111111111111111111111"),
        name="Saga #1",
        symbol="SAGA",
        uri="ipfs://bafyfoo",
        rent_lamports=3_278_160,
    )
    if update_authority is not None:
        args["update_authority"] = update_authority
    assert _canonical_digest(build_nft_instructions(**args)) == expected
    assert _canonical_digest(build_nft_instructions(**args, collection=None)) == expected


def test_member_instruction_order():
    chain_free_mint, payer = Keypair().pubkey(), Keypair().pubkey()
    group, group_authority = Keypair().pubkey(), Keypair().pubkey()
    ixs = build_nft_instructions(
        payer=payer,
        mint=chain_free_mint,
        owner=Keypair().pubkey(),
        name="n",
        symbol="s",
        uri="u",
        rent_lamports=1,
        collection=(group, group_authority),
    )
    heads = [bytes(ix.data)[:2] for ix in ixs]
    assert heads == [
        b"\x00\x00",  # CreateAccount
        bytes([39, 0]),  # MetadataPointer Initialize
        bytes([41, 0]),  # GroupMemberPointer Initialize, before the mint is initialised
        bytes([20, 0]),  # InitializeMint2
        bytes([210, 225]),  # TokenMetadata Initialize
        bytes([152, 32]),  # InitializeMember, while the payer is still the mint authority
        b"\x01",  # ATA CreateIdempotent
        bytes([14, 1]),  # MintToChecked 1
        bytes([6, 0]),  # SetAuthority(MintTokens, None)
    ]
    member = ixs[5]
    assert [(m.pubkey, m.is_signer, m.is_writable) for m in member.accounts] == [
        (chain_free_mint, False, True),
        (chain_free_mint, False, False),
        (payer, True, False),
        (group, False, True),
        (group_authority, True, False),
    ]
    assert bytes(ixs[0].data)[12:20] == struct.pack("<Q", MEMBER_MINT_WITH_POINTERS_SIZE)


# -- on chain (LiteSVM) -----------------------------------------------------------------------


def test_collection_lands_with_its_group_and_separate_authorities():
    chain = Chain(max_size=2)
    address = chain.collection.pubkey()
    data = chain.data(address)
    # The mint was created with 302 bytes; Token-2022 grew it for the metadata and the group:
    # 302 + metadata TLV (4 + 64 + (4+9) + (4+4) + (4+21) + 4) + TokenGroup TLV (4 + 80).
    assert len(data) == collection_mint_account_size(*COLLECTION) == 504
    groups = decode_group_extensions(str(address), data)
    assert groups.group_address == str(address)
    # The pointer answers to the cold metadata authority, never the hot group key.
    assert groups.group_pointer_authority == str(chain.metadata_authority.pubkey())
    assert groups.group == TokenGroupState(
        update_authority=str(chain.group_authority.pubkey()),
        mint=str(address),
        size=0,
        max_size=2,
    )
    assert groups.member is None and groups.member_address is None

    state = nft_state_from_accounts(
        str(address),
        str(chain.owner),
        7,
        chain.rpc_value(address),
        chain.rpc_value(associated_token_address(chain.owner, address)),
    )
    assert state is not None
    assert state.update_authority == str(chain.metadata_authority.pubkey())
    assert state.update_authority != str(chain.payer.pubkey())
    assert (state.name, state.symbol, state.uri) == COLLECTION
    assert state.is_fixed_supply_nft and state.owner_balance == 1
    assert state.group == groups.group and state.member is None


def test_members_join_until_the_collection_is_full():
    chain = Chain(max_size=2)
    group_address = str(chain.collection.pubkey())
    for number in (1, 2):
        mint, result = chain.mint_member()
        assert _error(result) is None, result
        data = chain.data(mint.pubkey())
        # Created with 302 bytes, grown by Token-2022 for the metadata and the member:
        # 302 + metadata TLV (4 + 64 + (4+7) + (4+4) + (4+17) + 4) + member TLV (4 + 72).
        assert len(data) == nft_mint_account_size(*MEMBER, member=True) == 490
        groups = decode_group_extensions(str(mint.pubkey()), data)
        assert groups.member_address == str(mint.pubkey())
        assert groups.member_pointer_authority == str(chain.metadata_authority.pubkey())
        assert groups.member == TokenGroupMemberState(
            mint=str(mint.pubkey()), group=group_address, member_number=number
        )
        assert groups.group is None and groups.group_address is None
        group = chain.group()
        assert group is not None and group.size == number

        state = nft_state_from_accounts(
            str(mint.pubkey()),
            str(chain.owner),
            9,
            chain.rpc_value(mint.pubkey()),
            chain.rpc_value(associated_token_address(chain.owner, mint.pubkey())),
        )
        assert state is not None and state.member == groups.member
        assert state.is_fixed_supply_nft and state.owner_balance == 1
        assert state.update_authority == str(chain.metadata_authority.pubkey())

    third, result = chain.mint_member()
    # Instruction 5 is InitializeMember: "Size is greater than max size".
    assert _error(result) == _custom(5, SIZE_EXCEEDS_MAX_SIZE)
    assert chain.svm.get_account(third.pubkey()) is None  # nothing of it landed
    group = chain.group()
    assert group is not None and group.size == 2


def test_a_member_needs_the_group_update_authority():
    chain = Chain()
    # The right key named, but not signing.
    mint = Keypair()
    ixs = chain.member_instructions(mint.pubkey(), chain.group_authority.pubkey())
    member = ixs[5]
    accounts = list(member.accounts)
    accounts[4] = AccountMeta(chain.group_authority.pubkey(), False, False)
    ixs[5] = Instruction(member.program_id, bytes(member.data), accounts)
    result = chain.send(ixs, [chain.payer, mint])
    assert _error(result) == TransactionErrorInstructionError(
        5, InstructionErrorFieldless.MissingRequiredSignature
    )
    # Another key (the fee payer) signing in its place.
    mint = Keypair()
    ixs = chain.member_instructions(mint.pubkey(), chain.payer.pubkey())
    result = chain.send(ixs, [chain.payer, mint])
    assert _error(result) == _custom(5, INCORRECT_UPDATE_AUTHORITY)
    group = chain.group()
    assert group is not None and group.size == 0


def test_group_max_size_and_authority_updates():
    chain = Chain(max_size=1)
    assert _error(chain.mint_member()[1]) is None
    raise_max = update_group_max_size_ix(
        group=chain.collection.pubkey(),
        update_authority=chain.group_authority.pubkey(),
        max_size=2,
    )
    assert _error(chain.send([raise_max], [chain.payer, chain.group_authority])) is None
    assert _error(chain.mint_member()[1]) is None
    freeze = update_group_authority_ix(
        group=chain.collection.pubkey(),
        current_authority=chain.group_authority.pubkey(),
        new_authority=None,
    )
    assert _error(chain.send([freeze], [chain.payer, chain.group_authority])) is None
    group = chain.group()
    assert group == TokenGroupState(
        update_authority=None, mint=str(chain.collection.pubkey()), size=2, max_size=2
    )
    raise_again = update_group_max_size_ix(
        group=chain.collection.pubkey(),
        update_authority=chain.group_authority.pubkey(),
        max_size=3,
    )
    result = chain.send([raise_again], [chain.payer, chain.group_authority])
    assert _error(result) == _custom(0, IMMUTABLE_GROUP)


def test_space_for_the_group_up_front_is_refused():
    # Why create_account gets only the pointers' space: with the final size up front,
    # InitializeMint2 (instruction 3) finds bytes after the extensions and refuses the account.
    chain = Chain()
    mint = Keypair()
    size = collection_mint_account_size(*COLLECTION)
    rent = chain.svm.minimum_balance_for_rent_exemption(size)
    ixs = build_collection_instructions(
        payer=chain.payer.pubkey(),
        mint=mint.pubkey(),
        owner=chain.owner,
        name=COLLECTION[0],
        symbol=COLLECTION[1],
        uri=COLLECTION[2],
        rent_lamports=rent,
        group_update_authority=chain.group_authority.pubkey(),
        max_size=5,
    )
    ixs[0] = create_account(
        CreateAccountParams(
            from_pubkey=chain.payer.pubkey(),
            to_pubkey=mint.pubkey(),
            lamports=rent,
            space=size,
            owner=TOKEN_2022_PROGRAM_ID,
        )
    )
    result = chain.send(ixs, [chain.payer, mint])
    assert _error(result) == TransactionErrorInstructionError(
        3, InstructionErrorFieldless.InvalidAccountData
    )


def test_a_plain_mint_has_no_group_extensions():
    chain = Chain()
    mint = Keypair()
    size = nft_mint_account_size(*MEMBER)
    ixs = build_nft_instructions(
        payer=chain.payer.pubkey(),
        mint=mint.pubkey(),
        owner=chain.owner,
        name=MEMBER[0],
        symbol=MEMBER[1],
        uri=MEMBER[2],
        rent_lamports=chain.svm.minimum_balance_for_rent_exemption(size),
    )
    assert _error(chain.send(ixs, [chain.payer, mint])) is None
    assert decode_group_extensions(str(mint.pubkey()), chain.data(mint.pubkey())) == (
        NO_GROUP_EXTENSIONS
    )


def test_a_truncated_group_extension_is_an_error_naming_the_mint():
    chain = Chain()
    data = bytearray(chain.data(chain.collection.pubkey()))
    # Find the TokenGroup TLV (type 21) and claim a shorter length for it.
    offset = 166
    while True:
        ext_type, length = struct.unpack_from("<HH", data, offset)
        if ext_type == 21:
            struct.pack_into("<HH", data, offset, 21, 79)
            break
        offset += 4 + length
    with pytest.raises(ValueError, match="TokenGroup of mint M1"):
        decode_group_extensions("M1", bytes(data))


def test_lamports_must_cover_the_final_size():
    # The reallocs top nothing up: rent for one byte less than the final size fails the
    # transaction as a whole (the system program's rent check on the mint, account index 1).
    chain = Chain()
    mint = Keypair()
    size = nft_mint_account_size(*MEMBER, member=True)
    ixs = chain.member_instructions(mint.pubkey(), chain.group_authority.pubkey())
    short = chain.svm.minimum_balance_for_rent_exemption(size - 1)
    ixs[0] = create_account(
        CreateAccountParams(
            from_pubkey=chain.payer.pubkey(),
            to_pubkey=mint.pubkey(),
            lamports=short,
            space=MEMBER_MINT_WITH_POINTERS_SIZE,
            owner=TOKEN_2022_PROGRAM_ID,
        )
    )
    result = chain.send(ixs, [chain.payer, mint, chain.group_authority])
    assert _error(result) == TransactionErrorInsufficientFundsForRent(1)
    group = chain.group()
    assert group is not None and group.size == 0


def test_the_largest_member_transaction_fits_with_the_longest_gateway_url() -> None:
    """METADATA_GATEWAY_URL at its longest, a name and symbol at theirs, a CIDv1 uri, immutable
    metadata (one more instruction) and a collection (a third signer): still one packet."""
    from solders.hash import Hash
    from solders.message import MessageV0

    from mintsaga.settings import METADATA_GATEWAY_URL_MAX
    from mintsaga.solana.prepare import _with_budget
    from mintsaga.solana.prepare_checks import MAX_TRANSACTION_SIZE

    payer, mint, group, group_authority = Keypair(), Keypair(), Keypair(), Keypair()
    gateway = "https://" + "g" * (METADATA_GATEWAY_URL_MAX - len("https://"))
    uri = f"{gateway}/ipfs/bafkrei{'a' * 52}"
    ixs = build_nft_instructions(
        payer=payer.pubkey(),
        mint=mint.pubkey(),
        owner=Keypair().pubkey(),
        name="N" * 32,
        symbol="S" * 10,
        uri=uri,
        rent_lamports=10**7,
        immutable_metadata=True,
        collection=(group.pubkey(), group_authority.pubkey()),
    )
    message = MessageV0.try_compile(
        payer.pubkey(), _with_budget(ixs, 1_400_000, 10**6), [], Hash.default()
    )
    size = len(bytes(VersionedTransaction(message, [payer, mint, group_authority])))
    assert size <= MAX_TRANSACTION_SIZE, size
