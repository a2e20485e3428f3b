"""Where a cached workflow's memory goes: python -m bench.workflow_memory [--runs N] [--top K]

The worker keeps each workflow it runs in its sticky cache (`WORKER_MAX_CACHED_WORKFLOWS`), and
the sandbox gives each run a module namespace of its own: the workflow's module is imported
again per run, with whatever that import does not pass through from the host. This builds N
runs of each workflow the worker registers, the way the worker does (the sandbox runner the
worker uses, with the same validation run the SDK makes), keeps them as the cache would, and
reports what they hold: tracemalloc's bytes per run grouped by source file, and the process's
RSS per run. No Temporal server is needed; nothing is activated.

Used for issue 19's memory work (BENCHMARKS.md, "Memory of a cached workflow").
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio import workflow
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from mintsaga.worker import WORKFLOWS

_KEPT: list[WorkflowInstance] = []


@dataclass(frozen=True)
class _KeepingRunner(SandboxedWorkflowRunner):
    """The worker's sandbox runner, keeping every instance it creates (as the cache does)."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        instance = super().create_instance(det)
        _KEPT.append(instance)
        return instance


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(defn: type, runs: int, top: int) -> dict[str, Any]:
    """Bytes per kept run of `defn` (tracemalloc, by file) and RSS KB per run."""
    runner = _KeepingRunner()
    definition = workflow._Definition.must_from_class(defn)
    runner.prepare_workflow(definition)  # the first run: imports shared by every later one
    _KEPT.clear()
    gc.collect()
    before, rss_before = tracemalloc.take_snapshot(), rss_kb()
    for _ in range(runs):
        runner.prepare_workflow(definition)
    gc.collect()
    after, rss_after = tracemalloc.take_snapshot(), rss_kb()
    stats = after.compare_to(before, "filename")
    held = sum(stat.size_diff for stat in stats)
    _KEPT.clear()
    return {
        "workflow": defn.__name__,
        "runs": runs,
        "kb_per_run": round(held / runs / 1024, 1),
        "rss_kb_per_run": round((rss_after - rss_before) / runs, 1),
        "by_file_kb_per_run": [
            (_short(stat.traceback[0].filename), round(stat.size_diff / runs / 1024, 1))
            for stat in stats[:top]
            if stat.size_diff > 0
        ],
    }


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


async def _main(runs: int, top: int) -> int:
    tracemalloc.start(1)
    for defn in WORKFLOWS:
        found = measure(defn, runs, top)
        print(
            f"{found['workflow']}: {found['kb_per_run']} KB a cached run (tracemalloc), "
            f"{found['rss_kb_per_run']} KB of RSS, over {runs} runs"
        )
        for filename, kb in found["by_file_kb_per_run"]:
            print(f"  {kb:8.1f} KB  {filename}")
    return 0


def main(argv: list[str] | None = None) -> int:
    import asyncio

    parser = argparse.ArgumentParser(prog="python -m bench.workflow_memory", description=__doc__)
    parser.add_argument("--runs", type=int, default=200, help="runs kept per workflow")
    parser.add_argument("--top", type=int, default=8, help="files shown per workflow")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs: at least 1")
    # A workflow instance is created on the worker's event loop.
    return asyncio.run(_main(args.runs, args.top))


if __name__ == "__main__":
    sys.exit(main())
