"""Provider profiles and the JSON-RPC faults on the test stack, over real HTTP (httpx).

What a hosted endpoint answers, as its provider documents it (devstack/profiles.py cites the
pages): a rate-limited plan's 429 with its body and Retry-After, a node without history, a
send-only endpoint, a dead key; and as faults, a JSON-RPC error body, a node that is behind and
a node that drops the transactions it accepts. solana-2 stays default and is the witness.
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from devstack.config import SOLANA_ENDPOINTS, StackConfig
from devstack.profiles import RATE_LIMITED_MESSAGE, parse_profile_spec

pytestmark = pytest.mark.integration

HISTORY_MESSAGE = "Transaction history is not available from this node"
CONFIRMED = {"commitment": "confirmed"}  # reads default to finalized, 32 slots back


# -- helpers ---------------------------------------------------------------------------------


def admin(stack: StackConfig, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, stack.url("admin") + path, timeout=10, **kwargs)


def set_profile(stack: StackConfig, endpoint: str, profile: str, **limits: int) -> dict[str, Any]:
    response = admin(
        stack, "PUT", f"/solana/{endpoint}/profile", json={"profile": profile, **limits}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def counters(stack: StackConfig, endpoint: str) -> dict[str, Any]:
    response = admin(stack, "GET", f"/solana/{endpoint}/profile")
    response.raise_for_status()
    result: dict[str, Any] = response.json()["counters"]
    return result


def add_fault(stack: StackConfig, **spec: object) -> str:
    response = admin(stack, "POST", "/faults", json=spec)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def fault_hits(stack: StackConfig, fault_id: str) -> int:
    faults = admin(stack, "GET", "/faults").json()
    return int(next(f["hits"] for f in faults if f["id"] == fault_id))


def call(method: str, params: list[Any] | None = None, request_id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or []}


async def post(
    http: httpx.AsyncClient, url: str, method: str, params: list[Any] | None = None, rid: int = 1
) -> httpx.Response:
    return await http.post(url, json=call(method, params, rid))


async def result(http: httpx.AsyncClient, url: str, method: str, params: list[Any]) -> Any:
    response = await post(http, url, method, params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "error" not in body, body
    return body["result"]


@pytest.fixture(autouse=True)
def _default_profiles(stack: StackConfig) -> Iterator[None]:
    """Every endpoint back to `default` after each test (profiles are not faults)."""
    yield
    for endpoint in SOLANA_ENDPOINTS:
        set_profile(stack, endpoint, "default")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def funded_payer(http: httpx.AsyncClient, stack: StackConfig) -> Keypair:
    """A keypair with 1 SOL, airdropped through solana-2 (default)."""
    payer = Keypair()
    await result(http, stack.url("solana-2"), "requestAirdrop", [str(payer.pubkey()), 10**9])
    return payer


async def signed_transfer(
    http: httpx.AsyncClient, stack: StackConfig, payer: Keypair, lamports: int
) -> Transaction:
    latest = await result(
        http, stack.url("solana-2"), "getLatestBlockhash", [{"commitment": "confirmed"}]
    )
    # To a new account: at least its rent-exempt minimum (890,880 lamports), or preflight fails.
    ix = transfer(
        TransferParams(
            from_pubkey=payer.pubkey(),
            to_pubkey=Keypair().pubkey(),
            lamports=10_000_000 + lamports,
        )
    )
    return Transaction(
        [payer], Message([ix], payer.pubkey()), Hash.from_string(latest["value"]["blockhash"])
    )


def send_params(tx: Transaction, **config: Any) -> list[Any]:
    wire = base64.b64encode(bytes(tx)).decode()
    return [wire, {"encoding": "base64", "preflightCommitment": "confirmed", **config}]


async def status_of(http: httpx.AsyncClient, stack: StackConfig, signature: str) -> Any:
    """The signature's status as the default endpoint sees it (history searched)."""
    answer = await result(
        http,
        stack.url("solana-2"),
        "getSignatureStatuses",
        [[signature], {"searchTransactionHistory": True}],
    )
    return answer["value"][0]


# -- rate-limited ----------------------------------------------------------------------------


