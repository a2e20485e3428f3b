"""A read-only IPFS HTTP gateway: ``GET``/``HEAD /ipfs/{cid}``, deserialized or trustless.

By default it serves content only while some provider pins it: once every pin is gone the
content is as good as garbage-collected for readers (404), even though the bytes may still be
on disk. That is what lets post-mint checks and compensation tests see an unpin. Each gateway
can instead behave like a recursive gateway (devstack.ipfs.recursive: content found only N s
after its first pin, 504 with Retry-After meanwhile, served from cache N s after an unpin),
set at ``up --gateways`` or through the admin API (``PUT /gateways/{name}``).

Response formats (Trustless Gateway spec, https://specs.ipfs.tech/http-gateways/trustless-gateway/,
read 2026-12-03):

- ``?format=raw`` or ``Accept: application/vnd.ipld.raw``: the one block the CID names (the
  root or any block under it), ``Content-Type: application/vnd.ipld.raw``. "The Body hash
  MUST match the Multihash from the requested CID."
- ``?format=car`` or ``Accept: application/vnd.ipld.car``: a CARv1 stream of the DAG, blocks
  depth-first, ``Content-Type: application/vnd.ipld.car; version=1; order=dfs; dups=n``
  ("A Gateway MUST always return `dups` in `Content-Type` response header when the duplicate
  status is known"; "a Gateway should respond with `dups=n` if it has control over the
  duplicate status" when the request does not say; ``dups=y`` is honoured when asked for in
  ``Accept`` or ``car-dups``). ``dag-scope=block|entity|all``, default ``all`` (for a file
  ``entity`` is the whole file, like ``all``). ``entity-bytes=from:to`` (negative: from the
  end; ``*``: the end) implies ``entity`` and gives the root and the blocks overlapping the
  range; a range wholly past the file is 400 ("SHOULD return an HTTP 400 Bad Request error
  when the requested range is entirely outside of the entity's byte range"), an empty one the
  root alone ("equivalent to `dag-scope=block`").
- "When both `Accept` HTTP header and `format` query parameter are present, `format` SHOULD
  take precedence."; ``Content-Disposition: attachment`` with ``<cid>.bin`` / ``<cid>.car``;
  ``Content-Location`` when ``format`` was missing (the spec's SHOULD); an ``Etag`` per format
  and scope.
- ``Cache-Control: only-if-cached``: 412 unless the gateway holds the content (the plain
  gateway: pinned; any other: fetched before and still cached), as the spec's "SHOULD return
  HTTP 412 if the root block is not immediately available".
- ``/ipfs/bafkqaaa`` (the empty identity CID) answers 200 as the spec's probe path requires:
  an empty block, or a CAR whose header names it and holds no block.
- Anything else (no format asked): the file's bytes, as before.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

from aiohttp import web

from devstack.faults import FaultRegistry, fault_middleware
from devstack.ipfs.car import car_stream, header
from devstack.ipfs.cid import InvalidCid, ParsedCid, parse_cid
from devstack.ipfs.recursive import GatewayBehaviour, GatewayBehaviours
from devstack.ipfs.store import IpfsStore
from devstack.ipfs.unixfs import FileDag, Node, varint

STORE_KEY = web.AppKey("gateway_store", IpfsStore)
BEHAVIOURS_KEY = web.AppKey("gateway_behaviours", GatewayBehaviours)
TARGET_KEY = web.AppKey("gateway_target", str)
SERVED_KEY = web.AppKey("gateway_served", set[str])  # root keys this gateway served: its cache
POLL_S = 0.1  # how often a held request looks again (retrieval_timeout_s)
IMMUTABLE = "public, max-age=29030400, immutable"
RAW = "application/vnd.ipld.raw"
CAR = "application/vnd.ipld.car"
IDENTITY = 0x00
DAG_SCOPES = ("block", "entity", "all")


def build_gateway_app(
    store: IpfsStore,
    registry: FaultRegistry,
    target: str,
    behaviours: GatewayBehaviours | None = None,
) -> web.Application:
    """``behaviours``: the live behaviour of every gateway (devstack.ipfs.recursive; the admin
    API changes it); this one reads ``target``'s. None: the plain gateway."""
    app = web.Application(middlewares=[fault_middleware(registry, target)])
    app[STORE_KEY] = store
    app[BEHAVIOURS_KEY] = behaviours or GatewayBehaviours((target,), {})
    app[TARGET_KEY] = target
    app[SERVED_KEY] = set()
    app.router.add_get("/ipfs/{cid}", _serve)  # aiohttp adds HEAD for GET routes
    return app


class _BadRequest(Exception):
    pass


