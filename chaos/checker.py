"""The chaos suite's invariant checker: what really happened, read from the services themselves.

Independent of the workflow's own reporting, it observes every mint through:
- Temporal: each workflow's description (status, `MintStatus` search attribute), its result
  when closed, its `status` query when running, and its full history;
- Postgres (asyncpg on the stack's `DATABASE_URL`): `mints`, `mint_events`, `mint_pins`,
  `mint_submissions`, and the `collections` the mints name (with their MINTED count);
- Solana JSON-RPC: the account at each mint's derived address (`jsonParsed`), the requested
  wallet's associated token account, each named collection's group mint (its TokenGroup), the
  status of every recorded signature;
- IPFS: Pinata's `pinList`, Kubo's `pin/ls`, and the gateways' `GET /ipfs/{cid}` (the bytes
  hashed again to their CID);

and checks the six invariants of issue 5, one function each (`settled`, `minted_nft`,
`rolled_back_cleanly`, `pins_held`, `no_secrets`, `story_in_order`). `check` gathers the
observations concurrently, then runs them; a violation names its invariant, the mint, and the
evidence.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any, Literal, NamedTuple, TypeVar

import asyncpg
import httpx
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHistory
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode

from devstack.config import SOLANA_ENDPOINTS, StackConfig
from devstack.dev_identity import group_authority_file, system_wallet, update_authority
from devstack.ipfs.cid import InvalidCid, cid_of, parse_cid
from devstack.ipfs.unixfs import UNIXFS_V1_2025, build_file
from devstack.solana.ledger import MAX_PROCESSING_AGE
from mintsaga.solana.mint_keys import derive_mint_keypair, load_keypair_file, parse_seed
from mintsaga.stages import MintStage
from mintsaga.workflows.models import (
    MintRequest,
    MintResult,
    MintStatus,
    StatusView,
    workflow_id_for,
)

__all__ = ["CheckResult", "MintOutcome", "Violation", "check", "secrets_of"]

# A blockhash issued at block height h is accepted up to height h + VALIDITY_WINDOW, and
# getLatestBlockhash reports lastValidBlockHeight = h + VALIDITY_WINDOW (devstack/solana/ledger.py).
VALIDITY_WINDOW = MAX_PROCESSING_AGE
CONCURRENCY = 16  # RPC, gateway and Temporal calls in flight at once
ACCOUNTS_PER_CALL = 100  # getMultipleAccounts' limit
SIGNATURES_PER_CALL = 256  # getSignatureStatuses' limit
PIN_PAGE = 1000  # pinList's largest page
OTHER_LAYOUTS = (UNIXFS_V1_2025,)  # besides ours (mintsaga.ipfs.cid), what providers build
QUERY_TIMEOUT = timedelta(seconds=10)
MAX_CONTENT_BYTES = 64 * 2**20

MINT_STATUS = SearchAttributeKey.for_keyword("MintStatus")
ASSOCIATED_TOKEN_PROGRAM = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
PROVIDERS = ("pinata", "kubo")
RUNNING_OUTCOMES = frozenset({"AWAITING_OPERATOR", "IN_PROGRESS", "FAILED"})
NOT_HOLDING = frozenset({MintStage.ROLLED_BACK.value, MintStage.FAILED.value})
FINISHED_STAGES = frozenset({MintStage.MINTED.value, MintStage.ROLLED_BACK.value})
STAGES = frozenset(s.value for s in MintStage)

T = TypeVar("T")
Row = dict[str, Any]


# -------------------------------------------------------------------------------- the API


@dataclass(frozen=True)
class Violation:
    invariant: int  # 1..6, numbered as in issue 5
    mint_id: str | None
    message: str  # what is wrong, and the evidence


@dataclass(frozen=True)
class MintOutcome:
    """One entry of chaos-report.json's "mints"."""

    mint_id: str
    status: str  # MINTED | ROLLED_BACK | FAILED | AWAITING_OPERATOR | LOST | IN_PROGRESS
    mint_address: str | None
    image_cid: str | None
    metadata_cid: str | None
    reason: str | None


@dataclass(frozen=True)
class CheckResult:
    mints: list[MintOutcome]
    violations: list[Violation]


async def check(
    stack: StackConfig,
    client: Client,
    requests: Sequence[MintRequest],
    *,
    pins: Literal["all", "mints"] = "all",
) -> CheckResult:
    """Observe every mint of `requests` and check the six invariants.

    `pins="all"`: every pin on Pinata and Kubo must have a live holder; `pins="mints"`: only
    the CIDs that belong to these requests' mints (a shared stack holds other tests' pins).
    """
    seen = await observe(stack, client, requests, pins=pins)
    violations = [
        *settled(seen),
        *minted_nft(seen),
        *rolled_back_cleanly(seen),
        *pins_held(seen),
        *no_secrets(seen),
        *story_in_order(seen),
    ]
    return CheckResult(mints=[seen.outcomes[m] for m in seen.requests], violations=violations)


# ----------------------------------------------------------------------- the secrets (inv. 5)


def secrets_of(stack: StackConfig, mint_ids: Iterable[str]) -> dict[str, str]:
    """Every secret the worker holds, in every spelling it could leak in."""
    env = stack.worker_env()
    seed = parse_seed(env["MINT_KEY_SEED"])
    spelled = {
        "MINT_KEY_SEED": env["MINT_KEY_SEED"],
        "MINT_KEY_SEED (base64)": base64.b64encode(seed).decode(),
        "PINATA_JWT": env["PINATA_JWT"],
        **_key_spellings("system wallet", bytes(system_wallet(stack.state_dir))),
        # Issue 18: the group authority signs members in (a worker holds it); the update
        # authority is kept off the workers, so it must never show anywhere either.
        **_key_spellings(
            "group authority", bytes(load_keypair_file(group_authority_file(stack.state_dir)))
        ),
        **_key_spellings("update authority", bytes(update_authority(stack.state_dir))),
    }
    for mint_id in mint_ids:
        spelled.update(_mint_key_spellings(seed, mint_id))
    return spelled


