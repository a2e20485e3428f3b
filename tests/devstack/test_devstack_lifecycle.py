"""`up --detach`, `down`, `down --wipe`: idempotent start, state kept, nothing left behind.

This test runs its own stack (ports shifted by 20000) so it can stop and restart it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from devstack.config import StackConfig
from devstack.supervisor import port_open

pytestmark = pytest.mark.integration

OFFSET = int(os.environ.get("DEVSTACK_TEST_PORT_OFFSET", "10000")) + 10000


def devstack(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "devstack", "--state-dir", str(state_dir), *args],
        capture_output=True, text=True, timeout=180, check=False, env=env,
    )  # fmt: skip
    return result


def stack_pids(state_dir: Path) -> list[int]:
    pids = [int(p.read_text()) for p in (state_dir / "run").glob("*.pid")]
    postmaster = state_dir / "postgres" / "data" / "postmaster.pid"
    if postmaster.exists():
        pids.append(int(postmaster.read_text().split("\n", 1)[0]))
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")


async def rpc(config: StackConfig, method: str, params: list[object]) -> object:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    async with httpx.AsyncClient(timeout=10) as http:
        answer = (await http.post(config.url("solana-2"), json=body)).json()
    assert "error" not in answer, answer
    return answer["result"]


async def leave_traces(config: StackConfig, tag: str) -> dict[str, str]:
    """One of each kind of state: a funded account, a pin, a workflow, a database row."""
    from solders.keypair import Keypair

    account = str(Keypair().pubkey())
    await rpc(config, "requestAirdrop", [account, 1_000_000_000])
    async with httpx.AsyncClient(timeout=10) as http:
        pinned = await http.post(
            config.url("pinata") + "/pinning/pinJSONToIPFS",
            json={"pinataContent": {"tag": tag}, "pinataMetadata": {"name": tag}},
            headers={"Authorization": f"Bearer {config.pinata_jwt}"},
        )
    pinned.raise_for_status()
    client = await Client.connect(config.temporal_address)
    handle = await client.start_workflow(
        "NoWorkerWorkflow", id=f"lifecycle-{tag}", task_queue=f"nobody-{tag}"
    )
    conn = await asyncpg.connect(config.database_url)
    await conn.execute(
        "INSERT INTO mints (mint_id, user_id, wallet, stage) VALUES ($1, 'u', $2, 'INITIATED')",
        tag, account,
    )  # fmt: skip
    await conn.close()
    return {"account": account, "cid": pinned.json()["IpfsHash"], "workflow": handle.id}


async def traces_survive(config: StackConfig, tag: str, traces: dict[str, str]) -> None:
    balance = await rpc(config, "getBalance", [traces["account"]])
    assert isinstance(balance, dict) and balance["value"] == 1_000_000_000
    async with httpx.AsyncClient(timeout=10) as http:
        served = await http.get(f"{config.url('gateway-1')}/ipfs/{traces['cid']}")
    assert served.status_code == 200 and served.json() == {"tag": tag}
    client = await Client.connect(config.temporal_address)
    described = await client.get_workflow_handle(traces["workflow"]).describe()
    assert described.status == WorkflowExecutionStatus.RUNNING
    conn = await asyncpg.connect(config.database_url)
    assert (
        await conn.fetchval("SELECT wallet FROM mints WHERE mint_id = $1", tag) == traces["account"]
    )
    await conn.close()


async def test_restart_keeps_state_and_down_leaves_nothing(tmp_path: Path) -> None:
    state_dir = tmp_path / "stack"
    try:
        first = devstack(state_dir, "up", "--detach", "--port-offset", str(OFFSET))
        assert first.returncode == 0, first.stderr
        assert "export SOLANA_RPC_ENDPOINTS=" in first.stdout
        config = StackConfig.load(state_dir)
        pids = stack_pids(state_dir)
        assert len(pids) == 3

        again = devstack(state_dir, "up", "--detach")  # idempotent: nothing restarted
        assert again.returncode == 0, again.stderr
        assert stack_pids(state_dir) == pids
        status = devstack(state_dir, "status")
        assert status.returncode == 0, status.stdout

        tag = uuid.uuid4().hex[:12]
        traces = await leave_traces(config, tag)

        assert devstack(state_dir, "down").returncode == 0
        assert not [pid for pid in pids if alive(pid)]
        assert devstack(state_dir, "status").returncode == 1

        restarted = devstack(state_dir, "up", "--detach")
        assert restarted.returncode == 0, restarted.stderr
        await traces_survive(config, tag, traces)
        pids = stack_pids(state_dir)
    finally:
        wiped = devstack(state_dir, "down", "--wipe")
    assert wiped.returncode == 0, wiped.stderr
    assert not state_dir.exists()
    assert not [pid for pid in pids if alive(pid)]
    assert not [name for name, port in config.ports.items() if port_open(port)]
