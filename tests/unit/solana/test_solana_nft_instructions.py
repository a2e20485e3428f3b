"""Byte layouts of the NFT transaction (clients/solana_nft.py), checked against the SPL specs.

The literals below come from the programs' own definitions (Token-2022's instruction tags,
spl-token-metadata-interface's discriminator, the associated-token program's PDA seeds), so
any change to an encoding fails here before it fails on a cluster.
"""

from __future__ import annotations

import struct

from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.token.associated import get_associated_token_address
from solders.transaction import VersionedTransaction

from mintsaga.solana.nft import (
    ASSOCIATED_TOKEN_PROGRAM_ID,
    MINT_WITH_POINTER_SIZE,
    TOKEN_2022_PROGRAM_ID,
    TOKEN_METADATA_INITIALIZE_DISCRIMINATOR,
    associated_token_address,
    build_nft_instructions,
    nft_mint_account_size,
)

PAYER = Pubkey.from_string("9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin")
MINT = Pubkey.from_string("So11111111111111111111111111111111111111112")
OWNER = Pubkey.from_string("Vote111111111111111111111111111111111111111")
NAME, SYMBOL, URI = "Saga #1", "SAGA", "ipfs://bafyfoo"
RENT = 3_278_160


def _ixs(**overrides):
    args = dict(
        payer=PAYER, mint=MINT, owner=OWNER, name=NAME, symbol=SYMBOL, uri=URI, rent_lamports=RENT
    )
    args.update(overrides)
    return build_nft_instructions(**args)


def _metas(ix):
    return [(m.pubkey, m.is_signer, m.is_writable) for m in ix.accounts]


def _borsh(s: str) -> bytes:
    return struct.pack("<I", len(s.encode())) + s.encode()


def test_metadata_initialize_discriminator_is_the_interface_hash():
    # sha256("spl_token_metadata_interface:initialize_account")[:8], as spl-token-metadata-interface
    # publishes it: [210, 225, 30, 162, 88, 184, 77, 141].
    expected = bytes([210, 225, 30, 162, 88, 184, 77, 141])
    assert expected == TOKEN_METADATA_INITIALIZE_DISCRIMINATOR


def test_instruction_order_and_programs():
    ixs = _ixs()
    assert (
        [(ix.program_id, bytes(ix.data)[:2]) for ix in ixs]
        == [
            (SYSTEM_PROGRAM_ID, b"\x00\x00"),  # CreateAccount (u32 0)
            (TOKEN_2022_PROGRAM_ID, bytes([39, 0])),  # MetadataPointer Initialize
            (TOKEN_2022_PROGRAM_ID, bytes([20, 0])),  # InitializeMint2, 0 decimals
            (TOKEN_2022_PROGRAM_ID, TOKEN_METADATA_INITIALIZE_DISCRIMINATOR[:2]),
            (ASSOCIATED_TOKEN_PROGRAM_ID, b"\x01"),  # CreateIdempotent
            (TOKEN_2022_PROGRAM_ID, bytes([14, 1])),  # MintToChecked, amount starts with 1
            (TOKEN_2022_PROGRAM_ID, bytes([6, 0])),  # SetAuthority(MintTokens, ...)
        ]
    )


def test_create_account_has_pointer_space_but_final_size_lamports():
    create = _ixs()[0]
    assert bytes(create.data) == struct.pack("<IQQ", 0, RENT, 234) + bytes(TOKEN_2022_PROGRAM_ID)
    assert MINT_WITH_POINTER_SIZE == 234  # 165 + account type + TLV header + 64-byte pointer
    assert _metas(create) == [(PAYER, True, True), (MINT, True, True)]


def test_metadata_pointer_points_at_the_mint():
    pointer = _ixs()[1]
    assert bytes(pointer.data) == bytes([39, 0]) + bytes(PAYER) + bytes(MINT)
    assert _metas(pointer) == [(MINT, False, True)]
    other = Keypair().pubkey()
    assert bytes(_ixs(update_authority=other)[1].data)[2:34] == bytes(other)


