"""`read_bounded`: an untrusted body read with limits on the wire and decoded, one encoding at
most, never more than about the limit in memory (tracemalloc measures it); `capped_error_answer`
beside it. Bodies come from an httpx.MockTransport streaming raw bytes in chunks, as a socket
would (never decoded or buffered by httpx first)."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import AsyncIterator

import httpx
import pytest

from mintsaga.http_errors import (
    ACCEPT_ENCODING,
    BodyRefused,
    body_coding,
    read_bounded,
    wire_allowance,
)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64  # 16 KiB of image-like bytes
LIMIT = 1 * 2**20


class Chunks(httpx.AsyncByteStream):
    """A body as a server sends it: raw bytes in chunks; counts what was read."""

    def __init__(self, raw: bytes, size: int = 16 * 1024) -> None:
        self.raw = raw
        self.size = size
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.raw), self.size):
            chunk = self.raw[start : start + self.size]
            self.read += len(chunk)
            yield chunk


async def read(
    raw: bytes, headers: dict[str, str] | list[tuple[str, str]], limit: int = LIMIT
) -> tuple[bytes | BodyRefused, Chunks]:
    body = Chunks(raw)

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=headers, stream=body)

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http,
        http.stream("GET", "http://host/x") as response,
    ):
        try:
            return await read_bounded(response, limit), body
        except BodyRefused as exc:
            return exc, body


def deflate_raw(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("raw", "encoding"),
    [
        (PNG, None),
        (PNG, "identity"),
        (gzip.compress(PNG), "gzip"),
        (gzip.compress(PNG), "x-gzip"),
        (gzip.compress(PNG), "GZIP"),
        (zlib.compress(PNG), "deflate"),
        (deflate_raw(PNG), "deflate"),  # the raw deflate some servers send
        (gzip.compress(PNG[:100]) + gzip.compress(PNG[100:]), "gzip"),  # two members
    ],
)
async def test_one_encoding_is_decoded(raw: bytes, encoding: str | None) -> None:
    headers = {"Content-Encoding": encoding} if encoding else {}
    body, _ = await read(raw, headers)
    assert body == PNG


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Encoding": "gzip, gzip"},
        {"Content-Encoding": "gzip,deflate"},
        {"Content-Encoding": "deflate, gzip"},
        {"Content-Encoding": "gzip, br"},
        [("Content-Encoding", "gzip"), ("Content-Encoding", "gzip")],  # the header twice
    ],
)
async def test_stacked_encodings_are_refused_before_reading(
    headers: dict[str, str] | list[tuple[str, str]],
) -> None:
    bomb = gzip.compress(gzip.compress(bytes(64 * 2**20)))
    refused, body = await read(bomb, headers)
    assert isinstance(refused, BodyRefused) and not refused.too_large
    assert "at most one encoding" in refused.reason
    assert body.read == 0


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "x-custom"])
async def test_an_encoding_not_decoded_here_is_refused(encoding: str) -> None:
    refused, body = await read(PNG, {"Content-Encoding": encoding})
    assert isinstance(refused, BodyRefused) and encoding in refused.reason
    assert body.read == 0


def test_accept_encoding_names_only_what_is_decoded() -> None:
    asked = {c.strip() for c in ACCEPT_ENCODING.split(",")}
    for coding in asked:
        response = httpx.Response(200, headers={"Content-Encoding": coding})
        assert body_coding(response) == coding


@pytest.mark.parametrize(
    ("name", "raw", "encoding"),
    [
        ("gzip", gzip.compress(bytes(256 * 2**20)), "gzip"),  # 256 MiB in ~250 KB
        ("deflate", zlib.compress(bytes(256 * 2**20)), "deflate"),
    ],
)
async def test_a_bomb_is_refused_with_memory_near_the_limit(
    name: str, raw: bytes, encoding: str
) -> None:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        refused, body = await read(raw, {"Content-Encoding": encoding})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(refused, BodyRefused) and refused.too_large, refused
    assert f"more than {LIMIT}" in refused.reason
    # The limit, the decoder's steps and the chunks: not the 256 MiB the body holds.
    assert peak < LIMIT + 1 * 2**20, f"{name}: {peak} bytes allocated at the peak"
    assert body.read < len(raw)  # it stopped reading


async def test_identity_body_over_the_limit_stops_reading() -> None:
    refused, body = await read(bytes(4 * LIMIT), {})
    assert isinstance(refused, BodyRefused) and refused.too_large
    assert body.read <= LIMIT + 16 * 1024


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    refused, body = await read(PNG, {"Content-Length": str(LIMIT + 1)})
    assert isinstance(refused, BodyRefused) and refused.too_large and "declares" in refused.reason
    assert body.read == 0


async def test_compressed_bytes_on_the_wire_are_limited_too() -> None:
    # Incompressible bytes, gzip-encoded: refused for what crosses the wire, before the
    # (larger) limit on decoded bytes is reached.
    noise = b"".join(zlib.crc32(i.to_bytes(4, "big")).to_bytes(4, "big") for i in range(2**18))
    body = Chunks(gzip.compress(noise, 1))

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, stream=body)

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http,
        http.stream("GET", "http://host/x") as response,
    ):
        with pytest.raises(BodyRefused) as refused:
            await read_bounded(response, 4 * LIMIT, max_wire_bytes=LIMIT // 2)
    assert refused.value.too_large and "on the wire" in refused.value.reason
    assert body.read <= LIMIT // 2 + 16 * 1024


def test_the_wire_allowance_leaves_room_for_compressed_images() -> None:
    assert LIMIT < wire_allowance(LIMIT) < LIMIT * 1.05


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (gzip.compress(PNG)[:-30], "ends inside"),
        (b"\x1f\x8b\x08\x00garbage-not-a-gzip-stream", "not valid gzip"),
    ],
)
async def test_a_broken_stream_is_refused(raw: bytes, said: str) -> None:
    refused, _ = await read(raw, {"Content-Encoding": "gzip"})
    assert isinstance(refused, BodyRefused) and said in refused.reason


async def test_a_buffered_response_is_checked_against_the_limit() -> None:
    # A transport that read the body already (httpx.Response(content=...)).
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=bytes(LIMIT + 1))

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http,
        http.stream("GET", "http://host/x") as response,
    ):
        with pytest.raises(BodyRefused):
            await read_bounded(response, LIMIT)


@pytest.mark.parametrize(
    ("raw", "encoding"),
    [
        (gzip.compress(PNG), "gzip"),
        (zlib.compress(PNG), "deflate"),
        (deflate_raw(PNG), "deflate"),  # a 1-byte first chunk once hid the raw form
    ],
)
@pytest.mark.parametrize("size", [1, 2, 3])
async def test_tiny_chunks_decode_the_same(raw: bytes, encoding: str, size: int) -> None:
    body = Chunks(raw, size=size)
    headers = {"Content-Encoding": encoding}

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=headers, stream=body)

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http,
        http.stream("GET", "http://host/x") as response,
    ):
        assert await read_bounded(response, LIMIT) == PNG
