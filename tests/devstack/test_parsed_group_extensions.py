"""The Solana emulator's ``jsonParsed`` rendering of Token-2022's token-group extensions.

devstack/solana/parsed.py must answer as Agave's account decoder does (account-decoder/src/
parse_token_extension.rs and account-decoder-client-types/src/token.rs in anza-xyz/agave):
``{"extension": "groupPointer" | "tokenGroup" | "groupMemberPointer" | "tokenGroupMember",
"state": {...}}`` with camelCase fields, optional pubkeys as null, and the u64 counters
(``size``, ``maxSize``, ``memberNumber``) as JSON numbers.

Two sources of bytes: hand-built TLV records (exact values, an unset authority, a counter
beyond 2**53), and a collection and a member landed in LiteSVM, in process, by the real
Token-2022 program, so the layouts are the program's and not only ours. The instructions are
encoded here from the SPL sources, independent of the product's builders in
src/mintsaga/solana/nft.py: Token-2022 ``GroupPointerExtension`` = 40 and
``GroupMemberPointerExtension`` = 41 with sub-instruction ``Initialize`` = 0, body authority
(32) + address (32); the token-group interface's instructions
(github.com/solana-program/token-group interface/src/instruction.rs) start with
``sha256("spl_token_group_interface:<name>")[:8]``: ``initialize_token_group`` + update
authority (32) + max_size (u64 LE), accounts group (w), mint, mint authority (s);
``initialize_member`` with no body, accounts member (w), member mint, member mint authority
(s), group (w), group update authority (s).
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from solders.account import Account
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, create_account
from solders.transaction import VersionedTransaction

from devstack.solana.parsed import TOKEN_2022_PROGRAM_ID, parse_account

MINT_SIZE = 82
ACCOUNT_TYPE_OFFSET = 165  # the mint is padded to a token account's length
TLV_HEADER = 4
POINTER_LEN = 64
TOKEN_GROUP_LEN = 80
TOKEN_GROUP_MEMBER_LEN = 72
MINT_WITH_ONE_POINTER = ACCOUNT_TYPE_OFFSET + 1 + TLV_HEADER + POINTER_LEN  # 234


def _group_ix_discriminator(name: str) -> bytes:
    return hashlib.sha256(f"spl_token_group_interface:{name}".encode()).digest()[:8]


def _no_mint_lookup(_: Pubkey) -> None:
    raise AssertionError("a mint is parsed without looking up another mint")


def _tlv(ext_type: int, value: bytes) -> bytes:
    return struct.pack("<HH", ext_type, len(value)) + value


def _mint_account(mint_authority: Pubkey, *tlvs: bytes) -> Account:
    base = (
        struct.pack("<I", 1)
        + bytes(mint_authority)
        + struct.pack("<QB?", 1, 0, True)
        + struct.pack("<I", 0)
        + bytes(32)
    )
    assert len(base) == MINT_SIZE
    data = base + bytes(ACCOUNT_TYPE_OFFSET - MINT_SIZE) + bytes([1]) + b"".join(tlvs)
    return Account(
        lamports=10**7, data=data, owner=TOKEN_2022_PROGRAM_ID, executable=False, rent_epoch=0
    )


def _extensions(account: Account) -> list[dict[str, Any]]:
    rendered = parse_account(account, _no_mint_lookup)
    assert rendered["program"] == "spl-token-2022"
    assert rendered["parsed"]["type"] == "mint"
    extensions: list[dict[str, Any]] = rendered["parsed"]["info"]["extensions"]
    return extensions


# -- hand-built TLV records -------------------------------------------------------------------


def test_collection_extensions_render_as_agave():
    authority, group, mint, update = (Keypair().pubkey() for _ in range(4))
    big = 2**63 + 5  # a u64 past float precision must come through exactly
    account = _mint_account(
        authority,
        _tlv(20, bytes(authority) + bytes(group)),
        _tlv(21, bytes(update) + bytes(mint) + struct.pack("<QQ", 3, big)),
    )
    assert _extensions(account) == [
        {
            "extension": "groupPointer",
            "state": {"authority": str(authority), "groupAddress": str(group)},
        },
        {
            "extension": "tokenGroup",
            "state": {
                "updateAuthority": str(update),
                "mint": str(mint),
                "size": 3,
                "maxSize": big,
            },
        },
    ]


def test_member_extensions_render_as_agave():
    member, mint, group = (Keypair().pubkey() for _ in range(3))
    account = _mint_account(
        mint,
        _tlv(22, bytes(32) + bytes(member)),  # no pointer authority
        _tlv(23, bytes(mint) + bytes(group) + struct.pack("<Q", 7)),
    )
    assert _extensions(account) == [
        {
            "extension": "groupMemberPointer",
            "state": {"authority": None, "memberAddress": str(member)},
        },
        {
            "extension": "tokenGroupMember",
            "state": {"mint": str(mint), "group": str(group), "memberNumber": 7},
        },
    ]


def test_unset_group_authority_and_address_are_null():
    mint = Keypair().pubkey()
    account = _mint_account(
        mint,
        _tlv(20, bytes(64)),
        _tlv(21, bytes(32) + bytes(mint) + struct.pack("<QQ", 0, 0)),
    )
    assert _extensions(account) == [
        {"extension": "groupPointer", "state": {"authority": None, "groupAddress": None}},
        {
            "extension": "tokenGroup",
            "state": {"updateAuthority": None, "mint": str(mint), "size": 0, "maxSize": 0},
        },
    ]


def test_group_records_of_the_wrong_length_are_unparseable():
    mint = Keypair().pubkey()
    account = _mint_account(
        mint,
        _tlv(20, bytes(63)),
        _tlv(21, bytes(72)),
        _tlv(22, bytes(65)),
        _tlv(23, bytes(80)),
    )
    assert _extensions(account) == [{"extension": "unparseableExtension"}] * 4


# -- bytes written by the real Token-2022 program (LiteSVM) ----------------------------------


class _Chain:
    def __init__(self) -> None:
        self.svm = LiteSVM()
        self.payer = Keypair()
        self.svm.airdrop(self.payer.pubkey(), 10**11)

    def send(self, instructions: list[Instruction], signers: list[Keypair]) -> None:
        message = Message.new_with_blockhash(
            instructions, self.payer.pubkey(), self.svm.latest_blockhash()
        )
        result = self.svm.send_transaction(VersionedTransaction(message, [self.payer, *signers]))
        assert not hasattr(result, "err"), result
        self.svm.expire_blockhash()

    def account(self, address: Pubkey) -> Account:
        account = self.svm.get_account(address)
        assert account is not None, f"no account at {address}"
        return account

    def create_mint(
        self, mint: Keypair, pointer_ix: int, authority: Pubkey, final_size: int
    ) -> list[Instruction]:
        """create_account (pointer space only: Token-2022 reallocs for the group record),
        the pointer (to the mint itself), InitializeMint2 with ``authority`` as mint
        authority."""
        key = mint.pubkey()
        return [
            create_account(
                CreateAccountParams(
                    from_pubkey=self.payer.pubkey(),
                    to_pubkey=key,
                    lamports=self.svm.minimum_balance_for_rent_exemption(final_size),
                    space=MINT_WITH_ONE_POINTER,
                    owner=TOKEN_2022_PROGRAM_ID,
                )
            ),
            Instruction(
                TOKEN_2022_PROGRAM_ID,
                bytes([pointer_ix, 0]) + bytes(authority) + bytes(key),
                [AccountMeta(key, False, True)],
            ),
            Instruction(
                TOKEN_2022_PROGRAM_ID,
                bytes([20, 0]) + bytes(authority) + bytes([0]),  # InitializeMint2, no freeze
                [AccountMeta(key, False, True)],
            ),
        ]


def test_collection_and_member_landed_by_token_2022_parse_as_agave():
    chain = _Chain()
    mint_authority = Keypair()
    group_authority = Keypair()
    collection = Keypair()
    group_size = MINT_WITH_ONE_POINTER + TLV_HEADER + TOKEN_GROUP_LEN
    initialize_group = Instruction(
        TOKEN_2022_PROGRAM_ID,
        _group_ix_discriminator("initialize_token_group")
        + bytes(group_authority.pubkey())
        + struct.pack("<Q", 5),
        [
            AccountMeta(collection.pubkey(), False, True),
            AccountMeta(collection.pubkey(), False, False),
            AccountMeta(mint_authority.pubkey(), True, False),
        ],
    )
    chain.send(
        [
            *chain.create_mint(collection, 40, mint_authority.pubkey(), group_size),
            initialize_group,
        ],
        [collection, mint_authority],
    )

    member = Keypair()
    member_size = MINT_WITH_ONE_POINTER + TLV_HEADER + TOKEN_GROUP_MEMBER_LEN
    initialize_member = Instruction(
        TOKEN_2022_PROGRAM_ID,
        _group_ix_discriminator("initialize_member"),
        [
            AccountMeta(member.pubkey(), False, True),
            AccountMeta(member.pubkey(), False, False),
            AccountMeta(mint_authority.pubkey(), True, False),
            AccountMeta(collection.pubkey(), False, True),
            AccountMeta(group_authority.pubkey(), True, False),
        ],
    )
    chain.send(
        [*chain.create_mint(member, 41, mint_authority.pubkey(), member_size), initialize_member],
        [member, mint_authority, group_authority],
    )

    collection_account = chain.account(collection.pubkey())
    assert len(collection_account.data) == group_size  # the program's realloc, our layout
    assert _extensions(collection_account) == [
        {
            "extension": "groupPointer",
            "state": {
                "authority": str(mint_authority.pubkey()),
                "groupAddress": str(collection.pubkey()),
            },
        },
        {
            "extension": "tokenGroup",
            "state": {
                "updateAuthority": str(group_authority.pubkey()),
                "mint": str(collection.pubkey()),
                "size": 1,
                "maxSize": 5,
            },
        },
    ]
    member_account = chain.account(member.pubkey())
    assert len(member_account.data) == member_size
    assert _extensions(member_account) == [
        {
            "extension": "groupMemberPointer",
            "state": {
                "authority": str(mint_authority.pubkey()),
                "memberAddress": str(member.pubkey()),
            },
        },
        {
            "extension": "tokenGroupMember",
            "state": {
                "mint": str(member.pubkey()),
                "group": str(collection.pubkey()),
                "memberNumber": 1,
            },
        },
    ]
