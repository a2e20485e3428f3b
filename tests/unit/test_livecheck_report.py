"""livecheck's pure parts: the comparison with the devstack's assumptions, and secrets kept out
of the report."""

from __future__ import annotations

import copy
from typing import Any

import httpx

from mintsaga.api.livecheck.assumptions import differences
from mintsaga.api.livecheck.probes import Probes

LOCAL = {"1KiB": "bafk-a", "300KiB": "bafy-b", "5MiB": "bafy-c"}


def report() -> dict[str, Any]:
    """What the devstack in its default profiles answers, in the report's shape."""
    upload = {label: {"cid": cid} for label, cid in LOCAL.items()}
    gateway = {
        "fresh": {"status": 200, "verifies": True},
        "raw": {"status": 200, "headers": {"content-type": "application/vnd.ipld.raw"}},
        "car": {"status": 200, "headers": {"content-type": "application/vnd.ipld.car; version=1"}},
    }
    return {
        "local": dict(LOCAL),
        "pinata": {
            "upload": copy.deepcopy(upload),
            "pin_list": {"lists_exactly": True},
            "unpin_never_pinned": {"reads_as": "not pinned"},
        },
        "kubo": {
            "upload_explicit": copy.deepcopy(upload),
            "upload_node_defaults": copy.deepcopy(upload),
            "unpin_never_pinned": {"reads_as": "not pinned"},
        },
        "gateways": {"http://gw": gateway},
        "solana": {"http://rpc": {"history_search": {"answer": "result"}}},
        "mint": {"status": "MINTED"},
    }


def test_the_devstacks_own_answers_show_no_difference() -> None:
    assert differences(report()) == []


def test_each_contradicted_assumption_is_named_with_what_was_seen() -> None:
    seen = report()
    seen["kubo"]["upload_node_defaults"]["5MiB"]["cid"] = "bafy-other"
    seen["gateways"]["http://gw"]["fresh"] = {"status": 504, "verifies": False}
    seen["gateways"]["http://gw"]["car"] = {"status": 406, "headers": {}}
    seen["solana"]["http://rpc"]["history_search"] = {"answer": "error", "code": -32011}
    del seen["pinata"]["pin_list"]
    found = {d.where: d for d in differences(seen)}
    assert sorted(found) == [
        "gateways.http://gw.car.content_type",
        "gateways.http://gw.fresh.status",
        "gateways.http://gw.fresh.verifies",
        "kubo.upload_node_defaults.5MiB.cid",
        "pinata.pin_list.lists_exactly",
        "solana.http://rpc.history_search.answer",
    ]
    kubo = found["kubo.upload_node_defaults.5MiB.cid"]
    assert (kubo.observed, kubo.assumed) == ("bafy-other", "bafy-c")
    assert "unixfs-v1-2025" in kubo.describe()
    assert found["pinata.pin_list.lists_exactly"].observed == "<not observed>"
    assert found["gateways.http://gw.car.content_type"].observed == "status 406"


def test_a_skipped_mint_is_no_difference() -> None:
    seen = report()
    seen["mint"] = {"skipped": "no mint request given (--request)"}
    assert differences(seen) == []
    seen["mint"] = {"status": "AWAITING_OPERATOR"}
    assert [d.where for d in differences(seen)] == ["mint.status"]


def test_the_report_never_quotes_the_jwt_or_a_urls_key() -> None:
    probes = Probes(
        http=httpx.AsyncClient(),
        pinata_url="https://api.pinata.cloud",
        pinata_jwt="eyJhbGciOi.first-half\nsecond-half-of-the-token",
        kubo_url="http://kubo:5001",
        gateways=("https://gw.example/?pinataGatewayToken=gw-key-1234567890abcdef",),
        solana=("https://rpc.example/?api-key=0123456789abcdef0123",),
    )
    text = (
        "Illegal header value b'Bearer eyJhbGciOi.first-half\\nsecond-half-of-the-token' "
        "at https://rpc.example/?api-key=0123456789abcdef0123 and gw-key-1234567890abcdef"
    )
    scrubbed = probes.scrub(text)
    for secret in ("eyJhbGciOi.first-half", "second-half-of-the-token", "0123456789abcdef0123"):
        assert secret not in scrubbed
    assert "gw-key-1234567890abcdef" not in scrubbed
