"""The monitoring kit in deploy/: Prometheus alert rules and the Grafana dashboard.

Pure checks (no server): every expression reads only metrics the product exports (the
`observability.metrics` catalogue, as the registry exposes it) or rules recorded in alerts.yml;
every alert has a severity, a summary, a description and a runbook link; the dashboard has the
spec's three views. With `promtool` on PATH (Debian's `prometheus` package), the rules' own
unit tests (deploy/prometheus/alerts.test.yml) run too, and every dashboard query is parsed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import mintsaga.observability.metrics  # noqa: F401  (registers the catalogue)
from tests.paths import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "mintsaga.json"
RUNBOOK = ROOT / "docs" / "runbook.md"
PROMTOOL = shutil.which("promtool")
NO_PROMTOOL = "promtool is not on PATH (apt-get install prometheus brings it)"

SEVERITIES = {"warning", "critical", "info"}
ROWS = ["Network health overview", "Operation tracking", "Service performance"]

_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"}
_KEYWORDS |= {"unless", "bool", "offset", "inf", "nan"}
_NAME = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords, labels left out)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = _GROUPING.sub(" ", text)  # by (...), on (...), group_left (...)
    names = set()
    for match in _NAME.finditer(text):
        word = match.group(0)
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function
        if word.lower() not in _KEYWORDS:
            names.add(word)
    return names


def test_metric_names_are_found_in_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (service, le) (rate(a_bucket{x="b c"}[$__rate_interval])))'
        " > on () group_left () 2 * b:rec and min(c_total) < 1e9 or vector(1)"
    )
    assert metric_names(expr) == {"a_bucket", "b:rec", "c_total"}


def catalogue() -> set[str]:
    """Every sample name the product's registry exposes for its `mintsaga_*` families."""
    names = set()
    for family in REGISTRY.collect():
        if not family.name.startswith("mintsaga_"):
            continue
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_count", "_sum")}
        else:
            names.add(family.name)
    return names


def exported(name: str) -> bool:
    # The Temporal SDK's own metrics join the registry once a worker's runtime exists.
    return name in catalogue() or name.startswith("temporal_")


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return groups


def rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def test_the_catalogue_has_what_the_rules_are_about() -> None:
    assert {
        "mintsaga_requests_total",
        "mintsaga_request_duration_seconds_bucket",
        "mintsaga_breaker_state",
        "mintsaga_health_up",
        "mintsaga_rpc_slot_lag",
        "mintsaga_db_pool_connections",
    } <= catalogue()


def test_every_rule_reads_only_exported_or_recorded_metrics() -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    for rule in rules():
        unknown = {
            name
            for name in metric_names(rule["expr"])
            if not exported(name) and name not in recorded
        }
        assert not unknown, f"{rule.get('alert') or rule['record']}: {unknown}"


def test_every_alert_has_a_severity_a_summary_and_a_runbook() -> None:
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names)), "an alert name is used twice"
    for rule in alerts():
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip()
        assert re.fullmatch(r"docs/runbook\.md#[a-z0-9-]+", annotations["runbook_url"])


def test_the_spec_levels_are_covered() -> None:
    """Warning and critical alerts on each indicator the spec's "Alert Triggers" names."""
    by_metric: dict[str, set[str]] = {}
    recorded = {rule["record"]: rule["expr"] for rule in rules() if "record" in rule}
    for rule in alerts():
        reads, todo = set(), [rule["expr"]]
        while todo:  # through recording rules, down to the exported metrics
            for name in metric_names(todo.pop()) - reads:
                reads.add(name)
                todo.append(recorded.get(name, ""))
        for name in reads:
            by_metric.setdefault(name, set()).add(rule["labels"]["severity"])
    expected = {
        "mintsaga_requests_total": {"warning", "critical"},  # degraded / outage / several
        "mintsaga_request_duration_seconds_bucket": {"warning"},  # 2x the baseline
        "mintsaga_breaker_state": {"warning", "critical"},  # half-open / open
        "mintsaga_task_queue_backlog": {"warning", "critical"},  # 50 % / full
        "mintsaga_activity_retries_total": {"warning"},  # elevated retries
        "mintsaga_mints": {"critical"},  # retry limits exceeded
        "mintsaga_oldest_awaiting_operator_seconds": {"critical"},  # waiting > N minutes
        "mintsaga_system_wallet_lamports": {"warning", "critical"},
        "mintsaga_spend_breaker_refusals_total": {"critical"},  # the spend breaker (issue 14)
        "mintsaga_wallet_spend_window_lamports": {"warning"},
        "mintsaga_health_up": {"warning", "critical"},
        "mintsaga_rpc_slot_lag": {"warning", "critical"},
        "mintsaga_failovers_total": {"info"},
        "mintsaga_rpc_endpoint_unusable_total": {"warning"},  # cannot serve a call (issue 15)
        "mintsaga_solana_finalization_timeouts_total": {"warning"},  # SOLANA_COMMITMENT
        "mintsaga_rpc_panic_calls_total": {"warning"},  # panic routing (issue 15)
        "mintsaga_rpc_emergency_calls_total": {"critical"},  # the emergency tier (issue 15)
        "mintsaga_rpc_budget_waits_total": {"warning"},  # request budget (issue 15)
        "mintsaga_rpc_throttled_total": {"warning"},
    }
    for metric, severities in expected.items():
        assert severities <= by_metric.get(metric, set()), metric
    # The latency baseline is a day of recorded p95s.
    assert any("[1d]" in expr for expr in recorded.values())


