"""chaos-report.json and the summary a person reads at the end of a run."""

from __future__ import annotations

import dataclasses
import os
import platform
from collections import Counter
from typing import Any

from chaos.harness import RunResult


def report_json(result: RunResult) -> dict[str, Any]:
    checked = result.checked
    outcomes = Counter(m.status for m in checked.mints)
    return {
        "run": {
            "mints": result.options.mints,
            "seed": result.options.seed,
            "duration_s": result.options.duration_s,
            "workers": result.options.workers,
            "wall_s": round(result.wall_s, 1),
            "settle_s": round(result.settle_s, 1),
            "machine": f"{platform.machine()} {os.cpu_count()} cores, Python "
            f"{platform.python_version()}",
        },
        "mints": [dataclasses.asdict(m) for m in checked.mints],
        "faults": dict(sorted(result.carried.faults.items())),
        "faults_fired_by_target": dict(sorted(result.fault_hits.items())),
        "outcomes": dict(sorted(outcomes.items())),
        "retries": dict(sorted(result.histories.retries.items())),
        "failovers": dict(sorted(result.logs.failovers.items())),
        "breaker_trips": dict(sorted(result.logs.breaker_trips.items())),
        "breaker_recoveries": dict(sorted(result.logs.breaker_recoveries.items())),
        "compensations": result.histories.compensations,
        "operator": dict(sorted(result.carried.operator.items())),
        "recovery": [
            {**dataclasses.asdict(r), "within_spec": r.within_spec} for r in result.recoveries
        ],
        "actions": result.carried.actions,
        "violations": [dataclasses.asdict(v) for v in checked.violations],
    }


def _table(title: str, rows: dict[str, Any]) -> list[str]:
    if not rows:
        return [f"{title}: none"]
    width = max(len(str(k)) for k in rows)
    return [f"{title}:"] + [f"  {k!s:<{width}}  {v}" for k, v in rows.items()]


def summary(report: dict[str, Any]) -> str:
    run = report["run"]
    lines = [
        f"chaos run: {run['mints']} mints, seed {run['seed']}, {run['duration_s']:.0f} s of "
        f"faults, {run['workers']} worker(s); {run['wall_s']:.0f} s in all "
        f"({run['settle_s']:.0f} s settling)",
    ]
    lines += _table("faults injected (by kind)", report["faults"])
    lines += _table("mints by outcome", report["outcomes"])
    lines += _table("retries (activity attempts after the first, by service)", report["retries"])
    lines += _table("failovers (from the worker logs)", report["failovers"])
    lines += _table("breaker trips (closed -> open)", report["breaker_trips"])
    lines += _table("breaker recoveries (half-open -> closed)", report["breaker_recoveries"])
    lines.append(f"compensation steps completed: {report['compensations']}")
    lines += _table("operator actions (through starter.py)", report["operator"])
    lines.append(
        "recovery after each outage (first step needing the service, started after it began, "
        "to succeed):"
    )
    for r in report["recovery"]:
        after = (
            "- (no step needing it ran afterwards)"
            if r["recovered_after_s"] is None
            else f"{r['recovered_after_s']:.1f} s"
        )
        limit = f" (spec < {r['spec_limit_s']:.0f} s)" if r["spec_limit_s"] else ""
        lines.append(f"  {r['outage']:<32} lasted {r['lasted_s']:5.1f} s, recovered {after}{limit}")
    violations = report["violations"]
    lines.append(f"violations: {len(violations)}")
    for v in violations:
        lines.append(f"  invariant {v['invariant']} {v['mint_id'] or ''}: {v['message']}")
    return "\n".join(lines)