def _media_types(accept: str) -> list[tuple[str, dict[str, str]]]:
    """``Accept``'s media types in the order given, each with its parameters."""
    out = []
    for item in accept.split(","):
        kind, *params = (part.strip() for part in item.split(";"))
        values = {}
        for param in params:
            name, _, value = param.partition("=")
            values[name.strip().lower()] = value.strip().strip('"')
        if kind:
            out.append((kind.lower(), values))
    return out


def _negotiate(request: web.Request) -> tuple[str | None, dict[str, str]]:
    """(``raw`` | ``car`` | None for the file's bytes, the CAR parameters asked for)."""
    fmt = request.query.get("format")
    accepted = _media_types(request.headers.get("Accept", ""))
    car_params = next((params for kind, params in accepted if kind == CAR), {})
    if fmt is None:
        for kind, _ in accepted:
            if kind == RAW:
                fmt = "raw"
                break
            if kind == CAR:
                fmt = "car"
                break
    elif fmt not in ("raw", "car"):
        raise _BadRequest(f"unsupported format {fmt!r}: this gateway serves raw and car")
    for query, param in (("car-version", "version"), ("car-order", "order"), ("car-dups", "dups")):
        if query in request.query:
            car_params[param] = request.query[query]  # the query parameter takes precedence
    return fmt, car_params


def _binary(parsed: ParsedCid) -> bytes:
    if parsed.version == 0:
        return parsed.multihash
    return varint(1) + varint(parsed.codec) + parsed.multihash


async def _serve(request: web.Request) -> web.Response:
    cid = request.match_info["cid"]
    try:
        parsed = parse_cid(cid)
        fmt, car_params = _negotiate(request)
        scope = request.query.get("dag-scope", "all")
        entity_bytes = None
        if fmt == "car":
            _check_car_request(request, car_params, scope)
            entity_bytes = _entity_bytes(request.query.get("entity-bytes"))
    except InvalidCid as exc:
        return web.Response(status=400, text=f"invalid CID {cid!r}: {exc}\n")
    except _BadRequest as exc:
        return web.Response(status=400, text=f"{exc}\n")

    headers = {
        "Cache-Control": IMMUTABLE,
        "X-Ipfs-Path": f"/ipfs/{cid}",
        "X-Ipfs-Roots": cid,
        "Vary": "Accept",
    }
    if fmt is not None and "format" not in request.query:
        headers["Content-Location"] = f"/ipfs/{cid}?format={fmt}"

    if parsed.multihash[:1] == bytes([IDENTITY]):
        digest = parsed.multihash[2:]  # the identity "hash" is the data itself
        if fmt == "car":
            return _car_response(request, cid, headers, [header(_binary(parsed))], scope, False)
        return _block_response(request, cid, headers, digest, fmt)

    store = request.app[STORE_KEY]
    found = await _retrieve(request, cid)
    if isinstance(found, web.Response):
        return found
    dag, node = found
    if fmt == "car":
        dups = car_params.get("dups", "n") == "y"
        # The DAG under the block, the header naming the CID as asked (a CIDv1 spelling of a
        # CIDv0 block is the same block).
        byte_range = None
        if entity_bytes is not None:
            scope = "entity"
            byte_range = _resolve_range(entity_bytes, node.length)
            if byte_range is None:
                return web.Response(
                    status=400, text=f"entity-bytes outside the entity's {node.length} bytes\n"
                )
            if byte_range[0] > byte_range[1]:
                scope = "block"  # a zero-length range: the root alone
        chunks = list(
            car_stream(node, scope=scope, dups=dups, root=_binary(parsed), byte_range=byte_range)
        )
        tag = scope if entity_bytes is None else f"{scope}.{request.query['entity-bytes']}"
        return _car_response(request, cid, headers, chunks, tag, dups)
    if fmt == "raw":
        return _block_response(request, cid, headers, node.block, fmt)
    data = await store.read(dag.cid)
    if data is None:
        return web.Response(status=404, text=f"ipfs resolve -r /ipfs/{cid}: not found\n")
    body = data[node.offset : node.offset + node.length]
    return _block_response(request, cid, headers, body, None)


