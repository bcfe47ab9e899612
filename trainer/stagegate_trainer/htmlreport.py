"""A stage's report.html: one self-contained page (SVG pictures embedded) a person decides from.

It shows the decision numbers first (net expected R with its confidence bound, trades, each
gate's verdict), then the pictures (equity in R, ROC, calibration, feature importance,
predicted probabilities), then the per-fold table. The SVGs are also returned on their own so
they can be stored beside the page. Drawing them all takes milliseconds (charts.py, svgplot.py),
so whichever process summarises a stage draws its report itself.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from stagegate_core import layout
from stagegate_core.metricnames import TOP_PERCENTS

from . import charts
from .gatestats import METHOD, NO_EVIDENCE

if TYPE_CHECKING:
    from .steps import Run

REPORT = "report.html"
# The report's pictures (file name: alt text), in the order the page shows them.
PICTURES: dict[str, str] = {
    "equity_stitched.svg": "stitched out-of-sample equity",
    "equity_folds.svg": "equity per fold",
    "roc.svg": "ROC",
    "calibration.svg": "calibration",
    "probabilities.svg": "probabilities",
    "importance.svg": "feature importance",
}
_MARK = {"pass": "✓", "fail": "✗", NO_EVIDENCE: "?"}


@dataclass(frozen=True)
class StageData:
    """Everything the report reads, already loaded (so rendering needs no store)."""

    title: str
    stage: str
    summary: Mapping[str, Any]
    folds: Sequence[Mapping[str, Any]]  # metrics.json of each fold, in fold order
    predictions: Sequence[tuple[int, pd.DataFrame]]  # (fold, predictions.parquet)
    feature_names: Sequence[str]
    gain: np.ndarray  # mean gain per feature over the fold models
    spec: Mapping[str, Any]


def _gains(run: Run, stage: str, fold: int) -> dict[str, float]:
    key = layout.fold_importance(stage, fold)
    if run.store.exists(key):
        return {str(k): float(v) for k, v in run.store.read_json(key).items()}
    import lightgbm as lgb  # a fold trained before importance.json was written

    booster = lgb.Booster(model_str=run.store.read_bytes(layout.fold_model(stage, fold)).decode())
    values = booster.feature_importance(importance_type="gain")
    return dict(zip(booster.feature_name(), map(float, values), strict=True))


def load(run: Run, stage: str, summary: Mapping[str, Any]) -> StageData:
    from .dataset import from_parquet_bytes
    from .steps import finished_folds

    folds = [m for _, m in sorted(finished_folds(run, stage).items())]
    predictions = []
    gains: dict[str, list[float]] = {}
    for metrics in folds:
        number = int(metrics["fold"])
        frame = from_parquet_bytes(run.store.read_bytes(layout.fold_predictions(stage, number)))
        predictions.append((number, frame))
        for name, value in _gains(run, stage, number).items():
            gains.setdefault(name, []).append(value)
    names = list(gains)
    return StageData(
        title=f"{run.manifest.metadata.namespace}/{run.name} · {run.spec.symbol} "
        f"{run.spec.canonical_timeframe}",
        stage=stage,
        summary=summary,
        folds=folds,
        predictions=predictions,
        feature_names=names,
        gain=np.array([np.mean(gains[n]) for n in names], dtype=np.float64),
        spec=run.spec.model_dump(mode="json", by_alias=True),
    )


def draw(data: StageData) -> dict[str, bytes]:
    """SVG bytes of every picture, in PICTURES' order."""
    stitched = _stitched(data)
    summary = data.summary
    drawn = {
        "equity_folds.svg": charts.equity_per_fold(data.predictions),
        "equity_stitched.svg": charts.equity_stitched(stitched),
        "roc.svg": charts.roc(
            stitched,
            summary["model"]["rocAuc"]["mean"],
            summary["baselines"]["volatilityTime"]["rocAuc"]["mean"],
        ),
        "calibration.svg": charts.calibration(stitched),
        "importance.svg": charts.importance(list(data.feature_names), data.gain),
        "probabilities.svg": charts.probabilities(
            stitched, [float(f["threshold"]) for f in data.folds]
        ),
    }
    return {name: drawn[name] for name in PICTURES}


def render_stage_report(run: Run, stage: str, summary: Mapping[str, Any]) -> dict[str, bytes]:
    return render(load(run, stage, summary))


def render(data: StageData) -> dict[str, bytes]:
    """{file name: bytes}: report.html and the SVGs it embeds."""
    pictures = draw(data)
    return {REPORT: _page(data, pictures).encode("utf-8"), **pictures}


def _stitched(data: StageData) -> pd.DataFrame:
    if data.predictions:
        return pd.concat([f for _, f in data.predictions], ignore_index=True)
    return pd.DataFrame(
        columns=["timestamp", "label", "proba", "signal", "baselineProba", "baselineSignal",
                 "netR", "tradable"]
    )  # fmt: skip


