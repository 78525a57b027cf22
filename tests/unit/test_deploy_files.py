"""The Prometheus alert rules and the Grafana dashboard in deploy/: valid, and using only metrics the services
expose (the table of docs/observability.md, which tests/services/test_metrics_table.py holds equal to the
services' /metrics)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.metrics_table import documented_metrics

ROOT = Path(__file__).parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "skuflow.json"
_METRIC = re.compile(r"\bskuflow_[a-z0-9_]+")


def used_in(expressions: list[str]) -> set[str]:
    return {name for expression in expressions for name in _METRIC.findall(expression)}


def rule_expressions() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    found = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            found.append(rule["expr"])
            found.extend(rule.get("annotations", {}).values())  # the queries in descriptions too
    return found


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    found += [str(variable.get("query", "")) for variable in dashboard["templating"]["list"]]
    return found


def exposed_series() -> set[str]:
    return {series for metric in documented_metrics().values() for series in metric.series_names()}


def test_the_alert_rules_cover_what_an_operator_must_hear_of_and_use_only_exposed_metrics():
    names = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}
    assert names == {"SkuflowOutboxLagging", "SkuflowDeadLettersGrowing", "SkuflowConsumerGone", "SkuflowEmailBacklog"}
    used = used_in(rule_expressions())
    assert used, "the rules use no skuflow metric"
    assert used <= exposed_series(), f"not exposed by any service: {sorted(used - exposed_series())}"


def test_the_dashboard_uses_only_exposed_metrics_and_shows_each_alerted_one():
    used = used_in(dashboard_expressions())
    assert used <= exposed_series(), f"not exposed by any service: {sorted(used - exposed_series())}"
    alerted = used_in([expression for expression in rule_expressions()])
    assert alerted <= used, f"alerted on, not on the dashboard: {sorted(alerted - used)}"


def test_promtool_accepts_the_rules():
    promtool = shutil.which("promtool")
    if promtool is None:
        reason = "promtool is missing: scripts/test.sh installs it (Debian's prometheus package)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI needs promtool: {reason}", pytrace=False)
        pytest.skip(reason)
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 4 rules found" in checked.stdout, checked.stdout
