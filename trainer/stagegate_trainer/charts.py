"""The report's pictures, drawn with svgplot into SVG bytes (milliseconds each, no matplotlib).

Every function takes plain arrays or frames and returns one SVG; htmlreport.py decides what
goes in. Out-of-sample only: the frames are the folds' predictions.parquet rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .svgplot import Figure

MODEL_COLOUR = "#1f5fa8"
BASELINE_COLOURS = {"volatilityTime": "#d9822b", "alwaysPositive": "#7f7f7f"}
BASELINE_TITLES = {"volatilityTime": "vol/time baseline", "alwaysPositive": "always positive"}
# matplotlib's viridis at 0, ¼, ½, ¾ and 1: one colour per fold, dark (first) to light (last)
_VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]])


def _viridis(t: float) -> str:
    r, g, b = (np.interp(t, np.linspace(0, 1, len(_VIRIDIS)), _VIRIDIS[:, c]) for c in range(3))
    return f"#{round(r):02x}{round(g):02x}{round(b):02x}"


def _equity(frame: pd.DataFrame, signal: str) -> tuple[np.ndarray, np.ndarray]:
    """(entry times, cumulative net R) of the tradable rows a signal column marks."""
    trades = frame[(frame["tradable"] == 1) & (frame[signal] == 1)]
    return trades["timestamp"].to_numpy(), np.cumsum(trades["netR"].to_numpy(dtype=np.float64))


def _in_seconds(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with its timestamps as seconds since 1970 (UTC, NaN for none): a date axis
    takes these, and floats leave a frame 10x faster than tz-aware Timestamp objects."""
    since = pd.to_datetime(frame["timestamp"], utc=True) - pd.Timestamp(0, tz="UTC")
    return frame.assign(timestamp=since / pd.Timedelta(seconds=1))


def equity_per_fold(folds: Sequence[tuple[int, pd.DataFrame]]) -> bytes:
    """Each fold's model equity in R against days since its test period began."""
    fig = Figure(1000, 450)
    ax = fig.axes[0]
    ax.title = "Out-of-sample equity per fold (model trades, net of costs)"
    ax.xlabel, ax.ylabel = "days since the fold's test period began", "cumulative net R"
    ax.note = "no trades"
    for i, (number, frame) in enumerate(folds):
        times, equity = _equity(frame, "signal")
        start = frame["timestamp"].iloc[0] if len(frame) else None
        if start is None or equity.size == 0:
            continue
        days = np.asarray((pd.to_datetime(times) - start) / pd.Timedelta(days=1), np.float64)
        label = f"fold {number}" if len(folds) <= 12 else None
        colour = _viridis(i / max(len(folds) - 1, 1))
        ax.line(days, equity, colour, step=True, width=1.2, label=label)
    ax.hline(0, "black", width=0.6)
    return fig.svg()


def equity_stitched(frame: pd.DataFrame) -> bytes:
    """All folds' test periods in time order: the model beside the baselines' trades."""
    fig = Figure(1000, 650, panels=2, sharex=True)
    top, bottom = fig.axes
    top.title = "Out-of-sample equity, folds stitched in time order"
    for ax in fig.axes:
        ax.ylabel, ax.xdate, ax.note = "cumulative net R", True, "no trades"
    frame = _in_seconds(frame)
    times, equity = _equity(frame, "signal")
    top.line(times, equity, MODEL_COLOUR, step=True, width=1.5, label="model")
    times, equity = _equity(frame, "baselineSignal")
    vol = BASELINE_COLOURS["volatilityTime"]
    label = BASELINE_TITLES["volatilityTime"]
    top.line(times, equity, vol, step=True, width=1.2, dash="--", label=label)
    top.hline(0, "black", width=0.6)
    # Trading every bar makes thousands of trades: its own panel keeps the model readable.
    times, equity = _equity(frame.assign(everyBar=1), "everyBar")
    every = BASELINE_COLOURS["alwaysPositive"]
    label = "always positive (every bar a trade)"
    bottom.line(times, equity, every, step=True, width=1.2, label=label)
    bottom.hline(0, "black", width=0.6)
    return fig.svg()


