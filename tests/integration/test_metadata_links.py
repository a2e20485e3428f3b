"""How a minted NFT links its content (METADATA_URI_STYLE): by default an https-style gateway
URL in the on-chain uri and the metadata's image, `ipfs://` kept in properties.files; resolved
here the way the simplest wallet would, with nothing of ours: raw JSON-RPC (the mint account's
bytes, the Token-2022 metadata TLV parsed by hand) and plain HTTP GETs.
"""

from __future__ import annotations

import base64
import json
import struct
import uuid

import httpx
import pytest
from temporalio.client import Client

import mintsaga
from devstack.config import GATEWAYS, StackConfig
from devstack.requests import image_dir, mint_request
from mintsaga.workflows.models import MintStatus
from tests.saga_support import rpc, running_worker

pytestmark = pytest.mark.integration

TOKEN_2022 = "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb"
MINT_ACCOUNT_TYPE = 1  # AccountType::Mint, the byte after the base mint padded to 165
TOKEN_METADATA_EXTENSION = 19  # ExtensionType::TokenMetadata (spl-token-2022)


def _borsh_string(data: bytes, at: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<I", data, at)
    start = at + 4
    return data[start : start + length].decode("utf-8"), start + length


def onchain_uri(stack: StackConfig, mint_address: str) -> str:
    """The uri of the mint's TokenMetadata extension, from the account's raw bytes."""
    value = rpc(
        stack,
        "getAccountInfo",
        [mint_address, {"encoding": "base64", "commitment": "confirmed"}],
    )["value"]
    assert value is not None and value["owner"] == TOKEN_2022
    data = base64.b64decode(value["data"][0])
    assert data[165] == MINT_ACCOUNT_TYPE
    at = 166
    while at + 4 <= len(data):
        kind, length = struct.unpack_from("<HH", data, at)
        body = data[at + 4 : at + 4 + length]
        if kind == TOKEN_METADATA_EXTENSION:
            # update authority (32), mint (32), then name, symbol, uri as borsh strings
            _, after_name = _borsh_string(body, 64)
            _, after_symbol = _borsh_string(body, after_name)
            uri, _ = _borsh_string(body, after_symbol)
            return uri
        at += 4 + length
    raise AssertionError("no TokenMetadata extension in the mint account")


async def test_default_uri_is_a_gateway_url_a_plain_reader_resolves_to_the_image(
    stack: StackConfig, client: Client, worker: str
) -> None:
    request = mint_request(stack)
    result = await (await mintsaga.start_mint(client, request, queue=worker)).result()
    assert result.status == MintStatus.MINTED and result.mint_address is not None

    gateway = stack.url(GATEWAYS[0])  # METADATA_GATEWAY_URL's default: the first gateway
    uri = onchain_uri(stack, result.mint_address)
    assert uri == f"{gateway}/ipfs/{result.metadata_cid}" == result.metadata_uri
    async with httpx.AsyncClient(timeout=10) as http:
        metadata = (await http.get(uri)).raise_for_status().json()
        assert metadata["image"] == f"{gateway}/ipfs/{result.image_cid}"
        assert metadata["properties"]["files"][0]["uri"] == f"ipfs://{result.image_cid}"
        image = (await http.get(metadata["image"])).raise_for_status().content
    assert request.image.path is not None
    assert image == (image_dir(stack) / request.image.path).read_bytes()


async def test_ipfs_style_links_everything_as_ipfs_uris(stack: StackConfig, client: Client) -> None:
    queue = f"links-{uuid.uuid4().hex[:8]}"
    async with running_worker(stack, client, queue, env={"METADATA_URI_STYLE": "ipfs"}):
        request = mint_request(stack)
        result = await (await mintsaga.start_mint(client, request, queue=queue)).result()
    assert result.status == MintStatus.MINTED and result.mint_address is not None
    uri = onchain_uri(stack, result.mint_address)
    assert uri == f"ipfs://{result.metadata_cid}" == result.metadata_uri
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(f"{stack.url(GATEWAYS[0])}/ipfs/{result.metadata_cid}")
    metadata = json.loads(answer.raise_for_status().content)
    assert metadata["image"] == f"ipfs://{result.image_cid}"
