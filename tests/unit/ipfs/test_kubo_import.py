"""The Kubo start check's rules (mintsaga.ipfs.kubo_import), without a node."""

from __future__ import annotations

from mintsaga.ipfs.kubo import import_params
from mintsaga.ipfs.kubo_import import OURS, PROBE, describe, differences, unhonoured

V1_2025 = {
    "CidVersion": 1,
    "UnixFSRawLeaves": True,
    "UnixFSChunker": "size-1048576",
    "HashFunction": "sha2-256",
    "UnixFSFileMaxLinks": 1024,
    "UnixFSDAGLayout": "balanced",
}


def test_every_add_names_the_layout_aleph_cid_computes() -> None:
    assert import_params() == {
        "cid-version": "1",
        "raw-leaves": "true",  # explicit: legacy-cid-v0 sets Import.UnixFSRawLeaves false
        "chunker": "size-262144",
        "max-file-links": "174",
        "hash": "sha2-256",
        "trickle": "false",
    }
    assert {flag for flag, _ in OURS.values()} <= set(import_params())


def test_differences_are_keys_set_to_other_values() -> None:
    assert differences({key: None for key in OURS}) == {}  # a fresh `ipfs init`
    assert differences(V1_2025) == {
        "UnixFSChunker": ("size-1048576", "size-262144"),
        "UnixFSFileMaxLinks": (1024, 174),
    }
    assert differences({"UnixFSRawLeaves": False})["UnixFSRawLeaves"] == (False, True)


def test_a_node_before_0_35_cannot_take_max_file_links() -> None:
    diffs = differences(V1_2025)
    assert unhonoured(diffs, "0.34.1") == ["UnixFSFileMaxLinks"]
    assert unhonoured(diffs, "0.35.0") == []
    assert unhonoured(diffs, "0.40.0-rc1") == []
    text = describe(diffs, ["UnixFSFileMaxLinks"])
    assert (
        text == "Import.UnixFSFileMaxLinks is 1024 on the node, ours is 174 (add --max-file-links)"
    )


def test_probe_spans_several_chunks() -> None:
    assert len(PROBE) == 3 * 262_144 + 1
