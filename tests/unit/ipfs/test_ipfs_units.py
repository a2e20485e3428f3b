"""Pure checks of the IPFS emulator's parts: JSON.stringify bytes, the rate limit, pin filters,
the store surviving a restart, content sniffing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devstack.ipfs import jsjson
from devstack.ipfs.cid import InvalidCid, parse_cid
from devstack.ipfs.gateway import sniff_content_type
from devstack.ipfs.limits import PinataLimits, retry_after_header
from devstack.ipfs.pinlist import FilterError, PinFilter
from devstack.ipfs.store import IpfsStore


@pytest.mark.parametrize(
    ("value", "js"),
    [
        (1.0, "1"),
        (0.5, "0.5"),
        (-0.0, "0"),
        (1e-7, "1e-7"),
        (0.00001, "0.00001"),
        (1.5e-7, "1.5e-7"),
        (123.456, "123.456"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (2.5e300, "2.5e+300"),
        (12345678901234567890, "12345678901234567000"),  # beyond 2**53: a double in JS
    ],
)
def test_numbers_print_like_javascript(value: float, js: str) -> None:
    assert jsjson.stringify(value) == js


def test_stringify_matches_node() -> None:
    parsed = jsjson.loads('{"b":1,"10":2,"2":3,"a":"\\ud800\\n\\u2028é","x":[1.0,true,null]}')
    expected = '{"2":3,"10":2,"b":1,"a":"\\ud800\\n\u2028é","x":[1,true,null]}'
    assert jsjson.stringify(parsed) == expected


def test_plain_json_is_unchanged() -> None:
    doc = {"name": "NFT #1", "attributes": [{"trait_type": "tier", "value": "gold"}]}
    assert jsjson.stringify(doc) == json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def test_rate_limit_window_and_runtime_change() -> None:
    now = [1000.0]
    limits = PinataLimits(2, clock=lambda: now[0])
    assert limits.try_acquire() is None
    now[0] += 10
    assert limits.try_acquire() is None
    assert limits.try_acquire() == pytest.approx(50.0)  # the first leaves the window at +60
    assert retry_after_header(49.2) == "50"
    assert limits.set(0) == 2  # unlimited
    assert all(limits.try_acquire() is None for _ in range(100))
    limits.set(3)
    now[0] += 60.5  # everything from before has left the window
    assert [limits.try_acquire() is None for _ in range(4)] == [True, True, True, False]


def test_pin_filter_parsing_and_ops(tmp_path: Path) -> None:
    store = IpfsStore(tmp_path)
    cid = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
    store.pin("pinata", cid, size=20, name="image-7.png", keyvalues={"mint": "m-7", "n": 7})
    (pin,) = store.pins("pinata")

    def match(**query: str) -> bool:
        return PinFilter.from_query(query).matches(pin)

    kv = "metadata[keyvalues]"
    assert match(**{kv: json.dumps({"mint": {"value": "m-7", "op": "eq"}})})
    assert not match(**{kv: json.dumps({"mint": {"value": "m-8", "op": "eq"}})})
    assert match(**{kv: json.dumps({"n": {"value": 5, "op": "gt"}})})
    assert match(**{kv: json.dumps({"n": {"value": 1, "secondValue": 9, "op": "between"}})})
    assert match(**{kv: json.dumps({"mint": {"value": "M-%", "op": "iLike"}})})
    assert match(**{"metadata[keyvalues][mint]": json.dumps({"value": "m-7", "op": "eq"})})
    assert match(**{"metadata[name]": "image"}, status="pinned", hashContains="QmT78")
    assert not match(status="unpinned")
    for bad in ({"status": "gone"}, {kv: "{"}, {"pageLimit": "1001"}):
        with pytest.raises(FilterError):
            PinFilter.from_query(bad)
    store.close()


async def test_store_survives_restart_and_tracks_pins_per_provider(tmp_path: Path) -> None:
    store = IpfsStore(tmp_path)
    added = await store.add(b"hello world\n", cid_version=0)
    assert added.cid == "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
    store.pin("pinata", added.cid, size=added.dag_size)
    store.pin("kubo", added.cid, size=added.dag_size)
    assert store.unpin("pinata", added.cid) == 1
    store.close()

    reopened = IpfsStore(tmp_path)
    assert reopened.is_held(added.cid)  # kubo still pins it
    assert await reopened.read(added.cid) == b"hello world\n"
    reopened.unpin("kubo", added.cid)
    assert not reopened.is_held(added.cid)
    assert [p.active for p in reopened.pins("pinata")] == [False]
    reopened.close()


def test_parse_cid_rejects_garbage() -> None:
    for bad in ("", "not-a-cid", "Qm" + "0" * 44, "bafy!!"):
        with pytest.raises(InvalidCid):
            parse_cid(bad)


def test_sniffing() -> None:
    assert sniff_content_type(b"\x89PNG\r\n\x1a\n....") == "image/png"
    assert sniff_content_type(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert sniff_content_type(b"GIF89a...") == "image/gif"
    assert sniff_content_type(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert sniff_content_type(b' {"a": 1}') == "application/json"
    assert sniff_content_type(b"{not json") == "application/octet-stream"
