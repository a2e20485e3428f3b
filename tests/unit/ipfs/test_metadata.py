"""The metadata JSON: Metaplex fields, and the same request always giving the same bytes;
external_url and collection (issue 18) only when given."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.ipfs.cid import cid_sync
from mintsaga.ipfs.metadata import CollectionRef, metaplex_metadata

IMAGE_CID = "bafkreibnoelefnzgwbcacyt4vh52ymxvzbjq7mmqhtcnwarfq4lzegsiqe"


def build(**overrides: object) -> bytes:
    args: dict[str, object] = {
        "name": "Gold Tier #7",
        "symbol": "AIW3",
        "description": "Niveau d'équipe — 金",
        "image_cid": IMAGE_CID,
        "attributes": [("tier", "gold"), ("level", 3), ("boost", 1.5)],
        "image_content_type": "image/png",
    }
    args.update(overrides)
    return metaplex_metadata(**args)  # type: ignore[arg-type]


def test_fields_follow_the_metaplex_standard() -> None:
    doc = json.loads(build())
    assert doc == {
        "name": "Gold Tier #7",
        "symbol": "AIW3",
        "description": "Niveau d'équipe — 金",
        "image": f"ipfs://{IMAGE_CID}",
        "attributes": [
            {"trait_type": "tier", "value": "gold"},
            {"trait_type": "level", "value": 3},
            {"trait_type": "boost", "value": 1.5},
        ],
        "properties": {
            "files": [{"uri": f"ipfs://{IMAGE_CID}", "type": "image/png"}],
            "category": "image",
        },
    }


def test_bytes_are_deterministic_so_the_cid_is() -> None:
    first, second = build(), build()
    assert first == second
    assert cid_sync(first) == cid_sync(second)
    # Same fields given in a different keyword order: still the same bytes.
    assert first == metaplex_metadata(
        image_content_type="image/png",
        attributes=[("tier", "gold"), ("level", 3), ("boost", 1.5)],
        image_cid=IMAGE_CID,
        description="Niveau d'équipe — 金",
        symbol="AIW3",
        name="Gold Tier #7",
    )


def test_serialisation_is_compact_utf8_in_a_fixed_key_order() -> None:
    raw = build()
    assert raw.startswith(b'{"name":"Gold Tier #7","symbol":"AIW3","description":')
    assert b'"attributes":[{"trait_type":"tier","value":"gold"}' in raw
    assert raw.endswith(b'"category":"image"}}')
    assert b", " not in raw and b": " not in raw
    assert "金".encode() in raw  # not \u91d1
    assert b"\\u" not in raw


def test_attribute_order_and_values_change_the_bytes() -> None:
    assert build() != build(attributes=[("level", 3), ("tier", "gold"), ("boost", 1.5)])
    assert build() != build(image_cid=cid_sync(b"other"))


@pytest.mark.parametrize(
    "overrides",
    [
        {"image_cid": "not-a-cid"},
        {"image_content_type": "text/html"},
        {"attributes": [("flag", True)]},
        {"attributes": [("x", float("nan"))]},
        {"attributes": [("x", None)]},
        {"attributes": [(1, "x")]},
        {"attributes": ["tier"]},
        {"name": None},
    ],
)
def test_invalid_input_is_a_permanent_error(overrides: dict[str, object]) -> None:
    with pytest.raises(ServiceError) as caught:
        build(**overrides)
    assert (caught.value.kind, caught.value.code) == (ErrorKind.PERMANENT, "MetadataInvalid")


# What metaplex_metadata wrote before external_url and collection existed (issue 18), computed
# from that code: a mint in flight re-uploads its metadata and must pin the same CID.
BEFORE_ISSUE_18 = (
    b'{"name":"Gold Tier #7","symbol":"AIW3","description":"Niveau d\'\xc3\xa9quipe \xe2\x80\x94'
    b' \xe9\x87\x91","image":"ipfs://' + IMAGE_CID.encode() + b'","attributes":[{"trait_type":'
    b'"tier","value":"gold"},{"trait_type":"level","value":3},{"trait_type":"boost","value":1.5}'
    b'],"properties":{"files":[{"uri":"ipfs://' + IMAGE_CID.encode() + b'","type":"image/png"}],'
    b'"category":"image"}}'
)
BEFORE_ISSUE_18_CID = "bafkreickkrejzw3wlj6dwql4l25jvcnibo356xydqvsmpkk2nosufulroi"
GROUP = "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T"
GOLD = CollectionRef(name="Gold Tier", family="AIW3", address=GROUP, key="tier-gold")


def test_a_call_without_the_new_fields_writes_the_bytes_it_wrote_before() -> None:
    assert build() == BEFORE_ISSUE_18
    assert build(external_url=None, collection=None) == BEFORE_ISSUE_18
    assert cid_sync(build()) == BEFORE_ISSUE_18_CID


def test_external_url_and_collection_sit_in_the_standards_order() -> None:
    raw = build(external_url="https://aiw3.example/nft/7?ref=x#top", collection=GOLD)
    assert list(json.loads(raw)) == [
        "name",
        "symbol",
        "description",
        "image",
        "external_url",
        "attributes",
        "collection",
        "properties",
    ]
    assert (
        b'"external_url":"https://aiw3.example/nft/7?ref=x#top","attributes":[' in raw
        and b'}],"collection":{"name":"Gold Tier","family":"AIW3","address":"'
        + GROUP.encode()
        # the operator's key stays out of the JSON
        + b'"},"properties":{'
        in raw
    )
    assert b"tier-gold" not in raw
    assert raw == build(collection=GOLD, external_url="https://aiw3.example/nft/7?ref=x#top")
    # each field alone, and each changes the bytes (so the CID)
    assert list(json.loads(build(collection=GOLD))).index("collection") == 5
    assert "collection" not in json.loads(build(external_url="https://a.example"))
    assert len({build(), build(collection=GOLD), build(external_url="https://a.example")}) == 3


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://aiw3.example/nft/7", "must be an https URL"),
        ("ipfs://bafy", "must be an https URL"),
        ("HTTPS://aiw3.example/", "must be an https URL"),
        ("https:aiw3.example", "must be an https URL"),
        ("aiw3.example/nft/7", "must be an https URL"),
        ("https://user:hunter2@aiw3.example/", "must not carry a user name or password"),
        ("https://@aiw3.example/", "must not carry a user name or password"),
        ("https:///nft/7", "has no host"),
        ("https://aiw3.example/a b", "whitespace or control characters"),
        ("https://aiw3.example/\n", "whitespace or control characters"),
        ("https://aiw3.example:99999/", "is not a URL"),
        ("https://aiw3.example/" + "x" * 180, "201 characters, longer than 200"),
        (7, "must be a string"),
    ],
)
def test_an_external_url_wallets_should_not_follow_is_refused_by_name(
    url: object, message: str
) -> None:
    with pytest.raises(ServiceError) as caught:
        build(external_url=url)
    assert (caught.value.kind, caught.value.code) == (ErrorKind.PERMANENT, "MetadataInvalid")
    assert caught.value.args[0].startswith("metadata.external_url ")
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_an_external_url_of_200_characters_is_kept_as_given() -> None:
    url = "https://aiw3.example/" + "x" * 179
    assert len(url) == 200
    assert json.loads(build(external_url=url))["external_url"] == url


@pytest.mark.parametrize(
    ("collection", "field"),
    [
        (replace(GOLD, address="not-an-address"), "metadata.collection.address"),
        (replace(GOLD, address=GROUP[:-1]), "metadata.collection.address"),  # 31 bytes
        (replace(GOLD, address="0" + GROUP[1:]), "metadata.collection.address"),  # not base58
        (replace(GOLD, name=""), "metadata.collection.name"),
        (replace(GOLD, family=" "), "metadata.collection.family"),
        (replace(GOLD, key=""), "metadata.collection.key"),
        ({"name": "Gold Tier", "family": "AIW3"}, "metadata.collection must be a CollectionRef"),
    ],
)
def test_a_bad_collection_is_refused_by_field(collection: object, field: str) -> None:
    with pytest.raises(ServiceError, match=field) as caught:
        build(collection=collection)
    assert caught.value.code == "MetadataInvalid"
