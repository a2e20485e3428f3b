"""The image's CID comes from its upload (`image-cid-from-upload`, issue 16): when a provider
pinned the image under another layout's CID, the recorded mint uploaded its metadata again
naming that CID and recorded it; mints before the patch name the CID computed locally.
"""

from __future__ import annotations

from tests.replay.scheduled_inputs import load, patches, recorded, replayed

PATCH = "image-cid-from-upload"
WATCHED = {"upload_metadata": "image_cid", "record_uploads": "image_cid"}


async def test_a_provider_cid_is_named_by_the_metadata_uploaded_again() -> None:
    history, raw = load("image-cid-from-provider")
    assert PATCH in patches(raw)
    inputs = recorded(raw, WATCHED)
    (first, local), (second, provider), (record, recorded_cid) = inputs
    assert (first, second, record) == ("upload_metadata", "upload_metadata", "record_uploads")
    assert local != provider == recorded_cid
    assert await replayed(history, WATCHED) == inputs


async def test_a_mint_before_the_patch_uploads_its_metadata_once() -> None:
    history, raw = load("happy-path-gateway-uri")
    assert PATCH not in patches(raw)
    inputs = recorded(raw, WATCHED)
    assert [name for name, _ in inputs] == ["upload_metadata", "record_uploads"]
    assert inputs[0][1] == inputs[1][1]
    assert await replayed(history, WATCHED) == inputs