def _mint_key_spellings(seed: bytes, mint_id: str) -> dict[str, str]:
    return _key_spellings(f"mint key {mint_id}", bytes(derive_mint_keypair(seed, mint_id)))


def _key_spellings(name: str, secret: bytes) -> dict[str, str]:
    private = secret[:32]  # the seed half: the public half may appear legitimately
    return {
        f"{name} (base58)": str(Keypair.from_bytes(secret)),  # the 64-byte keypair
        f"{name} (hex)": private.hex(),
        f"{name} (base64)": base64.b64encode(private).decode(),
        f"{name} (json)": json.dumps(list(secret)).replace(" ", "")[1:60],
    }


# ------------------------------------------------------------------------ the observations


@dataclass
class WorkflowSeen:
    """One mint's workflow as Temporal tells it (`exists` False: never started)."""

    exists: bool
    status: WorkflowExecutionStatus | None = None
    search_status: str | None = None  # the MintStatus search attribute
    result: MintResult | None = None  # closed and completed
    view: StatusView | None = None  # running, answered the status query
    unreadable: str | None = None  # why the result or the query could not be read
    history: str = ""  # history JSON plus decoded payloads, whitespace removed


@dataclass
class Observations:
    """Everything `check` read, keyed by mint_id where it belongs to one mint."""

    requests: dict[str, MintRequest]
    derived: dict[str, str]  # mint_id -> mint address from MINT_KEY_SEED
    workflows: dict[str, WorkflowSeen]
    rows: dict[str, Row]  # this request's row only (another request's row is not ours)
    foreign_rows: dict[str, Row]  # a row with this mint_id that another request claimed
    events: dict[str, list[Row]]
    submissions: dict[str, list[Row]]
    blockers: dict[str, list[Row]]  # user_id -> that user's in-progress rows
    running_elsewhere: set[str]  # mint_ids outside the requests whose workflow runs
    accounts: dict[str, Row | None]  # address -> getAccountInfo value (jsonParsed)
    signatures: dict[str, Row | None]  # signature -> getSignatureStatuses value
    pinned: dict[str, set[str]]  # provider -> pinned CIDs (in scope)
    holders: dict[str, list[Row]]  # cid -> mint_pins rows, with the holder's stage
    served: dict[str, tuple[bytes | None, str]]  # cid -> verified bytes (or None), evidence
    secrets: dict[str, str]  # the spellings every history is scanned for
    seed: bytes
    outcomes: dict[str, MintOutcome] = field(default_factory=dict)
    # key -> the collections row (key, address, max_size, state) with `minted` (its MINTED
    # mints in the whole database) and `unfinished` (its rows neither MINTED nor ended before
    # the pivot: mint_id, stage, mint_address), for every collection the requests or rows name
    collections: dict[str, Row] = field(default_factory=dict)
    # cid -> the collection key whose metadata (or the image it names) it is: a collection's
    # own pins have no mint_pins row; the collection holds them for as long as it exists
    collection_pins: dict[str, str] = field(default_factory=dict)

    def outcome(self, mint_id: str) -> str | None:
        found = self.outcomes.get(mint_id)
        return found.status if found is not None else None


async def observe(
    stack: StackConfig,
    client: Client,
    requests: Sequence[MintRequest],
    *,
    pins: Literal["all", "mints"],
) -> Observations:
    unique = {r.mint_id: r for r in reversed(requests)}  # the first request of each mint_id
    by_id = {m: unique[m] for m in dict.fromkeys(r.mint_id for r in requests)}
    env = stack.worker_env()
    seed = parse_seed(env["MINT_KEY_SEED"])
    derived = {m: str(derive_mint_keypair(seed, m).pubkey()) for m in by_id}
    limit = asyncio.Semaphore(CONCURRENCY)
    async with (
        httpx.AsyncClient(timeout=30) as http,
        _connect(stack.database_url) as db,
    ):
        rpc = Rpc(http, [stack.url(name) for name in SOLANA_ENDPOINTS])
        workflows, tables, pinned = await asyncio.gather(
            _bounded_all(limit, {m: _workflow(client, m) for m in by_id}),
            _tables(db, by_id),
            _pin_lists(http, stack),
        )
        named = {r.collection for r in by_id.values() if r.collection} | {
            row["collection"] for row in tables.rows.values() if row.get("collection")
        }
        collections = await _collections(db, named)
        seen = Observations(
            requests=by_id,
            derived=derived,
            workflows=workflows,
            collections=collections,
            **tables._asdict(),
            running_elsewhere=set(),
            accounts={},
            signatures={},
            pinned=pinned,
            holders={},
            served={},
            secrets=secrets_of(stack, []),
            seed=seed,
        )
        seen.outcomes = {m: _outcome(seen, m) for m in by_id}
        if pins == "mints":
            scope = _cids_of_mints(seen) | await _pinned_cids_of(db, list(by_id))
            seen.pinned = {p: cids & scope for p, cids in pinned.items()}
        foreign = {
            row["mint_id"]
            for user_rows in tables.blockers.values()
            for row in user_rows
            if row["mint_id"] not in by_id
        }
        holders, accounts, signatures, running = await asyncio.gather(
            _holders(db, set().union(*seen.pinned.values())),
            rpc.accounts([*derived.values(), *_collection_accounts(collections, seed)]),
            rpc.signature_statuses(
                [s["signature"] for subs in tables.submissions.values() for s in subs]
            ),
            _bounded_all(limit, {m: _running(client, m) for m in foreign}),
        )
        seen.holders, seen.signatures = holders, signatures
        seen.running_elsewhere = {m for m, is_running in running.items() if is_running}
        seen.accounts.update(accounts)
        seen.accounts.update(await rpc.accounts(_token_accounts(seen)))
        gateways = [g for g in env["IPFS_GATEWAYS"].split(",") if g]
        seen.collection_pins = await _collection_pins(db, http, gateways, seen)
        for _ in range(2):  # the metadata first, then the image it names if that is another
            wanted = {c for m in _minted(seen) for c in _nft_cids(seen, m)} - set(seen.served)
            seen.served |= await _bounded_all(
                limit, {cid: _fetch_verified(http, gateways, cid) for cid in sorted(wanted)}
            )
    return seen