async def test_rate_limited_profile_refuses_past_ten_requests_a_second(
    stack: StackConfig, http: httpx.AsyncClient
) -> None:
    described = set_profile(stack, "solana-1", "rate-limited")
    assert (described["requests_per_second"], described["send_per_second"]) == (10, 1)
    url = stack.url("solana-1")

    started = time.monotonic()
    answers = await asyncio.gather(*(post(http, url, "getSlot", rid=i) for i in range(30)))
    elapsed = time.monotonic() - started

    accepted = [a for a in answers if a.status_code == 200]
    limited = [(i, a) for i, a in enumerate(answers) if a.status_code == 429]
    assert len(accepted) + len(limited) == 30
    assert limited, "30 requests at once passed a 10 requests/s limit"
    if elapsed < 0.9:
        assert len(accepted) == 10
    else:  # a slow machine: the window slid while the burst was sent
        assert 10 <= len(accepted) <= 10 * (math.ceil(elapsed) + 1)
    assert all(isinstance(a.json()["result"], int) for a in accepted)
    for i, answer in limited:
        # QuickNode's documented 429 body (Helius documents none), with the request's id.
        assert answer.json() == {
            "jsonrpc": "2.0",
            "error": {"code": 429, "message": RATE_LIMITED_MESSAGE},
            "id": i,
        }
        assert int(answer.headers["Retry-After"]) >= 1

    seen = counters(stack, "solana-1")
    assert (seen["accepted"], seen["refused"]) == (len(accepted), len(limited))
    assert seen["accepted_per_second"], seen
    assert max(seen["accepted_per_second"].values()) <= 10
    stats = admin(stack, "GET", "/stats").json()["solana_profiles"]["solana-1"]
    assert stats["profile"] == "rate-limited" and stats["refused"] == len(limited)

    # Told to come back after Retry-After, the client is served again.
    await asyncio.sleep(int(limited[-1][1].headers["Retry-After"]))
    assert (await post(http, url, "getSlot")).status_code == 200
    # The default endpoints have no limit.
    others = await asyncio.gather(
        *(post(http, stack.url("solana-2"), "getSlot") for _ in range(30))
    )
    assert {a.status_code for a in others} == {200}
    assert counters(stack, "solana-2")["refused"] == 0


async def test_rate_limited_profile_allows_one_send_a_second(
    stack: StackConfig, http: httpx.AsyncClient
) -> None:
    payer = await funded_payer(http, stack)
    first = await signed_transfer(http, stack, payer, 1_000)
    second = await signed_transfer(http, stack, payer, 2_000)
    set_profile(stack, "solana-1", "rate-limited")
    url = stack.url("solana-1")

    sent = await post(http, url, "sendTransaction", send_params(first), rid=1)
    refused = await post(http, url, "sendTransaction", send_params(second), rid=2)
    read = await post(http, url, "getSlot", rid=3)
    assert sent.status_code == 200 and sent.json()["result"] == str(first.signatures[0])
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"] == {"code": 429, "message": RATE_LIMITED_MESSAGE}
    retry_after = int(refused.headers["Retry-After"])
    assert retry_after >= 1
    assert read.status_code == 200  # reads still have room: the send limit is the lower one
    assert await status_of(http, stack, str(second.signatures[0])) is None  # never reached

    await asyncio.sleep(retry_after)
    again = await post(http, url, "sendTransaction", send_params(second), rid=4)
    assert again.status_code == 200 and again.json()["result"] == str(second.signatures[0])
    assert await status_of(http, stack, str(first.signatures[0])) is not None
    assert await status_of(http, stack, str(second.signatures[0])) is not None

    seen = counters(stack, "solana-1")
    assert (seen["accepted"], seen["refused"]) == (3, 1)
    assert (seen["send_accepted"], seen["send_refused"]) == (2, 1)
    assert max(seen["send_accepted_per_second"].values()) == 1


