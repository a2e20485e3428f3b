"""The health probes the `HealthCheck` workflow runs: one activity per check.

A target only a person can make usable again (a refused key, a wrong URL, an RPC endpoint that
cannot serve a call the mints make: no transaction history, a send-only node) fails with a
detail that starts `NEEDS OPERATOR:`.

Each activity returns rows `(check, target, ok, latency_s, detail)` and sets this worker's gauges
(`mintsaga_health_up`, `mintsaga_health_latency_seconds`, `mintsaga_rpc_slot_lag`). A failing
dependency is a row with `ok=False`, never a failed activity.

The probes go around the circuit breakers: they use clients built without the product's
`BreakerRegistry` (Solana: the product's `SolanaRpc` with `guarded=False`, one endpoint per
call). So an open breaker does not hide an endpoint's health (the probe still asks it), a
half-open breaker's few trial calls are left to the mints that need them to close it, and a
failing probe never counts towards opening a breaker that mints depend on. What the breakers
think is reported by `mintsaga_breaker_state`, which probes never touch; their calls are counted
in `mintsaga_requests_total` like any other.

A gauge set here disappears `STALE_AFTER_S` after its last update unless a newer probe on this
worker refreshes it: with several workers, whichever runs the scheduled probe reports it, and a
worker that stopped getting probes must not keep reporting an old answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import asyncpg
import httpx
from temporalio import activity

from mintsaga.db.errors import endpoint_and_secrets
from mintsaga.db.mint_store import MintStore
from mintsaga.errors import ErrorKind, ServiceError, redact_url
from mintsaga.ipfs.cid import DEFAULT_CID_VERSION, compute_cid
from mintsaga.ipfs.gateways import GatewayReader
from mintsaga.ipfs.kubo import KuboClient
from mintsaga.ipfs.pinata import PinataClient
from mintsaga.ipfs.uploads import IpfsUploader
from mintsaga.observability.metrics import HEALTH_LATENCY, HEALTH_UP, RPC_SLOT_LAG
from mintsaga.settings import Settings
from mintsaga.solana.rpc import SolanaRpc
from mintsaga.workflows.health import (
    HEALTH_IPFS_ROUNDTRIP,
    HEALTH_PINATA,
    HEALTH_POSTGRES,
    HEALTH_SOLANA,
    HEALTH_UNPIN,
    SCHEDULED_RUN_ID_PREFIX,
    HealthRow,
    ProbeOut,
)

T = TypeVar("T")

PROBE_TIMEOUT_S = 10.0  # one call to one target
STALE_AFTER_S = 150.0  # 2.5 schedule intervals
# A node this far behind the highest endpoint fails its check (Agave's own getHealth limit;
# ~60 s of slots, about a blockhash's lifetime).
MAX_SLOT_LAG = 150
PROBE_BYTES_MAX = 4096
# How a row says that only a person can make the target usable again (a refused key, a wrong URL,
# an endpoint that cannot serve a call the mints make).
NEEDS_OPERATOR = "NEEDS OPERATOR:"
# A signature no transaction has (64 zero bytes): asking for its status with history search is
# the cheapest call that finds a node without transaction history (-32011, solana/rpc.py).
PROBE_SIGNATURE = "1" * 64
# A testAuthentication refused for the /data/ limit (Pinata's 429, or this worker's budget).
PINATA_DATA_LIMITED = ("PinataRateLimited", "PinataDataBudget")
UPLOAD_TARGET = "ipfs"  # Pinata, or Kubo when Pinata is unavailable: the uploader decides
# The gateways' probe: one small file, pinned on both providers once and kept, so every run
# reads the same CID (a gateway serves it from its cache; a fresh CID each minute is slow on
# a recursive gateway and spends a public one's per-CID quota). Never unpinned by MintSaga.
CANARY = b"mintsaga gateway canary v1\n"
# Uploads are probed on the first scheduled run of each window this long (and on every run by
# hand): an upload spends Pinata quota and leaves a pin to clean up.
DEFAULT_UPLOAD_EVERY = timedelta(minutes=15)
DEFAULT_CHECK_EVERY = timedelta(minutes=1)

Key = tuple[str, ...]
_updated: dict[tuple[str, Key], float] = {}  # (gauge, labels) -> monotonic time of last set


def _set(
    name: str, gauge: Any, labels: Key, value: float, stale_after_s: float | None = None
) -> None:
    gauge.labels(*labels).set(value)
    stamp = time.monotonic()
    _updated[(name, labels)] = stamp
    after = STALE_AFTER_S if stale_after_s is None else stale_after_s
    with contextlib.suppress(RuntimeError):  # no running loop: nothing expires
        asyncio.get_running_loop().call_later(after, _expire, name, gauge, labels, stamp)


def _expire(name: str, gauge: Any, labels: Key, stamp: float) -> None:
    if _updated.get((name, labels)) == stamp:
        _forget(name, gauge, labels)


def _forget(name: str, gauge: Any, labels: Key) -> None:
    _updated.pop((name, labels), None)
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)


def publish(rows: Sequence[HealthRow], *, stale_after_s: float | None = None) -> None:
    """Set the health gauges from `rows`; they expire `stale_after_s` (`STALE_AFTER_S`) after."""
    for row in rows:
        labels = (row.check, row.target)
        _set("up", HEALTH_UP, labels, 1.0 if row.ok else 0.0, stale_after_s)
        _set("latency", HEALTH_LATENCY, labels, row.latency_s, stale_after_s)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ServiceError):
        text = f"{exc.code} ({exc.kind}): {exc.message}"
        if exc.kind is ErrorKind.NEEDS_OPERATOR:
            text = f"{NEEDS_OPERATOR} {text}"
        return text[:300]
    if isinstance(exc, TimeoutError):
        return f"no answer within {PROBE_TIMEOUT_S:.0f} s"
    return f"{type(exc).__name__}: {exc}"[:300]


async def _timed(call: Callable[[], Awaitable[T]]) -> tuple[T | None, BaseException | None, float]:
    """(result, None, latency) or (None, the failure, latency); the call is time-bounded."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            result = await call()
    except Exception as exc:  # a probe reports whatever happened; it never raises
        return None, exc, time.monotonic() - started
    return result, None, time.monotonic() - started


