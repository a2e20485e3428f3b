"""The hot wallet's guards on the devstack: a worker with another MINT_KEY_SEED never signs for
a claimed mint, and the fleet-wide spend breaker stops signing when the hour's budget is spent.

"Nothing sent" is read independently of the product: the `mint_submissions` rows (a signature
is recorded before any send) and the accounts at both addresses on the chain (Solana RPC).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import struct
import typing
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction
from temporalio import activity
from temporalio.client import Client

import mintsaga
from devstack.config import StackConfig
from devstack.requests import mint_request
from mintsaga.activities.failures import classified
from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.settings import MAX_PRIORITY_FEE_MICRO_LAMPORTS, Settings
from mintsaga.solana.fees import mint_budget
from mintsaga.solana.mint_keys import derive_mint_keypair, parse_seed
from mintsaga.solana.minter import SolanaMinter
from mintsaga.solana.nft import nft_mint_account_size
from mintsaga.solana.prepare import MintPreparer
from mintsaga.solana.rpc import SolanaRpc
from mintsaga.workflows.models import MintStatus, StatusView
from tests.saga_support import (
    Lies,
    activity_name,
    chain_nft,
    lying_rpc,
    running_worker,
    wait_for,
)

pytestmark = pytest.mark.integration


def address_for(seed_hex: str, mint_id: str) -> str:
    return str(derive_mint_keypair(parse_seed(seed_hex), mint_id).pubkey())


async def submissions(stack: StackConfig, mint_id: str) -> int:
    conn = await asyncpg.connect(stack.direct_database_url)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM mint_submissions WHERE mint_id = $1", mint_id
        )
        return count
    finally:
        await conn.close()


def waiting_with(code: str, step: str) -> Callable[[StatusView], bool]:
    return lambda s: (
        s.awaiting_operator
        and s.awaiting_step == step
        and s.last_error is not None
        and s.last_error.type == code
    )


def stop_for_an_operator(original: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """`prepare_transaction` replaced by a failure only an operator can clear."""

    async def wrapped(arg: Any) -> Any:
        with classified():
            raise ServiceError(
                "held for the test", service="solana", kind=ErrorKind.NEEDS_OPERATOR, code="Held"
            )

    hints = typing.get_type_hints(original)  # the converter reads the types from these
    wrapped.__annotations__ = {"arg": next(iter(hints.values())), "return": hints["return"]}
    return activity.defn(name=activity_name(original))(wrapped)


async def test_a_worker_with_another_seed_waits_at_claim_and_signs_nothing(
    stack: StackConfig, client: Client
) -> None:
    """The row was claimed by a worker with the fleet's seed; a pod with another seed picks the
    mint up: it waits for an operator naming MINT_KEY_SEED, and once the seed is right the
    same address is minted."""
    request = mint_request(stack)
    seed = stack.worker_env()["MINT_KEY_SEED"]
    claimed = address_for(seed, request.mint_id)
    conn = await asyncpg.connect(stack.direct_database_url)
    try:  # what a worker with the fleet's seed leaves after claim_mint
        await conn.execute(
            "INSERT INTO mints (mint_id, user_id, wallet, stage, mint_address)"
            " VALUES ($1, $2, $3, 'INITIATED', $4)",
            request.mint_id,
            request.user_id,
            request.wallet,
            claimed,
        )
    finally:
        await conn.close()
    other_seed = os.urandom(32).hex()
    derived = address_for(other_seed, request.mint_id)
    queue = f"q-{uuid.uuid4().hex[:8]}"

    async with running_worker(stack, client, queue, env={"MINT_KEY_SEED": other_seed}):
        handle = await mintsaga.start_mint(client, request, queue=queue)
        await wait_for(client, request.mint_id, waiting_with("MintKeySeedMismatch", "admit_mint"))
        status = await mintsaga.get_status(client, request.mint_id)  # a query needs a worker
    assert status.last_error is not None
    assert "MINT_KEY_SEED" in status.last_error.message
    assert claimed in status.last_error.message and derived in status.last_error.message
    assert other_seed not in status.last_error.message and seed not in status.last_error.message
    assert status.status == MintStatus.AWAITING_OPERATOR and not status.past_pivot
    assert await submissions(stack, request.mint_id) == 0
    assert chain_nft(stack, claimed) is None and chain_nft(stack, derived) is None

    async with running_worker(stack, client, queue):  # the fleet's seed again
        await mintsaga.retry(client, request.mint_id)
        result = await handle.result()
    assert result.status == MintStatus.MINTED and result.mint_address == claimed
    assert chain_nft(stack, derived) is None


async def test_a_worker_with_another_seed_cannot_sign_for_a_claimed_mint(
    stack: StackConfig, client: Client
) -> None:
    """Claimed by the fleet's seed, then (a rotation mid-mint) prepared by a worker with
    another: the prepare step waits for an operator and no transaction is signed or sent."""
    request = mint_request(stack)
    seed = stack.worker_env()["MINT_KEY_SEED"]
    claimed = address_for(seed, request.mint_id)
    other_seed = os.urandom(32).hex()
    queue = f"q-{uuid.uuid4().hex[:8]}"

    held = {"prepare_transaction": stop_for_an_operator}
    async with running_worker(stack, client, queue, wrap=held):
        handle = await mintsaga.start_mint(client, request, queue=queue)
        await wait_for(client, request.mint_id, waiting_with("Held", "prepare_transaction"))
    async with running_worker(stack, client, queue, env={"MINT_KEY_SEED": other_seed}):
        await mintsaga.retry(client, request.mint_id)
        await wait_for(
            client, request.mint_id, waiting_with("MintKeySeedMismatch", "prepare_transaction")
        )
        status = await mintsaga.get_status(client, request.mint_id)
        assert status.last_error is not None and "MINT_KEY_SEED" in status.last_error.message
        assert not status.past_pivot
        assert await submissions(stack, request.mint_id) == 0
        await mintsaga.compensate(client, request.mint_id)
        result = await handle.result()
    assert result.status == MintStatus.ROLLED_BACK
    assert await submissions(stack, request.mint_id) == 0
    assert chain_nft(stack, claimed) is None
    assert chain_nft(stack, address_for(other_seed, request.mint_id)) is None


# ---------------------------------------------------------------- the per-mint budget


COMPUTE_BUDGET = Pubkey.from_string("ComputeBudget111111111111111111111111111111")
SYSTEM_PROGRAM = Pubkey.from_string("11111111111111111111111111111111")
# The owner's Token-2022 token account (165 bytes + account type + ImmutableOwner's TLV header),
# at Agave's default rent: (128 + 170) x 3,480 x 2 lamports.
TOKEN_ACCOUNT_RENT = (128 + 170) * 3_480 * 2


def most_it_can_spend(tx_base64: str) -> int:
    """What a signed mint transaction can take from its fee payer, read from its bytes alone:
    5,000 lamports per signature, the priority fee (price x requested limit, rounded up), the
    lamports its CreateAccount moves, and the token account's rent."""
    tx = VersionedTransaction.from_bytes(base64.b64decode(tx_base64))
    keys = tx.message.account_keys
    limit, price, moved = 200_000, 0, 0
    for ix in tx.message.instructions:
        program, data = keys[ix.program_id_index], bytes(ix.data)
        if program == COMPUTE_BUDGET and data[0] == 2:
            (limit,) = struct.unpack_from("<I", data, 1)
        elif program == COMPUTE_BUDGET and data[0] == 3:
            (price,) = struct.unpack_from("<Q", data, 1)
        elif program == SYSTEM_PROGRAM and struct.unpack_from("<I", data)[0] == 0:
            (lamports,) = struct.unpack_from("<Q", data, 4)
            moved += lamports
    signatures = tx.message.header.num_required_signatures
    return signatures * 5_000 + -(-price * limit // 1_000_000) + moved + TOKEN_ACCOUNT_RENT


@pytest.fixture
async def lying_node(stack: StackConfig) -> AsyncIterator[tuple[str, Lies]]:
    async with lying_rpc(stack.url("solana-1")) as node:
        yield node


async def test_no_transaction_over_its_budget_is_ever_signed(
    stack: StackConfig, lying_node: tuple[str, Lies]
) -> None:
    """Every fee a mint can be given, every lie a node can tell about units, rent and recent
    fees: what is signed can never take more than the mint's budget, and the spend breaker is
    asked for exactly that; what would cost more is refused with nothing signed or reserved."""
    url, lies = lying_node
    settings = Settings.from_env(stack.worker_env())
    cap, operator_cap = settings.solana_priority_fee_cap, settings.solana_operator_priority_fee_cap
    payer = Keypair()
    outcomes = {"signed": 0, "refused": 0}
    async with SolanaRpc([url], timeout=settings.solana_timeout_s) as rpc:
        airdrop = await rpc.call("requestAirdrop", [str(payer.pubkey()), 10**9])
        assert isinstance(airdrop, str)
        scenarios = itertools.product(
            (None, 0, cap, operator_cap, MAX_PRIORITY_FEE_MICRO_LAMPORTS),  # the fee given
            (False, True),  # by an operator (else with the request)
            (None, 250_000, 1_400_000),  # units the node claims
            (None, 1.05),  # rent as the node says (5 % over the formula is believed)
            (None, 10**9),  # recent fees as the node says
        )
        for given, by_operator, units, rent_factor, recent_fee in scenarios:
            lies.units, lies.rent_factor, lies.recent_fee = units, rent_factor, recent_fee
            preparer = MintPreparer(
                rpc,
                payer,
                os.urandom(32),
                priority_fee_cap=cap,
                operator_fee_cap=operator_cap,
            )
            reserved: list[int] = []

            async def reserve(cost: int, reserved: list[int] = reserved) -> None:
                reserved.append(cost)

            name, symbol, uri = "Budget", "BGT", f"ipfs://{'b' * 59}"
            size = nft_mint_account_size(name, symbol, uri)
            budget = mint_budget(size, operator_cap if by_operator else cap)
            try:
                signed = await preparer.prepare(
                    f"budget-{uuid.uuid4()}",
                    owner=str(Keypair().pubkey()),
                    name=name,
                    symbol=symbol,
                    uri=uri,
                    priority_fee_micro_lamports=given,
                    reserve=reserve,
                    fee_from_operator=by_operator,
                )
            except ServiceError as exc:
                assert exc.code == "SpendOverBudget", exc
                assert exc.kind is ErrorKind.NEEDS_OPERATOR and reserved == []
                outcomes["refused"] += 1
                continue
            spend = most_it_can_spend(signed.tx_base64)
            assert spend <= budget, (given, by_operator, units, rent_factor, recent_fee)
            assert reserved == [spend]  # the breaker counts all it can take, not less
            outcomes["signed"] += 1
    # Both halves were exercised: a test where everything is refused proves nothing.
    assert outcomes["signed"] >= 40 and outcomes["refused"] >= 10, outcomes


async def until(read: Callable[[], Awaitable[object]], expected: object) -> None:
    """Poll `read` (test-side: the chain settles on its own) until it answers `expected`."""
    async with asyncio.timeout(30):
        while True:
            if await read() == expected:
                return
            await asyncio.sleep(0.1)


async def found(minter: SolanaMinter, signature: str) -> bool:
    return (await minter.signature_status(signature)).found


async def test_what_a_mint_takes_from_the_wallet_is_what_its_budget_counts(
    stack: StackConfig,
) -> None:
    """The chain's own accounting: the wallet loses exactly what the bytes say it can."""
    settings = Settings.from_env(stack.worker_env())
    payer = Keypair()
    async with SolanaRpc([stack.url("solana-1")], timeout=settings.solana_timeout_s) as rpc:
        minter = SolanaMinter(rpc, payer, os.urandom(32))
        await rpc.call("requestAirdrop", [minter.payer, 10**9])
        await until(lambda: minter.balance(minter.payer), 10**9)
        signed = await minter.prepare(
            f"spend-{uuid.uuid4()}",
            owner=str(Keypair().pubkey()),
            name="Spend",
            symbol="SPD",
            uri=f"ipfs://{'c' * 59}",
            priority_fee_micro_lamports=50_000,
        )
        await minter.send(signed.tx_base64)
        await until(lambda: found(minter, signed.signature), True)
        spent = 10**9 - await minter.balance(minter.payer)
    assert spent == most_it_can_spend(signed.tx_base64)


# ---------------------------------------------------------------- the spend breaker


async def reserved_last_hour(stack: StackConfig) -> int:
    conn = await asyncpg.connect(stack.direct_database_url)
    try:
        spent: int = await conn.fetchval(
            "SELECT coalesce(sum(lamports), 0)::bigint FROM wallet_spend"
            " WHERE reserved_at > now() - interval '1 hour'"
        )
        return spent
    finally:
        await conn.close()


def refusals() -> float:
    return REGISTRY.get_sample_value("mintsaga_spend_breaker_refusals_total") or 0.0


async def test_the_spend_breaker_stops_signing_fleet_wide_until_an_operator_raises_it(
    stack: StackConfig, client: Client
) -> None:
    """With room for one mint in the hour: the first mints, the second waits for an operator
    at prepare_transaction with nothing signed (SpendBreakerOpen, the refusal counted for the
    alert), and a higher limit lets the same mint go on."""
    already = await reserved_last_hour(stack)  # what this session's other mints reserved
    one_mint = 7_000_000  # a mint's cost at the devstack's fee: ~6.1M lamports
    limit_sol = (already + one_mint * 1.5) / 1e9
    first, second = mint_request(stack), mint_request(stack)
    queue = f"q-{uuid.uuid4().hex[:8]}"
    before = refusals()
    tight = {"SOLANA_SPEND_LIMIT_SOL_PER_HOUR": f"{limit_sol:.9f}"}
    async with running_worker(stack, client, queue, env=tight):
        result = await (await mintsaga.start_mint(client, first, queue=queue)).result()
        assert result.status == MintStatus.MINTED
        handle = await mintsaga.start_mint(client, second, queue=queue)
        await wait_for(
            client, second.mint_id, waiting_with("SpendBreakerOpen", "prepare_transaction")
        )
        status = await mintsaga.get_status(client, second.mint_id)
    assert status.last_error is not None
    assert "SOLANA_SPEND_LIMIT_SOL_PER_HOUR" in status.last_error.message
    assert await submissions(stack, second.mint_id) == 0
    seed = stack.worker_env()["MINT_KEY_SEED"]
    assert chain_nft(stack, address_for(seed, second.mint_id)) is None
    assert refusals() >= before + 1  # MintsagaSpendBreakerOpen fires on any increase
    assert await reserved_last_hour(stack) <= already + one_mint * 1.5

    async with running_worker(stack, client, queue):  # the operator raised the limit
        await mintsaga.retry(client, second.mint_id)
        assert (await handle.result()).status == MintStatus.MINTED
