"""What a person reads, from a local run and from a cluster's statuses alike: fold lines, stage
tables with baselines and gates, the plan table, the TrainingJob list and fold tables, ages and
durations."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from stagegate_core.formatting import parse_iso, percent
from stagegate_core.metricnames import BASELINES, METRICS, snake
from stagegate_core.statusmodel import FoldStatus, Period, StageStatus, Stat, SummaryLine

from .common import status_of

# rich is imported once something is drawn: `stagegate --help`, `crd` and `submit --dry-run`
# start fast and still work where it is absent (the operator image installs the same wheel).
if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

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
# The old system's fold line, in its order.
FOLD_METRICS = ("accuracy", "recall", "rocAuc", "f1", "hitRateTp1")


# ------------------------------------------------------------------------ consoles
def make_console(stderr: bool = False) -> Console:
    """A console that does not fold fold lines or URIs at 80 columns when piped to a file."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 140
    return Console(stderr=stderr, width=width, soft_wrap=True)


def plain_console() -> Console:
    from rich.console import Console

    # No syntax highlighting: numbers in fold lines stay plain text in pipes and terminals.
    return Console(highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------ numbers and times
def fmt(metric: str, value: float | None) -> str:
    if metric in _PERCENT:
        return percent(value)
    return "-" if value is None else f"{value:.3f}"


def _two(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def age(created: str | None, now: float | None = None) -> str:
    """kubectl's short age: 45s, 12m, 5h, 3d."""
    then = parse_iso(created)
    if then is None:
        return "-"
    seconds = max(0, int((time.time() if now is None else now) - then))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _period(span: Period) -> str:
    if not span.to_dict():
        return "-"
    return f"{(span.start or '')[:10]} → {(span.end or '')[:10]}"


# ------------------------------------------------------------------------ fold lines
def _fold_metrics(metrics: Mapping[str, Any], best_iteration: Any) -> str:
    # F1 with two decimals, the rates as percentages.
    parts = [
        f"{snake(m)}={_two(metrics.get(m)) if m == 'f1' else fmt(m, metrics.get(m))}"
        for m in FOLD_METRICS
    ]
    if best_iteration is not None:
        # The trees early stopping chose on the inner split: a handful means noise chose.
        parts.append(f"trees={best_iteration}")
    return " ".join(parts)


def fold_line(metrics: Mapping[str, Any]) -> str:
    """`Fold 1/5: accuracy=62.5% recall=45.0% roc_auc=65.2% f1=0.47 hit_rate_tp1=51.0% | …`"""
    base = metrics["baselines"]
    baseline = (
        f"baseline roc_auc={_two(base['volatilityTime']['rocAuc'])} "
        f"f1={_two(base['alwaysPositive']['f1'])}"
    )
    shown = _fold_metrics(metrics["model"], metrics.get("bestIteration"))
    return f"Fold {metrics['fold']}/{metrics['folds']}: {shown} | {baseline}"


def fold_status_line(stage: str, fold: FoldStatus, total: int) -> str:
    """fold_line from a TrainingJob's status, which keeps no per-fold baselines."""
    shown = _fold_metrics(fold.metrics or {}, fold.bestIteration)
    return f"Fold {fold.fold}/{total}: {shown}  [{stage}]"


# ------------------------------------------------------------------------ stage summaries
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
    from rich.table import Table

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
    from rich.table import Table

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


def stage_summary(stage: str, entry: StageStatus) -> dict[str, Any] | None:
    """A status's stage entry in the shape of the local summary.json that print_summary takes."""
    if entry.summary is None:
        return None
    return {
        "stage": stage,
        "folds": entry.plan.foldCount,
        "model": _stats(entry.summary),
        "baselines": {b: _stats(block) for b, block in (entry.baselines or {}).items()},
        "gates": entry.gates or [],
        "passed": entry.passed,
    }


def _stats(block: Mapping[str, Stat]) -> dict[str, dict[str, Any]]:
    return {metric: stat.to_dict() for metric, stat in block.items()}


# ------------------------------------------------------------------------ plans and folds
def plan_table(plan: Mapping[str, Any]) -> Table:
    from rich.table import Table

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


def fold_table(stage: str, entry: StageStatus) -> Table:
    """A status's folds of one stage: where each stands, its periods and its metrics."""
    from rich.table import Table

    table = Table(title=f"{stage} stage folds ({entry.plan.trainWindow or '?'} window)")
    for column in ("fold", "state", "train", "test", "test rows", "trees"):
        right = column in ("fold", "test rows", "trees")
        table.add_column(column, justify="right" if right else "left")
    for metric in FOLD_METRICS:
        table.add_column(snake(metric), justify="right")
    for fold in entry.folds:
        train, test = fold.train or Period(), fold.test or Period()
        metrics = fold.metrics or {}
        state: str = fold.state
        if fold.error:
            state += f" ({fold.error[:40]})"
        table.add_row(
            str(fold.fold),
            state,
            _period(train),
            _period(test),
            f"{test.rows:,}" if test.rows is not None else "-",
            # chosen by early stopping on the inner split
            str(fold.bestIteration) if fold.bestIteration is not None else "-",
            *[fmt(m, metrics.get(m)) for m in FOLD_METRICS],
        )
    return table


# ------------------------------------------------------------------------ TrainingJob list
def _columns(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def list_table(items: Iterable[Mapping[str, Any]], namespaces: bool = False) -> str:
    """The `stagegate status` listing, in kubectl's plain columns."""
    head = ["NAME", "SYMBOL", "TIMEFRAME", "MODE", "PHASE", "PROGRESS", "ACCURACY", "RECALL"]
    head += ["AUC", "EXP R", "AGE"]
    rows = [(["NAMESPACE"] if namespaces else []) + head]
    for tj in items:
        meta, spec = tj["metadata"], tj.get("spec") or {}
        status = status_of(tj)
        summary = status.summary or SummaryLine()
        row = [meta["namespace"]] if namespaces else []
        row += [
            meta["name"],
            str(spec.get("symbol", "")),
            str(spec.get("timeframe", "M15")),
            str(spec.get("mode", "sequential")),
            status.shown_phase,
            status.progress or "-",
            summary.accuracy or "-",
            summary.recall or "-",
            summary.rocAuc or "-",
            summary.expectedR or "-",
            age(meta.get("creationTimestamp")),
        ]
        rows.append(row)
    return _columns(rows)
