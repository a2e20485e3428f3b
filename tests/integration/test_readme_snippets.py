"""The README's backend snippets, run as a backend runs them, against the devstack.

Each snippet is the fenced block after its `<!-- snippet: NAME -->` marker in README.md, so
the test runs exactly what a reader copies. The Python one ("From a Python backend") runs as
its own process with only the Temporal settings a backend has; the TypeScript one ("From
another language") is compiled by `tsc` and run by Node in a copy of `examples/typescript`
whose packages `npm ci` installs from its lock file. A real worker (the product's, in this
process) serves both on a task queue of their own.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from devstack.config import StackConfig
from tests.paths import ROOT
from tests.saga_support import chain_nft, running_worker

README = ROOT / "README.md"
TYPESCRIPT = ROOT / "examples" / "typescript"
QUEUE = "readme-snippets"
MARKER = re.compile(r"^<!-- snippet: ([\w-]+) -->[ \t]*$", re.MULTILINE)
FENCED = re.compile(r"\s*```(\w+)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
NPM_CI_TIMEOUT_S = 240
# Runs a script as `python script.py` does, then leaves without interpreter teardown, as the
# project's own commands do (`mintsaga.process_exit`): the Temporal SDK's runtime threads can
# crash CPython's finalization after a client was used (temporalio/sdk-python#300), an exit
# that says nothing about the snippet. An exception in the script still fails the run (exit 1).
AS_MAIN = (
    "import runpy, sys; from mintsaga.process_exit import exit_now;"
    " runpy.run_path(sys.argv[1], run_name='__main__'); exit_now(0)"
)


def snippet(name: str, readme: str | None = None) -> tuple[str, str]:
    """(language, code) of the fenced block right after `<!-- snippet: name -->`."""
    text = README.read_text() if readme is None else readme
    markers = [m for m in MARKER.finditer(text) if m.group(1) == name]
    assert len(markers) == 1, f"README.md should mark one block `<!-- snippet: {name} -->`"
    block = FENCED.match(text, markers[0].end())
    assert block, f"no fenced code block right after the snippet marker {name!r}"
    return block.group(1), block.group(2)


def backend_env(stack: StackConfig) -> dict[str, str]:
    """What a backend's process has: where Temporal is and the task queue, nothing of the
    worker's (no database, no keys, no JWT)."""
    keep = ("PATH", "HOME", "LANG", "SYSTEMROOT", "TMPDIR")
    return {
        **{name: os.environ[name] for name in keep if name in os.environ},
        "TEMPORAL_ADDRESS": stack.temporal_address,
        "TEMPORAL_NAMESPACE": "default",
        "TEMPORAL_TASK_QUEUE": QUEUE,
    }


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> list[str]:
        assert self.returncode == 0, f"exit {self.returncode}\n{self.stdout}\n{self.stderr}"
        return self.stdout.splitlines()


async def run(argv: list[str], env: dict[str, str], cwd: Path, timeout_s: float = 120) -> Ran:
    """A process of its own, awaited so the worker on this event loop keeps serving it."""
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Ran(process.returncode, stdout.decode(), stderr.decode())


async def only_run_of(client: Client, workflow_id: str) -> str:
    """The run id of the workflow, checking that it closed as completed."""
    described = await client.get_workflow_handle(workflow_id).describe()
    assert described.status == WorkflowExecutionStatus.COMPLETED
    return described.run_id


# ------------------------------------------------------------------------- the markers


def test_each_snippet_is_marked_once_in_its_section() -> None:
    text = README.read_text()
    for name, language, heading in (
        ("python-backend", "python", "## From a Python backend"),
        ("typescript-backend", "ts", "## From another language"),
    ):
        assert snippet(name)[0] == language
        marker = text.index(f"<!-- snippet: {name} -->")
        section = text.rindex("\n## ", 0, marker)
        assert text[section + 1 :].startswith(heading), f"{name} is not under {heading!r}"


