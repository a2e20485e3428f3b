"""The pin repair's and the health upload probe's settings: defaults, limits, errors by name."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mintsaga.api import health, pin_repair
from mintsaga.setting_readers import SettingsError


def test_the_repair_interval_and_batch_have_defaults_and_limits() -> None:
    assert pin_repair.interval_from_env({}) == timedelta(minutes=5)
    assert pin_repair.interval_from_env({"PIN_REPAIR_INTERVAL_S": "0"}) is None
    assert pin_repair.interval_from_env({"PIN_REPAIR_INTERVAL_S": "30"}) == timedelta(seconds=30)
    assert pin_repair.batch_from_env({}) == 25
    assert pin_repair.batch_from_env({"PIN_REPAIR_BATCH": "1000"}) == 1000


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PIN_REPAIR_INTERVAL_S", "soon"),
        ("PIN_REPAIR_INTERVAL_S", "5"),
        ("PIN_REPAIR_INTERVAL_S", "-1"),
        ("PIN_REPAIR_BATCH", "0"),
        ("PIN_REPAIR_BATCH", "1001"),
        ("PIN_REPAIR_BATCH", "many"),
    ],
)
def test_a_bad_repair_setting_is_refused_by_name(name: str, value: str) -> None:
    read = pin_repair.interval_from_env if name.endswith("_S") else pin_repair.batch_from_env
    with pytest.raises(SettingsError, match=name):
        read({name: value})


def test_the_upload_probe_interval() -> None:
    assert health.upload_interval_from_env({}) == timedelta(minutes=15)
    assert health.upload_interval_from_env({"HEALTH_UPLOAD_PROBE_INTERVAL_S": "0"}) == timedelta(0)
    for bad in ("often", "-5"):
        with pytest.raises(SettingsError, match="HEALTH_UPLOAD_PROBE_INTERVAL_S"):
            health.upload_interval_from_env({"HEALTH_UPLOAD_PROBE_INTERVAL_S": bad})


def test_the_schedule_runs_the_repair_one_at_a_time_on_the_workers_queue() -> None:
    schedule = pin_repair.pin_repair_schedule("q", timedelta(seconds=30))
    action = schedule.action
    assert action.workflow == "PinRepair" and action.task_queue == "q"  # type: ignore[union-attr]
    assert schedule.spec.intervals[0].every == timedelta(seconds=30)
    assert schedule.policy.overlap.name == "SKIP"
