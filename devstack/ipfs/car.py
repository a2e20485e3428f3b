"""CARv1 streams of a file's DAG (the trustless gateway's ``format=car``, Kubo's ``dag export``).

CARv1 (https://ipld.io/specs/transport/car/carv1/): a header, then sections. The header is
``varint(len) + dag-cbor({"roots": [CID], "version": 1})``; each section is
``varint(len(cid) + len(block)) + cid + block``. In dag-cbor a map's keys are sorted by length
then bytes ("roots" before "version") and a CID is tag 42 over a byte string holding the
binary CID behind a 0x00 multibase prefix (https://ipld.io/specs/codecs/dag-cbor/spec/).
"""

from __future__ import annotations

from collections.abc import Iterator

from devstack.ipfs.unixfs import Node, varint


def _cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for extra, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * width):
            return bytes([major << 5 | extra]) + n.to_bytes(width, "big")
    raise ValueError("too large for CBOR")


def _cbor_text(text: str) -> bytes:
    raw = text.encode()
    return _cbor_head(3, len(raw)) + raw


def header(root_cid: bytes) -> bytes:
    """The CARv1 header naming one root, with its length prefix."""
    link = b"\x00" + root_cid
    body = (
        _cbor_head(5, 2)
        + _cbor_text("roots")
        + _cbor_head(4, 1)
        + b"\xd8\x2a"  # tag 42: CID
        + _cbor_head(2, len(link))
        + link
        + _cbor_text("version")
        + _cbor_head(0, 1)
    )
    return varint(len(body)) + body


def section(node: Node) -> bytes:
    return varint(len(node.cid) + len(node.block)) + node.cid + node.block


def car_stream(
    top: Node,
    *,
    scope: str = "all",
    dups: bool = False,
    root: bytes | None = None,
    byte_range: tuple[int, int] | None = None,
) -> Iterator[bytes]:
    """The CAR of the DAG under ``top``: header (naming ``root``, the CID as asked, else
    ``top``'s), then its blocks depth-first (``order=dfs``); ``scope`` ``block`` stops after
    ``top`` (``entity`` and ``all`` are the whole file). ``byte_range`` (first, last file byte,
    inclusive): only ``top`` and the blocks whose bytes overlap it, which is what the Trustless
    Gateway spec's ``entity-bytes`` asks ("only the minimal set of blocks necessary to verify
    the specified byte range")."""
    yield header(top.cid if root is None else root)
    if scope == "block":
        yield section(top)
        return
    seen: set[bytes] = set()
    stack = [top]
    while stack:
        node = stack.pop()
        if byte_range is not None and node is not top:
            first, last = byte_range
            if node.offset > last or node.offset + node.length - 1 < first:
                continue
        if dups or node.cid not in seen:
            seen.add(node.cid)
            yield section(node)
        stack.extend(reversed(node.children))