def test_initialize_mint2_layout():
    init = _ixs()[2]
    # tag, decimals, mint authority, COption<freeze authority> = None
    assert bytes(init.data) == bytes([20, 0]) + bytes(PAYER) + b"\x00"
    assert len(bytes(init.data)) == 35
    assert _metas(init) == [(MINT, False, True)]


def test_token_metadata_initialize_layout():
    meta = _ixs()[3]
    assert bytes(meta.data) == (
        TOKEN_METADATA_INITIALIZE_DISCRIMINATOR + _borsh(NAME) + _borsh(SYMBOL) + _borsh(URI)
    )
    # metadata (the mint itself), update authority, mint, mint authority (signs)
    assert _metas(meta) == [
        (MINT, False, True),
        (PAYER, False, False),
        (MINT, False, False),
        (PAYER, True, False),
    ]
    unicode = _ixs(name="Sága ✓")[3]
    assert bytes(unicode.data)[8:12] == struct.pack("<I", len("Sága ✓".encode()))


def test_associated_token_account_create_idempotent():
    ata_ix = _ixs()[4]
    ata = associated_token_address(OWNER, MINT)
    assert ata == get_associated_token_address(OWNER, MINT, TOKEN_2022_PROGRAM_ID)
    assert ata != get_associated_token_address(OWNER, MINT)  # the classic token program's
    assert bytes(ata_ix.data) == b"\x01"
    assert _metas(ata_ix) == [
        (PAYER, True, True),
        (ata, False, True),
        (OWNER, False, False),
        (MINT, False, False),
        (SYSTEM_PROGRAM_ID, False, False),
        (TOKEN_2022_PROGRAM_ID, False, False),
    ]


def test_mint_one_then_remove_mint_authority():
    mint_to, set_authority = _ixs()[5:]
    ata = associated_token_address(OWNER, MINT)
    assert bytes(mint_to.data) == bytes([14]) + struct.pack("<Q", 1) + bytes([0])
    assert _metas(mint_to) == [(MINT, False, True), (ata, False, True), (PAYER, True, False)]
    # SetAuthority, AuthorityType::MintTokens, COption::None
    assert bytes(set_authority.data) == bytes([6, 0, 0])
    assert _metas(set_authority) == [(MINT, False, True), (PAYER, True, False)]


def test_final_account_size():
    # 234 + TLV header 4 + update authority 32 + mint 32 + 3 Borsh strings + empty vec (4)
    expected = 234 + 4 + 32 + 32 + (4 + len(NAME)) + (4 + len(SYMBOL)) + (4 + len(URI)) + 4
    assert nft_mint_account_size(NAME, SYMBOL, URI, PAYER, MINT) == expected == 343
    assert nft_mint_account_size("é", "", "", PAYER, MINT) == 318 + 2  # bytes, not characters


def test_instructions_land_in_litesvm_and_fill_the_account_exactly():
    svm = LiteSVM()
    payer, mint = Keypair(), Keypair()
    svm.airdrop(payer.pubkey(), 10**10)
    size = nft_mint_account_size(NAME, SYMBOL, URI, payer.pubkey(), mint.pubkey())
    ixs = build_nft_instructions(
        payer=payer.pubkey(),
        mint=mint.pubkey(),
        owner=OWNER,
        name=NAME,
        symbol=SYMBOL,
        uri=URI,
        rent_lamports=svm.minimum_balance_for_rent_exemption(size),
    )
    tx = VersionedTransaction(
        Message.new_with_blockhash(ixs, payer.pubkey(), svm.latest_blockhash()), [payer, mint]
    )
    result = svm.send_transaction(tx)
    assert not hasattr(result, "err"), result
    account = svm.get_account(mint.pubkey())
    assert account is not None and len(account.data) == size
    token_account = svm.get_account(associated_token_address(OWNER, mint.pubkey()))
    assert token_account is not None
    assert struct.unpack_from("<Q", bytes(token_account.data), 64)[0] == 1
