"""MintStore against the devstack's Postgres (through the fault proxy), and its error table.

Each test uses fresh mint and user ids: the database lives for the whole session.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import asyncpg.exceptions as pgexc
import httpx
import pytest
from temporalio.testing import ActivityEnvironment

from devstack.config import StackConfig
from mintsaga.db.errors import IN_PROGRESS_INDEX, classify_error, endpoint_and_secrets
from mintsaga.db.executor import CONNECTION_LOST
from mintsaga.db.mint_store import MintStore
from mintsaga.db.rows import MintRow, Pin
from mintsaga.errors import ErrorKind, ServiceError
from mintsaga.stages import MintStage
from tests.saga_support import faults_fired

pytestmark = pytest.mark.integration


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def add_fault(stack: StackConfig, **spec: Any) -> str:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(stack.url("admin") + "/faults", json=spec)
    response.raise_for_status()
    return str(response.json()["id"])


async def remove_fault(stack: StackConfig, fault_id: str) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.delete(f"{stack.url('admin')}/faults/{fault_id}")
    response.raise_for_status()


async def direct_fetchval(stack: StackConfig, sql: str, *args: Any) -> Any:
    """Read around the fault proxy, to see what really reached the database."""
    conn = await asyncpg.connect(stack.direct_database_url)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


@pytest.fixture
async def store(stack: StackConfig) -> AsyncIterator[MintStore]:
    mint_store = await MintStore.connect(stack.database_url, min_size=2, max_size=5)
    try:
        yield mint_store
    finally:
        await mint_store.close()


class Unpins:
    """A fake ``unpin`` for release_pins: records each call (these CIDs are not real)."""

    def __init__(self) -> None:
        self.calls: list[Pin] = []

    async def __call__(self, cid: str, provider: str) -> None:
        self.calls.append(Pin(cid, provider))


async def claim_new(store: MintStore, user_id: str | None = None) -> MintRow:
    mint_id = new_id("mint")
    return await store.claim(
        mint_id, user_id or new_id("user"), new_id("wallet"), f"addr-{mint_id}"
    )


# -- claims ------------------------------------------------------------------------------------


async def test_claim_is_idempotent(store: MintStore, stack: StackConfig) -> None:
    mint_id, user_id = new_id("mint"), new_id("user")
    first = await store.claim(mint_id, user_id, "wallet-1", "addr-1")
    again = await store.claim(mint_id, user_id, "wallet-1", "addr-1")
    assert first.stage is MintStage.INITIATED
    assert again == first
    count = await direct_fetchval(stack, "SELECT count(*) FROM mints WHERE mint_id = $1", mint_id)
    assert count == 1
    assert await store.get(mint_id) == first


async def test_claim_returns_the_existing_row_whatever_its_stage(store: MintStore) -> None:
    row = await claim_new(store)
    await store.mark_rolled_back(row.mint_id, "test")
    again = await store.claim(row.mint_id, row.user_id, row.wallet, row.mint_address)
    assert again.stage is MintStage.ROLLED_BACK


async def test_claim_of_a_taken_mint_id_by_another_request_is_a_conflict(
    store: MintStore,
) -> None:
    row = await claim_new(store)
    with pytest.raises(ServiceError) as caught:
        await store.claim(row.mint_id, new_id("user"), row.wallet, row.mint_address)
    assert (caught.value.kind, caught.value.code) == (ErrorKind.PERMANENT, "Conflict")


async def test_second_mint_in_progress_for_a_user_is_rejected(
    store: MintStore, stack: StackConfig
) -> None:
    first = await claim_new(store)
    second_id = new_id("mint")
    with pytest.raises(ServiceError) as caught:
        await store.claim(second_id, first.user_id, first.wallet, f"addr-{second_id}")
    assert caught.value.kind is ErrorKind.PERMANENT
    assert caught.value.code == "UserMintInProgress"
    assert first.mint_id in caught.value.message
    count = "SELECT count(*) FROM mints WHERE mint_id = $1"
    assert await direct_fetchval(stack, count, second_id) == 0
    assert await store.in_progress(first.user_id) == first


async def test_concurrent_claims_for_one_user_exactly_one_wins(store: MintStore) -> None:
    user_id = new_id("user")
    mint_ids = [new_id("mint") for _ in range(5)]
    results = await asyncio.gather(
        *(store.claim(m, user_id, "wallet", f"addr-{m}") for m in mint_ids),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, MintRow)]
    losers = [r for r in results if not isinstance(r, MintRow)]
    assert len(winners) == 1
    assert len(losers) == 4
    for loser in losers:
        assert isinstance(loser, ServiceError) and loser.code == "UserMintInProgress"
        assert winners[0].mint_id in loser.message
    assert await store.in_progress(user_id) == winners[0]


async def test_rolling_back_frees_the_user_and_keeps_history(
    store: MintStore, stack: StackConfig
) -> None:
    first = await claim_new(store)
    assert await store.mark_rolled_back(first.mint_id, "upload failed") is True
    assert await store.mark_rolled_back(first.mint_id, "upload failed") is True  # a retry
    assert await store.in_progress(first.user_id) is None
    second = await store.claim(new_id("mint"), first.user_id, first.wallet, None)
    assert second.stage is MintStage.INITIATED
    rolled = await store.get(first.mint_id)
    assert rolled is not None
    assert (rolled.stage, rolled.reason) == (MintStage.ROLLED_BACK, "upload failed")
    assert [e.stage for e in await store.events(first.mint_id)] == ["INITIATED", "ROLLED_BACK"]
    assert await store.mark_rolled_back(new_id("never"), "nothing to undo") is False
    assert (
        await direct_fetchval(stack, "SELECT count(*) FROM mints WHERE mint_id = $1", first.mint_id)
        == 1
    )


async def test_failed_mint_frees_the_user(store: MintStore) -> None:
    first = await claim_new(store)
    assert await store.mark_failed(first.mint_id, "unpin failed") is True
    assert await store.mark_failed(new_id("never"), "x") is False
    row = await store.get(first.mint_id)
    assert row is not None and (row.stage, row.reason) == (MintStage.FAILED, "unpin failed")
    await store.claim(new_id("mint"), first.user_id, first.wallet, None)


# -- stages and events -------------------------------------------------------------------------


async def test_set_stage_appends_one_event_per_event_key(store: MintStore) -> None:
    row = await claim_new(store)
    for _ in range(2):
        moved = await store.set_stage(
            row.mint_id,
            MintStage.IPFS_UPLOADED,
            event_key="uploaded",
            detail={"provider": "pinata"},
            image_cid="bafy-image",
            metadata_cid="bafy-meta",
        )
        assert moved.stage is MintStage.IPFS_UPLOADED
        assert (moved.image_cid, moved.metadata_cid) == ("bafy-image", "bafy-meta")
    await store.set_stage(row.mint_id, "DATABASE_UPDATED", event_key="db")
    events = await store.events(row.mint_id)
    assert [(e.stage, e.event_key) for e in events] == [
        ("INITIATED", "claimed"),  # the claim's own event
        ("IPFS_UPLOADED", "uploaded"),
        ("DATABASE_UPDATED", "db"),
    ]
    assert events[1].detail == {
        "provider": "pinata",
        "image_cid": "bafy-image",
        "metadata_cid": "bafy-meta",
    }
    assert events[0].id < events[1].id


async def test_a_stale_retry_does_not_move_a_mint_back(store: MintStore) -> None:
    row = await claim_new(store)
    await store.set_stage(row.mint_id, MintStage.IPFS_UPLOADED, event_key="uploaded")
    await store.set_stage(row.mint_id, MintStage.DATABASE_UPDATED, event_key="db")
    again = await store.set_stage(row.mint_id, MintStage.IPFS_UPLOADED, event_key="uploaded")
    assert again.stage is MintStage.DATABASE_UPDATED
    assert len(await store.events(row.mint_id)) == 3  # the claim's, and two


async def test_finished_mints_cannot_go_backwards(store: MintStore) -> None:
    minted = await claim_new(store)
    await store.mark_minted(minted.mint_id, signature="sig", slot=42, mint_address="addr-m")
    for move in (
        store.set_stage(minted.mint_id, MintStage.VERIFIED, event_key="late-verify"),
        store.mark_rolled_back(minted.mint_id, "too late"),
        store.release_pins(minted.mint_id, Unpins()),
    ):
        with pytest.raises(ServiceError) as caught:
            await move
        assert (caught.value.kind, caught.value.code) == (
            ErrorKind.PERMANENT,
            "MintAlreadyFinished",
        )
    same = await store.set_stage(minted.mint_id, MintStage.MINTED, event_key="reconciled")
    assert (same.stage, same.signature, same.slot) == (MintStage.MINTED, "sig", 42)

    rolled = await claim_new(store)
    await store.mark_rolled_back(rolled.mint_id, "gave up")
    with pytest.raises(ServiceError, match="MintAlreadyFinished"):
        await store.set_stage(rolled.mint_id, MintStage.INITIATED, event_key="restart")
    with pytest.raises(ServiceError, match="MintAlreadyFinished"):
        await store.record_submission(rolled.mint_id, "sig-late", 100, "hash")
    row = await store.get(rolled.mint_id)
    assert row is not None and row.stage is MintStage.ROLLED_BACK


async def test_caller_mistakes_are_permanent(store: MintStore) -> None:
    row = await claim_new(store)
    cases = [
        (store.set_stage(new_id("never"), MintStage.VERIFIED, event_key="k"), "UnknownMint"),
        (store.set_stage(row.mint_id, "SHIPPED", event_key="k"), "UnknownStage"),
        (
            store.set_stage(row.mint_id, MintStage.VERIFIED, event_key="k", user_id="x"),
            "UnknownField",
        ),
        (store.record_pin(new_id("never"), "cid", "pinata"), "UnknownMint"),
        (store.record_submission(new_id("never"), "sig", 1, "hash"), "UnknownMint"),
        (
            store.record_event(new_id("never"), MintStage.AWAITING_OPERATOR, event_key="k"),
            "UnknownMint",
        ),
    ]
    for call, code in cases:
        with pytest.raises(ServiceError) as caught:
            await call
        assert (caught.value.kind, caught.value.code) == (ErrorKind.PERMANENT, code)


async def test_record_event_does_not_move_the_mint(store: MintStore) -> None:
    row = await claim_new(store)
    for _ in range(2):
        await store.record_event(
            row.mint_id, MintStage.AWAITING_OPERATOR, event_key="wait-1", detail={"step": "upload"}
        )
    current = await store.get(row.mint_id)
    assert current is not None and current.stage is MintStage.INITIATED
    events = await store.events(row.mint_id)
    assert [(e.stage, e.detail) for e in events] == [
        ("INITIATED", {}),  # the claim's own event
        ("AWAITING_OPERATOR", {"step": "upload"}),
    ]


# -- pins --------------------------------------------------------------------------------------


async def test_a_shared_pin_is_released_by_the_last_live_mint(
    store: MintStore, stack: StackConfig
) -> None:
    shared, own = new_id("bafy-tier"), new_id("bafy-meta")
    first, second = await claim_new(store), await claim_new(store)
    for _ in range(2):  # recording twice is harmless
        await store.record_pin(first.mint_id, shared, "pinata")
    await store.record_pin(first.mint_id, own, "pinata")
    await store.record_pin(second.mint_id, shared, "kubo")

    unpins = Unpins()
    assert await store.release_pins(first.mint_id, unpins) == [Pin(own, "pinata")]
    assert await store.release_pins(first.mint_id, unpins) == [Pin(own, "pinata")]  # a retry
    assert await store.release_pins(second.mint_id, unpins) == [Pin(shared, "kubo")]
    # A retry unpins again: the first attempt's unpin may not have happened.
    assert unpins.calls == [Pin(own, "pinata"), Pin(own, "pinata"), Pin(shared, "kubo")]

    rows = await direct_fetchval(
        stack,
        "SELECT count(*) FROM mint_pins WHERE mint_id = ANY($1) AND released_at IS NOT NULL",
        [first.mint_id, second.mint_id],
    )
    assert rows == 3  # released, not deleted


async def test_a_pin_of_a_rolled_back_mint_does_not_hold_the_cid(store: MintStore) -> None:
    shared = new_id("bafy-tier")
    first, second = await claim_new(store), await claim_new(store)
    await store.record_pin(first.mint_id, shared, "pinata")
    await store.record_pin(second.mint_id, shared, "pinata")
    await store.mark_rolled_back(second.mint_id, "rolled back before releasing")
    assert await store.release_pins(first.mint_id, Unpins()) == [Pin(shared, "pinata")]
    with pytest.raises(ServiceError, match="MintAlreadyFinished"):
        await store.record_pin(second.mint_id, new_id("bafy-new"), "pinata")
    await store.record_pin(second.mint_id, shared, "pinata")  # a stale retry is harmless


# -- submissions -------------------------------------------------------------------------------


async def test_submissions_are_kept_in_order(store: MintStore) -> None:
    row = await claim_new(store)
    await store.record_submission(row.mint_id, "sig-1", 1000, "hash-1")
    await store.record_submission(row.mint_id, "sig-2", 1150, "hash-2")
    await store.record_submission(row.mint_id, "sig-1", 1000, "hash-1")  # a retry
    kept = await store.submissions(row.mint_id)
    assert [(s.signature, s.last_valid_block_height, s.blockhash) for s in kept] == [
        ("sig-1", 1000, "hash-1"),
        ("sig-2", 1150, "hash-2"),
    ]
    current = await store.get(row.mint_id)
    assert current is not None
    assert (current.signature, current.last_valid_block_height, current.blockhash) == (
        "sig-2",
        1150,
        "hash-2",
    )


# -- faults ------------------------------------------------------------------------------------


async def test_a_connection_reset_is_transient_and_the_next_call_works(
    store: MintStore, stack: StackConfig
) -> None:
    row = await claim_new(store)
    fault = await add_fault(stack, target="postgres", kind="error")
    with pytest.raises(ServiceError) as caught:
        await store.get(row.mint_id)
    assert caught.value.kind is ErrorKind.TRANSIENT
    assert caught.value.code in {"ConnectionLost", "ConnectionReset", "ConnectionClosed"}
    await remove_fault(stack, fault)
    assert await store.get(row.mint_id) == row


async def test_the_pool_recovers_after_every_connection_is_cut(stack: StackConfig) -> None:
    store = await MintStore.connect(stack.database_url)  # the spec's pool: 5 warm connections
    try:
        await store.health()
        async with httpx.AsyncClient(timeout=10) as http:
            cut = await http.post(stack.url("admin") + "/postgres/reset-connections")
        assert cut.json()["reset"] >= 5
        await asyncio.sleep(0.1)  # the resets reach the client
        for _ in range(5):
            await store.health()
    finally:
        await store.close()


async def test_a_lost_answer_to_a_claim_is_transient_and_the_retry_is_harmless(
    store: MintStore, stack: StackConfig
) -> None:
    mint_id, user_id = new_id("mint"), new_id("user")
    fault = await add_fault(stack, target="postgres", kind="drop_response")
    with pytest.raises(ServiceError) as caught:
        await store.claim(mint_id, user_id, "wallet", f"addr-{mint_id}")
    assert caught.value.kind is ErrorKind.TRANSIENT
    await remove_fault(stack, fault)
    count = "SELECT count(*) FROM mints WHERE mint_id = $1"
    assert await direct_fetchval(stack, count, mint_id) == 1  # the insert did happen
    row = await store.claim(mint_id, user_id, "wallet", f"addr-{mint_id}")
    assert row.stage is MintStage.INITIATED
    assert await direct_fetchval(stack, count, mint_id) == 1


async def test_a_lost_answer_to_set_stage_is_transient_and_the_retry_is_harmless(
    store: MintStore, stack: StackConfig
) -> None:
    row = await claim_new(store)
    fault = await add_fault(stack, target="postgres", kind="drop_response")
    with pytest.raises(ServiceError) as caught:
        await store.set_stage(
            row.mint_id, MintStage.IPFS_UPLOADED, event_key="uploaded", image_cid="bafy"
        )
    assert caught.value.kind is ErrorKind.TRANSIENT
    await remove_fault(stack, fault)
    events = "SELECT count(*) FROM mint_events WHERE mint_id = $1 AND event_key = 'uploaded'"
    assert await direct_fetchval(stack, events, row.mint_id) == 1  # it ran; the answer was lost
    moved = await store.set_stage(
        row.mint_id, MintStage.IPFS_UPLOADED, event_key="uploaded", image_cid="bafy"
    )
    assert (moved.stage, moved.image_cid) == (MintStage.IPFS_UPLOADED, "bafy")
    assert await direct_fetchval(stack, events, row.mint_id) == 1


async def test_a_lost_answer_to_release_pins_loses_no_unpin(
    store: MintStore, stack: StackConfig
) -> None:
    row = await claim_new(store)
    cid = new_id("bafy")
    await store.record_pin(row.mint_id, cid, "pinata")
    fault = await add_fault(stack, target="postgres", kind="drop_response")
    unpins = Unpins()
    with pytest.raises(ServiceError) as caught:
        await store.release_pins(row.mint_id, unpins)
    assert caught.value.kind is ErrorKind.TRANSIENT
    await remove_fault(stack, fault)
    assert await store.release_pins(row.mint_id, unpins) == [Pin(cid, "pinata")]
    assert unpins.calls[-1] == Pin(cid, "pinata")


async def test_database_down_is_transient_and_fast(store: MintStore, stack: StackConfig) -> None:
    await store.health()
    fault = await add_fault(stack, target="postgres", kind="down")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ServiceError) as caught:
        await store.health()
    assert caught.value.kind is ErrorKind.TRANSIENT
    with pytest.raises(ServiceError) as at_connect:
        await MintStore.connect(stack.database_url, min_size=1)
    assert at_connect.value.kind is ErrorKind.TRANSIENT
    assert loop.time() - started < 5
    await remove_fault(stack, fault)
    await store.health()


async def test_a_database_that_stalls_new_connections_times_out(stack: StackConfig) -> None:
    await add_fault(stack, target="postgres", kind="hang")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ServiceError) as caught:
        await MintStore.connect(stack.database_url, min_size=1, connect_timeout=1)
    assert (caught.value.kind, caught.value.code) == (ErrorKind.TRANSIENT, "ConnectTimeout")
    assert loop.time() - started < 4


async def test_a_stalled_query_times_out_and_its_connection_is_replaced(
    stack: StackConfig,
) -> None:
    store = await MintStore.connect(stack.database_url, min_size=1, max_size=1, command_timeout=1)
    try:
        fault = await add_fault(stack, target="postgres", kind="hang")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ServiceError) as caught:
            await store.health()
        assert (caught.value.kind, caught.value.code) == (ErrorKind.TRANSIENT, "QueryTimeout")
        assert loop.time() - started < 4  # not held up by the stalled cancellation
        await remove_fault(stack, fault)
        await store.health()  # the one pooled connection was replaced
    finally:
        await store.close()


async def test_errors_never_carry_the_database_password(stack: StackConfig) -> None:
    password = "s3cret-Pa55"
    host_port = stack.database_url.split("@", 1)[1]
    dsn = f"postgresql://postgres:{password}@{host_port}"
    await add_fault(stack, target="postgres", kind="down")
    with pytest.raises(ServiceError) as caught:
        await MintStore.connect(dsn, min_size=1)
    assert password not in str(caught.value)
    assert caught.value.endpoint is not None and password not in caught.value.endpoint
    assert "postgres:" not in caught.value.endpoint  # no user info at all


# -- classification, without a database --------------------------------------------------------


def unique_violation(constraint: str) -> pgexc.UniqueViolationError:
    return pgexc.UniqueViolationError.new({"C": "23505", "M": "duplicate key", "n": constraint})


TRANSIENT, PERMANENT, OPERATOR = ErrorKind.TRANSIENT, ErrorKind.PERMANENT, ErrorKind.NEEDS_OPERATOR
CLASSIFICATION: list[tuple[BaseException, str, ErrorKind, str]] = [
    (pgexc.ConnectionDoesNotExistError("closed"), "query", TRANSIENT, "ConnectionLost"),
    (pgexc.ConnectionFailureError("08006"), "query", TRANSIENT, "ConnectionFailure"),
    (pgexc.InterfaceError("fetch(): connection is closed"), "query", TRANSIENT, "ConnectionClosed"),
    (pgexc.InterfaceError("pool is closing"), "acquire", TRANSIENT, "PoolClosed"),
    (pgexc.InterfaceError("operation in progress"), "query", PERMANENT, "InterfaceError"),
    (ConnectionResetError(104, "reset by peer"), "query", TRANSIENT, "ConnectionReset"),
    (ConnectionRefusedError(111, "refused"), "connect", TRANSIENT, "ConnectionRefused"),
    (BrokenPipeError(32, "broken pipe"), "query", TRANSIENT, "ConnectionError"),
    (socket.gaierror(-2, "unknown name"), "connect", TRANSIENT, "NameResolutionFailed"),
    (OSError(113, "No route to host"), "connect", TRANSIENT, "NetworkError"),
    (pgexc.TooManyConnectionsError("too many"), "connect", TRANSIENT, "TooManyConnections"),
    (pgexc.CannotConnectNowError("starting up"), "connect", TRANSIENT, "CannotConnectNow"),
    (pgexc.AdminShutdownError("terminating"), "query", TRANSIENT, "ServerShutdown"),
    (pgexc.QueryCanceledError("statement timeout"), "query", TRANSIENT, "QueryCanceled"),
    (TimeoutError(), "acquire", TRANSIENT, "PoolAcquireTimeout"),
    (asyncio.TimeoutError(), "connect", TRANSIENT, "ConnectTimeout"),  # noqa: UP041
    (TimeoutError(), "query", TRANSIENT, "QueryTimeout"),
    (pgexc.DeadlockDetectedError("deadlock"), "query", TRANSIENT, "DeadlockDetected"),
    (pgexc.SerializationError("serialize"), "query", TRANSIENT, "SerializationFailure"),
    (unique_violation(IN_PROGRESS_INDEX), "query", PERMANENT, "UserMintInProgress"),
    (unique_violation("mints_mint_address"), "query", PERMANENT, "Conflict"),
    (pgexc.InvalidPasswordError("auth failed"), "connect", OPERATOR, "DatabaseAuthFailed"),
    (pgexc.UndefinedTableError("no mints"), "query", OPERATOR, "SchemaNotMigrated"),
    (pgexc.NotNullViolationError("null"), "query", PERMANENT, "NotNullViolationError"),
    (ValueError("bad input"), "query", PERMANENT, "ValueError"),
]


@pytest.mark.parametrize(
    ("exc", "during", "kind", "code"),
    CLASSIFICATION,
    ids=[f"{type(c[0]).__name__}-{c[1]}-{c[3]}" for c in CLASSIFICATION],
)
def test_classification_table(exc: BaseException, during: Any, kind: ErrorKind, code: str) -> None:
    error = classify_error(exc, during=during, endpoint="postgresql://db:5432/mintsaga")
    assert (error.kind, error.code, error.service) == (kind, code, "postgres")
    assert error.endpoint == "postgresql://db:5432/mintsaga"


def test_only_failures_without_a_connection_are_connection_failures() -> None:
    """The database breaker's streak counts connection failures: a query cut off on an open
    connection says the database was reached."""
    reset = ConnectionResetError("reset by peer")
    assert classify_error(reset, during="query").connected is True
    assert classify_error(reset, during="acquire").connected is False
    assert classify_error(ConnectionRefusedError("refused"), during="connect").connected is False


def test_a_service_error_passes_through_unchanged() -> None:
    original = ServiceError("x", service="postgres", kind=ErrorKind.PERMANENT, code="UnknownMint")
    assert classify_error(original) is original


def test_the_dsn_and_its_password_are_scrubbed() -> None:
    dsn = (
        "postgresql://minter:p%40ss-w0rd@db.internal:5432/mintsaga?password=q-pass&sslmode=require"
    )
    endpoint, secrets = endpoint_and_secrets(dsn)
    assert endpoint == "postgresql://db.internal:5432/mintsaga"
    error = classify_error(
        OSError(f"could not connect to {dsn} with p@ss-w0rd or q-pass"), secrets=secrets
    )
    for leaked in ("p%40ss-w0rd", "p@ss-w0rd", "q-pass", dsn):
        assert leaked not in str(error)


# -- the one in-call retry, with a scripted pool ------------------------------------------------


class ScriptedConnection:
    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.calls = 0
        self.terminated = False

    async def fetchval(self, *_: Any) -> Any:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def terminate(self) -> None:
        self.terminated = True


class ScriptedPool:
    def __init__(self, answers: list[Any], acquire_error: BaseException | None = None) -> None:
        self.conn = ScriptedConnection(answers)
        self.acquire_error = acquire_error
        self.released = 0

    async def acquire(self, *, timeout: float) -> ScriptedConnection:  # noqa: ASYNC109 (asyncpg's)
        if self.acquire_error is not None:
            raise self.acquire_error
        return self.conn

    async def release(self, conn: ScriptedConnection) -> None:
        self.released += 1


def scripted_store(pool: ScriptedPool, pauses: list[float]) -> MintStore:
    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    return MintStore(pool, sleep=sleep)  # type: ignore[arg-type]


async def test_a_deadlock_is_retried_once_after_a_random_pause() -> None:
    pauses: list[float] = []
    pool = ScriptedPool([pgexc.DeadlockDetectedError("deadlock"), 1])
    await scripted_store(pool, pauses).health()
    assert pool.conn.calls == 2 and pool.released == 2
    assert len(pauses) == 1 and 0.1 <= pauses[0] <= 0.5


@pytest.mark.parametrize(
    "exc", [pgexc.DeadlockDetectedError("deadlock"), pgexc.SerializationError("serialize")]
)
async def test_a_second_deadlock_is_transient(exc: Exception) -> None:
    pauses: list[float] = []
    pool = ScriptedPool([exc, exc, 1])
    with pytest.raises(ServiceError) as caught:
        await scripted_store(pool, pauses).health()
    assert caught.value.kind is ErrorKind.TRANSIENT
    assert pool.conn.calls == 2 and len(pauses) == 1


async def test_other_failures_are_not_retried_and_a_broken_connection_is_dropped() -> None:
    pauses: list[float] = []
    pool = ScriptedPool([pgexc.ConnectionDoesNotExistError("gone"), 1])
    with pytest.raises(ServiceError, match="ConnectionLost"):
        await scripted_store(pool, pauses).health()
    assert pool.conn.calls == 1 and pauses == [] and pool.conn.terminated
    assert pool.released == 1

    pool = ScriptedPool([pgexc.NotNullViolationError("null"), 1])
    with pytest.raises(ServiceError) as caught:
        await scripted_store(pool, pauses).health()
    assert caught.value.kind is ErrorKind.PERMANENT
    assert not pool.conn.terminated  # a healthy connection goes back for reuse


async def test_an_acquire_timeout_is_transient() -> None:
    pool = ScriptedPool([], acquire_error=TimeoutError())
    with pytest.raises(ServiceError) as caught:
        await scripted_store(pool, []).health()
    assert (caught.value.kind, caught.value.code) == (ErrorKind.TRANSIENT, "PoolAcquireTimeout")


async def test_an_unknown_field_is_refused_before_any_database_work() -> None:
    pool = ScriptedPool([], acquire_error=AssertionError("the pool must not be touched"))
    with pytest.raises(ServiceError) as caught:
        await scripted_store(pool, []).set_stage(
            "m", MintStage.VERIFIED, event_key="k", user_id="x"
        )
    assert (caught.value.kind, caught.value.code) == (ErrorKind.PERMANENT, "UnknownField")


# ------------------------------------------------------------------ a connection lost mid-way


def _activity_with(timeout_s: float) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info,
        start_to_close_timeout=timedelta(seconds=timeout_s),
        started_time=datetime.now(UTC),
    )
    return env


async def test_a_lost_connection_is_tried_again_inside_an_activity(
    stack: StackConfig, store: MintStore
) -> None:
    """The spec's "connection error → exponential backoff (0.5 s, 1 s, 2 s)": in an activity
    with the time, the statement runs again on a fresh connection after the first pause."""
    await store.health()  # a pooled connection, open before the fault
    fired_before = faults_fired(stack, "postgres:error")
    await add_fault(stack, target="postgres", kind="error", match="statement", duration_ms=300)
    began = time.monotonic()
    await _activity_with(timeout_s=10).run(store.health)
    assert time.monotonic() - began >= 0.35  # the pause, not a lucky first try
    assert faults_fired(stack, "postgres:error") > fired_before


async def test_a_lost_connection_outside_an_activity_or_its_time_goes_up(
    stack: StackConfig, store: MintStore
) -> None:
    await store.health()
    fault = await add_fault(stack, target="postgres", kind="error", match="statement")
    try:
        with pytest.raises(ServiceError) as outside:
            await store.health()
        with pytest.raises(ServiceError) as short:
            await _activity_with(timeout_s=1).run(store.health)  # no room for a 0.5 s pause
    finally:
        await remove_fault(stack, fault)
    assert {outside.value.code, short.value.code} <= CONNECTION_LOST
