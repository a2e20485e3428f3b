"""Verified collections (issue 18) on the devstack: `collection create` once (again: the same
address, nothing sent), a mint joining its collection in its own transaction, and a full
collection refusing a mint before anything is pinned or sent. The chain is read with raw
JSON-RPC (`getAccountInfo`, `jsonParsed`: the node's own rendering of the Token-2022
extensions), nothing of ours.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jsonschema
import pytest
from solders.keypair import Keypair
from temporalio.client import Client

import mintsaga
from devstack.config import StackConfig
from devstack.dev_identity import group_authority_file, system_wallet, update_authority
from devstack.requests import mint_request
from mintsaga.db.fleet_gauges import FleetGauges
from mintsaga.solana.mint_keys import load_keypair_file
from mintsaga.workflows.models import MintStatus
from tests.saga_support import (
    chain_nft,
    pinned_anywhere,
    rpc,
    run_starter,
    running_worker,
    wait_for,
)

pytestmark = pytest.mark.integration

SCHEMA = json.loads(
    (Path(__file__).parents[2] / "schemas" / "nft_metadata.schema.json").read_text()
)


def _key() -> str:
    return f"tier-{uuid.uuid4().hex[:8]}"


def _extension(info: dict[str, Any], name: str) -> dict[str, Any] | None:
    found = [e.get("state") for e in info.get("extensions", []) if e["extension"] == name]
    return found[0] if found else None


async def create(stack: StackConfig, key: str, max_size: int, *extra: str) -> dict[str, Any]:
    ran = await run_starter(
        {**os.environ, **stack.worker_env()},
        "collection",
        "create",
        "--key",
        key,
        "--name",
        f"Gold {key[-4:]}",
        "--symbol",
        "GOLD",
        "--max-size",
        str(max_size),
        "--json",
        *extra,
        timeout_s=180,
    )
    made: dict[str, Any] = ran.json()
    return made


def group_of(stack: StackConfig, address: str) -> dict[str, Any]:
    info = chain_nft(stack, address)
    assert info is not None, f"no account at {address}"
    group = _extension(info, "tokenGroup")
    assert group is not None, info
    return group


async def test_a_collection_is_made_once_and_a_mint_joins_it_in_its_own_transaction(
    stack: StackConfig, client: Client, worker: str
) -> None:
    key = _key()
    image = sorted((stack.state_dir / "images").glob("*.png"))[0]
    made = await create(stack, key, 1000, "--image", str(image))
    assert made["key"] == key and made["sent"] is True and made["max_size"] == 1000
    group = group_of(stack, made["address"])
    payer = str(system_wallet(stack.state_dir).pubkey())
    group_key = str(load_keypair_file(group_authority_file(stack.state_dir)).pubkey())
    assert group == {
        "updateAuthority": group_key,
        "mint": made["address"],
        "size": 0,
        "maxSize": 1000,
    }
    assert group_key != payer
    # Its image and metadata are held in mint_pins by the collection itself (a holder no mint
    # can be), so a rolled-back mint sharing a CID (the tier image) never unpins them.
    conn = await asyncpg.connect(stack.direct_database_url)
    try:
        held = await conn.fetch(
            "SELECT DISTINCT cid FROM mint_pins WHERE mint_id = $1 AND released_at IS NULL",
            f"collection/{key}",
        )
    finally:
        await conn.close()
    held_cids = {r["cid"] for r in held}
    assert len(held_cids) >= 2 and made["uri"].rsplit("/", 1)[-1] in held_cids
    info = chain_nft(stack, made["address"])
    assert info is not None
    cold = str(update_authority(stack.state_dir).pubkey())
    assert _extension(info, "tokenMetadata")["updateAuthority"] == cold  # type: ignore[index]
    # Who may repoint the collection at another group: the cold key, not the hot group key.
    assert _extension(info, "groupPointer") == {
        "authority": cold,
        "groupAddress": made["address"],
    }

    # Again: the same address, and nothing signed (the system wallet paid nothing).
    before = rpc(stack, "getBalance", [payer, {"commitment": "processed"}])["value"]
    again = await create(stack, key, 1000, "--image", str(image))
    assert (again["address"], again["sent"]) == (made["address"], False)
    assert rpc(stack, "getBalance", [payer, {"commitment": "processed"}])["value"] == before

    request = mint_request(stack, collection=key, external_url="https://example.com/saga/1")
    handle = await mintsaga.start_mint(client, request, queue=worker)
    result = await handle.result()
    assert result.status == MintStatus.MINTED, result.reason

    # Its metadata, as a wallet reads it (the on-chain uri, plain HTTP): to the standard, naming
    # the collection and the image's type.
    assert result.metadata_uri is not None
    async with httpx.AsyncClient(timeout=10) as http:
        metadata = (await http.get(result.metadata_uri)).raise_for_status().json()
    jsonschema.Draft202012Validator(SCHEMA).validate(metadata)
    assert metadata["collection"] == {
        "name": made["name"],
        "family": "GOLD",
        "address": made["address"],
    }
    assert metadata["properties"]["files"][0] == {
        "uri": f"ipfs://{result.image_cid}",
        "type": "image/png",
    }
    assert metadata["external_url"] == "https://example.com/saga/1"
    assert result.collection == key and result.mint_address is not None
    member_info = chain_nft(stack, result.mint_address)
    assert member_info is not None
    assert _extension(member_info, "groupMemberPointer") == {
        "authority": cold,
        "memberAddress": result.mint_address,
    }
    assert _extension(member_info, "tokenGroupMember") == {
        "mint": result.mint_address,
        "group": made["address"],
        "memberNumber": 1,
    }
    assert _extension(member_info, "tokenMetadata")["updateAuthority"] == cold  # type: ignore[index]
    assert group_of(stack, made["address"])["size"] == 1

    # The same mint_id again changes nothing.
    again_result = await (await mintsaga.start_mint(client, request, queue=worker)).result()
    assert again_result.mint_address == result.mint_address
    assert group_of(stack, made["address"])["size"] == 1

    listed = (
        await run_starter({**os.environ, **stack.worker_env()}, "collection", "list", "--json")
    ).json()
    [mine] = [c for c in listed["collections"] if c["key"] == key]
    assert (mine["address"], mine["members"], mine["max_size"]) == (made["address"], 1, 1000)
    async with FleetGauges.open(stack.direct_database_url) as gauges:  # the metrics' source
        assert (key, 1, 0, 1000) in await gauges.collection_counts()

    # `list --collection`: this collection's mints only (visibility catches up within seconds).
    other = await (await mintsaga.start_mint(client, mint_request(stack), queue=worker)).result()
    env = {**os.environ, **stack.worker_env()}
    for _ in range(100):
        ran = await run_starter(env, "list", "--collection", key, "--json")
        mints = ran.json()["mints"]
        if mints:
            break
        await asyncio.sleep(0.2)
    assert [m["mint_id"] for m in mints] == [request.mint_id]
    assert mints[0]["collection"] == key and other.mint_id != request.mint_id


async def test_a_full_collection_refuses_the_next_mint_before_anything_is_pinned_or_sent(
    stack: StackConfig, client: Client, worker: str
) -> None:
    key = _key()
    made = await create(stack, key, 1)
    first = await (
        await mintsaga.start_mint(client, mint_request(stack, collection=key), queue=worker)
    ).result()
    assert first.status == MintStatus.MINTED, first.reason

    request = mint_request(stack, collection=key)
    result = await (await mintsaga.start_mint(client, request, queue=worker)).result()
    assert result.status == MintStatus.ROLLED_BACK
    assert result.reason is not None
    assert "CollectionFull" in result.reason and key in result.reason
    assert result.signature is None and result.metadata_cid is None
    conn = await asyncpg.connect(stack.direct_database_url)
    try:
        row = await conn.fetchrow("SELECT * FROM mints WHERE mint_id = $1", request.mint_id)
        pins = await conn.fetchval(
            "SELECT count(*) FROM mint_pins WHERE mint_id = $1", request.mint_id
        )
    finally:
        await conn.close()
    # Refused at the claim: no row (nothing to undo), no pin recorded, nothing signed.
    assert row is None and pins == 0
    if result.image_cid is not None:
        assert not await pinned_anywhere(stack, result.image_cid)
    assert group_of(stack, made["address"])["size"] == 1


async def test_a_mint_naming_an_unknown_collection_is_rolled_back_naming_it(
    stack: StackConfig, client: Client, worker: str
) -> None:
    key = _key()
    request = mint_request(stack, collection=key)
    result = await (await mintsaga.start_mint(client, request, queue=worker)).result()
    assert result.status == MintStatus.ROLLED_BACK
    assert result.reason is not None and "UnknownCollection" in result.reason
    assert key in result.reason


async def test_collection_create_names_a_bad_argument_or_a_missing_setting(
    stack: StackConfig,
) -> None:
    env = {**os.environ, **stack.worker_env()}
    bad = await run_starter(
        env, "collection", "create", "--key", "Tier Gold", "--name", "x", "--symbol", "X",
        "--max-size", "5",
    )  # fmt: skip
    assert bad.returncode == 2 and "--key 'Tier Gold'" in bad.stderr
    env.pop("MINT_GROUP_AUTHORITY_KEYPAIR")
    missing = await run_starter(
        env, "collection", "create", "--key", _key(), "--name", "x", "--symbol", "X",
        "--max-size", "5",
    )  # fmt: skip
    assert missing.returncode == 2 and "MINT_GROUP_AUTHORITY_KEYPAIR is not set" in missing.stderr


async def test_the_group_authority_is_rotated_by_a_command_and_workers_follow_the_new_key(
    stack: StackConfig, client: Client, worker: str, tmp_path: Path
) -> None:
    key = _key()
    made = await create(stack, key, 5)
    new = Keypair()
    new_file = tmp_path / "new-group-authority.json"
    new_file.write_text(json.dumps(list(bytes(new))))
    env = {**os.environ, **stack.worker_env()}
    rotated = await run_starter(
        env, "collection", "rotate-authority", "--key", key, "--new-keypair", str(new_file),
        timeout_s=120,
    )  # fmt: skip
    assert rotated.returncode == 0, rotated.stderr
    assert group_of(stack, made["address"])["updateAuthority"] == str(new.pubkey())
    payer = str(system_wallet(stack.state_dir).pubkey())
    before = rpc(stack, "getBalance", [payer, {"commitment": "processed"}])["value"]
    again = await run_starter(
        env, "collection", "rotate-authority", "--key", key, "--new-keypair", str(new_file)
    )
    assert again.returncode == 0 and "nothing sent" in again.stderr
    assert rpc(stack, "getBalance", [payer, {"commitment": "processed"}])["value"] == before

    # A worker still holding the old key signs nothing for it: the mint waits for an operator.
    stale = mint_request(stack, collection=key)
    handle = await mintsaga.start_mint(client, stale, queue=worker)
    await wait_for(
        client,
        stale.mint_id,
        lambda v: (
            v.awaiting_operator
            and v.last_error is not None
            and v.last_error.type == "GroupAuthorityMismatch"
        ),
    )
    await mintsaga.compensate(client, stale.mint_id)
    assert (await handle.result()).status == MintStatus.ROLLED_BACK

    # Workers given the new key mint into it.
    queue = f"rotated-{uuid.uuid4().hex[:8]}"
    async with running_worker(
        stack, client, queue, env={"MINT_GROUP_AUTHORITY_KEYPAIR": str(new_file)}
    ):
        result = await (
            await mintsaga.start_mint(client, mint_request(stack, collection=key), queue=queue)
        ).result()
    assert result.status == MintStatus.MINTED, result.reason
    assert group_of(stack, made["address"])["size"] == 1


async def test_concurrent_claims_take_each_slot_once_and_a_rollback_gives_its_slot_back(
    stack: StackConfig,
) -> None:
    """The claims themselves (MintStore), many at once on a collection of 3: exactly 3 claimed,
    the rest refused CollectionFull; a retried claim of a claimed mint is answered with its row
    even when full; a rolled-back member frees its slot; another collection is a Conflict."""
    from mintsaga.db.collections import CollectionSpec
    from mintsaga.db.mint_store import MintStore
    from mintsaga.errors import ServiceError

    store = await MintStore.connect(stack.direct_database_url, min_size=2, max_size=10)
    try:
        key = _key()
        await store.begin_collection(
            CollectionSpec(key, str(Keypair().pubkey()), "n", "S", "ipfs://x", 3, "g", None)
        )
        await store.mark_collection_created(key, None)
        ids = [f"slot-{uuid.uuid4().hex[:10]}" for _ in range(8)]
        wallet = str(Keypair().pubkey())

        async def claim(mint_id: str) -> str:
            try:
                await store.claim(mint_id, f"u-{mint_id}", wallet, None, key)
            except ServiceError as exc:
                return exc.code or ""
            return "claimed"

        outcomes = await asyncio.gather(*(claim(m) for m in ids))
        assert sorted(outcomes) == ["CollectionFull"] * 5 + ["claimed"] * 3
        claimed = [m for m, o in zip(ids, outcomes, strict=True) if o == "claimed"]
        row = await store.claim(claimed[0], f"u-{claimed[0]}", wallet, None, key)
        assert row.collection == key  # a retried claim: its own row, full or not
        with pytest.raises(ServiceError) as conflict:
            await store.claim(claimed[0], f"u-{claimed[0]}", row.wallet, None, None)
        assert conflict.value.code == "Conflict" and "collection" in str(conflict.value)
        assert await store.mark_rolled_back(claimed[1], "test")
        late = f"slot-{uuid.uuid4().hex[:10]}"
        assert await claim(late) == "claimed"
        assert await claim(f"slot-{uuid.uuid4().hex[:10]}") == "CollectionFull"
        found = await store.collection(key)
        assert found is not None and found.members == 3
    finally:
        await store.close()
