"""Every Grafana dashboard query and every alert expression, against a real Prometheus
(the Debian binary) scraping a real operator that runs real TrainingJobs on the real control
plane (tests/cluster), in a namespace of the test's own.

The scenario makes every series exist:
- "btc" and "eth" (manual approval, open gates) run their quick stage; one of their fold pods
  is killed once (stagegate_folds_total{result="failed"}); both reach AwaitingApproval (stage,
  fold, gate and baseline series); "btc" is then rejected (stagegate_approval_wait_seconds)
  while "eth" keeps waiting (the awaiting-approval signal).
- "parked" has a Kueue queue and no Kueue admits its suspended Jobs: it stays in Quick (the
  stuck signal). Its spec ConfigMap is then deleted and its spec changed, so every reconcile of
  it fails (stagegate_reconcile_errors_total).
Dashboard variables are resolved as Grafana does (label_values queries; "All" = the regex of
every real value). An alert expression is "<signal> <comparison> <threshold>": the whole
expression must evaluate without error (and Prometheus itself evaluates the rules file: every
rule's health must be "ok"), and the signal alone must return data.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.support.operator import Cluster, kill_training_fold, poll
from tests.support.prometheus import Prometheus
from tests.support.runs import OPEN_GATES

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "helm" / "stagegate" / "dashboards" / "stagegate.json"
RULES = REPO / "helm" / "stagegate" / "files" / "stagegate-alerts.rules.yml"
JOB = "stagegate-operator"
THRESHOLD = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*[0-9.e+]+\s*$")
# Queries that legitimately return nothing today, each with the reason. The test fails when one
# starts returning data, so that the entry is removed.
KNOWN_EMPTY: dict[str, str] = {}


def dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((f"{panel['title']} [{target['refId']}]", target["expr"]))
    return out


def resolve_variables(prom: Prometheus) -> dict[str, str]:
    """The dashboard's variables, resolved against Prometheus the way Grafana does."""
    dash = json.loads(DASHBOARD.read_text())
    values: dict[str, str] = {"__rate_interval": "30s", "__interval": "5s", "__range": "5m"}
    for var in dash["templating"]["list"]:
        if var["type"] == "custom":
            values[var["name"]] = var["current"]["value"]
        elif var["type"] == "query":
            m = re.fullmatch(r"label_values\((.+), *(\w+)\)", var["query"]["query"])
            assert m, var["query"]
            found = prom.label_values(m.group(2), substitute(m.group(1), values))
            assert found, f"variable ${var['name']} has no values"
            if var.get("includeAll"):
                # Grafana's regex format (prometheusSpecialRegexEscape): only regex
                # metacharacters are escaped, with the backslash doubled for the PromQL string
                # (which rejects an escaped `-`, and namespaces contain one).
                values[var["name"]] = "(" + "|".join(grafana_regex_escape(v) for v in found) + ")"
            else:
                current = var["current"]["value"]
                assert current in found, (var["name"], current, found)
                values[var["name"]] = current
    return values


def grafana_regex_escape(value: str) -> str:
    r"""Grafana's prometheusSpecialRegexEscape: `a.b` -> `a\\.b` (the PromQL string `a\.b`)."""
    value = value.replace("\\", "\\\\\\\\")
    return re.sub(r"([$^*{}\[\]'+?.()|])", r"\\\\\1", value)


def substitute(expr: str, values: dict[str, str]) -> str:
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    assert "$" not in expr, expr
    return expr


def signal(expr: str) -> str:
    one_line = " ".join(expr.split())
    assert THRESHOLD.search(one_line), one_line
    return THRESHOLD.sub("", one_line)


def kill_one_fold() -> None:
    """Kill one fold's trainer process while it trains (as test_operator_e2e does)."""
    kill_training_fold("btc-quick-fold-")


def test_every_dashboard_query_and_alert_returns_data(
    cluster: Cluster, prometheus: Callable[..., Prometheus]
) -> None:
    started = time.monotonic()
    prom = prometheus({JOB: f"127.0.0.1:{cluster.metrics_port}"}, rule_files=[RULES])
    manual = {"approval": {"policy": "manual"}, "gates": OPEN_GATES}
    cluster.apply(cluster.manifest("btc", **manual))
    cluster.apply(cluster.manifest("eth", **manual))
    cluster.apply(cluster.manifest("parked", mode="quick", queueName="parked"))
    kill_one_fold()
    prom.wait_for_targets()

    # "parked": in Quick with its Jobs suspended; then make every reconcile of it fail.
    parked = cluster.wait_phase("parked", "Quick", timeout=60)
    poll(lambda: cluster.tj("parked")["status"].get("specFingerprint"), timeout=30)
    cluster.kube.kubectl("delete", "configmap", "parked-spec")
    cluster.kube.patch(f"{cluster.tj_path}/parked", {"spec": {"model": {"seed": 7}}})
    assert parked["status"]["phase"] == "Quick"

    for name in ("btc", "eth"):
        cluster.wait_phase(name, "AwaitingApproval", timeout=180)
    cluster.kube.kubectl("annotate", "tj", "btc", "stagegate.io/approval=rejected")
    cluster.wait_phase("btc", "Rejected", timeout=60)
    poll(lambda: "stagegate_reconcile_errors_total{" in cluster.metrics(), timeout=30)
    text = cluster.metrics()
    assert 'stagegate_folds_total{result="failed",stage="quick"}' in text, text
    assert "stagegate_approval_wait_seconds_count 1.0" in text

    # Prometheus saw it all: wait for a few scrapes after the last change.
    waited = f'stagegate_approval_wait_seconds_count{{job="{JOB}"}} == 1'
    poll(lambda: prom.query(waited), timeout=20)
    time.sleep(3)
    scenario_seconds = time.monotonic() - started

    values = resolve_variables(prom)
    assert "btc" in values["trainingjob"] and "eth" in values["trainingjob"]
    assert values["namespace"] == f"({cluster.ns})"

    def check(label: str, expr: str) -> str | None:
        known = [k for k in KNOWN_EMPTY if k in expr]
        result = prom.query(expr)  # raises on a parse or evaluation error
        if known and result:
            return f"{label}: returns data now; remove {known} from KNOWN_EMPTY"
        if not known and not result:
            return f"{label}: no data for {expr}"
        return None

    problems = []
    queries = dashboard_queries()
    assert len(queries) >= 30
    for label, expr in queries:
        problems.append(check(label, substitute(expr, values)))
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    for rule in rules:
        prom.query(rule["expr"])  # the full expression evaluates (firing or not)
        problems.append(check(f"alert {rule['alert']} signal", signal(rule["expr"])))
    assert not [p for p in problems if p], "\n".join(p for p in problems if p)

    # Prometheus evaluates the rules file itself without errors.
    poll(lambda: len(prom.rules()) == len(rules) and all(r.get("lastEvaluation", "").startswith("2")
         for r in prom.rules()), timeout=10)  # fmt: skip
    for rule in prom.rules():
        assert rule["health"] == "ok", rule
    # The operator is up, so the operator-down alert is not; the fold failure fired.
    states = {r["name"]: r["state"] for r in prom.rules()}
    assert states["StagegateOperatorDown"] == "inactive"
    assert states["StagegateFoldFailed"] == "firing"
    print(f"scenario took {scenario_seconds:.1f}s")
