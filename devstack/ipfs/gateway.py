"""A read-only IPFS HTTP gateway: ``GET``/``HEAD /ipfs/{cid}``.

It serves content only while some provider pins it: once every pin is gone the content is
as good as garbage-collected for readers (404), even though the bytes may still be on disk.
That is what lets post-mint checks and compensation tests see an unpin.
"""

from __future__ import annotations

import json

from aiohttp import web

from devstack.faults import FaultRegistry, fault_middleware
from devstack.ipfs.cid import InvalidCid, parse_cid
from devstack.ipfs.store import IpfsStore

STORE_KEY = web.AppKey("gateway_store", IpfsStore)
IMMUTABLE = "public, max-age=29030400, immutable"


def build_gateway_app(store: IpfsStore, registry: FaultRegistry, target: str) -> web.Application:
    app = web.Application(middlewares=[fault_middleware(registry, target)])
    app[STORE_KEY] = store
    app.router.add_get("/ipfs/{cid}", _serve)  # aiohttp adds HEAD for GET routes
    return app


async def _serve(request: web.Request) -> web.Response:
    cid = request.match_info["cid"]
    try:
        parse_cid(cid)
    except InvalidCid as exc:
        return web.Response(status=400, text=f"invalid CID {cid!r}: {exc}\n")
    store = request.app[STORE_KEY]
    data = await store.read(cid) if store.is_held(cid) else None
    if data is None:
        return web.Response(status=404, text=f"ipfs resolve -r /ipfs/{cid}: not found\n")
    etag = f'"{cid}"'
    headers = {
        "Etag": etag,
        "Cache-Control": IMMUTABLE,
        "X-Ipfs-Path": f"/ipfs/{cid}",
        "X-Ipfs-Roots": cid,
    }
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=data, content_type=sniff_content_type(data), headers=headers)


def sniff_content_type(data: bytes) -> str:
    """The handful of types an NFT's image and metadata come as; else opaque bytes."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.lstrip()[:1] in (b"{", b"["):
        try:
            json.loads(data)
        except ValueError:
            pass
        else:
            return "application/json"
    return "application/octet-stream"
