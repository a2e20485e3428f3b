"""The devstack's Solana JSON-RPC, over HTTP, through the client the product uses.

Each test needs the running devstack (the ``stack`` fixture): three RPC endpoints over one
chain, and the admin API that warps slots and injects faults.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp
import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.rpc.errors import SendTransactionPreflightFailureMessage
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction
from solders.transaction_status import TransactionConfirmationStatus

from mintsaga.solana.nft import (
    TOKEN_2022_PROGRAM_ID,
    associated_token_address,
    build_nft_instructions,
    nft_mint_account_size,
)

pytestmark = pytest.mark.integration

LAMPORTS_PER_SOL = 1_000_000_000
SIGNATURE_FEE = 5000


# -- helpers ---------------------------------------------------------------------------------


async def rpc(url: str, method: str, params: list[Any] | None = None) -> tuple[int, dict[str, Any]]:
    """One raw JSON-RPC call: (HTTP status, decoded body)."""
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        return resp.status, await resp.json(content_type=None)


async def admin(stack: Any, method: str, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, stack.url("admin") + path, json=body) as resp,
    ):
        assert resp.status < 300, await resp.text()
        return await resp.json(content_type=None)


async def warp(stack: Any, slots: int) -> None:
    await admin(stack, "POST", "/solana/warp", {"slots": slots})


async def wait_landed(client: AsyncClient, signature: Signature) -> Any:
    """Poll until the signature is confirmed (10 s at most); return its status."""
    async with asyncio.timeout(10):
        while True:
            status = (await client.get_signature_statuses([signature])).value[0]
            if status is not None and status.confirmation_status is not None:
                return status
            await asyncio.sleep(0.1)


async def funded_payer(client: AsyncClient, lamports: int = 2 * LAMPORTS_PER_SOL) -> Keypair:
    payer = Keypair()
    signature = (await client.request_airdrop(payer.pubkey(), lamports)).value
    status = await wait_landed(client, signature)
    assert status.err is None
    assert (await client.get_balance(payer.pubkey(), Confirmed)).value == lamports
    return payer


async def transfer_tx(client: AsyncClient, payer: Keypair, to: Pubkey, lamports: int) -> Any:
    blockhash = (await client.get_latest_blockhash(Confirmed)).value.blockhash
    ix = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=to, lamports=lamports))
    return VersionedTransaction(MessageV0.try_compile(payer.pubkey(), [ix], [], blockhash), [payer])


CONFIRMED_PREFLIGHT = TxOpts(preflight_commitment=Confirmed)
SKIP_PREFLIGHT = TxOpts(skip_preflight=True)


@pytest.fixture
async def client(stack: Any):
    async with AsyncClient(stack.url("solana-1"), commitment=Confirmed) as c:
        yield c


# -- the NFT ---------------------------------------------------------------------------------


async def test_token2022_nft_with_metadata_mints_and_reads_back(stack: Any, client: AsyncClient):
    payer = await funded_payer(client)
    mint, owner = Keypair(), Keypair().pubkey()
    name, symbol, uri = (
        "Saga #7",
        "SAGA",
        "ipfs://bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
    )
    size = nft_mint_account_size(name, symbol, uri, payer.pubkey(), mint.pubkey())
    rent = (await client.get_minimum_balance_for_rent_exemption(size)).value
    latest = (await client.get_latest_blockhash(Confirmed)).value
    instructions = build_nft_instructions(
        payer=payer.pubkey(),
        mint=mint.pubkey(),
        owner=owner,
        name=name,
        symbol=symbol,
        uri=uri,
        rent_lamports=rent,
    )
    message = MessageV0.try_compile(payer.pubkey(), instructions, [], latest.blockhash)
    tx = VersionedTransaction(message, [payer, mint])

    sent = await client.send_transaction(
        tx,
        TxOpts(
            skip_confirmation=False,
            preflight_commitment=Confirmed,
            last_valid_block_height=latest.last_valid_block_height,
        ),
    )
    assert sent.value == tx.signatures[0]
    status = await wait_landed(client, sent.value)
    assert status.err is None

    mint_account = (await client.get_account_info_json_parsed(mint.pubkey(), Confirmed)).value
    assert mint_account is not None
    assert mint_account.owner == TOKEN_2022_PROGRAM_ID
    assert mint_account.lamports == rent  # paid up front for the metadata realloc
    assert mint_account.data.program == "spl-token-2022"
    assert mint_account.data.space == size
    parsed = mint_account.data.parsed
    assert parsed["type"] == "mint"
    info = parsed["info"]
    assert info["supply"] == "1"
    assert info["decimals"] == 0
    assert info["mintAuthority"] is None
    assert info["freezeAuthority"] is None
    assert info["isInitialized"] is True
    extensions = {e["extension"]: e.get("state") for e in info["extensions"]}
    assert extensions["metadataPointer"] == {
        "authority": str(payer.pubkey()),
        "metadataAddress": str(mint.pubkey()),
    }
    assert extensions["tokenMetadata"] == {
        "updateAuthority": str(payer.pubkey()),
        "mint": str(mint.pubkey()),
        "name": name,
        "symbol": symbol,
        "uri": uri,
        "additionalMetadata": [],
    }

    raw_mint = (await client.get_account_info(mint.pubkey(), Confirmed)).value
    assert raw_mint is not None and len(raw_mint.data) == size

    ata = associated_token_address(owner, mint.pubkey())
    ata_account = (await client.get_account_info_json_parsed(ata, Confirmed)).value
    assert ata_account is not None
    assert ata_account.data.program == "spl-token-2022"
    ata_info = ata_account.data.parsed["info"]
    assert ata_account.data.parsed["type"] == "account"
    assert ata_info["mint"] == str(mint.pubkey())
    assert ata_info["owner"] == str(owner)
    assert ata_info["state"] == "initialized"
    assert ata_info["tokenAmount"] == {
        "amount": "1",
        "decimals": 0,
        "uiAmount": 1.0,
        "uiAmountString": "1",
    }
    assert ata_info["extensions"] == [{"extension": "immutableOwner"}]
    assert (await client.get_token_account_balance(ata, Confirmed)).value.amount == "1"

    fetched = (await client.get_transaction(sent.value, "json", Confirmed, 0)).value
    assert fetched is not None
    assert fetched.slot == status.slot
    meta = fetched.transaction.meta
    assert meta.err is None
    assert meta.fee == 2 * SIGNATURE_FEE  # payer + mint signatures
    assert any("Instruction: MintToChecked" in line for line in meta.log_messages)
    assert meta.pre_balances[0] - meta.post_balances[0] == rent + meta.fee + _ata_rent(meta)


def _ata_rent(meta: Any) -> int:
    """Lamports the payer moved into the new token account (accounts other than payer/mint)."""
    return sum(
        post - pre
        for pre, post in zip(meta.pre_balances[2:], meta.post_balances[2:], strict=True)
        if post > pre
    )


# -- blockhash window ------------------------------------------------------------------------


async def test_blockhash_expires_after_150_blocks(stack: Any, client: AsyncClient):
    url = stack.url("solana-1")
    payer = await funded_payer(client)
    recipient = Keypair().pubkey()
    latest = (await client.get_latest_blockhash(Confirmed)).value
    height = (await client.get_block_height(Confirmed)).value
    # lastValidBlockHeight = height when issued + 150 (a slot may pass between the two calls)
    assert 0 <= height - (latest.last_valid_block_height - 150) <= 2
    ix = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=recipient, lamports=10**6))
    message = MessageV0.try_compile(payer.pubkey(), [ix], [], latest.blockhash)
    tx = VersionedTransaction(message, [payer])

    _, valid = await rpc(
        url, "isBlockhashValid", [str(latest.blockhash), {"commitment": "processed"}]
    )
    assert valid["result"]["value"] is True

    await warp(stack, 151)

    assert (await client.get_block_height(Confirmed)).value > latest.last_valid_block_height
    for commitment in ("processed", "confirmed"):
        _, valid = await rpc(
            url, "isBlockhashValid", [str(latest.blockhash), {"commitment": commitment}]
        )
        assert valid["result"]["value"] is False, commitment

    with pytest.raises(RPCException) as raised:
        await client.send_transaction(tx, CONFIRMED_PREFLIGHT)
    failure = raised.value.args[0]
    assert isinstance(failure, SendTransactionPreflightFailureMessage)
    assert failure.message == "Transaction simulation failed: Blockhash not found"
    assert str(failure.data.err) == str(
        SendTransactionPreflightFailureMessage.from_json(
            '{"message":"x","data":{"err":"BlockhashNotFound"}}'
        ).data.err
    )

    encoded = base64.b64encode(bytes(tx)).decode()
    status, body = await rpc(
        url,
        "sendTransaction",
        [encoded, {"encoding": "base64", "preflightCommitment": "confirmed"}],
    )
    assert status == 200
    assert body["error"]["code"] == -32002
    assert body["error"]["data"]["err"] == "BlockhashNotFound"
    assert body["error"]["data"]["accounts"] is None

    # With skipPreflight a node hands back the signature; the transaction just never lands.
    skipped = await client.send_transaction(tx, SKIP_PREFLIGHT)
    assert skipped.value == tx.signatures[0]
    await asyncio.sleep(stack.slot_ms * 3 / 1000)
    statuses = await client.get_signature_statuses(
        [tx.signatures[0]], search_transaction_history=True
    )
    assert statuses.value == [None]
    assert (await client.get_balance(recipient, Confirmed)).value == 0

    # The finalized bank trails by 32 blocks: there the blockhash expires 32 blocks later.
    await warp(stack, 32)
    _, valid = await rpc(
        url, "isBlockhashValid", [str(latest.blockhash), {"commitment": "finalized"}]
    )
    assert valid["result"]["value"] is False

    # A fresh blockhash works again.
    fresh = await transfer_tx(client, payer, recipient, 10**6)
    landed = await client.send_transaction(fresh, CONFIRMED_PREFLIGHT)
    await wait_landed(client, landed.value)
    assert (await client.get_balance(recipient, Confirmed)).value == 10**6


# -- duplicates ------------------------------------------------------------------------------


async def test_same_signed_transaction_lands_once(stack: Any, client: AsyncClient):
    payer = await funded_payer(client)
    recipient = Keypair().pubkey()
    before = (await client.get_balance(payer.pubkey(), Confirmed)).value
    tx = await transfer_tx(client, payer, recipient, 3 * 10**6)

    first = await client.send_transaction(tx, CONFIRMED_PREFLIGHT)
    landed = await wait_landed(client, first.value)

    with pytest.raises(RPCException) as raised:
        await client.send_transaction(tx, CONFIRMED_PREFLIGHT)
    failure = raised.value.args[0]
    assert isinstance(failure, SendTransactionPreflightFailureMessage)
    assert (
        failure.message
        == "Transaction simulation failed: This transaction has already been processed"
    )

    _, body = await rpc(
        stack.url("solana-2"),
        "sendTransaction",
        [
            base64.b64encode(bytes(tx)).decode(),
            {"encoding": "base64", "preflightCommitment": "confirmed"},
        ],
    )
    assert body["error"]["code"] == -32002
    assert body["error"]["data"]["err"] == "AlreadyProcessed"

    # Rebroadcasts without preflight, on every endpoint, return the signature and do nothing.
    for name in ("solana-1", "solana-2", "solana-3"):
        async with AsyncClient(stack.url(name), commitment=Confirmed) as other:
            again = await other.send_transaction(tx, SKIP_PREFLIGHT)
            assert again.value == tx.signatures[0]
    await asyncio.sleep(stack.slot_ms * 2 / 1000)

    assert (await client.get_balance(recipient, Confirmed)).value == 3 * 10**6
    assert (await client.get_balance(payer.pubkey(), Confirmed)).value == (
        before - 3 * 10**6 - SIGNATURE_FEE
    )
    now = (await client.get_signature_statuses([tx.signatures[0]])).value[0]
    assert now is not None and now.slot == landed.slot


# -- failures --------------------------------------------------------------------------------


async def test_failing_transaction_preflight_rejects_skip_preflight_lands_failed(
    stack: Any, client: AsyncClient
):
    payer = await funded_payer(client, LAMPORTS_PER_SOL)
    recipient = Keypair().pubkey()
    tx = await transfer_tx(client, payer, recipient, 5 * LAMPORTS_PER_SOL)  # more than it has

    with pytest.raises(RPCException) as raised:
        await client.send_transaction(tx, CONFIRMED_PREFLIGHT)
    failure = raised.value.args[0]
    assert isinstance(failure, SendTransactionPreflightFailureMessage)
    assert failure.message == (
        "Transaction simulation failed: Error processing Instruction 0: custom program error: 0x1"
    )
    assert failure.data.logs and any("insufficient lamports" in line for line in failure.data.logs)
    assert failure.data.units_consumed and failure.data.units_consumed > 0
    assert (await client.get_signature_statuses([tx.signatures[0]])).value == [None]
    assert (await client.get_balance(payer.pubkey(), Confirmed)).value == LAMPORTS_PER_SOL

    sent = await client.send_transaction(tx, SKIP_PREFLIGHT)
    status = await wait_landed(client, sent.value)
    assert status.err is not None
    _, body = await rpc(stack.url("solana-1"), "getSignatureStatuses", [[str(sent.value)]])
    assert body["result"]["value"][0]["err"] == {"InstructionError": [0, {"Custom": 1}]}
    assert (await client.get_balance(payer.pubkey(), Confirmed)).value == (
        LAMPORTS_PER_SOL - SIGNATURE_FEE
    )
    assert (await client.get_balance(recipient, Confirmed)).value == 0


# -- shared chain ----------------------------------------------------------------------------


async def test_three_endpoints_share_one_chain(stack: Any):
    clients = [
        AsyncClient(stack.url(n), commitment=Confirmed)
        for n in ("solana-1", "solana-2", "solana-3")
    ]
    try:
        one, two, three = clients
        payer = await funded_payer(three)
        recipient = Keypair().pubkey()
        # Blockhash from one endpoint, send on another, read on the third.
        blockhash = (await two.get_latest_blockhash(Confirmed)).value.blockhash
        ix = transfer(
            TransferParams(from_pubkey=payer.pubkey(), to_pubkey=recipient, lamports=7 * 10**6)
        )
        tx = VersionedTransaction(
            MessageV0.try_compile(payer.pubkey(), [ix], [], blockhash), [payer]
        )
        sent = await one.send_transaction(tx, CONFIRMED_PREFLIGHT)
        status = await wait_landed(three, sent.value)
        assert status.err is None
        for c in clients:
            assert (await c.get_balance(recipient, Confirmed)).value == 7 * 10**6
            seen = (await c.get_signature_statuses([sent.value])).value[0]
            assert seen is not None and seen.slot == status.slot
        slots = [(await c.get_slot(Confirmed)).value for c in clients]
        assert max(slots) - min(slots) <= 2
    finally:
        for c in clients:
            await c.close()


# -- finality --------------------------------------------------------------------------------


async def test_finalized_after_32_slots(stack: Any, client: AsyncClient):
    payer = Keypair()
    signature = (await client.request_airdrop(payer.pubkey(), LAMPORTS_PER_SOL)).value
    status = await wait_landed(client, signature)
    assert status.confirmation_status == TransactionConfirmationStatus.Confirmed
    assert status.confirmations is not None
    # A finalized read still sees the chain from before the airdrop.
    assert (await client.get_balance(payer.pubkey(), "finalized")).value == 0
    assert (await client.get_transaction(signature, "json", "finalized", 0)).value is None

    await warp(stack, 33)

    final = (await client.get_signature_statuses([signature])).value[0]
    assert final is not None
    assert final.confirmation_status == TransactionConfirmationStatus.Finalized
    assert final.confirmations is None
    assert (await client.get_balance(payer.pubkey(), "finalized")).value == LAMPORTS_PER_SOL
    fetched = (await client.get_transaction(signature, "json", "finalized", 0)).value
    assert fetched is not None and fetched.slot == status.slot


# -- protocol --------------------------------------------------------------------------------


async def test_json_rpc_errors_and_batches(stack: Any):
    url = stack.url("solana-1")
    _, body = await rpc(url, "getNoSuchThing")
    assert body["error"] == {"code": -32601, "message": "Method not found"}
    _, body = await rpc(url, "getBalance", ["not-a-pubkey"])
    assert body["error"]["code"] == -32602
    assert body["error"]["message"].startswith("Invalid params: ")
    _, body = await rpc(url, "getHealth")
    assert body["result"] == "ok"

    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "getSlot", "params": [{"commitment": "processed"}]},
        {"jsonrpc": "2.0", "id": 2, "method": "getBlockHeight"},
    ]
    async with aiohttp.ClientSession() as session, session.post(url, json=batch) as resp:
        answers = await resp.json()
    assert [a["id"] for a in answers] == [1, 2]
    assert answers[0]["result"] >= answers[1]["result"]


async def test_injected_error_fault_answers_500_with_json_rpc_error(stack: Any):
    await admin(
        stack, "POST", "/faults", {"target": "solana-2", "kind": "error", "match": "getBalance"}
    )
    try:
        status, body = await rpc(stack.url("solana-2"), "getBalance", [str(Keypair().pubkey())])
        assert status == 500
        assert body["error"]["code"] == -32603
        status, body = await rpc(stack.url("solana-2"), "getSlot")
        assert status == 200 and isinstance(body["result"], int)
        status, body = await rpc(stack.url("solana-1"), "getBalance", [str(Keypair().pubkey())])
        assert status == 200 and body["result"]["value"] == 0
    finally:
        await admin(stack, "DELETE", "/faults")
    status, _ = await rpc(stack.url("solana-2"), "getBalance", [str(Keypair().pubkey())])
    assert status == 200