def roc_points(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct cut, from (0,0) to (1,1)."""
    y = np.asarray(y, dtype=bool)
    order = np.argsort(-np.asarray(score, np.float64), kind="mergesort")
    s = np.asarray(score, np.float64)[order]
    last = np.append(np.diff(s) != 0, True)
    tp = np.cumsum(y[order])[last]
    fp = np.cumsum(~y[order])[last]
    tpr = np.concatenate(([0.0], tp / max(int(y.sum()), 1)))
    fpr = np.concatenate(([0.0], fp / max(int((~y).sum()), 1)))
    return fpr, tpr


def roc(frame: pd.DataFrame, auc_model: float | None, auc_baseline: float | None) -> bytes:
    fig = Figure(550, 550)
    ax = fig.axes[0]
    ax.title, ax.legend = "ROC, all test rows pooled", "lower right"
    ax.xlabel, ax.ylabel = "false positive rate", "true positive rate"
    y = frame["label"].to_numpy()
    for column, colour, name, auc in (
        ("proba", MODEL_COLOUR, "model", auc_model),
        ("baselineProba", BASELINE_COLOURS["volatilityTime"], "vol/time baseline", auc_baseline),
    ):
        no_rows = np.zeros(0), np.zeros(0)  # roc_points needs at least one row
        fpr, tpr = roc_points(y, frame[column].to_numpy()) if len(y) else no_rows
        text = "" if auc is None else f" (mean fold AUC {auc:.3f})"
        ax.line(fpr, tpr, colour, width=1.5, label=name + text)
    ax.line([0, 1], [0, 1], "grey", width=1.2, dash=":", label="majority / always positive")
    return fig.svg()


def calibration(frame: pd.DataFrame, bins: int = 10) -> bytes:
    """Mean predicted probability against the observed rate, in equal-count bins."""
    fig = Figure(550, 550)
    ax = fig.axes[0]
    ax.title = "Calibration (equal-count bins)"
    ax.xlabel, ax.ylabel = "mean predicted probability", "observed take-profit-first rate"
    y = frame["label"].to_numpy(dtype=np.float64)
    seen = [np.zeros(0)]
    for column, colour, name in (
        ("proba", MODEL_COLOUR, "model"),
        ("baselineProba", BASELINE_COLOURS["volatilityTime"], "vol/time baseline"),
    ):
        p = frame[column].to_numpy(dtype=np.float64)
        order = np.argsort(p, kind="mergesort")
        groups = [g for g in np.array_split(order, bins) if g.size]
        means = np.array([[p[g].mean(), y[g].mean()] for g in groups]).reshape(-1, 2)
        ax.line(means[:, 0], means[:, 1], colour, width=1.5, marker=True, label=name)
        seen.append(means.reshape(-1))
    rate = float(y.mean()) if y.size else 0.0
    ax.hline(rate, "grey", width=0.8, dash="--", label=f"positive rate {rate:.3f}")
    # The diagonal spans both axes' data, so the axes come out square around it.
    values = np.concatenate([*seen, [rate]])
    values = values[np.isfinite(values)]
    low, high = float(values.min()), float(values.max())
    ax.line([low, high], [low, high], "grey", width=1.2, dash=":", label="perfectly calibrated")
    return fig.svg()


def importance(names: Sequence[str], gain: np.ndarray, top: int = 20) -> bytes:
    """Mean total gain over the folds' models, largest first."""
    fig = Figure(800, 600)
    ax = fig.axes[0]
    ax.title = f"Feature importance (gain), top {min(top, len(names))}"
    ax.xlabel, ax.grid = "mean total gain per fold model", "x"
    order = np.argsort(-np.asarray(gain, np.float64), kind="stable")[:top]
    ax.barh([names[i] for i in order], np.asarray(gain, np.float64)[order], MODEL_COLOUR)
    return fig.svg()


def probabilities(frame: pd.DataFrame, thresholds: Sequence[float]) -> bytes:
    fig = Figure(800, 450)
    ax = fig.axes[0]
    ax.title = "Distribution of predicted probabilities by outcome"
    ax.xlabel, ax.ylabel = "predicted probability (test rows)", "bars"
    p = frame["proba"].to_numpy(dtype=np.float64)
    y = frame["label"].to_numpy() == 1
    finite = p[np.isfinite(p)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    edges = np.linspace(lo, hi + 1e-9, 41)
    for rows, colour, name in (
        (~y, "#b03a2e", "stop or horizon first (0)"),
        (y, "#2e8b57", "take-profit first (1)"),
    ):
        counts, _ = np.histogram(p[rows & np.isfinite(p)], bins=edges)
        ax.bars(edges, counts, colour, alpha=0.6, label=name)
    for i, cut in enumerate(thresholds):
        ax.vline(cut, "black", width=0.8, dash="--", label="fold thresholds" if i == 0 else None)
    return fig.svg()
