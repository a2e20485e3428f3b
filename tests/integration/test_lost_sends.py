"""Sends whose answers are lost, and a primary that swallows sends, with the worker's default
settings (no shortened timeouts): the saga goes on to the confirmation wait, which finds (or
rebroadcasts to every endpoint until it finds) the transaction. No operator, one NFT, one
signing.
"""

from __future__ import annotations

import json
import time
import uuid

import asyncpg
import pytest
from temporalio.client import Client

import mintsaga
from devstack.config import SOLANA_ENDPOINTS, StackConfig
from devstack.requests import mint_request
from mintsaga.workflows.models import MintResult, MintStatus
from tests.saga_support import (
    add_fault,
    chain_nft,
    fault_first,
    faults_fired,
    owner_balance,
    running_worker,
)

pytestmark = pytest.mark.integration


async def signings_and_send_event(stack: StackConfig, mint_id: str) -> tuple[int, list[dict]]:
    """How often the mint was signed, and the detail of its "sent" events."""
    conn = await asyncpg.connect(stack.direct_database_url)
    try:
        signed = await conn.fetchval(
            "SELECT count(*) FROM mint_submissions WHERE mint_id = $1", mint_id
        )
        rows = await conn.fetch(
            "SELECT detail FROM mint_events WHERE mint_id = $1 AND event_key LIKE 'submitted:%'",
            mint_id,
        )
    finally:
        await conn.close()
    return signed, [json.loads(row["detail"]) for row in rows]


def assert_one_nft(stack: StackConfig, result: MintResult) -> None:
    assert result.mint_address is not None
    info = chain_nft(stack, result.mint_address)
    assert info is not None
    assert info["supply"] == "1" and info["decimals"] == 0 and info["mintAuthority"] is None
    assert owner_balance(stack, result.owner, result.mint_address) == 1


async def test_every_send_answer_lost_for_20_s_still_mints_once_without_an_operator(
    stack: StackConfig, client: Client
) -> None:
    """Every endpoint executes sendTransaction and closes the connection without answering,
    for 20 s from the first send: the send is indeterminate, not failed, and the confirmation
    wait finds the transaction."""
    lose = [
        {"target": e, "kind": "drop_response", "match": "sendTransaction", "duration_ms": 20_000}
        for e in SOLANA_ENDPOINTS
    ]
    queue = f"q-{uuid.uuid4().hex[:8]}"
    request = mint_request(stack)
    fired = {e: faults_fired(stack, f"{e}:drop_response") for e in SOLANA_ENDPOINTS}
    started = time.monotonic()
    async with running_worker(
        stack, client, queue, wrap={"send_transaction": fault_first(stack, *lose)}
    ):
        handle = await mintsaga.start_mint(client, request, queue=queue)
        result = await handle.result()
        took = time.monotonic() - started
        status = await mintsaga.get_status(client, request.mint_id)  # a worker answers it

    assert result.status == MintStatus.MINTED
    # Every endpoint got the same bytes at once and lost the answer.
    assert all(faults_fired(stack, f"{e}:drop_response") > fired[e] for e in SOLANA_ENDPOINTS)
    assert status.attempts.get("send_transaction") == 1  # no operator was asked to retry it
    assert result.retries.get("solana", 0) == 0  # and the lost answers spent no attempt
    assert took < 60
    signed, sent = await signings_and_send_event(stack, request.mint_id)
    assert signed == 1  # never re-signed
    assert [(d["send"], sorted(d["unanswered"])) for d in sent] == [
        ("indeterminate", sorted(stack.url(e) for e in SOLANA_ENDPOINTS))
    ]
    assert_one_nft(stack, result)


async def test_a_primary_that_accepts_sends_and_drops_them_does_not_starve_the_mint(
    stack: StackConfig, client: Client, worker: str
) -> None:
    """The primary answers every sendTransaction with the right signature and never executes
    it (the devstack's ``drop_transaction``); the same bytes went to the backups too, so the
    mint lands before its blockhash expires, signed once."""
    add_fault(stack, target="solana-1", kind="drop_transaction", match="sendTransaction")
    fired = faults_fired(stack, "solana-1:drop_transaction")
    request = mint_request(stack)
    result = await (await mintsaga.start_mint(client, request, queue=worker)).result()

    assert result.status == MintStatus.MINTED
    assert faults_fired(stack, "solana-1:drop_transaction") > fired  # the primary "took" it
    signed, sent = await signings_and_send_event(stack, request.mint_id)
    assert signed == 1  # landed before its blockhash expired: no re-sign
    (detail,) = sent
    assert detail["send"] == "sent"
    assert detail["accepted_by"][0] == stack.url("solana-1")  # asked first, as the primary
    assert len(detail["accepted_by"]) > 1  # and the backups too
    assert_one_nft(stack, result)
