"""A subset of Kubo's RPC API (the backup IPFS provider) over the shared store.

Kubo's RPC is POST-only (anything else is 405), reports command failures as HTTP 500 with
``{"Message", "Code": 0, "Type": "error"}`` and bad arguments as 400 with ``Code: 1``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeGuard

from aiohttp import BodyPartReader, web

from devstack.faults import FaultRegistry, fault_middleware
from devstack.ipfs.car import car_stream
from devstack.ipfs.cid import InvalidCid, parse_cid
from devstack.ipfs.kubo_config import AddFlags, KuboConfig, KuboConfigError, UnsupportedImport
from devstack.ipfs.store import IpfsStore, build_dag

TARGET = "kubo"
VERSION = "0.39.0-devstack"
MAX_BODY = 512 * 1024 * 1024
STORE_KEY = web.AppKey("kubo_store", IpfsStore)
CONFIG_KEY = web.AppKey("kubo_config", KuboConfig)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class KuboError(Exception):
    """A command failure, rendered the way Kubo renders it."""

    def __init__(self, message: str, *, client: bool = False) -> None:
        super().__init__(message)
        self.client = client

    def response(self) -> web.Response:
        return web.json_response(
            {"Message": str(self), "Code": 1 if self.client else 0, "Type": "error"},
            status=400 if self.client else 500,
        )


def build_kubo_app(
    store: IpfsStore, registry: FaultRegistry, config: KuboConfig | None = None
) -> web.Application:
    """``config``: the node's Import configuration (the admin API shares it; default: a
    fresh ``ipfs init``, every Import key unset)."""
    app = web.Application(
        client_max_size=MAX_BODY,
        middlewares=[fault_middleware(registry, TARGET), _post_only, _kubo_errors],
    )
    app[STORE_KEY] = store
    app[CONFIG_KEY] = config or KuboConfig()
    for path, handler in {
        "add": _add,
        "cat": _cat,
        "config": _config,
        "config/show": _config_show,
        "config/profile/apply": _config_profile_apply,
        "dag/export": _dag_export,
        "pin/add": _pin_add,
        "pin/rm": _pin_rm,
        "pin/ls": _pin_ls,
        "version": _version,
    }.items():
        app.router.add_route("*", f"/api/v0/{path}", handler)
    return app


@web.middleware
async def _post_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method != "POST" and request.path.startswith("/api/v0/"):
        return web.Response(status=405, text="405 - Method Not Allowed")
    return await handler(request)


@web.middleware
async def _kubo_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except KuboError as exc:
        return exc.response()


# -- arguments ---------------------------------------------------------------------------


def _bool(request: web.Request, name: str, default: bool) -> bool:
    text = request.query.get(name)
    if text is None:
        return default
    if text.lower() in ("", "1", "t", "true"):
        return True
    if text.lower() in ("0", "f", "false"):
        return False
    raise KuboError(
        f'Could not convert value "{text}" to type "bool" (for option "-{name}")', client=True
    )


def _args(request: web.Request, *, required: bool) -> list[str]:
    args = request.query.getall("arg", [])
    if required and not args:
        raise KuboError('argument "ipfs-path" is required', client=True)
    for arg in args:
        _parse(arg)
    return args


def _parse(arg: str) -> str:
    """Accept ``CID`` or ``/ipfs/CID``; return the CID."""
    cid = arg.removeprefix("/ipfs/").rstrip("/")
    try:
        parse_cid(cid)
    except InvalidCid as exc:
        raise KuboError(f'invalid path "{arg}": {exc}') from None
    return cid


# -- handlers ----------------------------------------------------------------------------


async def _add(request: web.Request) -> web.Response:
    """``ipfs add``: each flag that changes the CID overrides the node's Import config
    (devstack.ipfs.kubo_config); options the devstack does not model are refused."""
    _reject_unsupported(request)
    flags = AddFlags(
        cid_version=_int(request, "cid-version"),
        raw_leaves=_opt_bool(request, "raw-leaves"),
        chunker=request.query.get("chunker") or None,
        hash=request.query.get("hash") or None,
        max_file_links=_int(request, "max-file-links"),
        trickle=_opt_bool(request, "trickle"),
    )
    try:
        layout = request.app[CONFIG_KEY].layout_for(flags)
    except UnsupportedImport as exc:
        raise KuboError(f"devstack does not model {exc}", client=True) from None
    except KuboConfigError as exc:
        raise KuboError(str(exc)) from None
    pin = _bool(request, "pin", True)
    only_hash = _bool(request, "only-hash", False)
    if not request.content_type.startswith("multipart/"):
        raise KuboError("file argument was nil", client=True)
    store = request.app[STORE_KEY]
    lines = []
    reader = await request.multipart()
    async for part in reader:
        if not _is_file(part):
            continue  # directories and nested parts are not supported
        data = bytes(await part.read())
        if only_hash:
            dag = await build_dag(data, layout)
            cid, size = dag.cid, dag.dag_size
        else:
            added = await store.add(data, layout=layout)
            cid, size = added.cid, added.dag_size
            if pin:
                store.pin(TARGET, cid, size=size, name=part.filename)
        name = part.filename or cid
        lines.append(json.dumps({"Name": name, "Hash": cid, "Size": str(size)}))
    if not lines:
        raise KuboError("file argument was nil", client=True)
    return web.Response(
        text="\n".join(lines) + "\n",
        content_type="application/json",
        headers={"X-Chunked-Output": "1"},
    )


def _is_file(part: object) -> TypeGuard[BodyPartReader]:
    if not isinstance(part, BodyPartReader):
        return False
    return not part.headers.get("Content-Type", "").startswith("application/x-directory")


def _int(request: web.Request, name: str) -> int | None:
    text = request.query.get(name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise KuboError(
            f'Could not convert value "{text}" to type "int" (for option "-{name}")', client=True
        ) from None


def _opt_bool(request: web.Request, name: str) -> bool | None:
    return None if name not in request.query else _bool(request, name, False)


def _reject_unsupported(request: web.Request) -> None:
    """Options Kubo takes that would change the CID in ways the devstack does not model."""
    checks = {
        "wrap-with-directory": lambda v: v.lower() in ("0", "f", "false"),
        "inline": lambda v: v.lower() in ("0", "f", "false"),
        "nocopy": lambda v: v.lower() in ("0", "f", "false"),
        "preserve-mode": lambda v: v.lower() in ("0", "f", "false"),
        "preserve-mtime": lambda v: v.lower() in ("0", "f", "false"),
        "mode": lambda v: False,
        "mtime": lambda v: False,
    }
    for name, ok in checks.items():
        value = request.query.get(name)
        if value is not None and not ok(value):
            raise KuboError(f"devstack does not model {name}={value}", client=True)


# -- config ------------------------------------------------------------------------------


async def _config_show(request: web.Request) -> web.Response:
    return web.json_response(request.app[CONFIG_KEY].show())


async def _config(request: web.Request) -> web.Response:
    """``ipfs config <key> [<value>]`` (``--json``, ``--bool``): answers {"Key", "Value"}."""
    args = request.query.getall("arg", [])
    if not args:
        raise KuboError('argument "key" is required', client=True)
    config = request.app[CONFIG_KEY]
    key = args[0]
    try:
        if len(args) > 1:
            value: Any = args[1]
            if _bool(request, "json", False):
                try:
                    value = json.loads(args[1])
                except ValueError as exc:
                    raise KuboError(f"failed to unmarshal json. {exc}") from None
            elif _bool(request, "bool", False):
                value = args[1] == "true"
            config.set(key, value)
        return web.json_response({"Key": key, "Value": config.get(key)})
    except KuboConfigError as exc:
        raise KuboError(str(exc)) from None


async def _config_profile_apply(request: web.Request) -> web.Response:
    """``ipfs config profile apply <name>`` ([--dry-run]): answers {"OldCfg", "NewCfg"}."""
    args = request.query.getall("arg", [])
    if not args:
        raise KuboError('argument "profile" is required', client=True)
    config = request.app[CONFIG_KEY]
    try:
        if _bool(request, "dry-run", False):
            trial = KuboConfig()
            trial.imports = dict(config.imports)
            old, new = trial.apply_profile(args[0])
        else:
            old, new = config.apply_profile(args[0])
    except KuboConfigError as exc:
        raise KuboError(str(exc)) from None
    return web.json_response({"OldCfg": old, "NewCfg": new})


async def _cat(request: web.Request) -> web.Response:
    cid = _parse(_args(request, required=True)[0])
    data = await request.app[STORE_KEY].read(cid)
    if data is None:
        raise KuboError(f"block was not found locally (offline): ipld: could not find {cid}")
    offset = int(request.query.get("offset", "0") or 0)
    length = request.query.get("length")
    end = None if length in (None, "") else offset + int(length)
    return web.Response(body=data[offset:end], content_type="text/plain")


async def _dag_export(request: web.Request) -> web.Response:
    """``ipfs dag export <root>``: the DAG as a CARv1 stream (Kubo's docs: "Streams the
    selected DAG as a .car stream on stdout"), blocks depth-first, each once. The devstack
    holds whole DAGs only, so a root it lacks is Kubo's offline "not found" error."""
    cid = _parse(_args(request, required=True)[0])
    found = await request.app[STORE_KEY].dag(cid)
    if found is None:
        raise KuboError(f"block was not found locally (offline): ipld: could not find {cid}")
    _, node = found
    return web.Response(
        body=b"".join(car_stream(node)),
        content_type="application/vnd.ipld.car",
        headers={"X-Stream-Output": "1"},
    )


async def _pin_add(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    cids = [_parse(arg) for arg in _args(request, required=True)]
    for cid in cids:
        if not store.has_content(cid):
            raise KuboError(f"block was not found locally (offline): ipld: could not find {cid}")
    for cid in cids:
        found = await store.dag(cid)
        store.pin(TARGET, cid, size=found[1].tsize if found else 0)
    return web.json_response({"Pins": cids})


async def _pin_rm(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    cids = [_parse(arg) for arg in _args(request, required=True)]
    for cid in cids:
        if not store.active_pins(TARGET, cid):
            raise KuboError("not pinned or pinned indirectly")
    for cid in cids:
        store.unpin(TARGET, cid)
    return web.json_response({"Pins": cids})


async def _pin_ls(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    pin_type = request.query.get("type", "all")
    if pin_type not in ("all", "recursive", "direct", "indirect"):
        raise KuboError(
            f"invalid type '{pin_type}', must be one of {{direct, indirect, recursive, all}}",
            client=True,
        )
    keys: dict[str, dict[str, Any]] = {}
    wants_recursive = pin_type in ("all", "recursive")
    args = [_parse(arg) for arg in _args(request, required=False)]
    if args:
        for cid in args:
            if not (wants_recursive and store.active_pins(TARGET, cid)):
                raise KuboError(f"path '{cid}' is not pinned")
            keys[cid] = {"Type": "recursive"}
    elif wants_recursive:
        keys = {pin.cid: {"Type": "recursive"} for pin in store.active_pins(TARGET)}
    return web.json_response({"Keys": keys})


async def _version(request: web.Request) -> web.Response:
    return web.json_response(
        {"Version": VERSION, "Commit": "", "Repo": "16", "System": "devstack", "Golang": ""}
    )