class HealthActivities:
    """The probes, over clients that bypass the product's circuit breakers (module docstring)."""

    def __init__(
        self,
        *,
        solana_urls: Callable[[], Sequence[str]],
        solana_timeout_s: float,
        store: MintStore,
        database: str,
        pinata: PinataClient,
        uploader: IpfsUploader,
        gateways: Sequence[str],
        http: httpx.AsyncClient,
        kubo: KuboClient | None = None,
        check_every: timedelta = DEFAULT_CHECK_EVERY,
        upload_every: timedelta = DEFAULT_UPLOAD_EVERY,
    ) -> None:
        self._solana_urls = solana_urls
        self._solana_timeout_s = min(solana_timeout_s, PROBE_TIMEOUT_S)
        self._store = store
        self._database = database
        self._pinata = pinata
        self._uploader = uploader
        self._gateways = [url.rstrip("/") for url in gateways]
        self._http = http
        self._kubo = kubo
        self._check_every = check_every.total_seconds()
        self._upload_every = upload_every.total_seconds()
        self._canary_pinned = False  # this process pinned the canary (module docstring)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        http: httpx.AsyncClient,
        pool: asyncpg.Pool,
        solana_urls: Callable[[], Sequence[str]],
        check_every: timedelta = DEFAULT_CHECK_EVERY,
        upload_every: timedelta = DEFAULT_UPLOAD_EVERY,
    ) -> HealthActivities:
        """Clients of their own (no breakers) over the worker's HTTP client and DB pool;
        `check_every` the schedule's interval, `upload_every` how often uploads are probed."""
        endpoint, secrets = endpoint_and_secrets(settings.database_url.get_secret_value())
        pinata = PinataClient(settings.pinata_api_url, settings.pinata_jwt.get_secret_value(), http)
        kubo = KuboClient(settings.kubo_api_url, http)
        return cls(
            solana_urls=solana_urls,
            solana_timeout_s=settings.solana_timeout_s,
            store=MintStore(pool, endpoint=endpoint, secrets=secrets, acquire_timeout=5.0),
            database=endpoint,
            pinata=pinata,
            uploader=IpfsUploader(pinata, kubo),
            gateways=settings.gateways_in_order,  # the dedicated one too: mints wait on it
            http=http,
            kubo=kubo,
            check_every=check_every,
            upload_every=upload_every,
        )

    # -- Solana: getHealth and the slot, per endpoint ----------------------------------------

    @activity.defn(name=HEALTH_SOLANA.name)
    async def health_solana(self) -> ProbeOut:
        """`getHealth` and the confirmed slot of every endpoint (lag = highest slot - its slot),
        and whether it serves `getSignatureStatuses` with history search (its status; a node
        without history fails, `NEEDS OPERATOR`, although its slot is reported)."""
        urls = list(dict.fromkeys(self._solana_urls()))
        names = [redact_url(url) for url in urls]
        async with SolanaRpc(urls, timeout=self._solana_timeout_s, guarded=False) as rpc:

            async def one(
                index: int,
            ) -> tuple[tuple[int, str | None] | None, BaseException | None, float]:
                async def call() -> tuple[int, str | None]:
                    health = await rpc.call("getHealth", only=[index])
                    if health != "ok":
                        raise ValueError(f"getHealth answered {str(health)[:50]!r}")
                    confirmed = [{"commitment": "confirmed"}]
                    slot = int(await rpc.call("getSlot", confirmed, only=[index]))
                    # The history search the expiry decision and the already-minted check make.
                    try:
                        await rpc.call(
                            "getSignatureStatuses",
                            [[PROBE_SIGNATURE], {"searchTransactionHistory": True}],
                            only=[index],
                        )
                    except ServiceError as exc:
                        if exc.unusable is None:
                            raise
                        return slot, _describe(exc)
                    return slot, None

                return await _timed(call)

            answers = await asyncio.gather(*(one(index) for index in range(len(urls))))
        slots = [answer[0] for answer, _, _ in answers if answer is not None]
        highest = max(slots, default=None)
        rows = []
        for name, (answer, error, latency) in zip(names, answers, strict=True):
            if answer is None or highest is None:
                detail = _describe(error) if error else "no answer"
                rows.append(
                    HealthRow(
                        check="solana_rpc", target=name, ok=False, latency_s=latency, detail=detail
                    )
                )
                _forget("slot_lag", RPC_SLOT_LAG, (name,))
                continue
            slot, cannot = answer
            lag = highest - slot
            _set("slot_lag", RPC_SLOT_LAG, (name,), float(lag))
            behind = lag > MAX_SLOT_LAG
            detail = f"slot {slot}, {lag} behind the highest" + (
                f" (over {MAX_SLOT_LAG})" if behind else ""
            )
            if cannot is not None:  # serves reads, but not every call a mint makes
                detail = f"{cannot}; {detail}"
            rows.append(
                HealthRow(
                    check="solana_rpc",
                    target=name,
                    ok=not behind and cannot is None,
                    latency_s=latency,
                    detail=detail,
                )
            )
        publish(rows)
        return ProbeOut(rows=rows)

    # -- Postgres: SELECT 1 ---------------------------------------------------------------------

    @activity.defn(name=HEALTH_POSTGRES.name)
    async def health_postgres(self) -> ProbeOut:
        _, error, latency = await _timed(self._store.health)
        row = HealthRow(
            check="postgres",
            target=self._database,
            ok=error is None,
            latency_s=latency,
            detail="SELECT 1 answered" if error is None else _describe(error),
        )
        publish([row])
        return ProbeOut(rows=[row])

    # -- Pinata: testAuthentication -------------------------------------------------------------

    @activity.defn(name=HEALTH_PINATA.name)
    async def health_pinata(self) -> ProbeOut:
        """`testAuthentication`: Pinata answers and accepts PINATA_JWT. Its /data/ routes allow
        30 requests a minute per account: a 429 there (or this worker's /data/ budget with no
        room, so not asked) is Pinata answering, reported ok with the JWT not re-checked this
        time, not an outage (a row that failed on it would page on the account's own use)."""
        wait = self._pinata.data_budget.wait_s()  # > 0: not asked, waiting would outlast us
        error: BaseException | None = None
        latency = 0.0
        if wait <= 0:
            _, error, latency = await _timed(self._pinata.test_authentication)
        limited = wait > 0 or (
            isinstance(error, ServiceError) and error.code in PINATA_DATA_LIMITED
        )
        if wait > 0:
            detail = f"not asked: this worker's /data/ budget has room in {wait:.0f} s"
        elif error is None:
            detail = "the JWT is accepted"
        elif limited:
            detail = f"answers, its /data/ limit reached (JWT not re-checked): {_describe(error)}"
        else:
            detail = _describe(error)
        row = HealthRow(
            check="pinata_auth",
            target=redact_url(self._pinata.api_url),
            ok=error is None or limited,
            latency_s=latency,
            detail=detail[:300],
        )
        publish([row])
        return ProbeOut(rows=[row])

    # -- IPFS: the canary through every gateway; now and then, an upload and its unpin --------

    @activity.defn(name=HEALTH_IPFS_ROUNDTRIP.name)
    async def health_ipfs_roundtrip(self) -> ProbeOut:
        """Every run: the canary (a long-lived CID, `CANARY`) fetched through every gateway.
        On an upload run (`upload_due`): a unique blob uploaded (Pinata, or Kubo when Pinata
        is unavailable) and unpinned again; its `ipfs_upload` and `ipfs_unpin` rows expire
        2.5 upload intervals after, not `STALE_AFTER_S`."""
        canary = await compute_cid(CANARY, DEFAULT_CID_VERSION)
        upload_run = self.upload_due(activity.info().workflow_id or "", time.time())
        canary_note = ""
        if upload_run or not self._canary_pinned:
            canary_note = await self._pin_canary()
        rows = list(
            await asyncio.gather(*(self._fetch(url, canary, canary_note) for url in self._gateways))
        )
        if rows and all(not row.ok for row in rows):
            self._canary_pinned = False  # pinned again next run (an operator may have unpinned)
        publish(rows)
        if not upload_run:
            return ProbeOut(rows=rows)
        upload_rows, pending = await self._upload_probe()
        publish(upload_rows, stale_after_s=max(STALE_AFTER_S, 2.5 * self._upload_every))
        return ProbeOut(rows=rows + upload_rows, pending_unpin=pending)

    def upload_due(self, workflow_id: str, now: float) -> bool:
        """Whether this run probes uploads: every run by hand (`starter.py health`); of the
        schedule's runs, the first of each `upload_every` window (the schedule's runs fall
        `check_every` apart, so exactly one per window for the whole fleet, whichever worker
        runs it); every run when the window is no longer than the interval."""
        if not workflow_id.startswith(SCHEDULED_RUN_ID_PREFIX):
            return True
        if self._upload_every <= self._check_every:
            return True
        return now % self._upload_every < self._check_every

    async def _pin_canary(self) -> str:
        """Pin the canary on both providers (each gateway may read from either); "" when
        one took it, else why neither did (said in the gateway rows). Pinning it again is
        harmless: Pinata answers isDuplicate, Kubo's add is idempotent."""
        failures = []
        try:
            await self._pinata.pin_file(
                CANARY,
                filename="mintsaga-canary.txt",
                name="mintsaga-gateway-canary",
                keyvalues={"purpose": "gateway-canary"},
            )
        except Exception as exc:  # a probe reports, never raises
            failures.append(f"pinata: {_describe(exc)}")
        if self._kubo is not None:
            try:
                await self._kubo.add(CANARY, filename="mintsaga-canary.txt")
            except Exception as exc:
                failures.append(f"kubo: {_describe(exc)}")
        pinned_somewhere = len(failures) < (2 if self._kubo is not None else 1)
        self._canary_pinned = pinned_somewhere
        if pinned_somewhere:
            return ""
        return "; the canary could not be pinned (" + "; ".join(failures) + ")"

    async def _upload_probe(self) -> tuple[list[HealthRow], str | None]:
        """Upload a unique blob and unpin it from both providers: (rows, a CID left to the
        cleanup workflow when its unpin failed)."""
        tag = uuid.uuid4().hex
        data = f"mintsaga health probe {tag}\n".encode()
        # Known before anything is sent: a lost answer may still have pinned it.
        cid = await compute_cid(data, DEFAULT_CID_VERSION)
        upload, error, latency = await _timed(
            lambda: self._uploader.upload(
                data,
                filename="health-probe.txt",
                name=f"mintsaga-health-{tag[:12]}",
                keyvalues={"purpose": "health-probe"},
            )
        )
        rows: list[HealthRow] = []
        if upload is None:
            rows.append(
                HealthRow(
                    check="ipfs_upload",
                    target=UPLOAD_TARGET,
                    ok=False,
                    latency_s=latency,
                    detail=_describe(error or Exception()),
                )
            )
        else:
            rows.append(
                HealthRow(
                    check="ipfs_upload",
                    target=UPLOAD_TARGET,
                    ok=True,
                    latency_s=latency,
                    detail=f"pinned {cid} on {upload.provider}",
                )
            )
        # Unpin from both providers (the answer of either may have been lost), whatever happened.
        _, unpin_error, unpin_latency = await _timed(lambda: self._uploader.unpin_all(cid))
        pending = None
        if unpin_error is None:
            detail = f"unpinned {cid}"
        else:
            pending = cid
            detail = (
                f"could not unpin {cid} ({_describe(unpin_error)}); the HealthPinCleanup"
                " workflow retries it"
            )
        rows.append(
            HealthRow(
                check="ipfs_unpin",
                target=UPLOAD_TARGET,
                ok=unpin_error is None,
                latency_s=unpin_latency,
                detail=detail,
            )
        )
        return rows, pending

    async def _fetch(self, url: str, cid: str, note: str = "") -> HealthRow:
        reader = GatewayReader([url], self._http)  # no breakers: see the module docstring
        # One try (budget_s=0): a read would otherwise ask again within the attempt's time
        # after a 5xx or a 504's Retry-After; for a probe the next run is the retry, and the
        # row says what the gateway answered.
        _, error, latency = await _timed(
            lambda: reader.fetch_verified(cid, max_bytes=PROBE_BYTES_MAX, budget_s=0.0)
        )
        return HealthRow(
            check="gateway_fetch",
            target=redact_url(url),
            ok=error is None,
            latency_s=latency,
            detail=f"served the canary {cid}, verified"
            if error is None
            else _describe(error) + note,
        )

    @activity.defn(name=HEALTH_UNPIN.name)
    async def health_unpin(self, cid: str) -> None:
        """Unpin a health-probe CID everywhere; raises (and is retried) while a provider fails."""
        async with asyncio.timeout(PROBE_TIMEOUT_S * 2):
            await self._uploader.unpin_all(cid)
