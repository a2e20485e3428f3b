"""The NFT's uri comes from the metadata upload (`metadata-uri-from-upload`, issue 16's
METADATA_URI_STYLE): a mint recorded with the patch signs and verifies the gateway URL its
upload returned; a mint that uploaded before the patch keeps `ipfs://<metadata CID>` on replay.
"""

from __future__ import annotations

import pytest

from tests.replay.scheduled_inputs import load, patches, recorded, replayed

PATCH = "metadata-uri-from-upload"
WATCHED = {"prepare_transaction": "uri", "verify_nft": "uri"}


@pytest.mark.parametrize(
    ("name", "patched", "prefix"),
    [
        ("happy-path-gateway-uri", True, "http://127.0.0.1:"),
        ("happy-path-pinata-queue", False, "ipfs://"),
    ],
)
async def test_the_uri_signed_and_verified_replays_as_recorded(
    name: str, patched: bool, prefix: str
) -> None:
    history, raw = load(name)
    assert (PATCH in patches(raw)) is patched
    inputs = recorded(raw, WATCHED)
    assert [activity for activity, _ in inputs] == ["prepare_transaction", "verify_nft"]
    uris = {uri for _, uri in inputs}
    assert len(uris) == 1 and next(iter(uris)).startswith(prefix)
    assert await replayed(history, WATCHED) == inputs