def test_runbook_anchors_resolve_when_the_runbook_exists() -> None:
    if not RUNBOOK.exists():
        pytest.skip(f"{RUNBOOK.relative_to(ROOT)} is not written yet")
    text = RUNBOOK.read_text()
    anchors = set(re.findall(r'<a (?:id|name)="([^"]+)"', text))
    for heading in re.findall(r"^#+\s+(.+?)\s*$", text, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    used = {rule["annotations"]["runbook_url"].split("#", 1)[1] for rule in alerts()}
    assert used <= anchors, f"no such section in docs/runbook.md: {sorted(used - anchors)}"


# -- the dashboard ----------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels_by_row() -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] | None = None
    for panel in dashboard()["panels"]:
        if panel["type"] == "row":
            current = rows.setdefault(panel["title"], [])
        else:
            assert current is not None, f"panel {panel['title']!r} is above the first row"
            current.append(panel)
    return rows


def expressions(panels: list[dict[str, Any]]) -> list[str]:
    return [target["expr"] for panel in panels for target in panel["targets"]]


def test_the_dashboard_has_the_three_views_in_order() -> None:
    rows = panels_by_row()
    assert list(rows) == ROWS
    reads = {row: set().union(*map(metric_names, expressions(p))) for row, p in rows.items()}
    assert {
        "mintsaga_health_up",
        "mintsaga_breaker_state",
        "mintsaga_rpc_slot_lag",
        "mintsaga_system_wallet_lamports",
        "mintsaga_task_queue_backlog",
    } <= reads["Network health overview"]
    assert {
        "mintsaga_mints",
        "mintsaga_oldest_awaiting_operator_seconds",
        "mintsaga_activity_retries_total",
        "mintsaga_failovers_total",
    } <= reads["Operation tracking"]
    assert {
        "mintsaga_requests_total",
        "mintsaga_request_duration_seconds_bucket",
        "mintsaga_db_pool_connections",
        # The Solana pool's conditions (issue 15), by endpoint.
        "mintsaga_rpc_panic_calls_total",
        "mintsaga_rpc_emergency_calls_total",
        "mintsaga_rpc_endpoint_unusable_total",
        "mintsaga_rpc_budget_waits_total",
        "mintsaga_rpc_throttled_total",
        "mintsaga_solana_finalization_timeouts_total",
    } <= reads["Service performance"]


def test_every_dashboard_query_reads_exported_metrics() -> None:
    data = dashboard()
    panels = [panel for panel in data["panels"] if panel["type"] != "row"]
    ids = [panel["id"] for panel in data["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            unknown = {name for name in metric_names(target["expr"]) if not exported(name)}
            assert not unknown, f"{panel['title']}: {unknown}"
    for variable in data["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            found = re.fullmatch(r"label_values\((\w+), *\w+\)", query)
            assert found and exported(found.group(1)), query


def test_dashboard_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


# -- promtool, when installed -------------------------------------------------------------------


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_promtool_accepts_the_rules_and_the_config() -> None:
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    ran = promtool("test", "rules", "alerts.test.yml")
    assert ran.returncode == 0, ran.stdout + ran.stderr


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    panels = [panel for panel in dashboard()["panels"] if panel["type"] != "row"]
    queries = [
        expr.replace("$__rate_interval", "5m").replace("$service", ".*")
        for expr in expressions(panels)
    ]
    as_rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": q} for i, q in enumerate(queries)],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(as_rules))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