def _num(value: Any, digits: int = 3, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}{suffix}"


def _pct(value: Any) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _img(name: str, pictures: Mapping[str, bytes]) -> str:
    # An <img> of a data: URI, not inline <svg>: each picture stays a document of its own (no
    # shared ids or styles with the page or the others), keeps its alt text, fetches nothing.
    data = base64.b64encode(pictures[name]).decode()
    alt = html.escape(PICTURES[name])
    return f'<figure><img alt="{alt}" src="data:image/svg+xml;base64,{data}"></figure>'


def _decision(data: StageData) -> str:
    d = data.summary.get("decision") or {}
    costs = data.spec.get("costs", {})
    passed = data.summary.get("passed")
    verdict = "all gates pass" if passed else "gates do not pass"
    return (
        f'<div class="decision {"ok" if passed else "bad"}"><h2>Decision: {verdict}</h2>'
        f"<p>Expected return per trade, net of costs: <b>{_num(d.get('expectedR'), 3, ' R')}</b>"
        f" (one-sided {round(d.get('confidence', 0) * 100)}% lower bound "
        f"<b>{_num(d.get('expectedRLowerBound'), 3, ' R')}</b>, upper "
        f"{_num(d.get('expectedRUpperBound'), 3, ' R')}; "
        f"{d.get('foldsWithTrades', 0)} folds with trades) · trades: "
        f"<b>{_num(d.get('trades'))}</b> · costs: {costs.get('feeBps')} bps fee + "
        f"{costs.get('slippageBps')} bps slippage per side</p></div>"
    )


def _gates(data: StageData) -> str:
    rows = []
    for g in data.summary["gates"]:
        verdict = g.get("verdict", "pass" if g["passed"] else "fail")
        op = ">" if g["gate"].startswith("beats") else "≥"
        bound = g.get("bound")
        bound_text = "–" if bound is None else f"{bound:+.4f}"
        rows.append(
            f'<tr class="{verdict.replace(" ", "-")}"><td>{g["gate"]}</td><td>{g["metric"]}</td>'
            f"<td>{_num(g['value'], 4)}</td><td>{op} {_num(g['threshold'], 4)}</td>"
            f"<td>{bound_text}</td><td>{g.get('folds', '–')}</td>"
            f"<td>{_MARK.get(verdict, '')} {verdict}</td></tr>"
        )
    return (
        "<table><tr><th>gate</th><th>metric</th><th>model</th><th>threshold / baseline</th>"
        "<th>lower bound</th><th>folds</th><th>verdict</th></tr>" + "".join(rows) + "</table>"
        f"<p class=note>Bounds: {METHOD}. For a baseline gate the bound is of the per-fold "
        "difference model − baseline and must be above 0; for minExpectedReturn it is of the "
        "per-fold expected R and must reach the threshold. “?” = not enough evidence: the "
        "interval still contains the threshold, so the gate does not pass.</p>"
    )


def _better(model: Any, base: Any) -> str:
    if model is None or base is None:
        return ""
    return "win" if model > base else "loss"


