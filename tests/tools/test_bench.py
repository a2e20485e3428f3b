"""The benchmark harness (bench/): its arithmetic, its baseline's shape, its results' checks.

Timings are never asserted (they go to BENCHMARKS.md); what is asserted is that the figures are
computed right and that the baseline workflow really has MintSaga's shape.
"""

from __future__ import annotations

import copy
import json
import math
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Worker

from bench.figures import (
    Flight,
    activity_rounds,
    batch_rate,
    max_in_flight,
    percentile,
    profile_history,
    recovery_s,
    summarize_profiles,
)
from bench.report import REQUIRED, markdown, problems, write_markdown
from bench.shape import ROUNDS, MintShape, noop_activities
from mintsaga.workflows.policies import PINATA_STEPS, provider_task_queue
from tests.paths import HISTORIES, ROOT

# The current version's happy path (every patch of the saga taken).
SAGA_HISTORY = HISTORIES / "happy-path-pinata-queue.json"


def saga_history() -> WorkflowHistory:
    return WorkflowHistory.from_json(SAGA_HISTORY.stem, SAGA_HISTORY.read_text())


# ------------------------------------------------------------------ arithmetic


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([3.0, 1.0, 2.0], 0) == 1.0
    assert percentile([3.0, 1.0, 2.0], 100) == 3.0
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_batch_rate_is_closings_over_the_whole_span_not_the_closing_burst() -> None:
    # 100 started at 0 s close in a burst between 40 s and 50 s: 2 a second, not 10
    flights = [Flight(f"w{n}", 0.0, 40.0 + n / 10) for n in range(100)]
    assert batch_rate(flights) == pytest.approx(100 / 49.9)
    # a stream: started over 100 s, each closing 1 s later
    stream = [Flight(f"s{n}", float(n), n + 1.0) for n in range(100)]
    assert batch_rate(stream) == pytest.approx(1.0)
    unfinished = [*flights, Flight("open", 0.0)]
    assert batch_rate(unfinished) == pytest.approx(100 / 49.9)
    with pytest.raises(ValueError):
        batch_rate([Flight("a", 0.0)])


def test_max_in_flight_counts_overlaps_and_not_touching_ends() -> None:
    flights = [Flight("a", 0.0, 5.0), Flight("b", 1.0, 3.0), Flight("c", 2.0, 4.0)]
    assert max_in_flight(flights) == 3
    # one closing as the next starts: never two at once
    assert max_in_flight([Flight("a", 0.0, 1.0), Flight("b", 1.0, 2.0)]) == 1
    assert max_in_flight([Flight("a", 0.0)]) == 1  # still open


def test_recovery_is_zero_when_the_rate_never_drops_and_counts_a_dip() -> None:
    steady = [Flight(f"w{n}", 0.0, n * 0.5) for n in range(200)]  # 2 a second for 100 s
    assert recovery_s(steady, fault_at=30.0, target_rate=2.0) == 0.0
    # nothing closes for 20 s after the fault, then 2 a second again
    dip = [f for f in steady if not 30.0 <= f.closed < 50.0]  # type: ignore[operator]
    recovered = recovery_s(dip, fault_at=30.0, target_rate=2.0)
    assert recovered is not None and 19.0 <= recovered <= 20.0
    never = [f for f in steady if f.closed < 30.0]  # type: ignore[operator]
    assert recovery_s(never, fault_at=30.0, target_rate=2.0) is None


# ------------------------------------------------------------------ histories


def test_a_mint_history_profile_adds_up() -> None:
    profile = profile_history(saga_history())
    assert profile.total_s > 0
    assert {run.outcome for run in profile.activities} == {"completed"}
    assert all(run.queued_s >= 0 and run.ran_s >= 0 for run in profile.activities)
    assert profile.in_activities_s + profile.in_temporal_s == pytest.approx(profile.total_s)
    summary = summarize_profiles([profile, profile])
    assert summary["workflows"] == 2
    assert set(summary["activities"]) == {name for names, _ in ROUNDS for name in names}


def test_the_baseline_rounds_are_the_sagas() -> None:
    """ROUNDS, as written, against the stored history of the current MintSaga."""
    assert activity_rounds(saga_history()) == [tuple(sorted(names)) for names, _ in ROUNDS]


async def test_the_baseline_workflow_runs_the_sagas_rounds(client: Client) -> None:
    """MintShape on the devstack's Temporal: its history has the saga's rounds, the Pinata
    steps ran on the Pinata queue, and it closed with the same search attributes."""
    queue = f"bench-shape-{uuid.uuid4().hex[:8]}"
    activities = noop_activities()
    pinata = [a for a in activities if a.__temporal_activity_definition.name in PINATA_STEPS]  # type: ignore[attr-defined]
    async with (
        Worker(client, task_queue=queue, workflows=[MintShape], activities=activities),
        Worker(client, task_queue=provider_task_queue(queue, "pinata"), activities=pinata),
    ):
        handle = await client.start_workflow(
            "MintShape", {"mint_id": "shape"}, id=f"shape-{uuid.uuid4().hex}", task_queue=queue
        )
        assert (await handle.result())["status"] == "MINTED"
        history = await handle.fetch_history()
        description = await handle.describe()
    assert activity_rounds(history) == activity_rounds(saga_history())
    queues = {
        event.activity_task_scheduled_event_attributes.activity_type.name: (
            event.activity_task_scheduled_event_attributes.task_queue.name
        )
        for event in history.events
        if event.HasField("activity_task_scheduled_event_attributes")
    }
    # the v1 shape's Pinata steps (frozen: the lean saga's upload_assets is not among them)
    v1_pinata = {"check_ipfs", "upload_image", "upload_metadata"}
    assert v1_pinata <= PINATA_STEPS
    assert {name for name, q in queues.items() if q != queue} == v1_pinata
    attributes = {k: v for k, v in description.search_attributes.items() if k.startswith("Mint")}
    assert attributes == {"MintStage": ["MINTED"], "MintStatus": ["MINTED"]}


