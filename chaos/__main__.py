"""python -m chaos [--mints N] [--seed S] [--duration D] [--workers W] [--report FILE]

Runs N mints through real worker processes on a devstack of its own while a seeded fault
schedule (chaos.schedule) runs for D seconds, lets every mint settle, then checks the
invariants (chaos.checker). Writes FILE (default chaos-report.json), prints a summary,
and exits 1 when any invariant is violated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from chaos.harness import ChaosRun, RunOptions
from chaos.report import report_json, summary
from devstack.config import StackConfig
from devstack.supervisor import StackError, Supervisor

# Beside a developer's stack (0) and the test suite's (10000, 20000, 23000), below the ephemeral
# ports (32768 up), where a client socket may already hold one of ours.
DEFAULT_PORT_OFFSET = 15000


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _positive(kind: type[int] | type[float]):  # type: ignore[no-untyped-def]
    def parse(text: str) -> int | float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text}: must be positive")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--mints", type=_positive(int), default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=_positive(float), default=60.0, help="seconds")
    parser.add_argument("--workers", type=_positive(int), default=1)
    parser.add_argument("--settle-timeout", type=_positive(float), default=300.0)
    parser.add_argument("--report", type=Path, default=Path("chaos-report.json"))
    parser.add_argument("--state-dir", type=Path, help="default: a new temporary folder")
    parser.add_argument("--port-offset", type=int, default=DEFAULT_PORT_OFFSET)
    parser.add_argument("--keep", action="store_true", help="leave the stack running after")
    args = parser.parse_args(argv)

    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="mintsaga-chaos-"))
    if (state_dir / "stack.json").exists():
        parser.error(f"--state-dir {state_dir}: holds a stack already; give a fresh folder")
    config = StackConfig.create(state_dir, port_offset=args.port_offset)
    options = RunOptions(
        mints=args.mints,
        seed=args.seed,
        duration_s=args.duration,
        workers=args.workers,
        settle_timeout_s=args.settle_timeout,
    )
    run = ChaosRun(config, options, progress=_progress)
    # Stopped from outside (Ctrl-C, SIGTERM): the workers and the stack stop too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        result = asyncio.run(_run(run))
    except StackError as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2
    finally:
        run.workers.stop_all()
        if not args.keep:
            Supervisor(config, progress=lambda _: None).down()
    report = report_json(result)
    args.report.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(summary(report))
    print(f"report: {args.report}")
    if report["violations"]:
        print(f"state kept for inspection: {state_dir}", file=sys.stderr)
        return 1
    if not args.keep and args.state_dir is None:
        shutil.rmtree(state_dir, ignore_errors=True)
    return 0


async def _run(run: ChaosRun):  # type: ignore[no-untyped-def]
    try:
        return await run.run()
    finally:
        await run.close()


if __name__ == "__main__":
    sys.exit(main())
