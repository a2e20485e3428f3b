"""schemas/nft_metadata.schema.json: a valid JSON Schema 2020-12 that every metadata document
`metaplex_metadata` writes satisfies, and that refuses documents outside the standard's form
(a file without its image content type, another kind of file, unknown or missing fields)."""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

import jsonschema
import pytest

from mintsaga.ipfs.metadata import CollectionRef, ContentLinks, metaplex_metadata
from tests.paths import ROOT

SCHEMA_PATH = ROOT / "schemas" / "nft_metadata.schema.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

IMAGE_CID = "bafkreibnoelefnzgwbcacyt4vh52ymxvzbjq7mmqhtcnwarfq4lzegsiqe"
GOLD = CollectionRef(
    name="Gold Tier",
    family="AIW3",
    address="4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T",
    key="tier-gold",
)

LINKS = {
    "ipfs": ContentLinks("ipfs"),
    "gateway": ContentLinks("gateway", "https://nfts.example.com"),
    "devstack-gateway": ContentLinks("gateway", "http://127.0.0.1:8080"),
}
ATTRIBUTES: dict[str, list[tuple[str, str | int | float]]] = {
    "none": [],
    "text": [("tier", "gold"), ("motto", "équipe — 金")],
    "numbers": [("level", 3), ("boost", 1.5), ("debt", -2), ("big", 10**15)],
    "mixed": [("tier", "gold"), ("level", 0), ("ratio", 0.25), ("", "")],
}
CONTENT_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml")


def document(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "name": "Gold Tier #7",
        "symbol": "AIW3",
        "description": "",
        "image_cid": IMAGE_CID,
        "attributes": ATTRIBUTES["mixed"],
        "image_content_type": "image/png",
    }
    args.update(overrides)
    parsed: dict[str, Any] = json.loads(metaplex_metadata(**args))
    return parsed


def test_the_schema_is_a_valid_2020_12_schema() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert jsonschema.validators.validator_for(SCHEMA) is jsonschema.Draft202012Validator
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    # check_schema is not vacuous: a misspelt type is refused
    broken = copy.deepcopy(SCHEMA)
    broken["properties"]["name"]["type"] = "text"
    with pytest.raises(jsonschema.SchemaError):
        jsonschema.Draft202012Validator.check_schema(broken)


@pytest.mark.parametrize(
    ("links", "attributes", "external_url", "collection"),
    list(
        itertools.product(
            LINKS, ATTRIBUTES, (None, "https://aiw3.example/nft/7?ref=x#top"), (None, GOLD)
        )
    ),
)
def test_every_document_written_validates(
    links: str, attributes: str, external_url: str | None, collection: CollectionRef | None
) -> None:
    doc = document(
        links=LINKS[links],
        attributes=ATTRIBUTES[attributes],
        external_url=external_url,
        collection=collection,
    )
    VALIDATOR.validate(doc)
    assert ("external_url" in doc) == (external_url is not None)
    assert ("collection" in doc) == (collection is not None)


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_every_image_type_the_service_accepts_validates(content_type: str) -> None:
    VALIDATOR.validate(document(image_content_type=content_type, collection=GOLD))


@pytest.mark.parametrize(
    "url",
    [
        "https://aiw3.example",
        "https://aiw3.example/",
        "https://aiw3.example:8443/nft/7?a=1&b=%20#top",
        "https://例え.jp/nft/é",
        "https://[2001:db8::1]/nft",
        "https://aiw3.example/" + "x" * 179,
    ],
)
def test_every_external_url_the_writer_accepts_validates(url: str) -> None:
    VALIDATOR.validate(document(external_url=url))


def test_the_document_before_issue_18_validates() -> None:
    # links=None, no external_url, no collection: what mints in flight re-upload
    VALIDATOR.validate(document(links=None))


def errors(doc: dict[str, Any]) -> list[str]:
    return [error.message for error in VALIDATOR.iter_errors(doc)]


def test_a_file_without_its_content_type_fails() -> None:
    doc = document(collection=GOLD)
    del doc["properties"]["files"][0]["type"]
    assert errors(doc) == ["'type' is a required property"]


@pytest.mark.parametrize(
    "content_type", ["text/html", "video/mp4", "application/json", "image/", "image", ""]
)
def test_a_file_that_is_not_an_image_type_fails(content_type: str) -> None:
    doc = document()
    doc["properties"]["files"][0]["type"] = content_type
    assert errors(doc) and all("does not match" in message for message in errors(doc))


def mutated(path: tuple[str | int, ...], value: Any, *, delete: bool = False) -> dict[str, Any]:
    doc = document(external_url="https://aiw3.example/nft/7", collection=GOLD)
    target: Any = doc
    for step in path[:-1]:
        target = target[step]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "delete"),
    [
        (("image",), None, True),
        (("name",), None, True),
        (("attributes",), None, True),
        (("properties", "files"), None, True),
        (("properties", "category"), None, True),
        (("properties", "files"), [], False),
        (("properties", "category"), "video", False),
        (("properties", "files", 0, "uri"), "https://nfts.example.com/ipfs/x", False),
        (("attributes", 0, "value"), True, False),
        (("attributes", 0, "value"), None, False),
        (("attributes", 0, "display_type"), "number", False),
        (("external_url",), "http://aiw3.example/", False),
        (("external_url",), "https://user:pw@aiw3.example/", False),
        (("external_url",), "https://aiw3.example/" + "x" * 180, False),
        (("collection", "family"), None, True),
        (("collection", "address"), "0OIl", False),
        (("collection", "key"), "tier-gold", False),
        (("seller_fee_basis_points",), 500, False),
    ],
)
def test_a_document_outside_the_form_fails(
    path: tuple[str | int, ...], value: Any, delete: bool
) -> None:
    assert errors(mutated(("name",), "Gold Tier #7")) == []  # the unchanged document passes
    assert errors(mutated(path, value, delete=delete))