# ------------------------------------------------------------------ results


def well_formed() -> dict[str, Any]:
    results: dict[str, Any] = {
        "throughput_vs_v1_shape": 1.7,
        "latency_p50_s": 0.41,
        "actions_per_mint": 11,
        "history_events_per_mint": 44,
        "server_cpu_s_per_mint": 0.12,
        "server_cpu_vs_v1_shape": 0.4,
        "worker_cpu_s_per_mint": 0.1,
        "rss_slope_kb_per_mint": 1.5,
        "latency_p50_ratio": 1.1,
        "latency_p99_ratio": 1.2,
        "faulted_completion": 1.0,
        "faulted_throughput_ratio": 0.6,
        "failover_p99_extra_ms": 12.5,
        "failover_recovery_s": 0.0,
        "rss_growth_mb": 4.2,
        "max_in_flight": 200,
        "rpc_requests_per_mint": 14.8,
        "raw": {section: {} for section in ("v1_shape", "mints", "faulted", "failover", "memory")},
        "machine": {"cpus": 2},
    }
    results["raw"]["profile"] = {}
    return results


def test_well_formed_results_have_no_problems() -> None:
    assert set(REQUIRED) <= set(well_formed())
    assert problems(well_formed()) == []
    recovered_never = well_formed() | {"failover_recovery_s": None}
    assert problems(recovered_never) == []
    one_wave = well_formed() | {"rss_slope_kb_per_mint": None}  # a quick run
    assert problems(one_wave) == []
    # a slow machine may complete nothing of the faulted batch in time: a figure, not a fault
    nothing_in_time = well_formed() | {"faulted_completion": 0.0, "faulted_throughput_ratio": 0}
    assert problems(nothing_in_time) == []


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"throughput_vs_v1_shape": None}, "throughput_vs_v1_shape"),
        ({"actions_per_mint": 0}, "actions_per_mint"),
        ({"server_cpu_s_per_mint": -0.1}, "server_cpu_s_per_mint"),
        # the Temporal server's process not found: not measured, not "met"
        ({"server_cpu_s_per_mint": 0.0}, "server_cpu_s_per_mint"),
        ({"worker_cpu_s_per_mint": 0.0}, "worker_cpu_s_per_mint"),
        ({"latency_p50_ratio": math.nan}, "latency_p50_ratio"),
        ({"latency_p99_ratio": 0.0}, "latency_p99_ratio"),
        ({"faulted_completion": 1.5}, "faulted_completion"),
        ({"rss_growth_mb": "4 MB"}, "rss_growth_mb"),
        ({"max_in_flight": -1}, "max_in_flight"),
        ({"rpc_requests_per_mint": None}, "rpc_requests_per_mint"),
        ({"faulted_throughput_ratio": -0.1}, "faulted_throughput_ratio"),
        ({"machine": {}}, "machine.cpus"),
    ],
)
def test_malformed_results_are_named(change: dict[str, Any], named: str) -> None:
    results = well_formed() | change
    assert any(problem.startswith(named) for problem in problems(results))


def test_a_missing_figure_or_raw_section_is_named() -> None:
    results = well_formed()
    del results["faulted_throughput_ratio"]
    del results["raw"]["failover"]
    found = problems(results)
    assert any(p.startswith("faulted_throughput_ratio") for p in found)
    assert "raw.failover: missing" in found


def test_the_markdown_table_replaces_only_its_own_block(tmp_path: Path) -> None:
    results = json.loads((ROOT / "bench" / "results.json").read_text())
    assert problems(results) == []  # the committed results are well-formed too
    target = tmp_path / "BENCHMARKS.md"
    target.write_text("# Benchmarks\n\nintro\n")
    write_markdown(target, results)
    first = target.read_text()
    assert first.startswith("# Benchmarks\n\nintro\n")
    for name in REQUIRED:
        assert f"`{name}`" in first
    target.write_text(first + "\n## After\n\nkept\n")
    changed = copy.deepcopy(results)
    changed["throughput_vs_v1_shape"] = 0.123
    write_markdown(target, changed)
    second = target.read_text()
    assert second.count("bench:begin") == 1 and "| 0.123 |" in second
    assert second.endswith("## After\n\nkept\n") and "intro" in second
    assert markdown(changed) in second


async def test_the_workflow_memory_report_names_each_workflow_and_what_a_run_holds() -> None:
    """bench/workflow_memory.py keeps runs as the cache would and reports bytes per run: a
    MintSaga run holds its own module namespace (more than nothing) but neither the shared
    models (whose rebuilding per run cost about 0.5 MB, issue 19) nor the stages' code."""
    from bench.workflow_memory import measure
    from mintsaga.workflows.mint_saga import MintSaga

    tracemalloc.start(1)
    try:
        found = measure(MintSaga, runs=5, top=5)
    finally:
        tracemalloc.stop()
    assert found["workflow"] == "MintSaga" and found["runs"] == 5
    assert 0 < found["kb_per_run"] < 100  # 43 KB measured; 511 KB rebuilding the models
    assert found["by_file_kb_per_run"]
    shared = ("activity_models", "mint_stages")  # passed through: never held per run
    assert not any(s in name for name, _ in found["by_file_kb_per_run"] for s in shared)
