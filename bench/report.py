"""From a run's raw figures to `bench/results.json` and the table in BENCHMARKS.md.

Every headline figure is a ratio (or a fraction, or a difference) of two measurements of the same
run; the raw figures each came from sit beside it, with the machine and the options.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import re
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.figures import (
    Flight,
    batch_rate,
    latency_summary,
    max_in_flight,
    percentile,
    recovery_s,
    summarize_profiles,
)
from bench.run import (
    EXTERNAL_SERVICES,
    MINTED,
    Batch,
    BenchOptions,
    fault_spec,
    solana_step_seconds,
    statuses,
)

# name -> (comparison, goal, what it is), in the order
GOALS: dict[str, tuple[str, float, str]] = {
    # issue 19: the lean saga against the frozen v1 shape (bench/shape.py), and its costs
    "throughput_vs_v1_shape": (">=", 1.6, "mints/s at saturation ÷ v1 shape workflows/s"),
    "latency_p50_s": ("<=", 0.45, "one mint's p50, start to MINTED"),
    "actions_per_mint": ("<=", 12, "Temporal Cloud billable actions of a happy mint"),
    "history_events_per_mint": ("<=", 45, "history events of a happy mint"),
    "server_cpu_s_per_mint": ("<=", 0.14, "Temporal server CPU s per mint at saturation"),
    # the "half of today's 0.28 s", today's (the v1 shape) measured in the same run
    "server_cpu_vs_v1_shape": ("<=", 0.5, "server CPU per mint ÷ per v1 shape workflow"),
    "worker_cpu_s_per_mint": ("", math.nan, "mint worker CPU s per mint at saturation"),
    # issue 8
    "latency_p50_ratio": ("", math.nan, "one mint's p50 ÷ v1 shape p50"),
    "latency_p99_ratio": ("", math.nan, "one mint's p99 ÷ v1 shape p99"),
    "faulted_completion": (">=", 1.0, "share of the faulted batch MINTED in time, no operator"),
    "faulted_throughput_ratio": (">=", 0.7, "faulted batch mints/s ÷ fault-free mints/s"),
    "failover_p99_extra_ms": ("<=", 1000.0, "Solana steps' p99 in the outage - before it"),
    "failover_recovery_s": ("", math.nan, "fault → a 10 s window closing 90 % of the offered rate"),
    "rss_growth_mb": ("<", 50.0, "mint worker RSS after all mints - before the first"),
    "rss_slope_kb_per_mint": ("<", 2.0, "mint worker RSS per mint after the first wave"),
    "max_in_flight": ("", math.nan, "most mints open at once on one worker, none erring"),
    "rpc_requests_per_mint": ("", math.nan, "Solana RPC requests a mint, 200 at once"),
}
REQUIRED = tuple(GOALS)
POSITIVE = frozenset(
    {
        "throughput_vs_v1_shape",
        "latency_p50_s",
        "latency_p50_ratio",
        "latency_p99_ratio",
        "actions_per_mint",
        "history_events_per_mint",
        # a process that ran the batch used some CPU: 0 means it was not found (not measured)
        "server_cpu_s_per_mint",
        "server_cpu_vs_v1_shape",
        "worker_cpu_s_per_mint",
    }
)
# May be 0 (nothing completed in time, on a slow machine), never below.
COUNTS = frozenset(
    {
        "faulted_completion",
        "faulted_throughput_ratio",
        "max_in_flight",
        "rpc_requests_per_mint",
    }
)
MARK_BEGIN = "<!-- bench:begin (written by `make bench`; edit bench/report.py instead) -->"
MARK_END = "<!-- bench:end -->"


def build_results(raw: dict[str, Any], options: BenchOptions, quick: bool) -> dict[str, Any]:
    shape_latency: list[Flight] = raw["shape_latency"]
    mint_latency: list[Flight] = raw["mint_latency"]
    shape_batch: Batch = raw["shape_batch"]
    mint_batch: Batch = raw["mint_batch"]
    faulted: Batch = raw["faulted_batch"]
    failover: Batch = raw["failover_batch"]

    shape_lat = latency_summary([f.seconds for f in shape_latency])
    mint_lat = latency_summary([f.seconds for f in mint_latency])
    shape_rate = batch_rate(shape_batch.flights)
    mint_rate = batch_rate(mint_batch.flights)

    batch_began = faulted.flights[0].started
    in_time = [
        f
        for f in faulted.flights
        if f.closed is not None and f.status == MINTED and f.closed - batch_began <= faulted.wall_s
    ]
    faulted_rate = batch_rate(in_time) if len(in_time) >= 2 else 0.0
    completed = raw["faulted_completed_in_time"]

    fault_wall, fault_at = raw["failover_wall"], raw["failover_at"]
    quiet_steps = solana_step_seconds(raw["failover_profiles"], until=fault_wall)
    outage_steps = solana_step_seconds(raw["failover_profiles"], since=fault_wall)
    extra_ms = (percentile(outage_steps, 99) - percentile(quiet_steps, 99)) * 1000
    before_fault = [f.seconds for f in failover.flights if f.started < fault_at]
    after_fault = [f.seconds for f in failover.flights if f.started >= fault_at]
    rss = raw["rss"]

    clean = [mint_batch, *raw["memory_waves"]]
    clean_in_flight = [
        max_in_flight(b.flights)
        for b in clean
        if all(f.status == MINTED and f.retries == 0 for f in b.flights)
    ]

    stage_seconds: dict[str, list[float]] = defaultdict(list)
    for stages in raw["mint_stage_seconds"]:
        for stage, seconds in stages.items():
            stage_seconds[stage].append(seconds)

    mint_profiles = raw["mint_profiles"]
    minted = len(mint_batch.flights)
    return {
        "throughput_vs_v1_shape": round(mint_rate / shape_rate, 3),
        "latency_p50_s": mint_lat["p50_s"],
        "actions_per_mint": percentile([p.actions for p in mint_profiles], 50),
        "history_events_per_mint": percentile([p.events for p in mint_profiles], 50),
        "server_cpu_s_per_mint": round(mint_batch.cpu_s.get("temporal", 0.0) / minted, 4),
        "server_cpu_vs_v1_shape": _ratio(
            mint_batch.cpu_s.get("temporal", 0.0) / minted,
            shape_batch.cpu_s.get("temporal", 0.0) / len(shape_batch.flights),
        ),
        "worker_cpu_s_per_mint": round(mint_batch.cpu_s.get("worker", 0.0) / minted, 4),
        "latency_p50_ratio": round(mint_lat["p50_s"] / shape_lat["p50_s"], 3),
        "latency_p99_ratio": round(mint_lat["p99_s"] / shape_lat["p99_s"], 3),
        "faulted_completion": round(completed / len(faulted.flights), 4),
        "faulted_throughput_ratio": round(faulted_rate / mint_rate, 3),
        "failover_p99_extra_ms": round(extra_ms, 1),
        "failover_recovery_s": _maybe_round(
            recovery_s(failover.flights, fault_at, raw["failover_rate"])
        ),
        "rss_growth_mb": round(rss[-1]["rss_mb"] - rss[0]["rss_mb"], 1),
        "rss_slope_kb_per_mint": rss_slope_kb_per_mint(rss),
        "max_in_flight": max(clean_in_flight, default=0),
        "rpc_requests_per_mint": round(raw["rpc_requests_per_mint"]["batch"], 1),
        "goals": {name: {"op": op, "goal": goal} for name, (op, goal, _) in GOALS.items() if op},
        "raw": {
            "v1_shape": {
                "workflows_per_s": round(shape_rate, 3),
                "batch": _batch_figures(shape_batch),
                "latency": shape_lat,
            },
            "mints": {
                "rpc_requests_per_mint": {
                    k: round(v, 1) for k, v in raw["rpc_requests_per_mint"].items()
                },
                "mints_per_s": round(mint_rate, 3),
                "batch": _batch_figures(mint_batch),
                "latency": mint_lat,
            },
            "faulted": {
                "faults": [
                    fault_spec(service, options.fault_rate) for service in EXTERNAL_SERVICES
                ],
                "mints_per_s": round(faulted_rate, 3),
                "completed_in_time": completed,
                "deadline_s": round(faulted.wall_s, 1),
                "batch": _batch_figures(faulted),
            },
            "failover": {
                "mints_per_s_offered": round(raw["failover_rate"], 3),
                "solana_steps_p99_before_s": round(percentile(quiet_steps, 99), 4),
                "solana_steps_p99_outage_s": round(percentile(outage_steps, 99), 4),
                "solana_steps_before": len(quiet_steps),
                "solana_steps_in_outage": len(outage_steps),
                "mint_latency_before": latency_summary(before_fault),
                "mint_latency_in_outage": latency_summary(after_fault),
                "fault_at_s": round(fault_at - failover.flights[0].started, 2),
                "batch": _batch_figures(failover),
            },
            "memory": {
                "rss_before_mb": rss[0]["rss_mb"],
                "rss_after_mb": rss[-1]["rss_mb"],
                "mints": raw["mints_run"],
                "rss_after_each_section": rss,
                "waves": [_batch_figures(b) for b in raw["memory_waves"]],
            },
            "profile": {
                "mint": summarize_profiles(raw["mint_profiles"]),
                "v1_shape": summarize_profiles(raw["shape_profiles"]),
                "mint_stage_seconds_p50": {
                    stage: round(percentile(values, 50), 4)
                    for stage, values in stage_seconds.items()
                },
            },
        },
        "options": {
            "batch": options.batch,
            "latency_samples": options.latency_samples,
            "fault_rate": options.fault_rate,
            "memory_mints": options.memory_mints,
            "quick": quick,
        },
        "machine": machine(),
        "run": {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": _git("rev-parse", "--short", "HEAD"),
            "wall_s": round(raw["wall_s"], 1),
        },
    }


def _maybe_round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def rss_slope_kb_per_mint(rss: list[dict[str, Any]]) -> float | None:
    """KB of mint worker RSS per mint, from the end of the first memory wave to the last
    reading (None: fewer than two waves, as in a quick run)."""
    waves = [r for r in rss if str(r["after"]).startswith("wave ")]
    if len(waves) < 2 or waves[-1]["mints"] <= waves[0]["mints"]:
        return None
    grown_kb = (waves[-1]["rss_mb"] - waves[0]["rss_mb"]) * 1024
    return round(grown_kb / (waves[-1]["mints"] - waves[0]["mints"]), 2)


def _ratio(part: float, whole: float) -> float:
    """part ÷ whole, NaN (malformed, never a met goal) when the whole was not measured."""
    return round(part / whole, 3) if whole > 0 else math.nan


def _batch_figures(batch: Batch) -> dict[str, Any]:
    return {
        "workflows": len(batch.flights),
        "wall_s": round(batch.wall_s, 2),
        "cpu_s_per_workflow": {
            name: round(seconds / len(batch.flights), 4) for name, seconds in batch.cpu_s.items()
        },
        "statuses": statuses(batch),
        "retries": sum(f.retries for f in batch.flights),
        "retries_by_step": retries_by_step(batch),
        "max_in_flight": max_in_flight(batch.flights),
    }


def retries_by_step(batch: Batch) -> dict[str, int]:
    """Attempts beyond the first, per step, over the batch's mints (where a fault costs)."""
    counts: dict[str, int] = {}
    for result in batch.results.values():
        for step, retries in result.retries.items():
            counts[step] = counts.get(step, 0) + retries
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_gb = None
    with contextlib.suppress(OSError, ValueError):
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory_gb = round(pages / 2**30, 1)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": memory_gb,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "temporal_cli": _temporal_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _temporal_version() -> str:
    from devstack.supervisor import temporal_binary

    try:
        out = subprocess.run(
            [temporal_binary(), "--version"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


# ------------------------------------------------------------------ checking and showing


def problems(results: dict[str, Any]) -> list[str]:
    """What makes `results` malformed: a headline figure missing or not a finite number, a
    fraction outside 0..1, a count below zero, raw figures or the machine missing."""
    found = []
    for name in REQUIRED:
        value = results.get(name)
        if name in ("failover_recovery_s", "rss_slope_kb_per_mint") and value is None:
            continue  # the rate never came back within the batch; fewer than two waves
        if not isinstance(value, int | float) or isinstance(value, bool):
            found.append(f"{name}: {value!r} is not a number")
        elif not math.isfinite(value):
            found.append(f"{name}: {value} is not finite")
        elif name in POSITIVE and value <= 0:
            found.append(f"{name}: {value} is not positive")
        elif value < 0 and name in COUNTS:
            found.append(f"{name}: {value} is below zero")
    completion = results.get("faulted_completion")
    if isinstance(completion, int | float) and not 0 <= completion <= 1:
        found.append(f"faulted_completion: {completion} is outside 0..1")
    for section in ("v1_shape", "mints", "faulted", "failover", "memory", "profile"):
        if section not in results.get("raw", {}):
            found.append(f"raw.{section}: missing")
    if not results.get("machine", {}).get("cpus"):
        found.append("machine.cpus: missing")
    return found


def verdict(name: str, value: Any) -> str:
    op, goal, _ = GOALS[name]
    if not op or value is None:
        return "—"
    met = {">=": value >= goal, "<=": value <= goal, "<": value < goal}[op]
    return "met" if met else "**missed**"


def markdown(results: dict[str, Any]) -> str:
    raw, m = results["raw"], results["machine"]
    lines = [
        MARK_BEGIN,
        "",
        f"Run {results['run']['at']} at commit `{results['run']['commit']}` in "
        f"{results['run']['wall_s']:.0f} s: {m['cpus']} x {m['cpu_model'] or 'CPU'}, "
        f"{m['memory_gib']} GiB, Python {m['python']}, {m['temporal_cli'].splitlines()[0]}; "
        f"load average at the end {m['load_average'][0]}. Batch {results['options']['batch']}, "
        f"{results['options']['latency_samples']} one-at-a-time samples.",
        "",
        "| figure | measured | goal | verdict | from |",
        "|---|---|---|---|---|",
    ]
    mint_profile = raw["profile"]["mint"]
    batch = raw["mints"]["batch"]
    sources = {
        "throughput_vs_v1_shape": f"{raw['mints']['mints_per_s']} mints/s ÷ "
        f"{raw['v1_shape']['workflows_per_s']} v1 shape/s",
        "latency_p50_s": f"{raw['mints']['latency']['samples']} mints one at a time",
        "actions_per_mint": f"median of {mint_profile['workflows']} one-at-a-time mints' "
        "histories (bench/figures.py `billable_actions`)",
        "history_events_per_mint": f"median of {mint_profile['workflows']} histories; "
        f"{mint_profile.get('workflow_tasks', '—')} workflow tasks",
        "server_cpu_s_per_mint": "the Temporal dev server's CPU s over the batch of "
        f"{batch['workflows']} ÷ its mints (v1 shape: "
        f"{raw['v1_shape']['batch']['cpu_s_per_workflow'].get('temporal', '—')} s)",
        "server_cpu_vs_v1_shape": "the two figures above, same run",
        "worker_cpu_s_per_mint": "the mint worker's CPU s over the batch ÷ its mints (v1 "
        f"shape's worker: {raw['v1_shape']['batch']['cpu_s_per_workflow'].get('worker', '—')} s;"
        f" the same batch's emulators {batch['cpu_s_per_workflow'].get('emulators', '—')} s, "
        f"Postgres {batch['cpu_s_per_workflow'].get('postgres', '—')} s, the driver "
        f"{batch['cpu_s_per_workflow'].get('driver', '—')} s)",
        "rss_slope_kb_per_mint": "mint worker RSS growth from the end of the first memory wave "
        "to the end ÷ the mints in between",
        "latency_p50_ratio": f"{raw['mints']['latency']['p50_s']} s ÷ "
        f"{raw['v1_shape']['latency']['p50_s']} s",
        "latency_p99_ratio": f"{raw['mints']['latency']['p99_s']} s ÷ "
        f"{raw['v1_shape']['latency']['p99_s']} s",
        "faulted_completion": f"{raw['faulted']['completed_in_time']} of "
        f"{raw['faulted']['batch']['workflows']} within {raw['faulted']['deadline_s']} s",
        "faulted_throughput_ratio": f"{raw['faulted']['mints_per_s']} ÷ "
        f"{raw['mints']['mints_per_s']} mints/s",
        "failover_p99_extra_ms": f"{raw['failover']['solana_steps_p99_outage_s']} s - "
        f"{raw['failover']['solana_steps_p99_before_s']} s "
        f"({raw['failover']['solana_steps_in_outage']} steps in the outage, "
        f"{raw['failover']['solana_steps_before']} before)",
        "failover_recovery_s": f"{raw['failover']['batch']['workflows']} mints at "
        f"{raw['failover']['mints_per_s_offered']}/s, fault at {raw['failover']['fault_at_s']} s",
        "rss_growth_mb": f"{raw['memory']['rss_before_mb']} → {raw['memory']['rss_after_mb']} MB "
        f"over {raw['memory']['mints']} mints",
        "max_in_flight": "largest batch on one worker with every mint MINTED, no retry",
        "rpc_requests_per_mint": "requests the devstack's Solana endpoints received during "
        f"the batch ÷ its mints ({raw['mints']['rpc_requests_per_mint']['one_at_a_time']} "
        "one at a time)",
    }
    for name, (op, goal, what) in GOALS.items():
        value = results[name]
        shown = "—" if value is None else f"{value:g}"
        target = f"{op} {goal:g}" if op else "—"
        lines.append(
            f"| `{name}` ({what}) | {shown} | {target} | {verdict(name, value)} | {sources[name]} |"
        )
    lines += ["", *_profile_lines(raw["profile"]), "", MARK_END]
    return "\n".join(lines)


def _profile_lines(profile: dict[str, Any]) -> list[str]:
    mint, base = profile["mint"], profile["v1_shape"]
    lines = [
        f"Where one mint's time goes (medians of {mint['workflows']} one-at-a-time mints and as "
        "many v1 shape workflows, from their histories):",
        "",
        "| | mint | v1 shape |",
        "|---|---|---|",
        f"| start to close (history) | {mint['total_s']} s | {base['total_s']} s |",
        f"| in activities (per round, the longest) | {mint['in_activities_s']} s | "
        f"{base['in_activities_s']} s |",
        f"| in Temporal (dispatch, workflow tasks, round trips) | {mint['in_temporal_s']} s | "
        f"{base['in_temporal_s']} s |",
        f"| history events / billable actions / workflow tasks | {mint.get('history_events')} / "
        f"{mint.get('actions')} / {mint.get('workflow_tasks')} | {base.get('history_events')} / "
        f"{base.get('actions')} / {base.get('workflow_tasks')} |",
        f"| workflow tasks: queued / running | {mint['workflow_task_queued_s']} / "
        f"{mint['workflow_task_ran_s']} s | {base['workflow_task_queued_s']} / "
        f"{base['workflow_task_ran_s']} s |",
        "",
        "| activity | queued (Temporal) | ran (our code) | v1 shape ran |",
        "|---|---|---|---|",
    ]
    for name, times in sorted(mint["activities"].items(), key=lambda kv: -kv[1]["ran_s"]):
        base_ran = base["activities"].get(name, {}).get("ran_s", "—")
        lines.append(f"| {name} | {times['queued_s']} s | {times['ran_s']} s | {base_ran} s |")
    stages = profile["mint_stage_seconds_p50"]
    lines += [
        "",
        "Seconds per stage (MintResult.stage_seconds, medians): "
        + ", ".join(f"{stage} {seconds}" for stage, seconds in stages.items())
        + ".",
    ]
    return lines


def write_markdown(path: Path, results: dict[str, Any]) -> None:
    """Put the table between the markers in `path`, or append it under a heading."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = markdown(results)
    pattern = re.compile(re.escape(MARK_BEGIN) + r".*?" + re.escape(MARK_END), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n## The saga against the engine (`make bench`)\n\n" + block
    path.write_text(text + ("" if text.endswith("\n") else "\n"))
