"""What a person reads: fold lines, stage tables with baselines and gates, the plan table."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table
from stagegate_core.metricnames import BASELINES, METRICS, snake

_BASELINE_TITLES = {
    "majority": "majority",
    "alwaysPositive": "always +",
    "volatilityTime": "vol/time",
}
# Metrics shown as percentages; the others are plain numbers.
_PERCENT = {
    "accuracy",
    "precision",
    "recall",
    "rocAuc",
    "hitRateTp1",
    "positiveRate",
    "predictedPositiveRate",
}


def make_console(stderr: bool = False) -> Console:
    """A console that does not fold fold lines or URIs at 80 columns when piped to a file."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 140
    return Console(stderr=stderr, width=width, soft_wrap=True)


def fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.1f}%" if metric in _PERCENT else f"{value:.3f}"


def fold_line(metrics: Mapping[str, Any]) -> str:
    """`Fold 1/5: accuracy=62.5% recall=45.0% roc_auc=65.2% f1=0.47 hit_rate_tp1=51.0% | …`"""
    m = metrics["model"]
    base = metrics["baselines"]
    parts = [
        f"accuracy={fmt('accuracy', m['accuracy'])}",
        f"recall={fmt('recall', m['recall'])}",
        f"roc_auc={fmt('rocAuc', m['rocAuc'])}",
        f"f1={_two(m['f1'])}",
        f"hit_rate_tp1={fmt('hitRateTp1', m['hitRateTp1'])}",
    ]
    if metrics.get("bestIteration") is not None:
        # The trees early stopping chose on the inner split: a handful means noise chose.
        parts.append(f"trees={metrics['bestIteration']}")
    baseline = (
        f"baseline roc_auc={_two(base['volatilityTime']['rocAuc'])} "
        f"f1={_two(base['alwaysPositive']['f1'])}"
    )
    return f"Fold {metrics['fold']}/{metrics['folds']}: {' '.join(parts)} | {baseline}"


def _two(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def average_line(summary: Mapping[str, Any]) -> str:
    """The old system's `Average:` line, over the stage's folds."""
    model = summary["model"]
    return (
        f"Average: accuracy={fmt('accuracy', model['accuracy']['mean'])} "
        f"recall={fmt('recall', model['recall']['mean'])} "
        f"roc_auc={fmt('rocAuc', model['rocAuc']['mean'])} f1={_two(model['f1']['mean'])} "
        f"hit_rate_tp1={fmt('hitRateTp1', model['hitRateTp1']['mean'])}"
    )


def summary_table(summary: Mapping[str, Any]) -> Table:
    table = Table(title=f"{summary['stage']} stage: {summary['folds']} folds, out of sample")
    table.add_column("metric")
    table.add_column("model (mean ± std)", justify="right")
    for b in BASELINES:
        table.add_column(_BASELINE_TITLES[b], justify="right")
    for metric in METRICS:
        cell = summary["model"][metric]
        spread = "" if cell["std"] is None else f" ± {fmt(metric, cell['std'])}"
        row = [snake(metric), fmt(metric, cell["mean"]) + spread]
        row += [fmt(metric, summary["baselines"][b][metric]["mean"]) for b in BASELINES]
        table.add_row(*row)
    return table


def gates_table(summary: Mapping[str, Any]) -> Table:
    table = Table(title=f"{summary['stage']} stage gates")
    table.add_column("gate")
    table.add_column("value", justify="right")
    table.add_column("threshold", justify="right")
    table.add_column("lower bound", justify="right")
    table.add_column("", justify="left")
    for gate in summary["gates"]:
        metric = gate["metric"]
        op = ">" if gate["gate"].startswith("beats") else "≥"
        verdict = gate.get("verdict", "pass" if gate["passed"] else "fail")
        mark = {"pass": "[green]✓[/green]", "fail": "[red]✗[/red]"}.get(
            verdict, "[yellow]? not enough evidence[/yellow]"
        )
        # A baseline gate's bound is of the per-fold difference model - baseline.
        bound = gate.get("bound")
        table.add_row(
            gate["gate"],
            _gate_value(metric, gate["value"]),
            f"{op} {_gate_value(metric, gate['threshold'])}",
            "-" if bound is None else f"{bound:+.4f}",
            mark,
        )
    return table


def _gate_value(metric: str, value: float | None) -> str:
    if metric == "trades":
        return "-" if value is None else f"{int(value):,}"
    if metric == "expectedR":
        return "-" if value is None else f"{value:+.3f}R"
    return fmt(metric, value)


def decision_line(summary: Mapping[str, Any]) -> str:
    """`expected R net of costs -0.12R (90% lower bound -0.30R), 1,355 trades`."""
    d = summary.get("decision") or {}
    if d.get("expectedR") is None:
        return f"trades: {d.get('trades') or 0} (no expected R: no trades)"
    lower = d.get("expectedRLowerBound")
    bound = "no bound: fewer than 2 folds" if lower is None else f"lower bound {lower:+.3f}R"
    return (
        f"expected R per trade net of costs {d['expectedR']:+.3f}R "
        f"({round(d['confidence'] * 100)}% one-sided {bound}), {d.get('trades') or 0:,} trades"
    )


def print_summary(console: Console, summary: Mapping[str, Any]) -> None:
    console.print(average_line(summary))
    console.print(summary_table(summary))
    console.print(gates_table(summary))
    if summary.get("decision"):
        console.print(decision_line(summary))
    verdict = "[green]all gates pass[/green]" if summary["passed"] else "[red]gates failed[/red]"
    console.print(f"{summary['stage']} stage: {verdict}")


def plan_table(plan: Mapping[str, Any]) -> Table:
    table = Table(
        title=(
            f"{plan['stage']} stage: {plan['foldCount']} folds, {plan['trainWindow']} window, "
            f"purge {plan['purgeBars']} bars"
        ),
        caption="starts are the first bar included; ends (excl.) the first bar not included",
    )
    # Ends are exclusive (training ends purgeBars before its test starts), and say so.
    for column in ("fold", "train start", "train end (excl.)", "test start", "test end (excl.)"):
        table.add_column(column)
    table.add_column("train rows", justify="right")
    table.add_column("test rows", justify="right")
    for fold in plan["folds"]:
        table.add_row(
            str(fold["fold"]),
            fold["trainStart"],
            fold["trainEnd"],
            fold["testStart"],
            fold["testEnd"],
            f"{fold['trainRows']:,}",
            f"{fold['testRows']:,}",
        )
    return table