def _fold_table(data: StageData) -> str:
    head = (
        "<tr><th>fold</th><th>test period</th><th>AUC</th><th>AUC vol/time</th><th>accuracy</th>"
        "<th>majority acc.</th><th>trades</th><th>signal rate</th><th>precision</th>"
        "<th>exp. R</th><th>exp. R always+</th><th>exp. R vol/time</th><th>exp. %</th>"
        "<th>profit factor</th><th>max DD (R)</th><th>threshold</th></tr>"
    )
    rows = []
    for f in data.folds:
        t = f.get("trading") or {}
        m, b = t.get("model", {}), t.get("baselines", {})
        ap = b.get("alwaysPositive", {}).get("expectedR")
        vt_block = b.get("volatilityTime", {})
        vt = 0.0 if vt_block.get("trades") == 0 else vt_block.get("expectedR")
        auc, auc_b = f["model"]["rocAuc"], f["baselines"]["volatilityTime"]["rocAuc"]
        acc, acc_b = f["model"]["accuracy"], f["baselines"]["majority"]["accuracy"]
        r = m.get("expectedR")
        rows.append(
            f"<tr><td>{f['fold']}</td><td>{f['test']['start'][:10]} → {f['test']['end'][:10]}</td>"
            f'<td class="{_better(auc, auc_b)}">{_pct(auc)}</td><td>{_pct(auc_b)}</td>'
            f'<td class="{_better(acc, acc_b)}">{_pct(acc)}</td><td>{_pct(acc_b)}</td>'
            f"<td>{_num(m.get('trades'))}</td><td>{_pct(m.get('signalRate'))}</td>"
            f"<td>{_pct(m.get('precision'))}</td>"
            f'<td class="{_better(r, max(v for v in (ap, vt, -1e9) if v is not None))}">'
            f"{_num(r)}</td><td>{_num(ap)}</td><td>{_num(vt)}</td>"
            f"<td>{_num(m.get('expectedReturnPct'), 3, '%')}</td>"
            f"<td>{_num(m.get('profitFactor'), 2)}</td><td>{_num(m.get('maxDrawdownR'), 1)}</td>"
            f"<td>{_num(f.get('threshold'), 4)}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _top_table(data: StageData) -> str:
    trading = data.summary.get("trading") or {}
    model = trading.get("model", {})
    base = (trading.get("baselines") or {}).get("volatilityTime", {})
    rows = []

    def mean(block: Mapping[str, Any], name: str, p: int) -> Any:
        return (block.get(f"{name}Top{p}") or {}).get("mean")

    for p in TOP_PERCENTS:
        rows.append(
            f"<tr><td>top {p}%</td><td>{_num(mean(model, 'trades', p), 0)}</td>"
            f"<td>{_pct(mean(model, 'precision', p))}</td>"
            f"<td>{_num(mean(model, 'expectedR', p))}</td>"
            f"<td>{_pct(mean(base, 'precision', p))}</td>"
            f"<td>{_num(mean(base, 'expectedR', p))}</td></tr>"
        )
    return (
        "<table><tr><th>most confident bars</th><th>trades / fold</th><th>precision</th>"
        "<th>exp. R</th><th>vol/time precision</th><th>vol/time exp. R</th></tr>"
        + "".join(rows)
        + "</table>"
    )


_STYLE = """
body{font-family:DejaVu Sans,Arial,sans-serif;margin:24px;color:#222;max-width:1150px}
h1{font-size:22px}h2{font-size:17px;margin-top:26px}table{border-collapse:collapse;
font-size:12px;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f0f0f0}td:first-child{text-align:left}.decision{padding:6px 14px;
border-radius:6px}.decision.ok{background:#e6f4ea}.decision.bad{background:#fdecea}
tr.pass td:last-child{color:#1e7e34}tr.fail td:last-child{color:#c0392b}
tr.not-enough-evidence td:last-child{color:#b9770e}td.win{background:#e6f4ea}
td.loss{background:#fdecea}figure{margin:8px 0}img{max-width:100%;border:1px solid #eee}
.note{font-size:12px;color:#555}.pair{display:flex;gap:10px}
"""


def _page(data: StageData, pictures: Mapping[str, bytes]) -> str:
    s = data.summary
    label = data.spec.get("label", {})
    threshold = data.spec.get("model", {}).get("threshold", {})
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(data.title)} · {data.stage} stage</title><style>{_STYLE}</style></head>
<body>
<h1>{html.escape(data.title)} · {data.stage} stage · {s["folds"]} folds, out of sample</h1>
{_decision(data)}
<h2>Gates</h2>{_gates(data)}
<h2>Equity in R</h2>
{_img("equity_stitched.svg", pictures)}
{_img("equity_folds.svg", pictures)}
<h2>Per fold</h2>{_fold_table(data)}
<p class=note>Green: the model beat that fold's baseline (majority accuracy; vol/time AUC;
the better of the always-positive and vol/time expected R).</p>
<h2>Most confident bars</h2>{_top_table(data)}
<h2>ROC and calibration</h2>
<div class="pair">{_img("roc.svg", pictures)}{_img("calibration.svg", pictures)}</div>
<h2>Predicted probabilities</h2>{_img("probabilities.svg", pictures)}
<h2>Feature importance</h2>{_img("importance.svg", pictures)}
<h2>How these numbers are made</h2>
<ul class=note>
<li>Each signalled test bar is a long trade at the next bar's open with the label's barriers
({label.get("barriers")}: take-profit {label.get("takeProfit")}, stop-loss
{label.get("stopLoss")}, horizon {label.get("horizonBars")} bars). Outcome: +TP/SL R, −1 R
(worse when a bar opens through the stop), or the mark-to-market at the horizon. 1 R is the
entry-to-stop distance.</li>
<li>Costs: fee and slippage on each side, charged on the entry notional, subtracted from every
trade.</li>
<li>Overlapping trades all count: every signal is its own 1 R trade even while earlier ones
are open; expected R is the mean per trade and the equity curve adds trades at entry.</li>
<li>Only test bars whose whole horizon ends inside the test period are traded, so no outcome
needs bars after it.</li>
<li>Threshold objective {threshold.get("objective")}, chosen on the purged inner validation rows
of each training window; the test rows choose nothing.</li>
</ul>
</body></html>
"""
