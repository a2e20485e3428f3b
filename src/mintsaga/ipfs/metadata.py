"""The NFT's off-chain metadata, in the Metaplex JSON standard wallets and marketplaces read.

The bytes are deterministic: the same request always serialises to the same bytes, so to the
same CID, and a retried upload pins what the first attempt pinned. Keys keep a fixed order
(the standard's), separators are compact, text is UTF-8 (``ensure_ascii=False``).

Links (`ContentLinks`, ``METADATA_URI_STYLE``): by default the on-chain ``uri`` and the
metadata's ``image`` are https gateway URLs (``<METADATA_GATEWAY_URL>/ipfs/<cid>``), what most
mints in the wild use, because several wallets and explorers resolved ``ipfs://`` poorly;
``properties.files`` keeps the ``ipfs://`` link, the gateway-independent name of the content.
``METADATA_URI_STYLE=ipfs`` puts ``ipfs://`` everywhere (the behaviour before issue 16).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.ipfs.cid import cid_version_of

SERVICE = "metadata"
AttributeValue = str | int | float
UriStyle = Literal["gateway", "ipfs"]
URI_STYLES: tuple[UriStyle, ...] = ("gateway", "ipfs")


@dataclass(frozen=True)
class ContentLinks:
    """How the NFT links to its content: ``gateway`` (``<gateway_url>/ipfs/<cid>``, a path
    gateway) or ``ipfs`` (``ipfs://<cid>``)."""

    style: UriStyle = "ipfs"
    gateway_url: str = ""  # without a trailing slash; needed for ``gateway``

    def __post_init__(self) -> None:
        if self.style not in URI_STYLES:
            raise ValueError(f"unknown metadata uri style {self.style!r}")
        if self.style == "gateway" and not self.gateway_url:
            raise ValueError("the gateway uri style needs a gateway URL")

    def uri(self, cid: str) -> str:
        """The link to ``cid`` in this style."""
        if self.style == "gateway":
            return f"{self.gateway_url.rstrip('/')}/ipfs/{cid}"
        return ipfs_uri(cid)


def ipfs_uri(cid: str) -> str:
    return f"ipfs://{cid}"


def links_of(uri: str, cid: str) -> ContentLinks | None:
    """The links that name ``cid`` as ``uri`` (so the image's link can be checked against the
    same style and gateway), or None when ``uri`` is not a link to ``cid``."""
    if uri == ipfs_uri(cid):
        return ContentLinks()
    suffix = f"/ipfs/{cid}"
    base = uri.removesuffix(suffix)
    if base != uri and base.startswith(("https://", "http://")) and "?" not in base:
        return ContentLinks("gateway", base)
    return None


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
    links: ContentLinks | None = None,
) -> bytes:
    """The metadata JSON, as UTF-8 bytes, naming the image by ``links`` (``ipfs://<image_cid>``
    by default) and as ``ipfs://<image_cid>`` in ``properties.files``."""
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
    document: dict[str, Any] = {
        "name": name,
        "symbol": symbol,
        "description": description,
        "image": (links or ContentLinks()).uri(image_cid),
        "attributes": [_attribute(i, pair) for i, pair in enumerate(attributes)],
        "properties": {
            "files": [{"uri": ipfs_uri(image_cid), "type": image_content_type}],
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
