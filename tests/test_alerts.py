"""The alert rules: promtool checks them and runs their unit tests, and the chart's
PrometheusRule carries exactly the same rules."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.kube import KubeBinaries
from tests.support.prometheus import promtool_binary

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "stagegate"
RULES = CHART / "files" / "stagegate-alerts.rules.yml"
UNIT_TESTS = REPO / "tests" / "prometheus" / "stagegate-alerts.test.yml"
ALERTS = {
    "StagegateFoldFailed",
    "StagegateTrainingJobStuck",
    "StagegateAwaitingApprovalTooLong",
    "StagegateReconcileErrors",
    "StagegateOperatorDown",
    "StagegateOperatorNoLeader",
}
# "<signal> <comparison> <threshold>": the monitoring test evaluates the signal alone.
THRESHOLD = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*[0-9.e+]+\s*$")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = promtool_binary()
    if binary is None:
        pytest.fail("no promtool: apt-get install -y --no-install-recommends prometheus")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, cwd=REPO)


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_promtool_checks_the_rules() -> None:
    out = promtool("check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in out.stdout


def test_promtool_unit_tests_pass_and_cover_every_alert() -> None:
    out = promtool("test", "rules", str(UNIT_TESTS))
    assert out.returncode == 0, out.stdout + out.stderr
    tested = {
        case["alertname"]
        for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert tested == {r["alert"] for r in rules()} == ALERTS


def test_every_alert_is_signal_comparison_threshold_with_severity_and_summary() -> None:
    for rule in rules():
        expr = " ".join(rule["expr"].split())
        assert THRESHOLD.search(expr), expr
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_prometheus_rule_embeds_the_same_rules(kube_binaries: KubeBinaries) -> None:
    def render(*sets: str) -> dict:
        out = subprocess.run(
            [str(kube_binaries.helm), "template", "sg", str(CHART), "-n", "monitoring",
             "--set", "alerts.prometheusRule.enabled=true", *sets],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        docs = [d for d in yaml.safe_load_all(out.stdout) if d]
        (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
        return rule

    source = yaml.safe_load(RULES.read_text())
    assert render()["spec"]["groups"] == source["groups"]
    renamed = render("--set", "metrics.job=ops-stagegate")["spec"]["groups"]
    text = yaml.safe_dump(renamed)
    assert 'job="ops-stagegate"' in text and "stagegate-operator" not in text
    assert (
        renamed
        == yaml.safe_load(
            RULES.read_text().replace('job="stagegate-operator"', 'job="ops-stagegate"')
        )["groups"]
    )
