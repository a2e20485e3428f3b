"""The devstack's admin API (``DEVSTACK_ADMIN_URL``): where tests and people steer the faults.

GET    /services                   name -> URL of every endpoint
GET    /faults                     the live faults, with how often each fired
POST   /faults                     add one (see devstack.faults); answers {"id": ...}
DELETE /faults/{id}                remove one
DELETE /faults                     remove all
POST   /solana/warp {"slots": N}   advance the chain N slots now (ages blockhashes)
GET    /solana/profiles            every Solana endpoint's provider profile and its counters
GET    /solana/{name}/profile      one endpoint's profile and counters
PUT    /solana/{name}/profile {"profile": P[, "requests_per_second": N, "send_per_second": M]}
                                   switch an endpoint's provider profile (devstack.profiles);
                                   its counters start again from zero
GET    /solana/fee-market         the fee market's background load (devstack.solana.fee_market)
PUT    /solana/fee-market {"busy_fraction": F[, "min_fee": N, "max_fee": M,
        "transactions_per_slot": K, "zero_fee_landings": B, "hot_accounts": [...], "seed": S]}
                                   switch the load (fields left out take their defaults; on,
                                   the last 150 slots look as if it had run through them)
DELETE /solana/fee-market          load off, and its samples dropped from the fee window
POST   /pinata/limits {"requests_per_minute": N[, "data_requests_per_minute": M]}
                                   change Pinata's limits (0: none; the general bucket, and
                                   /data/*'s); answers as GET /pinata/plan
GET    /pinata/plan                Pinata's plan, its buckets (limit, requests in the sliding
                                   minute, 429s), requests per route, testAuthentication calls
PUT    /pinata/plan {"plan": NAME} switch to a plan's limits (devstack.ipfs.limits.PLANS:
                                   free, picnic, fiesta, legacy, unlimited); counters are kept
GET    /gateways                   every gateway's behaviour (devstack.ipfs.recursive):
                                   {name: {"appear_after_s", "retrieval_timeout_s",
                                   "missing_status", "cache_after_unpin_s", "retry_after_s"}}
GET    /gateways/{name}            one gateway's behaviour
PUT    /gateways/{name} {fields}   set it; fields left out take the plain gateway's defaults,
                                   or a recursive gateway's with "recursive": true
PATCH  /gateways/{name} {fields}   change only the fields given
GET    /kubo/import                the Kubo node's Import config and what a bare `add` builds:
                                   {"profile": P, "Import": {...}, "add_layout": {"cid_version",
                                   "raw_leaves", "chunk_size", "max_links", "hash", "layout"}}
PUT    /kubo/import {"profile": P, "Import": {key: value}, "ignore_add_flags": B}  (each
                                   optional) apply a profile (unixfs-v1-2025, unixfs-v0-2015,
                                   legacy-cid-v0, default), then the keys given; B true: add
                                   builds with the config alone (devstack.ipfs.kubo_config;
                                   off unless given)
POST   /postgres/reset-connections cut every open database connection once
GET    /stats                      requests per service per minute (and per JSON-RPC method
                                   for the Solana endpoints), faults fired by kind,
                                   requests Pinata's rate limit refused (429), Pinata's plan
                                   and counters (`pinata`, as GET /pinata/plan), and each Solana
                                   endpoint's profile counters (calls accepted / refused)
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from devstack.config import StackConfig
from devstack.faults import FaultRegistry, FaultSpecError
from devstack.ipfs.kubo_config import AddFlags, KuboConfig, KuboConfigError
from devstack.ipfs.limits import PinataLimits, PlanError
from devstack.ipfs.recursive import GatewayBehaviourError, GatewayBehaviours
from devstack.profiles import ProfileError, SolanaProfiles
from devstack.solana.fee_market import FeeMarketError, FeeMarketLoad

if TYPE_CHECKING:
    from devstack.pg_proxy import PostgresFaultProxy
    from devstack.solana import SolanaLedger


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except json.JSONDecodeError as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"body is not JSON: {exc}"}), content_type="application/json"
        ) from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be a JSON object"}),
            content_type="application/json",
        )
    return body


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


def _fee_market(ledger: SolanaLedger) -> dict[str, Any]:
    return {
        **ledger.fee_market.describe(),
        "on": ledger.fee_market.on,
        "slot": ledger.slot,
        "clearing_price": ledger.clearing_price(),
        "waiting": len(ledger.waiting()),
    }


def build_admin_app(
    config: StackConfig,
    registry: FaultRegistry,
    ledger: SolanaLedger,
    pinata_limits: PinataLimits,
    pg_proxy: PostgresFaultProxy | None,
    profiles: SolanaProfiles | None = None,
    *,
    gateways: GatewayBehaviours | None = None,
    kubo_config: KuboConfig | None = None,
) -> web.Application:
    routes = web.RouteTableDef()
    if profiles is None:
        from devstack.config import SOLANA_ENDPOINTS

        profiles = SolanaProfiles(SOLANA_ENDPOINTS)
    solana = profiles
    if gateways is None:
        from devstack.config import GATEWAYS

        gateways = GatewayBehaviours(GATEWAYS, config.gateways)
    behaviours = gateways
    kubo = kubo_config or KuboConfig(config.kubo_profile)

    @routes.get("/services")
    async def services(_: web.Request) -> web.Response:
        return web.json_response(config.services())

    @routes.get("/faults")
    async def list_faults(_: web.Request) -> web.Response:
        return web.json_response(registry.list())

    @routes.post("/faults")
    async def add_fault(request: web.Request) -> web.Response:
        try:
            fault = await registry.add(await _json_body(request))
        except (FaultSpecError, ValueError, TypeError) as exc:
            return _bad_request(str(exc))
        return web.json_response({"id": fault.id, **fault.describe()}, status=201)

    @routes.delete("/faults/{fault_id}")
    async def remove_fault(request: web.Request) -> web.Response:
        if not await registry.remove(request.match_info["fault_id"]):
            return web.json_response({"error": "no such fault"}, status=404)
        return web.json_response({"removed": 1})

    @routes.delete("/faults")
    async def clear_faults(_: web.Request) -> web.Response:
        return web.json_response({"removed": await registry.clear()})

    @routes.post("/solana/warp")
    async def warp(request: web.Request) -> web.Response:
        slots = (await _json_body(request)).get("slots")
        if not isinstance(slots, int) or slots < 1:
            return _bad_request("slots: must be a positive integer")
        return web.json_response(ledger.warp(slots))

    @routes.get("/solana/fee-market")
    async def get_fee_market(_: web.Request) -> web.Response:
        return web.json_response(_fee_market(ledger))

    @routes.put("/solana/fee-market")
    async def set_fee_market(request: web.Request) -> web.Response:
        try:
            load = FeeMarketLoad.from_json(await _json_body(request))
        except FeeMarketError as exc:
            return _bad_request(str(exc))
        ledger.set_fee_market(load)
        return web.json_response(_fee_market(ledger))

    @routes.delete("/solana/fee-market")
    async def clear_fee_market(_: web.Request) -> web.Response:
        ledger.set_fee_market(FeeMarketLoad(), forget=True)
        return web.json_response(_fee_market(ledger))

    @routes.get("/solana/profiles")
    async def list_profiles(_: web.Request) -> web.Response:
        return web.json_response(solana.describe())

    @routes.get("/solana/{name}/profile")
    async def get_profile(request: web.Request) -> web.Response:
        try:
            profile = solana.get(request.match_info["name"])
        except ProfileError as exc:
            return web.json_response({"error": str(exc)}, status=404)
        return web.json_response(profile.describe())

    @routes.put("/solana/{name}/profile")
    async def set_profile(request: web.Request) -> web.Response:
        body = await _json_body(request)
        unknown = sorted(set(body) - {"profile", "requests_per_second", "send_per_second"})
        if unknown:
            return _bad_request(f"unknown fields: {', '.join(unknown)}")
        name = request.match_info["name"]
        if name not in solana.endpoints:
            return web.json_response(
                {"error": f"{name!r}: unknown endpoint; known: {', '.join(solana.endpoints)}"},
                status=404,
            )
        try:
            profile = solana.set(
                name,
                body.get("profile"),  # type: ignore[arg-type]  # checked by set()
                requests_per_second=body.get("requests_per_second"),
                send_per_second=body.get("send_per_second"),
            )
        except ProfileError as exc:
            return _bad_request(str(exc))
        return web.json_response(profile.describe())

    @routes.post("/pinata/limits")
    async def set_pinata_limits(request: web.Request) -> web.Response:
        body = await _json_body(request)
        fields = ("requests_per_minute", "data_requests_per_minute")
        unknown = sorted(set(body) - set(fields))
        if unknown:
            return _bad_request(f"unknown fields: {', '.join(unknown)}")
        if not body:
            return _bad_request("give requests_per_minute and/or data_requests_per_minute")
        for name in fields:
            value = body.get(name, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                return _bad_request(f"{name}: must be an integer >= 0 (0 means no limit)")
        if "requests_per_minute" in body:
            pinata_limits.set(body["requests_per_minute"])
        if "data_requests_per_minute" in body:
            pinata_limits.set_data(body["data_requests_per_minute"])
        return web.json_response(pinata_limits.snapshot())

    @routes.get("/pinata/plan")
    async def get_pinata_plan(_: web.Request) -> web.Response:
        return web.json_response(pinata_limits.snapshot())

    @routes.put("/pinata/plan")
    async def set_pinata_plan(request: web.Request) -> web.Response:
        body = await _json_body(request)
        unknown = sorted(set(body) - {"plan"})
        if unknown:
            return _bad_request(f"unknown fields: {', '.join(unknown)}")
        name = body.get("plan")
        if not isinstance(name, str):
            return _bad_request("plan: a plan's name (free, picnic, fiesta, legacy, unlimited)")
        try:
            pinata_limits.set_plan(name)
        except PlanError as exc:
            return _bad_request(str(exc))
        return web.json_response(pinata_limits.snapshot())

    @routes.get("/gateways")
    async def list_gateways(_: web.Request) -> web.Response:
        return web.json_response(behaviours.describe())

    @routes.get("/gateways/{name}")
    async def get_gateway(request: web.Request) -> web.Response:
        try:
            return web.json_response(behaviours.get(request.match_info["name"]).describe())
        except GatewayBehaviourError as exc:
            return web.json_response({"error": str(exc)}, status=404)

    @routes.put("/gateways/{name}")
    @routes.patch("/gateways/{name}")
    async def set_gateway(request: web.Request) -> web.Response:
        body = await _json_body(request)
        name = request.match_info["name"]
        try:
            behaviours.get(name)
        except GatewayBehaviourError as exc:
            return web.json_response({"error": str(exc)}, status=404)
        try:
            behaviour = behaviours.set(name, body, replace_all=request.method == "PUT")
        except GatewayBehaviourError as exc:
            return _bad_request(str(exc))
        return web.json_response(behaviour.describe())

    def kubo_import() -> dict[str, Any]:
        try:
            layout: dict[str, Any] | str = kubo.layout_for(AddFlags()).describe()
        except ValueError as exc:  # a config `add` would refuse
            layout = str(exc)
        return {
            "profile": kubo.profile,
            "Import": kubo.show()["Import"],
            "ignore_add_flags": kubo.ignore_add_flags,
            "add_layout": layout,
        }

    @routes.get("/kubo/import")
    async def get_kubo_import(_: web.Request) -> web.Response:
        return web.json_response(kubo_import())

    @routes.put("/kubo/import")
    async def set_kubo_import(request: web.Request) -> web.Response:
        body = await _json_body(request)
        unknown = sorted(set(body) - {"profile", "Import", "ignore_add_flags"})
        if unknown:
            return _bad_request(f"unknown fields: {', '.join(unknown)}")
        keys = body.get("Import", {})
        if not isinstance(keys, dict):
            return _bad_request("Import: an object of Import keys")
        ignore = body.get("ignore_add_flags", False)  # PUT: left out is off
        if not isinstance(ignore, bool):
            return _bad_request("ignore_add_flags: true or false")
        try:
            if "profile" in body:
                kubo.apply_profile(str(body["profile"]))
            for key, value in keys.items():
                kubo.set(f"Import.{key}", value)
            kubo.ignore_add_flags = ignore
        except KuboConfigError as exc:
            return _bad_request(str(exc))
        return web.json_response(kubo_import())

    @routes.post("/postgres/reset-connections")
    async def reset_pg(_: web.Request) -> web.Response:
        if pg_proxy is None:
            return _bad_request("postgres: DATABASE_URL points outside the devstack; no proxy")
        return web.json_response({"reset": pg_proxy.reset_all()})

    @routes.get("/stats")
    async def stats(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests_per_minute": {
                    target: {str(minute): n for minute, n in sorted(per_minute.items())}
                    for target, per_minute in registry.requests_per_minute.items()
                },
                "faults_fired": registry.injected,
                "requests_by_method": registry.requests_by_method,
                "rate_limited": {"pinata": pinata_limits.rejected},
                # Pinata's sliding minute now: its limit and the requests it holds.
                "pinata_window": pinata_limits.describe(),
                "pinata": pinata_limits.snapshot(),
                "postgres_open_connections": pg_proxy.open_connections if pg_proxy else None,
                "solana_profiles": {
                    name: {"profile": d["profile"], **d["counters"]}
                    for name, d in solana.describe().items()
                },
            }
        )

    app = web.Application()
    app.add_routes(routes)
    return app
