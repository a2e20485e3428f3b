"""Who may change a minted NFT (issue 18, docs/design.md "Authorities"): the metadata's update
authority is MINT_UPDATE_AUTHORITY, a key the workers never hold, or nobody (`none`); never the
fee-paying system wallet. Read from the chain with raw JSON-RPC (`jsonParsed`), nothing of ours.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from temporalio.client import Client

import mintsaga
from devstack.config import StackConfig
from devstack.dev_identity import system_wallet, update_authority
from devstack.requests import mint_request
from mintsaga.setting_readers import SettingsError
from mintsaga.worker import mint_activities
from mintsaga.workflows.models import MintStatus
from tests.saga_support import chain_nft, running_worker, settings_for

pytestmark = pytest.mark.integration


def _extension(info: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [e["state"] for e in info.get("extensions", []) if e["extension"] == name]
    state: dict[str, Any] = found
    return state


async def test_the_nft_answers_to_the_configured_update_authority_never_the_fee_payer(
    stack: StackConfig, client: Client, worker: str
) -> None:
    request = mint_request(stack)
    result = await (await mintsaga.start_mint(client, request, queue=worker)).result()
    assert result.status == MintStatus.MINTED and result.mint_address is not None
    info = chain_nft(stack, result.mint_address)
    assert info is not None
    cold = str(update_authority(stack.state_dir).pubkey())
    payer = str(system_wallet(stack.state_dir).pubkey())
    assert stack.worker_env()["MINT_UPDATE_AUTHORITY"] == cold != payer
    assert _extension(info, "tokenMetadata")["updateAuthority"] == cold
    assert _extension(info, "metadataPointer")["authority"] == cold
    assert info["mintAuthority"] is None  # the payer's mint authority is gone too


async def test_with_none_the_metadata_is_immutable(stack: StackConfig, client: Client) -> None:
    queue = f"immutable-{uuid.uuid4().hex[:8]}"
    async with running_worker(stack, client, queue, env={"MINT_UPDATE_AUTHORITY": "none"}):
        request = mint_request(stack)
        result = await (await mintsaga.start_mint(client, request, queue=queue)).result()
    assert result.status == MintStatus.MINTED and result.mint_address is not None
    info = chain_nft(stack, result.mint_address)
    assert info is not None
    assert _extension(info, "tokenMetadata")["updateAuthority"] is None
    assert _extension(info, "metadataPointer")["authority"] is None


async def test_a_worker_refuses_the_system_wallet_as_update_authority(stack: StackConfig) -> None:
    payer = str(system_wallet(stack.state_dir).pubkey())
    settings = settings_for(stack, MINT_UPDATE_AUTHORITY=payer)
    with pytest.raises(SettingsError, match="MINT_UPDATE_AUTHORITY is the system wallet's own key"):
        async with mint_activities(settings):
            pass


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("", "MINT_UPDATE_AUTHORITY is not set"),
        ("not-a-key", "MINT_UPDATE_AUTHORITY: 'not-a-key' is not a base58 public key"),
    ],
)
def test_a_missing_or_malformed_update_authority_is_refused_by_name(
    stack: StackConfig, value: str, named: str
) -> None:
    with pytest.raises(SettingsError, match=named):
        settings_for(stack, MINT_UPDATE_AUTHORITY=value)
