"""A Pinata-compatible pinning API (the primary IPFS provider) over the shared store.

Request flow: fault injection (outermost) → bearer-JWT auth → rate limit → handler, so an
injected fault hits a request before Pinata itself would have looked at it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import BodyPartReader, web

from devstack.faults import FaultRegistry, fault_middleware
from devstack.ipfs import jsjson
from devstack.ipfs.cid import InvalidCid
from devstack.ipfs.limits import DEFAULT_PLAN, PinataLimits, PinataPlan, retry_after_header
from devstack.ipfs.pinlist import FilterError, PinFilter
from devstack.ipfs.store import IpfsStore, Pin

TARGET = "pinata"
USER_ID = "00000000-0000-4000-8000-000000000001"  # one devstack account owns every pin
MAX_KEYVALUES = 10  # Pinata's documented limit per pin
MAX_BODY = 512 * 1024 * 1024

LIMITS_KEY = web.AppKey("pinata_limits", PinataLimits)  # aiohttp wants typed keys
STORE_KEY = web.AppKey("pinata_store", IpfsStore)
# CID -> the content type its upload declared (the file part's, or JSON for pinJSONToIPFS), for
# pinList's ``mime_type``; kept by the app, not the shared store (Kubo has no such field).
MIME_KEY = web.AppKey("pinata_mime_types", dict[str, str])

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def pinata_error(status: int, reason: str, details: str, **headers: str) -> web.Response:
    """Pinata's error body: ``{"error": {"reason", "details"}}``."""
    return web.json_response(
        {"error": {"reason": reason, "details": details}}, status=status, headers=headers or None
    )


def build_pinata_app(
    store: IpfsStore,
    registry: FaultRegistry,
    *,
    jwt: str,
    requests_per_minute: int | None = None,
    plan: str | PinataPlan = DEFAULT_PLAN,
) -> web.Application:
    """The Pinata face, limited as ``plan`` (devstack.ipfs.limits; ``requests_per_minute``
    overrides its general limit). The limits change at run time through ``app[LIMITS_KEY]``,
    or ``store.pinata_limits`` for code that holds only the store (the admin API)."""
    limits = PinataLimits(requests_per_minute, plan=plan)
    store.pinata_limits = limits
    app = web.Application(
        client_max_size=MAX_BODY,
        middlewares=[fault_middleware(registry, TARGET), _auth(jwt), _rate_limit(limits)],
    )
    app[LIMITS_KEY] = limits
    app[STORE_KEY] = store
    app[MIME_KEY] = {}
    app.router.add_get("/data/testAuthentication", _test_authentication)
    app.router.add_post("/pinning/pinFileToIPFS", _pin_file)
    app.router.add_post("/pinning/pinJSONToIPFS", _pin_json)
    app.router.add_delete("/pinning/unpin/{cid}", _unpin)
    app.router.add_get("/data/pinList", _pin_list)
    return app


# -- middlewares -------------------------------------------------------------------------


def _auth(jwt: str) -> Any:
    expected = f"Bearer {jwt}"

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Authorization")
        if header is None:
            return pinata_error(401, "NO_AUTHENTICATION", "No authentication was provided")
        if header.strip() != expected:
            return pinata_error(401, "INVALID_CREDENTIALS", "Invalid/expired credentials provided")
        return await handler(request)

    return middleware