def test_the_marker_finds_the_block_after_it() -> None:
    readme = "intro\n<!-- snippet: demo -->\n```python\nprint(1)\n```\n```python\nno\n```\n"
    assert snippet("demo", readme) == ("python", "print(1)\n")


def test_the_typescript_example_is_the_readme_snippet() -> None:
    # examples/typescript runs on its own (`npm ci && npm run mint`): the same code.
    assert (TYPESCRIPT / "mint.ts").read_text() == snippet("typescript-backend")[1]


# ------------------------------------------------------------------------- Python


@pytest.mark.integration
async def test_the_python_backend_snippet_mints_and_is_refused_a_changed_request(
    stack: StackConfig, client: Client, tmp_path: Path
) -> None:
    language, code = snippet("python-backend")
    assert language == "python"
    script = tmp_path / "backend.py"
    script.write_text(code)
    async with running_worker(stack, client, QUEUE):
        ran = await run([sys.executable, "-c", AS_MAIN, str(script)], backend_env(stack), tmp_path)
    lines = ran.check()
    # The mint, then the same request again: the same NFT, no second one.
    minted = [line.split() for line in lines if line.startswith("MINTED ")]
    assert len(minted) == 2 and minted[0] == minted[1], ran.stdout
    address = minted[0][1]
    # The same mint_id with another name: refused, naming the field, and nothing started.
    refused = [line for line in lines if line.startswith("refused: ")]
    assert refused == [
        "refused: mint_id order-1042 already exists with another name; nothing started"
        " (a new mint needs a new mint_id)"
    ], ran.stdout
    # Independently of what the snippet printed: one workflow, one NFT on the chain.
    await only_run_of(client, "mint-order-1042")
    result = await client.get_workflow_handle("mint-order-1042").result()
    assert result["status"] == "MINTED" and result["mint_address"] == address
    assert chain_nft(stack, address) is not None


# ------------------------------------------------------------------------- TypeScript


@pytest.fixture(scope="session")
def typescript_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of examples/typescript with its locked packages installed (`npm ci`, once)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("the TypeScript snippet needs Node.js and npm on PATH (CI has them)")
    project = tmp_path_factory.mktemp("typescript")
    for name in ("package.json", "package-lock.json", "tsconfig.json"):
        shutil.copy(TYPESCRIPT / name, project / name)
    installed = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=NPM_CI_TIMEOUT_S,
        check=False,
    )
    assert installed.returncode == 0, f"npm ci failed:\n{installed.stdout}\n{installed.stderr}"
    yield project


@pytest.mark.integration
async def test_the_typescript_snippet_mints_once_however_often_it_runs(
    stack: StackConfig, client: Client, typescript_project: Path
) -> None:
    language, code = snippet("typescript-backend")
    assert language == "ts"
    (typescript_project / "mint.ts").write_text(code)
    compiled = await run(
        ["node", "node_modules/typescript/bin/tsc", "-p", "."], {**os.environ}, typescript_project
    )
    compiled.check()  # type-checked against @temporalio/client's own types
    env = backend_env(stack)
    async with running_worker(stack, client, QUEUE):
        first = (await run(["node", "dist/mint.js"], env, typescript_project)).check()
        run_id = await only_run_of(client, "mint-order-1043")
        # Again, after it finished (a backend retrying its call): the same mint, no new run.
        again = (await run(["node", "dist/mint.js"], env, typescript_project)).check()
    assert first == again and len(first) == 1, (first, again)
    status, address = first[0].split()
    assert status == "MINTED"
    assert await only_run_of(client, "mint-order-1043") == run_id
    # The Python side reads the same workflow: the JSON request was a valid MintRequest.
    result = await client.get_workflow_handle("mint-order-1043").result()
    assert result["status"] == "MINTED" and result["mint_address"] == address
    assert chain_nft(stack, address) is not None