@contextlib.asynccontextmanager
async def _connect(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


async def _bounded_all(limit: asyncio.Semaphore, work: dict[str, Awaitable[T]]) -> dict[str, T]:
    async def one(awaitable: Awaitable[T]) -> T:
        async with limit:
            return await awaitable

    values = await asyncio.gather(*(one(w) for w in work.values()))
    return dict(zip(work, values, strict=True))


# -- Temporal


async def _workflow(client: Client, mint_id: str) -> WorkflowSeen:
    handle = client.get_workflow_handle(workflow_id_for(mint_id), result_type=MintResult)
    try:
        described = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return WorkflowSeen(exists=False)
        raise
    seen = WorkflowSeen(
        exists=True,
        status=described.status,
        search_status=described.typed_search_attributes.get(MINT_STATUS),
    )
    try:
        if described.status == WorkflowExecutionStatus.COMPLETED:
            seen.result = await handle.result(follow_runs=False)
        elif described.status == WorkflowExecutionStatus.RUNNING:
            seen.view = await handle.query(
                "status", result_type=StatusView, rpc_timeout=QUERY_TIMEOUT
            )
    except Exception as exc:  # no worker to answer the query, a result that does not parse
        seen.unreadable = f"{type(exc).__name__}: {exc}"
    seen.history = _history_text(await handle.fetch_history())
    return seen


async def _running(client: Client, mint_id: str) -> bool:
    try:
        described = await client.get_workflow_handle(workflow_id_for(mint_id)).describe()
    except RPCError:
        return False
    return described.status == WorkflowExecutionStatus.RUNNING


def _history_text(history: WorkflowHistory) -> str:
    """The history's JSON with every payload also decoded (payload bytes are base64 there),
    whitespace removed, so a secret in an input, a result, an error or its details shows."""
    text = history.to_json()
    decoded = [_decoded(payload) for payload in _payloads(json.loads(text))]
    return re.sub(r"\s+", "", "".join([text, *decoded]))


def _payloads(node: Any) -> Iterator[Row]:
    if isinstance(node, dict):
        if isinstance(node.get("data"), str) and isinstance(node.get("metadata"), dict):
            yield node
        for value in node.values():
            yield from _payloads(value)
    elif isinstance(node, list):
        for item in node:
            yield from _payloads(item)


def _decoded(payload: Row) -> str:
    try:
        return base64.b64decode(payload["data"]).decode("utf-8", "replace")
    except ValueError:
        return ""


# -- Postgres


class Tables(NamedTuple):
    rows: dict[str, Row]
    foreign_rows: dict[str, Row]
    events: dict[str, list[Row]]
    submissions: dict[str, list[Row]]
    blockers: dict[str, list[Row]]


async def _tables(db: asyncpg.Connection, requests: dict[str, MintRequest]) -> Tables:
    ids = list(requests)
    rows: dict[str, Row] = {}
    foreign: dict[str, Row] = {}
    for record in await db.fetch("SELECT * FROM mints WHERE mint_id = ANY($1)", ids):
        row, request = dict(record), requests[record["mint_id"]]
        ours = (row["user_id"], row["wallet"]) == (request.user_id, request.wallet)
        (rows if ours else foreign)[row["mint_id"]] = row
    events = await _grouped(
        db,
        # The mint's own story; its notices (rows with a type: what its backend is told) are
        # not stages.
        "SELECT id, mint_id, stage, event_key FROM mint_events"
        " WHERE mint_id = ANY($1) AND type IS NULL",
        ids,
    )
    submissions = await _grouped(
        db,
        "SELECT id, mint_id, signature, last_valid_block_height, blockhash"
        " FROM mint_submissions WHERE mint_id = ANY($1)",
        ids,
    )
    blockers: dict[str, list[Row]] = defaultdict(list)
    not_in_progress = [s.value for s in (MintStage.MINTED, MintStage.ROLLED_BACK, MintStage.FAILED)]
    for record in await db.fetch(
        "SELECT mint_id, user_id, stage FROM mints"
        " WHERE user_id = ANY($1) AND stage <> ALL($2) ORDER BY mint_id",
        sorted({r.user_id for r in requests.values()}),
        not_in_progress,
    ):
        blockers[record["user_id"]].append(dict(record))
    return Tables(rows, foreign, events, submissions, dict(blockers))


async def _collections(db: asyncpg.Connection, keys: set[str]) -> dict[str, Row]:
    """The named collections' rows, each with `minted`: how many mints of it are MINTED in the
    whole database (the group's size counts every member that ever joined, whichever run or
    test minted it), and `unfinished`: its rows still short of an end (a mint that landed and
    waits, e.g. for an operator at verify, is already counted by the group)."""
    found = {
        r["key"]: {**dict(r), "minted": 0, "unfinished": []}
        for r in await db.fetch(
            "SELECT key, address, max_size, state FROM collections WHERE key = ANY($1)",
            sorted(keys),
        )
    }
    for record in await db.fetch(
        "SELECT collection, count(*) AS n FROM mints WHERE collection = ANY($1) AND stage = $2"
        " GROUP BY collection",
        list(found),
        MintStage.MINTED.value,
    ):
        found[record["collection"]]["minted"] = record["n"]
    for record in await db.fetch(
        "SELECT mint_id, collection, stage, mint_address FROM mints"
        " WHERE collection = ANY($1) AND stage <> ALL($2) ORDER BY mint_id",
        list(found),
        [s.value for s in (MintStage.MINTED, MintStage.ROLLED_BACK, MintStage.FAILED)],
    ):
        found[record["collection"]]["unfinished"].append(dict(record))
    return found


async def _collection_pins(
    db: asyncpg.Connection, http: httpx.AsyncClient, gateways: list[str], seen: Observations
) -> dict[str, str]:
    """The CIDs every collection holds: its metadata (its row's uri) and the image that
    metadata names, read from a gateway when the metadata is pinned (api/collections.py pins
    both like a mint's, without a mint_pins row)."""
    held: dict[str, str] = {}
    pinned = set().union(*seen.pinned.values()) if seen.pinned else set()
    for record in await db.fetch("SELECT key, uri FROM collections ORDER BY key"):
        cid = cid_of_link(record["uri"])
        if cid is None:
            continue
        held[cid] = record["key"]
        if cid in pinned:
            data, _ = await _fetch_verified(http, gateways, cid)
            try:
                document = json.loads(data) if data is not None else None
            except ValueError:
                document = None
            image = _image_cid_of(document if isinstance(document, dict) else None)
            if image is not None:
                held[image] = record["key"]
    return held


def _collection_accounts(collections: dict[str, Row], seed: bytes) -> list[str]:
    """The group mints, and where each unfinished member would be (its row's or derived address)."""
    addresses = [c["address"] for c in collections.values()]
    for collection in collections.values():
        addresses += [_row_address(row, seed) for row in collection["unfinished"]]
    return addresses


def _row_address(row: Row, seed: bytes) -> str:
    return str(row["mint_address"] or derive_mint_keypair(seed, row["mint_id"]).pubkey())


async def _grouped(db: asyncpg.Connection, sql: str, ids: list[str]) -> dict[str, list[Row]]:
    grouped: dict[str, list[Row]] = defaultdict(list)
    for record in await db.fetch(sql + " ORDER BY id", ids):
        grouped[record["mint_id"]].append(dict(record))
    return dict(grouped)


async def _pinned_cids_of(db: asyncpg.Connection, mint_ids: list[str]) -> set[str]:
    records = await db.fetch("SELECT DISTINCT cid FROM mint_pins WHERE mint_id = ANY($1)", mint_ids)
    return {r["cid"] for r in records}


async def _holders(db: asyncpg.Connection, cids: set[str]) -> dict[str, list[Row]]:
    holders: dict[str, list[Row]] = defaultdict(list)
    for record in await db.fetch(
        """SELECT p.mint_id, p.cid, p.provider, p.released_at, m.stage
           FROM mint_pins AS p LEFT JOIN mints AS m ON m.mint_id = p.mint_id
           WHERE p.cid = ANY($1) ORDER BY p.mint_id, p.provider""",
        sorted(cids),
    ):
        holders[record["cid"]].append(dict(record))
    return dict(holders)


# -- Solana


class Rpc:
    """JSON-RPC over the stack's endpoints, the next one tried when one fails."""

    def __init__(self, http: httpx.AsyncClient, endpoints: list[str]) -> None:
        self._http = http
        self._endpoints = endpoints

    async def call(self, method: str, params: list[Any]) -> Any:
        failures = []
        for endpoint in self._endpoints:
            body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            try:
                response = await self._http.post(endpoint, json=body)
                answer = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                failures.append(f"{endpoint}: {type(exc).__name__}")
                continue
            if "error" in answer:
                failures.append(f"{endpoint}: {answer['error']}")
                continue
            return answer["result"]
        raise RuntimeError(f"{method} failed on every endpoint: {'; '.join(failures)}")

    async def accounts(self, addresses: list[str]) -> dict[str, Row | None]:
        """getMultipleAccounts (jsonParsed, confirmed) in batches: address -> value or None."""
        found: dict[str, Row | None] = {}
        for batch in _batches(sorted(set(addresses)), ACCOUNTS_PER_CALL):
            config = {"encoding": "jsonParsed", "commitment": "confirmed"}
            result = await self.call("getMultipleAccounts", [batch, config])
            found.update(zip(batch, result["value"], strict=True))
        return found

    async def signature_statuses(self, signatures: list[str]) -> dict[str, Row | None]:
        found: dict[str, Row | None] = {}
        for batch in _batches(sorted(set(signatures)), SIGNATURES_PER_CALL):
            config = {"searchTransactionHistory": True}
            result = await self.call("getSignatureStatuses", [batch, config])
            found.update(zip(batch, result["value"], strict=True))
        return found


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _parsed(account: Row | None) -> tuple[str | None, Row]:
    """(parsed type, parsed info) of a jsonParsed account; (None, {}) when not a token account."""
    data = account.get("data") if account else None
    if not isinstance(data, dict):
        return None, {}
    parsed = data.get("parsed", {})
    return parsed.get("type"), parsed.get("info", {})


def associated_token_account(wallet: str, mint_address: str, token_program: str) -> str:
    address, _ = Pubkey.find_program_address(
        [
            bytes(Pubkey.from_string(wallet)),
            bytes(Pubkey.from_string(token_program)),
            bytes(Pubkey.from_string(mint_address)),
        ],
        ASSOCIATED_TOKEN_PROGRAM,
    )
    return str(address)


def _ata_of(seen: Observations, mint_id: str) -> str | None:
    account = seen.accounts.get(seen.derived[mint_id])
    if account is None:
        return None
    return associated_token_account(
        seen.requests[mint_id].wallet, seen.derived[mint_id], account["owner"]
    )


def _token_accounts(seen: Observations) -> list[str]:
    return [ata for m in seen.requests if (ata := _ata_of(seen, m)) is not None]


def _token_metadata(info: Row) -> Row | None:
    return _extension(info, "tokenMetadata")


def _extension(info: Row, name: str) -> Row | None:
    """The state of a Token-2022 extension as jsonParsed renders it (devstack/solana/parsed.py:
    tokenMetadata, tokenGroup, tokenGroupMember, groupMemberPointer, ...), None when absent."""
    for extension in info.get("extensions", []):
        if extension.get("extension") == name:
            state: Row = extension.get("state", {})
            return state
    return None


def _chain_metadata_cid(seen: Observations, mint_id: str) -> str | None:
    _, info = _parsed(seen.accounts.get(seen.derived[mint_id]))
    metadata = _token_metadata(info) or {}
    return cid_of_link(metadata.get("uri"))


def cid_of_link(link: object) -> str | None:
    """The CID an NFT's link names: ``ipfs://<cid>`` or a path gateway's
    ``http(s)://<host>/ipfs/<cid>`` (METADATA_URI_STYLE=gateway, the default); None for
    anything else."""
    if not isinstance(link, str):
        return None
    if link.startswith("ipfs://"):
        return link.removeprefix("ipfs://") or None
    scheme, _, rest = link.partition("://")
    host, _, path = rest.partition("/ipfs/")
    if scheme in ("http", "https") and host and "/" not in host and path and "/" not in path:
        return path
    return None


# -- IPFS


async def _pin_lists(http: httpx.AsyncClient, stack: StackConfig) -> dict[str, set[str]]:
    pinata, kubo = await asyncio.gather(_pinata_pinned(http, stack), _kubo_pinned(http, stack))
    return {"pinata": pinata, "kubo": kubo}


async def _pinata_pinned(http: httpx.AsyncClient, stack: StackConfig) -> set[str]:
    url = stack.url("pinata") + "/data/pinList"
    headers = {"Authorization": f"Bearer {stack.pinata_jwt}"}
    pinned: set[str] = set()
    offset = 0
    while True:
        params = {"status": "pinned", "pageLimit": str(PIN_PAGE), "pageOffset": str(offset)}
        response = await _patient(partial(http.get, url, params=params, headers=headers))
        rows = response.json()["rows"]
        pinned |= {row["ipfs_pin_hash"] for row in rows}
        offset += len(rows)
        if len(rows) < PIN_PAGE:
            return pinned


async def _kubo_pinned(http: httpx.AsyncClient, stack: StackConfig) -> set[str]:
    response = await _patient(
        lambda: http.post(stack.url("kubo") + "/api/v0/pin/ls", params={"type": "recursive"})
    )
    return set(response.json()["Keys"])


async def _patient(send: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    """Pinata limits requests per minute: wait out a 429 (the worker shares the budget)."""
    for _ in range(10):
        response = await send()
        if response.status_code != 429:
            response.raise_for_status()
            return response
        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
    response.raise_for_status()
    return response


async def _fetch_verified(
    http: httpx.AsyncClient, gateways: list[str], cid: str
) -> tuple[bytes | None, str]:
    """The content of `cid` from the first gateway whose bytes hash to it, or None and why."""
    try:
        version = parse_cid(cid).version
    except InvalidCid as exc:
        return None, f"{cid!r} is not a CID ({exc})"
    tried = []
    for gateway in gateways:
        try:
            response = await http.get(f"{gateway}/ipfs/{cid}")
        except httpx.HTTPError as exc:
            tried.append(f"{gateway}: {type(exc).__name__}")
            continue
        if response.status_code != 200:
            tried.append(f"{gateway}: HTTP {response.status_code}")
            continue
        data = response.content
        if len(data) > MAX_CONTENT_BYTES:
            tried.append(f"{gateway}: {len(data)} bytes, more than any mint uploads")
            continue
        actual = await asyncio.to_thread(_cid_in_a_known_layout, data, version, cid)
        if actual == cid:
            return data, gateway
        tried.append(f"{gateway}: {len(data)} bytes hashing to {actual}")
    return None, "; ".join(tried) or "no gateway configured"


def _cid_in_a_known_layout(data: bytes, version: int, cid: str) -> str:
    """``cid`` when ``data`` builds to it in one of the layouts a provider may use (Kubo's
    historical default, IPIP-499's unixfs-v1-2025: a provider's other CID is accepted when its
    blocks prove the bytes, issue 16), else the CID of our own layout (for the message)."""
    ours = cid_of(data, version)
    if ours == cid or version == 0:
        return ours
    for layout in OTHER_LAYOUTS:
        if build_file(data, layout).cid == cid:
            return cid
    return ours


def _metadata_document(seen: Observations, cid: str | None) -> Row | None:
    data = seen.served.get(cid, (None, ""))[0] if cid else None
    if data is None:
        return None
    try:
        document = json.loads(data)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _image_cid_of(document: Row | None) -> str | None:
    return cid_of_link((document or {}).get("image"))


def _minted(seen: Observations) -> list[str]:
    return [m for m in seen.requests if seen.outcome(m) == "MINTED"]


def _nft_metadata_cid(seen: Observations, mint_id: str) -> str | None:
    """The metadata a wallet reads: the chain's uri, else what the mint reported."""
    outcome = seen.outcomes[mint_id]
    return _chain_metadata_cid(seen, mint_id) or outcome.metadata_cid


def _nft_cids(seen: Observations, mint_id: str) -> set[str]:
    """A MINTED mint's metadata (as the chain names it) and image CIDs, with the image its
    metadata names once the metadata was fetched."""
    metadata = _nft_metadata_cid(seen, mint_id)
    image_named = _image_cid_of(_metadata_document(seen, metadata))
    cids = {metadata, seen.outcomes[mint_id].image_cid, image_named}
    return {c for c in cids if c}


def _cids_of_mints(seen: Observations) -> set[str]:
    """Every CID these mints reported or recorded (the scope of `pins="mints"`)."""
    cids: set[str | None] = set()
    for mint_id, outcome in seen.outcomes.items():
        row = seen.rows.get(mint_id, {})
        cids |= {
            outcome.image_cid,
            outcome.metadata_cid,
            row.get("image_cid"),
            row.get("metadata_cid"),
        }
    return {c for c in cids if c}


# ---------------------------------------------------------------------------- the outcome


def _outcome(seen: Observations, mint_id: str) -> MintOutcome:
    """Where the mint ended, as Temporal says; LOST when Temporal cannot say it ended."""
    wf, row = seen.workflows[mint_id], seen.rows.get(mint_id, {})
    status, reason = "LOST", None
    source: MintResult | StatusView | None = wf.result or wf.view
    if not wf.exists:
        reason = "no workflow was ever started"
    elif wf.result is not None:
        status, reason = wf.result.status.value, wf.result.reason
    elif wf.status == WorkflowExecutionStatus.RUNNING:
        # No worker answering the query: the search attribute still says where it stands.
        status = wf.view.status.value if wf.view is not None else (wf.search_status or "LOST")
        reason = (wf.view.reason if wf.view is not None else None) or row.get("reason")
    elif (
        wf.status == WorkflowExecutionStatus.CANCELED and wf.search_status == MintStatus.ROLLED_BACK
    ):
        status, reason = "ROLLED_BACK", row.get("reason") or "cancelled before the pivot"
    else:
        name = wf.status.name if wf.status is not None else "unknown"
        reason = f"the workflow closed {name} without a result"
    return MintOutcome(
        mint_id=mint_id,
        status=status,
        mint_address=(source.mint_address if source else None) or row.get("mint_address"),
        image_cid=(source.image_cid if source else None) or row.get("image_cid"),
        metadata_cid=(source.metadata_cid if source else None) or row.get("metadata_cid"),
        reason=reason,
    )


# ------------------------------------------------------------------------- the invariants


def settled(seen: Observations) -> list[Violation]:
    """1. Every mint ended MINTED, ROLLED_BACK or FAILED (with a reason), or still waits for an
    operator; none is lost; Temporal and the database agree on where it stands."""
    found = []
    for mint_id, outcome in seen.outcomes.items():
        wf, row = seen.workflows[mint_id], seen.rows.get(mint_id)
        stage = row["stage"] if row else None
        problems = []
        if outcome.status == "LOST":
            problems.append(f"lost: {outcome.reason}")
        elif outcome.status == "IN_PROGRESS":
            problems.append("still in progress when checked: not finished, not waiting for anyone")
        elif outcome.status == "FAILED" and not outcome.reason:
            unread = f"; status query: {wf.unreadable}" if wf.unreadable else ""
            problems.append(f"FAILED without a reason{unread}")
        if wf.result is not None and wf.search_status != wf.result.status:
            problems.append(f"the result says {wf.result.status}, MintStatus {wf.search_status}")
        if outcome.status == "MINTED" and stage != MintStage.MINTED:
            problems.append("MINTED for Temporal, not for the database")
        elif outcome.status == "ROLLED_BACK" and stage not in (None, MintStage.ROLLED_BACK):
            problems.append("ROLLED_BACK for Temporal, but the row was not rolled back")
        elif outcome.status in RUNNING_OUTCOMES and stage in FINISHED_STAGES:
            waiting = set(wf.view.awaiting_steps) if wf.view is not None else set()
            finishing = stage == MintStage.MINTED and waiting <= {"finish_mint"}
            compensating = outcome.status == "FAILED" and stage == MintStage.ROLLED_BACK
            if not (finishing or compensating):
                problems.append(f"{outcome.status} for Temporal but {stage} in the database")
        if outcome.status == "MINTED" and mint_id in seen.foreign_rows:
            problems.append(f"its row belongs to user {seen.foreign_rows[mint_id]['user_id']}")
        evidence = (
            f"workflow {wf.status.name if wf.status is not None else 'missing'},"
            f" MintStatus {wf.search_status}, database stage {stage}"
        )
        found += [Violation(1, mint_id, f"{p} ({evidence})") for p in problems]
    return found


def minted_nft(seen: Observations) -> list[Violation]:
    """2. MINTED: exactly one NFT at the derived address (supply 1, decimals 0, no mint
    authority, metadata as requested, a member of the collection it names and of no other)
    held by the requested wallet; the row agrees. Each named collection's group counts exactly
    its MINTED members (issue 18)."""
    found = []
    for mint_id in _minted(seen):
        request, outcome, row = (
            seen.requests[mint_id],
            seen.outcomes[mint_id],
            seen.rows.get(mint_id),
        )
        derived = seen.derived[mint_id]
        wrong: list[str] = []
        result = seen.workflows[mint_id].result
        if outcome.mint_address != derived:
            wrong.append(
                f"the workflow names {outcome.mint_address}, the derived address is {derived}"
            )
        account = seen.accounts.get(derived)
        kind, info = _parsed(account)
        if account is None:
            wrong.append(f"no account at the derived mint address {derived}")
        elif kind != "mint":
            wrong.append(f"the account at {derived} is not a token mint ({kind})")
        else:
            if (info.get("supply"), info.get("decimals")) != ("1", 0):
                wrong.append(f"supply {info.get('supply')}, decimals {info.get('decimals')}")
            if info.get("mintAuthority") is not None:
                wrong.append(f"mint authority {info['mintAuthority']} is still set")
            metadata = _token_metadata(info)
            if metadata is None:
                wrong.append("no token metadata on the mint")
            else:
                asked = (request.name, request.symbol, outcome.metadata_cid)
                uri = metadata.get("uri")
                have = (metadata.get("name"), metadata.get("symbol"), cid_of_link(uri))
                if have != asked:
                    wrong.append(f"metadata name/symbol/uri {have} ({uri!r}), expected {asked}")
            wrong += _membership(seen, mint_id, info)
            ata = _ata_of(seen, mint_id)
            kind, held = _parsed(seen.accounts.get(ata or ""))
            amount = held.get("tokenAmount", {}).get("amount")
            if kind != "account" or held.get("owner") != request.wallet or amount != "1":
                wrong.append(
                    f"the wallet {request.wallet}'s token account {ata} holds {amount or 0}"
                    f" (owner {held.get('owner')}), not 1"
                )
        if row is None:
            wrong.append("no database row")
        else:
            expected = {
                "mint_address": derived,
                "wallet": request.wallet,
                "image_cid": outcome.image_cid,
                "metadata_cid": outcome.metadata_cid,
                "signature": result.signature if result else row["signature"],
                "collection": request.collection,
            }
            for column, value in expected.items():
                if row[column] != value:
                    wrong.append(f"row.{column} is {row[column]}, expected {value}")
            status = seen.signatures.get(row["signature"] or "")
            if row["signature"] is None:
                wrong.append("no signature recorded")
            elif status is None or status.get("err") is not None:
                wrong.append(f"signature {row['signature']} is not confirmed on chain ({status})")
        found += [Violation(2, mint_id, f"MINTED but {w}") for w in wrong]
    return found + _group_sizes(seen)


def _membership(seen: Observations, mint_id: str, info: Row) -> list[str]:
    """A MINTED mint naming a collection: its TokenGroupMember names the collection's group and
    itself, and its GroupMemberPointer points at itself. Naming none: it joined no group."""
    key, derived = seen.requests[mint_id].collection, seen.derived[mint_id]
    member = _extension(info, "tokenGroupMember")
    if key is None:
        if member is not None:
            return [f"it joined the group {member.get('group')} though it names no collection"]
        return []
    collection = seen.collections.get(key)
    if collection is None:
        return [f"its collection {key!r} has no collections row"]
    group, wrong = collection["address"], []
    if member is None:
        wrong.append(f"no TokenGroupMember: not a member of its collection {key} ({group})")
    elif (member.get("group"), member.get("mint")) != (group, derived):
        wrong.append(
            f"its TokenGroupMember names group {member.get('group')} and mint"
            f" {member.get('mint')}, expected its collection {key}'s {group} and {derived}"
        )
    pointer = _extension(info, "groupMemberPointer")
    if (pointer or {}).get("memberAddress") != derived:
        wrong.append(f"its GroupMemberPointer is {pointer}, not at itself ({derived})")
    return wrong


def _group_sizes(seen: Observations) -> list[Violation]:
    """Each named collection's TokenGroup: its size is the number of its MINTED mints in the
    database (plus any unfinished one already on chain, still waiting to be recorded), within
    its maxSize, which is the row's; this run's MINTED members hold distinct member numbers."""
    found = []
    for key, collection in sorted(seen.collections.items()):
        address = collection["address"]
        account = seen.accounts.get(address)
        group = _extension(_parsed(account)[1], "tokenGroup")
        landed = [
            row["mint_id"]
            for row in collection["unfinished"]
            if seen.accounts.get(_row_address(row, seen.seed)) is not None
        ]
        expected, wrong = collection["minted"] + len(landed), []
        if account is None:
            if expected:
                wrong.append(f"no account at its address, yet {expected} mints joined it")
        elif group is None:
            wrong.append("its mint holds no TokenGroup")
        else:
            size, max_size = group.get("size"), group.get("maxSize")
            if group.get("mint") != address:
                wrong.append(f"its TokenGroup names mint {group.get('mint')}")
            if size != expected:
                waiting = f" and {len(landed)} landed, not finished ({landed})" if landed else ""
                wrong.append(
                    f"the group's size is {size} but {collection['minted']} of its mints are"
                    f" MINTED in the database{waiting}"
                )
            if not isinstance(size, int) or not isinstance(max_size, int) or size > max_size:
                wrong.append(f"the group's size {size} exceeds its maxSize {max_size}")
            if max_size != collection["max_size"]:
                wrong.append(f"maxSize {max_size} on chain, {collection['max_size']} in its row")
            numbers: dict[Any, list[str]] = defaultdict(list)
            for mint_id in _minted(seen):
                if seen.requests[mint_id].collection == key:
                    _, info = _parsed(seen.accounts.get(seen.derived[mint_id]))
                    number = (_extension(info, "tokenGroupMember") or {}).get("memberNumber")
                    if number is not None:
                        numbers[number].append(mint_id)
            shared = {n: ids for n, ids in numbers.items() if len(ids) > 1}
            if shared:
                wrong.append(f"members share a member number: {shared}")
            if any(not isinstance(n, int) or not 1 <= n <= (size or 0) for n in numbers):
                wrong.append(f"member numbers {sorted(numbers)} outside 1..{size}")
        found += [Violation(2, None, f"collection {key} ({address}): {w}") for w in wrong]
    return found


def rolled_back_cleanly(seen: Observations) -> list[Violation]:
    """3. ROLLED_BACK: no account at the derived address, and the user is free to mint again."""
    found = []
    for mint_id, outcome in seen.outcomes.items():
        if outcome.status != "ROLLED_BACK":
            continue
        derived = seen.derived[mint_id]
        account = seen.accounts.get(derived)
        if account is not None:
            kind, info = _parsed(account)
            found.append(
                Violation(
                    3,
                    mint_id,
                    f"ROLLED_BACK but an account exists at its mint address {derived}"
                    f" ({kind or account.get('owner')}, supply {info.get('supply')})",
                )
            )
        user = seen.requests[mint_id].user_id
        for blocker in seen.blockers.get(user, []):
            other = blocker["mint_id"]
            still_running = (
                seen.outcome(other) in RUNNING_OUTCOMES
                if other in seen.requests
                else other in seen.running_elsewhere
            )
            if not still_running:
                found.append(
                    Violation(
                        3,
                        mint_id,
                        f"ROLLED_BACK but user {user} is not free: row {other} is at"
                        f" {blocker['stage']} and no running mint will move it",
                    )
                )
    return found


def pins_held(seen: Observations) -> list[Violation]:
    """4. Every pinned CID has a live holder (no orphans); every MINTED mint's CIDs are pinned
    and served, verified, by a gateway, and its metadata names its image."""
    found = []
    for provider in PROVIDERS:
        for cid in sorted(seen.pinned.get(provider, ())):
            rows = [h for h in seen.holders.get(cid, []) if h["provider"] == provider]
            if any(_live(seen, h) for h in rows) or cid in seen.collection_pins:
                continue
            ours = [h["mint_id"] for h in rows if h["mint_id"] in seen.requests]
            held = ", ".join(_holding(seen, h) for h in rows) or "no mint_pins row at all"
            found.append(
                Violation(
                    4,
                    ours[-1] if ours else None,
                    f"orphaned pin: {cid} is pinned on {provider} but no live mint holds it"
                    f" ({held})",
                )
            )
    every_pin = set().union(*seen.pinned.values()) if seen.pinned else set()
    for mint_id in _minted(seen):
        request, outcome = seen.requests[mint_id], seen.outcomes[mint_id]
        metadata_cid = _nft_metadata_cid(seen, mint_id)
        document = _metadata_document(seen, metadata_cid)
        problems = []
        for cid in sorted(_nft_cids(seen, mint_id)):
            if cid not in every_pin:
                problems.append(f"{cid} is pinned on neither Pinata nor Kubo")
            data, evidence = seen.served.get(cid, (None, "not fetched"))
            if data is None:
                problems.append(f"no gateway serves {cid} ({evidence})")
        if metadata_cid is not None and seen.served.get(metadata_cid, (None, ""))[0] is not None:
            if document is None:
                problems.append(f"the metadata {metadata_cid} is not a JSON object")
            else:
                if _image_cid_of(document) != outcome.image_cid:
                    problems.append(
                        f"the metadata's image is {document.get('image')},"
                        f" the mint's image is {outcome.image_cid}"
                    )
                if (document.get("name"), document.get("symbol")) != (request.name, request.symbol):
                    problems.append(f"the metadata names {document.get('name')!r}")
        found += [Violation(4, mint_id, f"MINTED but {p}") for p in problems]
    return found


def _live(seen: Observations, holder: Row) -> bool:
    if holder["released_at"] is not None or holder["stage"] in (None, *NOT_HOLDING):
        return False
    return seen.outcome(holder["mint_id"]) not in ("ROLLED_BACK", "FAILED")


def _holding(seen: Observations, holder: Row) -> str:
    state = "released" if holder["released_at"] is not None else "not released"
    outcome = seen.outcome(holder["mint_id"])
    return f"{holder['mint_id']}: {state}, stage {holder['stage']}" + (
        f", outcome {outcome}" if outcome else ""
    )


def no_secrets(seen: Observations) -> list[Violation]:
    """5. No secret (seed, JWT, system wallet, the mint's own key) in any workflow history."""
    found = []
    for mint_id, wf in seen.workflows.items():
        secrets = {**seen.secrets, **_mint_key_spellings(seen.seed, mint_id)}
        leaked = sorted(name for name, value in secrets.items() if value and value in wf.history)
        if leaked:
            found.append(
                Violation(5, mint_id, f"{workflow_id_for(mint_id)}'s history holds {leaked}")
            )
    return found


# Which event may follow which: the saga's stages (INITIATED is the claim's event, `claimed`;
# claims before issue 17 wrote none). DATABASE_UPDATED -> BLOCKCHAIN_CONFIRMED: the NFT was
# found on chain without a send recorded (a lost answer). ROLLED_BACK only before the pivot;
# FAILED (compensation failed) only before it too, and then ROLLED_BACK once an operator's
# retry compensates.
_PRE_PIVOT_END = frozenset({MintStage.ROLLED_BACK, MintStage.FAILED})
ALLOWED_NEXT: dict[MintStage | None, frozenset[MintStage]] = {
    None: frozenset({MintStage.INITIATED, MintStage.IPFS_UPLOADED}) | _PRE_PIVOT_END,
    MintStage.INITIATED: frozenset({MintStage.IPFS_UPLOADED}) | _PRE_PIVOT_END,
    MintStage.IPFS_UPLOADED: frozenset({MintStage.DATABASE_UPDATED}) | _PRE_PIVOT_END,
    MintStage.DATABASE_UPDATED: frozenset(
        {MintStage.BLOCKCHAIN_SUBMITTED, MintStage.BLOCKCHAIN_CONFIRMED}
    )
    | _PRE_PIVOT_END,
    MintStage.BLOCKCHAIN_SUBMITTED: frozenset(
        {MintStage.BLOCKCHAIN_SUBMITTED, MintStage.BLOCKCHAIN_CONFIRMED}
    ),
    MintStage.BLOCKCHAIN_CONFIRMED: frozenset({MintStage.VERIFIED}),
    MintStage.VERIFIED: frozenset({MintStage.MINTED}),
    MintStage.MINTED: frozenset(),
    MintStage.FAILED: frozenset({MintStage.ROLLED_BACK}),
    MintStage.ROLLED_BACK: frozenset(),
}
# An event that notes a pause without moving the mint (MintStore.record_event).
PAUSE_EVENTS = frozenset({MintStage.AWAITING_OPERATOR.value})


def story_in_order(seen: Observations) -> list[Violation]:
    """6. The events tell each mint's stages in an order the saga allows, ending where the row
    is; no re-sign before the previous blockhash expired; at most one signature landed."""
    found = []
    for mint_id in seen.requests:
        if mint_id not in seen.foreign_rows:  # another request's events are not this story
            found += _events_in_order(seen, mint_id)
        found += _submissions_in_order(seen, mint_id)
    return found


def _events_in_order(seen: Observations, mint_id: str) -> list[Violation]:
    events = seen.events.get(mint_id, [])
    story = " -> ".join(e["stage"] for e in events) or "no events"
    current: MintStage | None = None  # the claim
    for event in events:
        if event["stage"] in PAUSE_EVENTS and current not in FINISHED_STAGES:
            continue
        stage = MintStage(event["stage"]) if event["stage"] in STAGES else None
        if stage is None or stage not in ALLOWED_NEXT[current]:
            after = current.value if current is not None else "the claim"
            message = f"event {event['id']} ({event['stage']}) may not follow {after}: {story}"
            return [Violation(6, mint_id, message)]
        current = stage
    row = seen.rows.get(mint_id)
    if row is not None and row["stage"] != (current or MintStage.INITIATED):
        return [Violation(6, mint_id, f"the row is at {row['stage']} but the events say {story}")]
    return []


def _submissions_in_order(seen: Observations, mint_id: str) -> list[Violation]:
    found = []
    history = seen.workflows[mint_id].history
    # A signature the workflow never received (its prepare attempt's answer was lost) was
    # never sent by it and cannot land: it does not count as a signing. One that landed with
    # an error is final: signing again at once is safe.
    submissions = [
        s
        for s in seen.submissions.get(mint_id, [])
        if s["signature"] in history or seen.signatures.get(s["signature"]) is not None
    ]
    for earlier, later in itertools.pairwise(submissions):
        issued = later["last_valid_block_height"] - VALIDITY_WINDOW
        landed_failed = (seen.signatures.get(earlier["signature"]) or {}).get("err") is not None
        if issued <= earlier["last_valid_block_height"] and not landed_failed:
            found.append(
                Violation(
                    6,
                    mint_id,
                    f"re-signed before expiry: {later['signature']} uses a blockhash issued at"
                    f" height {issued}, while {earlier['signature']} stayed valid up to"
                    f" {earlier['last_valid_block_height']}",
                )
            )
    landed = [
        s["signature"]
        for s in seen.submissions.get(mint_id, [])
        if (status := seen.signatures.get(s["signature"])) is not None and status.get("err") is None
    ]
    if len(landed) > 1:
        found.append(Violation(6, mint_id, f"{len(landed)} signatures landed: {landed}"))
    return found
