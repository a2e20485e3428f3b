"""`mintsaga livecheck` against the devstack: in its default profiles the devstack is exactly
what its own assumptions say (no difference), and a profile changed the way an operator would
change a real provider (Kubo's import chunker, through Kubo's own config API) is named.

The command runs as an operator runs it (a subprocess, a worker's environment); its mint goes
to the session's worker.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from devstack.config import StackConfig
from devstack.requests import mint_request
from tests.saga_support import run_starter

pytestmark = pytest.mark.integration


def livecheck_env(stack: StackConfig, queue: str) -> dict[str, str]:
    return {**stack.worker_env(), "TEMPORAL_TASK_QUEUE": queue}


async def livecheck(
    stack: StackConfig, queue: str, tmp_path: Path, *argv: str
) -> tuple[int, dict[str, Any], str]:
    report = tmp_path / "livecheck.json"
    ran = await run_starter(
        livecheck_env(stack, queue), "livecheck", "--report", str(report), *argv, timeout_s=300
    )
    assert report.is_file(), ran.stderr
    return ran.returncode, json.loads(report.read_text()), ran.stdout + ran.stderr


async def test_the_devstack_in_its_default_profiles_shows_no_difference(
    stack: StackConfig, client: Client, worker: str, tmp_path: Path
) -> None:
    request = tmp_path / "request.json"
    request.write_text(mint_request(stack).model_dump_json())
    code, report, output = await livecheck(stack, worker, tmp_path, "--request", str(request))

    assert report["differences"] == [], output
    assert code == 0, output
    # What was recorded, per provider (the report is the point of the command).
    local = report["local"]
    assert set(local) == {"1KiB", "300KiB", "5MiB"}
    for label, cid in local.items():
        assert report["pinata"]["upload"][label]["cid"] == cid
        assert report["kubo"]["upload_explicit"][label]["cid"] == cid
    assert report["pinata"]["unpin_never_pinned"]["status"] in (400, 404)
    assert report["kubo"]["unpin_never_pinned"]["status"] == 500
    for seen in report["gateways"].values():
        assert seen["fresh"]["status"] == 200 and seen["fresh"]["verifies"] is True
    assert {s["history_search"]["answer"] for s in report["solana"].values()} == {"result"}
    assert report["mint"]["status"] == "MINTED"
    assert all(c["status"] == 200 for c in report["cleanup"]), report["cleanup"]
    assert stack.worker_env()["PINATA_JWT"] not in json.dumps(report)


@pytest.fixture
async def kubo_chunker_1mib(stack: StackConfig) -> AsyncIterator[None]:
    """Kubo's import chunker set to 1 MiB through Kubo's own config API, then back."""
    api = f"{stack.url('kubo')}/api/v0/config"
    async with httpx.AsyncClient(timeout=10) as http:
        before = (await http.post(api, params={"arg": "Import.UnixFSChunker"})).json()["Value"]
        changed = await http.post(
            api, params=[("arg", "Import.UnixFSChunker"), ("arg", "size-1048576")]
        )
        changed.raise_for_status()
        try:
            yield
        finally:
            restore = [("arg", "Import.UnixFSChunker"), ("arg", before or "size-262144")]
            (await http.post(api, params=restore)).raise_for_status()


async def test_a_changed_kubo_chunker_is_named(
    stack: StackConfig, worker: str, tmp_path: Path, kubo_chunker_1mib: None
) -> None:
    code, report, output = await livecheck(stack, worker, tmp_path)
    assert code == 1, output
    named = [line.split(":")[0] for line in report["differences"]]
    # An add that leaves the layout to the node now builds 1 MiB chunks: the 300 KiB file is
    # one raw block, the 5 MiB one has fewer leaves; 1 KiB is one chunk either way.
    assert named == [
        "kubo.upload_node_defaults.300KiB.cid",
        "kubo.upload_node_defaults.5MiB.cid",
    ], output
    assert "difference: kubo.upload_node_defaults.5MiB.cid" in output
    assert report["mint"] == {"skipped": "no mint request given (--request)"}