def _rate_limit(limits: PinataLimits) -> Any:
    """429 past the plan's limit (devstack.ipfs.limits: the general bucket, or ``/data/*``'s).

    Pinata's limits page documents the limits, not the 429 answer. What a real 429 carried, as
    reported in https://github.com/ipfs/ipfs-desktop/issues/1954 (2022, Pinata's API behind
    nginx/Express): ``Retry-After: 60``, ``X-RateLimit-Limit``, ``X-RateLimit-Remaining: 0`` and
    ``X-RateLimit-Reset`` (Unix seconds), a JSON body. The same headers here, ``Retry-After``
    the seconds until the window frees a place (the least surprising reading; Pinata's fixed 60
    is an upper bound of it). The body's fields are not documented either: Pinata's error shape
    (``{"error": {"reason", "details"}}``, as its other errors), reason ``RATE_LIMITED``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        refusal = limits.admit(request.method, request.path)
        if refusal is not None:
            return pinata_error(
                429,
                "RATE_LIMITED",
                f"Rate limit of {refusal.limit} requests per minute exceeded"
                + (" for /data/ endpoints" if refusal.bucket == "data" else ""),
                **{
                    "Retry-After": retry_after_header(refusal.wait_s),
                    "X-RateLimit-Limit": str(refusal.limit),
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(refusal.reset_epoch_s),
                },
            )
        return await handler(request)

    return middleware


# -- handlers ----------------------------------------------------------------------------


async def _test_authentication(request: web.Request) -> web.Response:
    return web.json_response(
        {"message": "Congratulations! You are communicating with the Pinata API!"}
    )


async def _pin_file(request: web.Request) -> web.Response:
    if not request.content_type.startswith("multipart/"):
        return pinata_error(400, "INVALID_REQUEST", "Expected a multipart/form-data body")
    data: bytes | None = None
    filename: str | None = None
    content_type: str | None = None
    metadata_text = options_text = None
    reader = await request.multipart()
    async for part in reader:
        if not isinstance(part, BodyPartReader):
            continue  # nested multipart (directory uploads) is not supported
        if part.name == "file":
            if data is not None:
                return pinata_error(
                    400, "INVALID_REQUEST", "Only one file per request is supported"
                )
            data = bytes(await part.read())
            filename = part.filename
            content_type = part.headers.get("Content-Type")
        elif part.name == "pinataMetadata":
            metadata_text = await part.text()
        elif part.name == "pinataOptions":
            options_text = await part.text()
    if data is None:
        return pinata_error(400, "INVALID_REQUEST", "A file must be provided in the 'file' field")
    try:
        metadata = _parse_json_field(metadata_text, "pinataMetadata")
        options = _parse_json_field(options_text, "pinataOptions")
    except ValueError as exc:
        return pinata_error(400, "INVALID_REQUEST", str(exc))
    return await _pin_bytes(
        request, data, metadata, options, default_name=filename, content_type=content_type
    )


async def _pin_json(request: web.Request) -> web.Response:
    try:
        body = jsjson.loads(await request.read())
    except ValueError:
        return pinata_error(400, "INVALID_REQUEST", "The request body is not valid JSON")
    if not isinstance(body, dict) or "pinataContent" not in body:
        return pinata_error(400, "INVALID_REQUEST", "pinataContent is required")
    metadata = body.get("pinataMetadata") or {}
    options = body.get("pinataOptions") or {}
    if not isinstance(metadata, dict) or not isinstance(options, dict):
        return pinata_error(400, "INVALID_REQUEST", "pinataMetadata and pinataOptions are objects")
    data = jsjson.stringify(body["pinataContent"]).encode("utf-8")
    return await _pin_bytes(
        request, data, metadata, options, default_name=None, content_type="application/json"
    )


async def _pin_bytes(
    request: web.Request,
    data: bytes,
    metadata: dict[str, Any],
    options: dict[str, Any],
    *,
    default_name: str | None,
    content_type: str | None,
) -> web.Response:
    cid_version = options.get("cidVersion", 0)
    if cid_version not in (0, 1) or isinstance(cid_version, bool):
        return pinata_error(400, "INVALID_REQUEST", "pinataOptions.cidVersion must be 0 or 1")
    if options.get("wrapWithDirectory"):
        return pinata_error(
            400, "INVALID_REQUEST", "wrapWithDirectory is not supported by the devstack"
        )
    name = metadata.get("name", default_name)
    keyvalues = metadata.get("keyvalues")
    problem = _check_metadata(name, keyvalues)
    if problem:
        return pinata_error(400, "INVALID_REQUEST", problem)
    store = request.app[STORE_KEY]
    added = await store.add(data, cid_version=cid_version)
    pin, duplicate = store.pin(
        TARGET, added.cid, size=added.dag_size, name=name, keyvalues=keyvalues
    )
    if content_type:
        request.app[MIME_KEY][added.cid] = content_type.split(";", 1)[0].strip()
    return web.json_response(
        {
            "IpfsHash": added.cid,
            "PinSize": added.dag_size,
            "Timestamp": pin.date_pinned,
            "isDuplicate": duplicate,
        }
    )


async def _unpin(request: web.Request) -> web.Response:
    cid = request.match_info["cid"]
    store = request.app[STORE_KEY]
    try:
        removed = store.unpin(TARGET, cid)
    except InvalidCid:
        return pinata_error(400, "INVALID_HASH", f"The hash provided is not valid: {cid}")
    if not removed:
        # Undocumented: Pinata's unpin reference lists no error answers. This form is the one
        # reported most (e.g. github.com/PinataCloud/Pinata-SDK users' logs, 2023:
        # {"error":{"reason":"CURRENT_USER_HAS_NOT_PINNED_CID","details":"The current user has
        # not pinned the cid: Qm..."}}); an older one was 400 {"error":"Current user has not
        # pinned hash: Qm..."} (github.com/dappnode/DAppNodeSDK/issues/136, 2021). The client
        # accepts both (src/mintsaga/ipfs/pinata.py).
        return pinata_error(
            400,
            "CURRENT_USER_HAS_NOT_PINNED_CID",
            f"The current user has not pinned the cid: {cid}",
        )
    return web.Response(text="OK")


async def _pin_list(request: web.Request) -> web.Response:
    try:
        pin_filter = PinFilter.from_query(request.query)
    except FilterError as exc:
        return pinata_error(400, "INVALID_REQUEST", str(exc))
    count, page = pin_filter.apply(request.app[STORE_KEY].pins(TARGET))
    mime = request.app[MIME_KEY]
    return web.json_response({"count": count, "rows": [_row(pin, mime) for pin in page]})


# -- helpers -----------------------------------------------------------------------------


def _parse_json_field(text: str | None, field: str) -> dict[str, Any]:
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"{field} is not valid JSON") from None
    if not isinstance(value, dict):
        raise ValueError(f"{field} must be a JSON object")
    return value


def _check_metadata(name: Any, keyvalues: Any) -> str | None:
    if name is not None and not isinstance(name, str):
        return "pinataMetadata.name must be a string"
    if keyvalues is None:
        return None
    if not isinstance(keyvalues, dict):
        return "pinataMetadata.keyvalues must be an object"
    if len(keyvalues) > MAX_KEYVALUES:
        return f"pinataMetadata.keyvalues may hold at most {MAX_KEYVALUES} keys"
    for key, value in keyvalues.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return f"pinataMetadata.keyvalues.{key} must be a string or a number"
    return None


def _row(pin: Pin, mime_types: dict[str, str]) -> dict[str, Any]:
    return {
        "id": pin.id,
        "ipfs_pin_hash": pin.cid,
        "size": pin.size,
        "user_id": USER_ID,
        "date_pinned": pin.date_pinned,
        "date_unpinned": pin.date_unpinned,
        "metadata": {"name": pin.name, "keyvalues": pin.keyvalues},
        "regions": [
            {"regionId": "FRA1", "currentReplicationCount": 1, "desiredReplicationCount": 1}
        ],
        "mime_type": mime_types.get(pin.cid),
        "number_of_files": 1,
    }