async def test_profiles_are_set_and_read_through_the_admin_api(
    stack: StackConfig, http: httpx.AsyncClient
) -> None:
    listed = admin(stack, "GET", "/solana/profiles").json()
    assert sorted(listed) == list(SOLANA_ENDPOINTS)
    assert {d["profile"] for d in listed.values()} == {"default"}

    described = set_profile(stack, "solana-3", "rate-limited", requests_per_second=3)
    assert (described["requests_per_second"], described["send_per_second"]) == (3, 1)
    started = time.monotonic()
    answers = await asyncio.gather(
        *(post(http, stack.url("solana-3"), "getSlot") for _ in range(6))
    )
    codes = sorted(a.status_code for a in answers)
    if time.monotonic() - started < 0.9:
        assert codes == [200, 200, 200, 429, 429, 429]
    else:
        assert 429 in codes
    assert counters(stack, "solana-3")["accepted"] == codes.count(200)
    # Setting a profile again starts its counters from zero.
    set_profile(stack, "solana-3", "rate-limited", requests_per_second=3)
    assert counters(stack, "solana-3")["accepted"] == 0

    bad = admin(stack, "PUT", "/solana/solana-1/profile", json={"profile": "premium"})
    assert bad.status_code == 400 and "premium" in bad.json()["error"]
    bad = admin(stack, "PUT", "/solana/solana-1/profile", json={"profile": "default", "rps": 5})
    assert bad.status_code == 400 and "rps" in bad.json()["error"]
    bad = admin(
        stack, "PUT", "/solana/solana-1/profile", json={"profile": "default", "send_per_second": 2}
    )
    assert bad.status_code == 400
    unknown = admin(stack, "PUT", "/solana/solana-9/profile", json={"profile": "default"})
    assert unknown.status_code == 404
    assert admin(stack, "GET", "/solana/solana-9/profile").status_code == 404
    assert admin(stack, "GET", "/solana/solana-1/profile").json()["profile"] == "default"


# -- no-history, send-only, expired-key, disabled --------------------------------------------


async def test_no_history_profile_refuses_history_searches_with_32011(
    stack: StackConfig, http: httpx.AsyncClient
) -> None:
    payer = Keypair()
    airdrop = await result(
        http, stack.url("solana-2"), "requestAirdrop", [str(payer.pubkey()), 10**9]
    )
    set_profile(stack, "solana-1", "no-history")
    url = stack.url("solana-1")

    searched = await post(
        http, url, "getSignatureStatuses", [[airdrop], {"searchTransactionHistory": True}], rid=5
    )
    assert searched.status_code == 200
    assert searched.json() == {
        "jsonrpc": "2.0",
        "error": {"code": -32011, "message": HISTORY_MESSAGE},
        "id": 5,
    }
    fetched = await post(http, url, "getTransaction", [airdrop, {"commitment": "confirmed"}])
    assert fetched.status_code == 200
    assert fetched.json()["error"] == {"code": -32011, "message": HISTORY_MESSAGE}

    # The recent status cache still answers, and so does every other method.
    recent = await result(http, url, "getSignatureStatuses", [[airdrop]])
    assert recent["value"][0] is not None
    assert await result(http, url, "getSlot", []) > 0
    # A default endpoint searches history.
    assert await status_of(http, stack, airdrop) is not None


async def test_send_only_profile_answers_method_not_found_but_sends(
    stack: StackConfig, http: httpx.AsyncClient
) -> None:
    payer = await funded_payer(http, stack)
    tx = await signed_transfer(http, stack, payer, 5_000)
    set_profile(stack, "solana-1", "send-only")
    url = stack.url("solana-1")

    reads = [
        ("getSlot", []),
        ("getHealth", []),
        ("getLatestBlockhash", []),
        ("getBalance", [str(payer.pubkey())]),
        ("getSignatureStatuses", [[str(tx.signatures[0])]]),
    ]
    for i, (method, params) in enumerate(reads):
        answer = await post(http, url, method, params, rid=i)
        assert answer.status_code == 200, method
        assert answer.json() == {
            "jsonrpc": "2.0",
            "error": {"code": -32601, "message": "Method not found"},
            "id": i,
        }, method
    sent = await result(http, url, "sendTransaction", send_params(tx))
    assert sent == str(tx.signatures[0])
    assert await status_of(http, stack, sent) is not None  # it landed
    assert (await http.get(url + "/health")).text == "ok"  # the keep-alive still answers


