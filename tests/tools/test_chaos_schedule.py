"""The chaos run's pure parts: its seeded schedule and its figures (no server needed)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from chaos import measure
from chaos.schedule import CYCLE_S, build_schedule
from devstack.dev_identity import png

EVERY_KIND = {
    "fault",
    "pinata_plan",
    "gateway_behaviour",
    "warp",
    "postgres_reset",
    "postgres_restart",
    "wallet_underfunded",
    "worker_sigkill",
    "temporal_restart",
}


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    assert build_schedule(7, 60) == build_schedule(7, 60)
    assert build_schedule(7, 60) != build_schedule(8, 60)


@pytest.mark.parametrize("duration_s", [30.0, 60.0, 900.0])
def test_a_schedule_holds_every_fault_kind_of_issue_5_within_the_run(duration_s: float) -> None:
    actions = build_schedule(1, duration_s)
    assert {a.kind for a in actions} == EVERY_KIND
    assert all(0 <= a.at_s < duration_s for a in actions)
    assert [a.at_s for a in actions] == sorted(a.at_s for a in actions)
    faults = [a.spec for a in actions if a.kind == "fault"]
    shapes = {
        (f["target"].rstrip("123"), f["kind"], f.get("status"), f.get("match")) for f in faults
    }
    for wanted in [
        ("solana-", "down", None, None),
        ("pinata", "down", None, None),
        ("gateway-", "down", None, None),
        ("postgres", "down", None, None),
    ]:
        assert wanted in shapes, f"{wanted} missing from {sorted(map(str, shapes))}"
    # Every fault ends by itself: a run never leaves a service broken for the next.
    assert all(f["duration_ms"] > 0 for f in faults)
    # Issue 16: the providers as they behave, for a while each, within the run.
    plans = [a for a in actions if a.kind == "pinata_plan"]
    assert plans and all(a.spec == {"plan": "free"} and a.duration_s > 0 for a in plans)
    slow = [a for a in actions if a.kind == "gateway_behaviour"]
    assert slow and all(a.spec["behaviour"]["appear_after_s"] > 0 for a in slow)
    assert all(a.spec["gateway"].startswith("gateway-") for a in slow)


def test_a_long_run_repeats_each_outage_once_per_cycle() -> None:
    actions = build_schedule(3, CYCLE_S * 3)
    restarts = [a for a in actions if a.kind == "temporal_restart"]
    assert len(restarts) == 3
    assert len([a for a in actions if a.kind == "worker_sigkill"]) == 9


def test_a_schedule_refuses_a_duration_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="duration"):
        build_schedule(1, 0)


def test_recovery_is_the_first_completed_step_that_needs_the_service_after_the_outage() -> None:
    began = datetime(2026, 1, 1, 12, 0, 0)

    def done(after_s: float, activity: str, started_s: float) -> measure.Completion:
        return measure.Completion(
            began + timedelta(seconds=after_s), activity, began + timedelta(seconds=started_s)
        )

    completions = [
        done(-1, "send_transaction", -2),
        done(0.5, "send_transaction", -0.5),  # under way before the outage: not a recovery
        done(2, "upload_image", 1),  # not a solana step
        done(4.5, "verify_nft", 4),
    ]
    outages = [
        measure.Outage("solana-1 down", "solana endpoint", began, 10.0),
        measure.Outage("worker SIGKILL", "worker", began, 1.0),
        measure.Outage("gateway-2 down", "gateway", began, 10.0),
    ]
    solana, worker, gateway = measure.recoveries(outages, completions)
    assert solana.recovered_after_s == 4.5 and solana.spec_limit_s == 30.0
    assert solana.within_spec is True
    assert worker.recovered_after_s == 2.0 and worker.spec_limit_s is None
    assert gateway.recovered_after_s is None and gateway.within_spec is None


def test_failovers_and_breaker_transitions_are_counted_from_the_worker_log(
    tmp_path: Path,
) -> None:
    log = tmp_path / "worker.log"
    log.write_text(
        "\n".join(
            [
                "WARNING clients.solana_rpc solana getSlot failed at solana-1 (x, transient);"
                " trying the next endpoint",
                "WARNING clients.ipfs pinata unavailable, failing over to kubo",
                "WARNING resilience.breaker breaker http://a: closed -> open (5 failures)",
                "INFO resilience.breaker breaker http://a: open -> half_open (60 s)",
                "INFO resilience.breaker breaker http://a: half_open -> closed (probes passed)",
                "WARNING resilience.breaker breaker http://a: half_open -> open (probe failed)",
            ]
        )
    )
    figures = measure.log_figures([log, tmp_path / "missing.log"])
    assert figures.failovers == {"solana": 1, "ipfs": 1}
    assert figures.breaker_trips == {"http://a": 1}
    assert figures.breaker_recoveries == {"http://a": 1}


def test_dev_images_of_different_seeds_never_share_bytes() -> None:
    """The chaos run's and the tests' "unique" images must be unique (the pixels alone repeat
    every 256 seeds), or two mints would share a CID without meaning to."""
    images = {png(16, 16, seed=seed) for seed in range(0, 2048, 7)}
    assert len(images) == len(range(0, 2048, 7))


def test_database_recovery_counts_only_steps_that_query_postgres() -> None:
    began = datetime(2026, 1, 1, 12, 0, 0)
    completions = [
        # The maintenance gate answers from the workers' cached settings, even with no database.
        measure.Completion(began + timedelta(seconds=0.2), "wait_out_maintenance", began),
        measure.Completion(
            began + timedelta(seconds=6), "claim_mint", began + timedelta(seconds=5)
        ),
    ]
    [database] = measure.recoveries(
        [measure.Outage("postgres restart", "database", began, 5.0)], completions
    )
    assert database.recovered_after_s == 6.0
