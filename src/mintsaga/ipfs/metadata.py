"""The NFT's off-chain metadata, in the Metaplex JSON standard wallets and marketplaces read.

The bytes are deterministic: the same request always serialises to the same bytes, so to the
same CID, and a retried upload pins what the first attempt pinned. Keys keep a fixed order
(the standard's), separators are compact, text is UTF-8 (``ensure_ascii=False``).

Links (`ContentLinks`, ``METADATA_URI_STYLE``): by default the on-chain ``uri`` and the
metadata's ``image`` are https gateway URLs (``<METADATA_GATEWAY_URL>/ipfs/<cid>``), what most
mints in the wild use, because several wallets and explorers resolved ``ipfs://`` poorly;
``properties.files`` keeps the ``ipfs://`` link, the gateway-independent name of the content.
``METADATA_URI_STYLE=ipfs`` puts ``ipfs://`` everywhere (the behaviour before issue 16).

The standard (issue 18), as the wallets document it:

- Metaplex, Token Metadata "Token Standard", the Non-Fungible standard
  (https://developers.metaplex.com/token-metadata/token-standard, source
  metaplex-foundation/developer-hub src/pages/token-metadata/token-standard.md): name, symbol,
  description, image, optional animation_url and external_url, attributes
  [{trait_type, value}], properties {files [{uri, type (the MIME type)}], category}; its
  example keeps a ``collection`` {name, family}, marked "@deprecated ... Use on-chain data
  instead".
- Metaplex Core "JSON Schema" (https://developers.metaplex.com/core/json-schema): the same
  fields, "similar to the Metaplex Token Metadata standard"; required name, description, image,
  category.
- Solflare, "URI JSON Schema"
  (https://docs.solflare.com/solflare/technical/our-nft-standard/uri-json-schema): "uses the
  JSON standard as described in the Metaplex Developer Guide"; properties.files "should contain
  the uri and type"; attribute values "a string or a number"; its reference file carries
  ``collection`` {name, family} at the top level, between ``attributes`` and ``properties``
  (the Token Metadata v1.0 standard's place, which older readers look at).

`schemas/nft_metadata.schema.json` states what this module produces (tests check every form
against it). The on-chain truth of membership is the Token-2022 group member extension (issue
18); the JSON's ``collection`` is the deprecated-but-read display name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from solders.pubkey import Pubkey

from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.ipfs.cid import cid_version_of

SERVICE = "metadata"
AttributeValue = str | int | float
UriStyle = Literal["gateway", "ipfs"]
URI_STYLES: tuple[UriStyle, ...] = ("gateway", "ipfs")
EXTERNAL_URL_MAX_CHARS = 200


@dataclass(frozen=True)
class CollectionRef:
    """The collection an NFT belongs to, as its metadata names it.

    ``name`` and ``family`` are the standard's ``collection`` object; ``address`` is the
    collection's Token-2022 group mint (base58), written next to them as
    ``collection.address``; ``key`` is the operator's collection key (``collection create
    --key``), for the caller's records: it is not written into the JSON."""

    name: str
    family: str
    address: str
    key: str


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
    external_url: str | None = None,
    collection: CollectionRef | None = None,
) -> bytes:
    """The metadata JSON, as UTF-8 bytes, naming the image by ``links`` (``ipfs://<image_cid>``
    by default) and as ``ipfs://<image_cid>`` in ``properties.files``.

    ``external_url`` (an https URL) and ``collection`` are written only when given: without
    them the bytes are those of the calls made before they existed, so a mint in flight that
    uploads again gets the same CID."""
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
    # The standard's order (Solflare's reference file): name, symbol, description, image,
    # external_url, attributes, collection, properties. Optional keys are left out, not null.
    document: dict[str, Any] = {
        "name": name,
        "symbol": symbol,
        "description": description,
        "image": (links or ContentLinks()).uri(image_cid),
    }
    if external_url is not None:
        document["external_url"] = _external_url(external_url)
    document["attributes"] = [_attribute(i, pair) for i, pair in enumerate(attributes)]
    if collection is not None:
        document["collection"] = _collection(collection)
    document["properties"] = {
        "files": [{"uri": ipfs_uri(image_cid), "type": image_content_type}],
        "category": "image",
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


def _external_url(url: object) -> str:
    """``url`` when wallets may link to it: https, a host, no user or password, no whitespace,
    at most EXTERNAL_URL_MAX_CHARS characters. The URL itself stays out of the errors (a
    refused one may carry a password)."""
    field = "metadata.external_url"
    if not isinstance(url, str):
        raise _invalid(f"{field} must be a string")
    if len(url) > EXTERNAL_URL_MAX_CHARS:
        raise _invalid(f"{field} is {len(url)} characters, longer than {EXTERNAL_URL_MAX_CHARS}")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise _invalid(f"{field} holds whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise _invalid(f"{field} is not a URL") from None
    # Literally "https://": urlsplit lowercases the scheme, and the JSON keeps the URL as given.
    if parts.scheme != "https" or not url.startswith("https://"):
        raise _invalid(f"{field} must be an https URL (scheme {parts.scheme or 'missing'!r})")
    if "@" in parts.netloc:
        raise _invalid(f"{field} must not carry a user name or password")
    if not parts.hostname:
        raise _invalid(f"{field} has no host")
    return url


def _collection(collection: object) -> dict[str, str]:
    """The ``collection`` object: the standard's {name, family} and the group mint's address.

    Where the address goes: the standards above name a collection off chain only by name and
    family, and are silent on an on-chain address in the JSON (Metaplex says to read membership
    on chain; here the Token-2022 group member extension is that truth). ``properties.collection``
    is taken: Metaplex's current page puts the deprecated {name, family} there. So the address
    sits in the one object that names the collection, as ``collection.address``; readers that
    know only {name, family} ignore the extra key."""
    if not isinstance(collection, CollectionRef):
        raise _invalid("metadata.collection must be a CollectionRef")
    for field in ("name", "family", "key"):
        value = getattr(collection, field)
        if not isinstance(value, str) or not value.strip():
            raise _invalid(f"metadata.collection.{field} must be a non-empty string")
    if not _is_base58_address(collection.address):
        raise _invalid(
            f"metadata.collection.address {collection.address!r} is not a base58 Solana address"
        )
    return {"name": collection.name, "family": collection.family, "address": collection.address}


def _is_base58_address(address: object) -> bool:
    """A 32-byte key in its one canonical base58 spelling (so the bytes stay deterministic)."""
    if not isinstance(address, str):
        return False
    try:
        return str(Pubkey.from_string(address)) == address
    except ValueError:
        return False