@pytest.mark.parametrize(("profile", "status"), [("expired-key", 401), ("disabled", 403)])
async def test_dead_key_profiles_answer_every_request_with_their_status(
    stack: StackConfig, http: httpx.AsyncClient, profile: str, status: int
) -> None:
    set_profile(stack, "solana-1", profile)
    url = stack.url("solana-1")
    for i, method in enumerate(("getSlot", "getHealth", "sendTransaction")):
        answer = await post(http, url, method, rid=i)
        assert answer.status_code == status, method
        body = answer.json()
        assert body["jsonrpc"] == "2.0" and body["id"] == i
        assert body["error"]["code"] == status
    health = await http.get(url + "/health")
    assert health.status_code == status
    seen = counters(stack, "solana-1")
    assert (seen["accepted"], seen["refused"]) == (0, 4)

    set_profile(stack, "solana-1", "default")
    assert (await post(http, url, "getSlot")).status_code == 200


# -- faults: rpc_error, behind, drop_transaction ---------------------------------------------


async def test_rpc_error_fault_answers_a_json_rpc_error_with_http_200(
    stack: StackConfig, http: httpx.AsyncClient
) -> None:
    url = stack.url("solana-1")
    fault = add_fault(
        stack,
        target="solana-1",
        kind="rpc_error",
        code=-32005,
        message="Node is unhealthy",
        data={"numSlotsBehind": 42},
        match="getLatestBlockhash",
    )
    hit = await post(http, url, "getLatestBlockhash", rid=7)
    assert hit.status_code == 200
    assert hit.json() == {
        "jsonrpc": "2.0",
        "error": {"code": -32005, "message": "Node is unhealthy", "data": {"numSlotsBehind": 42}},
        "id": 7,
    }
    assert await result(http, url, "getSlot", []) > 0  # other methods untouched
    batch = await http.post(url, json=[call("getLatestBlockhash", [], 1), call("getSlot", [], 2)])
    assert batch.status_code == 200
    assert [(item["id"], item["error"]["code"]) for item in batch.json()] == [
        (1, -32005),
        (2, -32005),
    ]  # a batch is matched by its first method, and every call gets the error
    assert fault_hits(stack, fault) == 2

    add_fault(stack, target="solana-2", kind="rpc_error", code=-32011, message=HISTORY_MESSAGE)
    any_method = await post(http, stack.url("solana-2"), "getSlot", rid=3)
    assert any_method.status_code == 200
    assert any_method.json() == {
        "jsonrpc": "2.0",
        "error": {"code": -32011, "message": HISTORY_MESSAGE},
        "id": 3,
    }
    refused = admin(stack, "POST", "/faults", json={"target": "pinata", "kind": "rpc_error"})
    assert refused.status_code == 400


async def test_behind_fault_is_a_node_lagging_the_cluster(
    stack: StackConfig, http: httpx.AsyncClient
) -> None:
    payer = await funded_payer(http, stack)
    checked = await signed_transfer(http, stack, payer, 1_000)
    unchecked = await signed_transfer(http, stack, payer, 2_000)
    url, witness = stack.url("solana-1"), stack.url("solana-2")
    add_fault(stack, target="solana-1", kind="behind", slots=40)

    before = await result(http, witness, "getSlot", [])
    stale = await result(http, url, "getSlot", [])
    after = await result(http, witness, "getSlot", [])
    assert before - 40 <= stale <= after - 40
    before = await result(http, witness, "getBlockHeight", [])
    stale = await result(http, url, "getBlockHeight", [])
    after = await result(http, witness, "getBlockHeight", [])
    assert before - 40 <= stale <= after - 40
    epoch = await result(http, url, "getEpochInfo", [])
    assert epoch["absoluteSlot"] <= (await result(http, witness, "getSlot", [])) - 40

    health = await post(http, url, "getHealth", rid=9)
    assert health.status_code == 200
    assert health.json() == {
        "jsonrpc": "2.0",
        "error": {
            "code": -32005,
            "message": "Node is behind by 40 slots",
            "data": {"numSlotsBehind": 40},
        },
        "id": 9,
    }
    http_health = await http.get(url + "/health")
    assert (http_health.status_code, http_health.text) == (200, "behind")

    # A preflighted send is refused by the health check; without preflight it goes through.
    refused = await post(http, url, "sendTransaction", send_params(checked))
    assert refused.json()["error"]["code"] == -32005
    assert await status_of(http, stack, str(checked.signatures[0])) is None
    sent = await result(http, url, "sendTransaction", send_params(unchecked, skipPreflight=True))
    assert sent == str(unchecked.signatures[0])
    assert await status_of(http, stack, sent) is not None
    # Reads that are not about the tip answer as usual.
    balance = await result(http, url, "getBalance", [str(payer.pubkey()), CONFIRMED])
    assert balance["value"] > 0

    admin(stack, "DELETE", "/faults").raise_for_status()
    assert await result(http, url, "getHealth", []) == "ok"


