"""The report's pictures, drawn with matplotlib (Agg, no display) into PNG bytes.

Every function takes plain arrays or frames and returns one PNG; htmlreport.py decides what
goes in. Out-of-sample only: the frames are the folds' predictions.parquet rows.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: never look for a display (pods, CI)

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

MODEL_COLOUR = "#1f5fa8"
BASELINE_COLOURS = {"volatilityTime": "#d9822b", "alwaysPositive": "#7f7f7f"}
BASELINE_TITLES = {"volatilityTime": "vol/time baseline", "alwaysPositive": "always positive"}


def _png(fig: Figure) -> bytes:
    sink = io.BytesIO()
    fig.savefig(sink, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return sink.getvalue()


def _equity(frame: pd.DataFrame, signal: str) -> tuple[np.ndarray, np.ndarray]:
    """(entry times, cumulative net R) of the tradable rows a signal column marks."""
    trades = frame[(frame["tradable"] == 1) & (frame[signal] == 1)]
    return trades["timestamp"].to_numpy(), np.cumsum(trades["netR"].to_numpy(dtype=np.float64))


def equity_per_fold(folds: Sequence[tuple[int, pd.DataFrame]]) -> bytes:
    """Each fold's model equity in R against days since its test period began."""
    fig, ax = plt.subplots(figsize=(10, 4.5), layout="constrained")
    cmap = plt.get_cmap("viridis")
    for i, (number, frame) in enumerate(folds):
        times, equity = _equity(frame, "signal")
        start = frame["timestamp"].iloc[0] if len(frame) else None
        if start is None or equity.size == 0:
            continue
        days = (pd.to_datetime(times) - start) / pd.Timedelta(days=1)
        label = f"fold {number}" if len(folds) <= 12 else None
        ax.step(
            days, equity, where="post", color=cmap(i / max(len(folds) - 1, 1)), lw=1.2, label=label
        )
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("days since the fold's test period began")
    ax.set_ylabel("cumulative net R")
    ax.set_title("Out-of-sample equity per fold (model trades, net of costs)")
    if len(folds) <= 12:
        ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def equity_stitched(frame: pd.DataFrame) -> bytes:
    """All folds' test periods in time order: the model beside the baselines' trades."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), layout="constrained", sharex=True)
    times, equity = _equity(frame, "signal")
    top.step(times, equity, where="post", color=MODEL_COLOUR, lw=1.5, label="model")
    times, equity = _equity(frame, "baselineSignal")
    top.step(
        times,
        equity,
        where="post",
        color=BASELINE_COLOURS["volatilityTime"],
        lw=1.2,
        ls="--",
        label=BASELINE_TITLES["volatilityTime"],
    )
    top.axhline(0, color="black", lw=0.6)
    top.set_ylabel("cumulative net R")
    top.set_title("Out-of-sample equity, folds stitched in time order")
    top.legend(loc="best", fontsize=8)
    top.grid(alpha=0.3)
    # Trading every bar makes thousands of trades: its own panel keeps the model readable.
    frame = frame.assign(everyBar=1)
    times, equity = _equity(frame, "everyBar")
    bottom.step(
        times,
        equity,
        where="post",
        color=BASELINE_COLOURS["alwaysPositive"],
        lw=1.2,
        label="always positive (every bar a trade)",
    )
    bottom.axhline(0, color="black", lw=0.6)
    bottom.set_ylabel("cumulative net R")
    bottom.legend(loc="best", fontsize=8)
    bottom.grid(alpha=0.3)
    return _png(fig)


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
    fig, ax = plt.subplots(figsize=(5.5, 5.5), layout="constrained")
    y = frame["label"].to_numpy()
    for column, colour, name, auc in (
        ("proba", MODEL_COLOUR, "model", auc_model),
        ("baselineProba", BASELINE_COLOURS["volatilityTime"], "vol/time baseline", auc_baseline),
    ):
        fpr, tpr = roc_points(y, frame[column].to_numpy())
        text = "" if auc is None else f" (mean fold AUC {auc:.3f})"
        ax.plot(fpr, tpr, color=colour, lw=1.5, label=name + text)
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="majority / always positive")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC, all test rows pooled")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def calibration(frame: pd.DataFrame, bins: int = 10) -> bytes:
    """Mean predicted probability against the observed rate, in equal-count bins."""
    fig, ax = plt.subplots(figsize=(5.5, 5.5), layout="constrained")
    y = frame["label"].to_numpy(dtype=np.float64)
    for column, colour, name in (
        ("proba", MODEL_COLOUR, "model"),
        ("baselineProba", BASELINE_COLOURS["volatilityTime"], "vol/time baseline"),
    ):
        p = frame[column].to_numpy(dtype=np.float64)
        order = np.argsort(p, kind="mergesort")
        groups = [g for g in np.array_split(order, bins) if g.size]
        ax.plot(
            [p[g].mean() for g in groups],
            [y[g].mean() for g in groups],
            "o-",
            color=colour,
            label=name,
        )
    rate = float(y.mean()) if y.size else 0.0
    ax.axhline(rate, color="grey", ls="--", lw=0.8, label=f"positive rate {rate:.3f}")
    low = min(ax.get_xlim()[0], ax.get_ylim()[0])
    high = max(ax.get_xlim()[1], ax.get_ylim()[1])
    ax.plot([low, high], [low, high], color="grey", ls=":", label="perfectly calibrated")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed take-profit-first rate")
    ax.set_title("Calibration (equal-count bins)")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def importance(names: Sequence[str], gain: np.ndarray, top: int = 20) -> bytes:
    """Mean total gain over the folds' models, largest first."""
    fig, ax = plt.subplots(figsize=(8, 6), layout="constrained")
    order = np.argsort(-gain, kind="stable")[:top][::-1]
    ax.barh([names[i] for i in order], gain[order], color=MODEL_COLOUR)
    ax.set_xlabel("mean total gain per fold model")
    ax.set_title(f"Feature importance (gain), top {min(top, len(names))}")
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def probabilities(frame: pd.DataFrame, thresholds: Sequence[float]) -> bytes:
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    p = frame["proba"].to_numpy(dtype=np.float64)
    y = frame["label"].to_numpy() == 1
    edges: list[float] | int = (
        np.linspace(float(p.min()), float(p.max()) + 1e-9, 41).tolist() if p.size else 10
    )
    ax.hist(p[~y], bins=edges, alpha=0.6, color="#b03a2e", label="stop or horizon first (0)")
    ax.hist(p[y], bins=edges, alpha=0.6, color="#2e8b57", label="take-profit first (1)")
    for i, cut in enumerate(thresholds):
        ax.axvline(cut, color="black", lw=0.8, ls="--", label="fold thresholds" if i == 0 else None)
    ax.set_xlabel("predicted probability (test rows)")
    ax.set_ylabel("bars")
    ax.set_title("Distribution of predicted probabilities by outcome")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)