async def _retrieve(request: web.Request, cid: str) -> tuple[FileDag, Node] | web.Response:
    """The block's DAG as this gateway finds it (devstack.ipfs.recursive), or its answer when
    it cannot: 404, or 504 with Retry-After (after holding the request up to
    ``retrieval_timeout_s`` while the content may appear)."""
    store = request.app[STORE_KEY]
    behaviour = request.app[BEHAVIOURS_KEY].get(request.app[TARGET_KEY])
    served = request.app[SERVED_KEY]
    deadline = time.monotonic() + behaviour.retrieval_timeout_s
    if "only-if-cached" in request.headers.get("Cache-Control", ""):
        # Path Gateway spec: "If data is not cached locally, and the response requires an
        # expensive remote fetch, a 412 Precondition Failed ... should be returned". The plain
        # gateway's dataset (what is pinned) is local; any other has what it fetched before
        # and still caches.
        history = store.pin_history(cid)
        local = behaviour == GatewayBehaviour()
        cached = history.held or (
            not local
            and history.last_unpinned is not None
            and time.time() < history.last_unpinned + behaviour.cache_after_unpin_s
        )
        found = await store.dag(cid) if cached else None
        if found is not None and not local and parse_cid(found[0].cid).key not in served:
            found = None
        return found if found is not None else web.Response(status=412)
    while True:
        history = store.pin_history(cid)
        now = time.time()
        found = None
        if history.held:
            assert history.first_pinned is not None
            if now >= history.first_pinned + behaviour.appear_after_s:
                found = await store.dag(cid)
            missing = False  # pinned, not announced yet: still being found
        else:
            if history.last_unpinned is not None and now < (
                history.last_unpinned + behaviour.cache_after_unpin_s
            ):
                cached = await store.dag(cid)
                if cached is not None and parse_cid(cached[0].cid).key in served:
                    found = cached
            missing = True
        if found is not None:
            served.add(parse_cid(found[0].cid).key)
            return found
        if missing and behaviour.missing_status == 404:
            return web.Response(status=404, text=f"ipfs resolve -r /ipfs/{cid}: not found\n")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return web.Response(
                status=504,
                text=f"retrieval timeout: /ipfs/{cid}: no providers found in time\n",
                headers={"Retry-After": str(behaviour.retry_after_s)},
            )
        await asyncio.sleep(min(POLL_S, remaining))


def _check_car_request(request: web.Request, params: dict[str, str], scope: str) -> None:
    if params.get("version", "1") != "1":
        raise _BadRequest(f"unsupported CAR version {params['version']!r}: only 1")
    if params.get("order", "dfs") not in ("dfs", "unk", ""):
        raise _BadRequest(f"unsupported CAR order {params['order']!r}: dfs or unk")
    if params.get("dups", "n") not in ("y", "n"):
        raise _BadRequest(f"invalid CAR dups {params['dups']!r}: y or n")
    if scope not in DAG_SCOPES:
        raise _BadRequest(f"invalid dag-scope {scope!r}: one of {', '.join(DAG_SCOPES)}")


def _entity_bytes(text: str | None) -> tuple[int, int | None] | None:
    """``from:to`` -> (from, to or None for ``*``); None when absent."""
    if text is None:
        return None
    match = re.fullmatch(r"(-?\d+):(-?\d+|\*)", text)
    if match is None:
        raise _BadRequest(f"invalid entity-bytes {text!r}: from:to, integers or '*'")
    last = match.group(2)
    return int(match.group(1)), None if last == "*" else int(last)


def _resolve_range(entity_bytes: tuple[int, int | None], length: int) -> tuple[int, int] | None:
    """(first, last) byte of the entity, inclusive; None when wholly outside it. first > last
    means a zero-length range."""
    start, end = entity_bytes
    first = start if start >= 0 else max(0, length + start)
    last = length - 1 if end is None else (end if end >= 0 else length + end)
    if length and first >= length:
        return None
    return first, min(last, length - 1)


def _car_response(
    request: web.Request,
    cid: str,
    headers: dict[str, str],
    chunks: list[bytes],
    tag: str,
    dups: bool,
) -> web.Response:
    dups_flag = "y" if dups else "n"
    etag = f'W/"{cid}.car.{tag}.dfs.{dups_flag}"'
    headers = {
        **headers,
        "Etag": etag,
        "Content-Disposition": f'attachment; filename="{cid}.car"',
        "X-Content-Type-Options": "nosniff",
        "Accept-Ranges": "none",
    }
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    response = web.Response(body=b"".join(chunks), headers=headers)
    # Set after construction: aiohttp's content_type= argument drops the parameters.
    response.headers["Content-Type"] = f"{CAR}; version=1; order=dfs; dups={dups_flag}"
    return response


def _block_response(
    request: web.Request, cid: str, headers: dict[str, str], body: bytes, fmt: str | None
) -> web.Response:
    if fmt == "raw":
        headers = {
            **headers,
            "Etag": f'"{cid}.raw"',
            "Content-Disposition": f'attachment; filename="{cid}.bin"',
            "X-Content-Type-Options": "nosniff",
        }
        content_type = RAW
    else:
        headers = {**headers, "Etag": f'"{cid}"'}
        content_type = sniff_content_type(body)
    if headers["Etag"] in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=content_type, headers=headers)


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