async def test_drop_transaction_fault_answers_the_signature_and_never_lands_it(
    stack: StackConfig, http: httpx.AsyncClient
) -> None:
    payer = await funded_payer(http, stack)
    tx = await signed_transfer(http, stack, payer, 7_000)
    url = stack.url("solana-1")
    fault = add_fault(stack, target="solana-1", kind="drop_transaction")

    assert await result(http, url, "getSlot", []) > 0  # only sends are dropped
    accepted = await result(http, url, "sendTransaction", send_params(tx))
    assert accepted == str(tx.signatures[0])
    assert fault_hits(stack, fault) == 1
    await asyncio.sleep(2 * stack.slot_ms / 1000 + 0.5)  # slots go by: nothing lands
    assert await status_of(http, stack, accepted) is None
    balance = await result(
        http, stack.url("solana-2"), "getBalance", [str(payer.pubkey()), CONFIRMED]
    )
    assert balance["value"] == 10**9  # no transfer, no fee

    # The same bytes to a healthy node land (they were valid, and never executed before).
    again = await result(http, stack.url("solana-2"), "sendTransaction", send_params(tx))
    assert again == accepted
    assert await status_of(http, stack, accepted) is not None


# -- profiles at start -----------------------------------------------------------------------


def test_the_emulators_start_each_endpoint_with_its_configured_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`up --solana-profiles` saves the profiles in stack.json; the emulator process starts each
    endpoint with its own. The emulators alone, on ports of their own (+9000 from the test
    stack's; no Temporal, no Postgres: DATABASE_URL names one outside, so no proxy starts).
    Below Linux's ephemeral range (32768 up): +15000 put them there, where the test stack's
    Temporal had already taken port 33333 for itself, and the emulators could not start."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://unused@127.0.0.1:1/none")
    offset = int(os.environ.get("DEVSTACK_TEST_PORT_OFFSET", "10000")) + 9000
    spec = parse_profile_spec("solana-1=expired-key,solana-2=rate-limited", SOLANA_ENDPOINTS)
    config = StackConfig.create(tmp_path, port_offset=offset, solana_profiles=spec)
    config.save()
    log = (tmp_path / "emulators.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack.emulators", "--state-dir", str(tmp_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                profiles = httpx.get(config.url("admin") + "/solana/profiles", timeout=1).json()
                break
            except httpx.TransportError:
                assert process.poll() is None, (tmp_path / "emulators.log").read_text()
                assert time.monotonic() < deadline, "the emulators did not start in 30 s"
                time.sleep(0.2)
        assert {n: d["profile"] for n, d in profiles.items()} == {
            "solana-1": "expired-key",
            "solana-2": "rate-limited",
            "solana-3": "default",
        }
        body = call("getSlot")
        assert httpx.post(config.url("solana-1"), json=body, timeout=10).status_code == 401
        assert httpx.post(config.url("solana-2"), json=body, timeout=10).status_code == 200
        assert httpx.post(config.url("solana-3"), json=body, timeout=10).status_code == 200
        assert config.funding_endpoint == "solana-2"  # where `up` funds the system wallet
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
