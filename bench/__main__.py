"""python -m bench [--quick] [--batch N] [--samples N] [--memory-mints N] [--results FILE]
                   [--markdown FILE | --no-markdown]

Runs the benchmark (bench/run.py) on a devstack of its own, writes FILE (default
bench/results.json) and the table in BENCHMARKS.md, prints the headline figures. `--quick`
(`make bench-quick`, CI) is a small run that proves the harness and the shape of its numbers;
it writes bench/results-quick.json and leaves BENCHMARKS.md alone. Exits 1 when the results are
malformed (never for a missed goal: timings on a shared machine are not a test).
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

from bench.report import GOALS, build_results, problems, verdict, write_markdown
from bench.run import BenchOptions, BenchRun
from devstack.config import StackConfig
from devstack.supervisor import StackError, Supervisor

# Beside a developer's stack (0), the tests' (10000-13000) and the chaos run's (15000); below
# the ephemeral ports (32768 up).
DEFAULT_PORT_OFFSET = 16000
HERE = Path(__file__).parent
QUICK = BenchOptions(batch=20, latency_samples=5)


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: must not be negative")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small run for CI (about a minute)")
    parser.add_argument("--batch", type=_count, help="workflows started at once (default 200)")
    parser.add_argument("--samples", type=_count, help="one-at-a-time samples (default 40)")
    parser.add_argument(
        "--memory-mints", type=_count, default=0,
        help="run mints in waves until this many ran in all, for the RSS figure",
    )  # fmt: skip
    parser.add_argument("--results", type=Path)
    parser.add_argument("--markdown", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--no-markdown", action="store_true")
    parser.add_argument("--state-dir", type=Path, help="default: a new temporary folder")
    parser.add_argument("--port-offset", type=int, default=DEFAULT_PORT_OFFSET)
    args = parser.parse_args(argv)

    base = QUICK if args.quick else BenchOptions()
    options = BenchOptions(
        batch=args.batch or base.batch,
        latency_samples=args.samples or base.latency_samples,
        memory_mints=args.memory_mints,
    )
    if options.batch < 10 or options.latency_samples < 2:
        parser.error("--batch needs at least 10 and --samples at least 2 for a rate and a p99")
    results_path = args.results or HERE / ("results-quick.json" if args.quick else "results.json")
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="mintsaga-bench-"))
    if (state_dir / "stack.json").exists():
        parser.error(f"--state-dir {state_dir}: holds a stack already; give a fresh folder")
    config = StackConfig.create(state_dir, port_offset=args.port_offset)
    run = BenchRun(config, options, progress=_progress)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        raw = asyncio.run(_run(run))
    except StackError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    finally:
        run.mint_worker.stop_all()  # stopped from outside (SIGTERM, Ctrl-C): workers too
        run.shape_worker.stop_all()
        Supervisor(config, progress=lambda _: None).down()
    results = build_results(raw, options, quick=args.quick)
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    for name in GOALS:
        print(f"{name:26} {results[name]!s:>10}  {verdict(name, results[name])}")
    print(f"results: {results_path}")
    if not (args.quick or args.no_markdown):
        write_markdown(args.markdown, results)
        print(f"table: {args.markdown}")
    found = problems(results)
    for problem in found:
        print(f"bench: malformed result: {problem}", file=sys.stderr)
    if args.state_dir is None:
        shutil.rmtree(state_dir, ignore_errors=True)
    return 1 if found else 0


async def _run(run: BenchRun):  # type: ignore[no-untyped-def]
    try:
        return await run.run()
    finally:
        await run.close()


if __name__ == "__main__":
    sys.exit(main())
