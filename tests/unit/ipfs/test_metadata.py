"""The metadata JSON: Metaplex fields, and the same request always giving the same bytes."""

from __future__ import annotations

import json

import pytest

from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.ipfs.cid import cid_sync
from mintsaga.ipfs.metadata import metaplex_metadata

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
