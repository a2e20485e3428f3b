"""The NFT's off-chain metadata, in the Metaplex JSON standard wallets and marketplaces read.

The bytes are deterministic: the same request always serialises to the same bytes, so to the
same CID, and a retried upload pins what the first attempt pinned. Keys keep a fixed order
(the standard's), separators are compact, text is UTF-8 (``ensure_ascii=False``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.ipfs.cid import cid_version_of

SERVICE = "metadata"
AttributeValue = str | int | float


def _invalid(message: str) -> ServiceError:
    # A ServiceError, not a ValueError: the caller maps it to a non-retryable failure.
    return ServiceError(message, service=SERVICE, kind=ErrorKind.PERMANENT, code="MetadataInvalid")


def metaplex_metadata(
    *,
    name: str,
    symbol: str,
    description: str,
    image_cid: str,
    attributes: Sequence[tuple[str, AttributeValue]],
    image_content_type: str,
) -> bytes:
    """The metadata JSON naming the image as ``ipfs://<image_cid>``, as UTF-8 bytes."""
    for field, value in (
        ("name", name),
        ("symbol", symbol),
        ("description", description),
        ("image_content_type", image_content_type),
    ):
        if not isinstance(value, str):
            raise _invalid(f"metadata.{field} must be a string")
    if cid_version_of(image_cid) is None:
        raise _invalid(f"metadata.image_cid {image_cid!r} is not a CID")
    if not image_content_type.startswith("image/"):
        raise _invalid(f"metadata.image_content_type {image_content_type!r} is not an image type")
    image_uri = f"ipfs://{image_cid}"
    document: dict[str, Any] = {
        "name": name,
        "symbol": symbol,
        "description": description,
        "image": image_uri,
        "attributes": [_attribute(i, pair) for i, pair in enumerate(attributes)],
        "properties": {
            "files": [{"uri": image_uri, "type": image_content_type}],
            "category": "image",
        },
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
        "utf-8"
    )


def _attribute(index: int, pair: tuple[str, AttributeValue]) -> dict[str, AttributeValue]:
    try:
        trait_type, value = pair
    except (TypeError, ValueError):
        raise _invalid(f"metadata.attributes[{index}] must be a (trait_type, value) pair") from None
    if not isinstance(trait_type, str):
        raise _invalid(f"metadata.attributes[{index}].trait_type must be a string")
    # bool is an int to Python but not a Metaplex attribute value.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _invalid(f"metadata.attributes[{index}].value must be a string or a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise _invalid(f"metadata.attributes[{index}].value must be finite")
    return {"trait_type": trait_type, "value": value}
