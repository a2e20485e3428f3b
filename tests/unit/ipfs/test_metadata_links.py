"""METADATA_URI_STYLE: the links an NFT carries, and the settings that choose them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mintsaga.ipfs.cid import cid_sync
from mintsaga.ipfs.metadata import CollectionRef, ContentLinks, links_of, metaplex_metadata
from mintsaga.setting_readers import SettingsError
from mintsaga.settings import Settings
from tests.unit.solana.settings_env import settings_env

IMAGE_CID = "bafkreibnoelefnzgwbcacyt4vh52ymxvzbjq7mmqhtcnwarfq4lzegsiqe"
METADATA_CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
GATEWAY = "https://nfts.example.com"


def document(links: ContentLinks | None) -> dict[str, object]:
    raw = metaplex_metadata(
        name="N",
        symbol="S",
        description="",
        image_cid=IMAGE_CID,
        attributes=[],
        image_content_type="image/png",
        links=links,
    )
    parsed: dict[str, object] = json.loads(raw)
    return parsed


def test_gateway_style_links_the_image_by_url_and_keeps_ipfs_in_files() -> None:
    doc = document(ContentLinks("gateway", GATEWAY))
    assert doc["image"] == f"{GATEWAY}/ipfs/{IMAGE_CID}"
    assert doc["properties"] == {
        "files": [{"uri": f"ipfs://{IMAGE_CID}", "type": "image/png"}],
        "category": "image",
    }


def test_ipfs_style_is_the_behaviour_before_the_option() -> None:
    assert document(ContentLinks("ipfs")) == document(None)
    assert document(None)["image"] == f"ipfs://{IMAGE_CID}"


def test_the_gateway_style_writes_the_bytes_it_wrote_before_issue_18() -> None:
    # Computed from metaplex_metadata before external_url and collection existed: a mint in
    # flight re-uploads its metadata and must pin the same CID.
    expected = (
        b'{"name":"N","symbol":"S","description":"","image":"https://nfts.example.com/ipfs/'
        + IMAGE_CID.encode()
        + b'","attributes":[],"properties":{"files":[{"uri":"ipfs://'
        + IMAGE_CID.encode()
        + b'","type":"image/png"}],"category":"image"}}'
    )
    raw = metaplex_metadata(
        name="N",
        symbol="S",
        description="",
        image_cid=IMAGE_CID,
        attributes=[],
        image_content_type="image/png",
        links=ContentLinks("gateway", GATEWAY),
    )
    assert raw == expected
    assert cid_sync(raw) == "bafkreiaba742q6rorgmanyzxwh27blcd7ipg5ieqedsjuq4hosdn77g4si"


def test_a_collection_leaves_the_links_as_they_were() -> None:
    gateway = ContentLinks("gateway", GATEWAY)
    collection = CollectionRef(
        name="Gold", family="AIW3", address="4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T", key="k"
    )
    raw = metaplex_metadata(
        name="N",
        symbol="S",
        description="",
        image_cid=IMAGE_CID,
        attributes=[],
        image_content_type="image/png",
        links=gateway,
        collection=collection,
        external_url="https://aiw3.example/",
    )
    doc, plain = json.loads(raw), document(gateway)
    assert (doc["image"], doc["properties"]) == (plain["image"], plain["properties"])


def test_a_link_is_read_back_into_its_style_or_refused() -> None:
    gateway = ContentLinks("gateway", GATEWAY)
    assert links_of(gateway.uri(METADATA_CID), METADATA_CID) == gateway
    assert links_of(f"ipfs://{METADATA_CID}", METADATA_CID) == ContentLinks()
    assert links_of(gateway.uri(METADATA_CID), IMAGE_CID) is None  # another CID
    assert links_of(f"ftp://h/ipfs/{METADATA_CID}", METADATA_CID) is None
    assert links_of(f"{GATEWAY}/ipfs/{METADATA_CID}?x=1", METADATA_CID) is None


def test_the_gateway_style_needs_a_gateway() -> None:
    with pytest.raises(ValueError, match="needs a gateway URL"):
        ContentLinks("gateway", "")


def settings(tmp_path: Path, **extra: str) -> Settings:
    return Settings.from_env(settings_env(tmp_path, **extra))


def test_the_default_is_the_gateway_style_on_the_first_gateway(tmp_path: Path) -> None:
    chosen = settings(tmp_path, IPFS_GATEWAYS="https://gw.example/,https://other.example")
    assert (chosen.metadata_uri_style, chosen.metadata_gateway_url) == (
        "gateway",
        "https://gw.example",
    )
    own = settings(tmp_path, METADATA_GATEWAY_URL=GATEWAY)
    assert own.metadata_gateway_url == GATEWAY
    assert settings(tmp_path, METADATA_URI_STYLE="IPFS ").metadata_uri_style == "ipfs"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"METADATA_URI_STYLE": "arweave"}, "METADATA_URI_STYLE: 'arweave' is not one of"),
        ({"METADATA_GATEWAY_URL": "http://gw.example"}, "METADATA_GATEWAY_URL: .* is not https"),
        (
            {"IPFS_GATEWAYS": "http://kubo:8080,https://gw.example"},
            r"IPFS_GATEWAYS \(its first gateway\): .* is not https",
        ),
        (
            {"METADATA_GATEWAY_URL": "https://gw.example/?pinataGatewayToken=secret"},
            "METADATA_GATEWAY_URL: a gateway URL for NFTs has no query",
        ),
        ({"METADATA_GATEWAY_URL": "https://" + "g" * 190}, "longer than 190"),
    ],
)
def test_a_gateway_wallets_cannot_use_is_refused_by_name(
    tmp_path: Path, extra: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message) as refused:
        settings(tmp_path, **extra)
    assert "secret" not in str(refused.value)


def test_a_loopback_http_gateway_is_the_devstack_and_allowed(tmp_path: Path) -> None:
    assert settings(tmp_path).metadata_gateway_url == "http://127.0.0.1:8080"
    # ipfs style: the gateway is not linked to, so an http one is fine
    assert settings(tmp_path, IPFS_GATEWAYS="http://kubo:8080", METADATA_URI_STYLE="ipfs")
