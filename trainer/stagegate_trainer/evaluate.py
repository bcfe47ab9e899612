"""Classification metrics and the decision threshold, in plain numpy.

Kept free of scikit-learn so the trainer image stays small; tests compare every function with
scikit-learn's.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from stagegate_core.metricnames import METRICS, snake

__all__ = ["METRICS", "best_f1_threshold", "classification_metrics", "roc_auc", "snake"]


Floats = NDArray[np.float64]


def roc_auc(y: Floats, score: Floats) -> float:
    """Mann-Whitney form with tied scores sharing their average rank; NaN for one class."""
    y = np.asarray(y, dtype=bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(score, kind="mergesort")
    sorted_scores = np.asarray(score)[order]
    ranks = np.empty(y.size, dtype=np.float64)
    # Average ranks over ties: each run of equal scores gets the mean of its positions.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [y.size]))
    average = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(average, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def classification_metrics(y: Floats, proba: Floats, threshold: float) -> dict[str, float]:
    y_true = np.asarray(y, dtype=bool)
    predicted = np.asarray(proba) >= threshold
    tp = float(np.sum(predicted & y_true))
    fp = float(np.sum(predicted & ~y_true))
    fn = float(np.sum(~predicted & y_true))
    n = float(y_true.size)
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    return {
        "accuracy": _ratio(float(np.sum(predicted == y_true)), n),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "rocAuc": roc_auc(y_true, np.asarray(proba, dtype=np.float64)),
        "brier": float(np.mean((np.asarray(proba, dtype=np.float64) - y_true) ** 2)) if n else 0.0,
        # The share of signalled entries whose take-profit came before the stop-loss.
        "hitRateTp1": precision,
        "positiveRate": _ratio(float(y_true.sum()), n),
        "predictedPositiveRate": _ratio(float(predicted.sum()), n),
    }


def best_f1_threshold(y: Floats, proba: Floats) -> float:
    """The probability cut that maximises F1 on (validation) rows.

    Candidates are the distinct scores themselves, evaluated all at once via cumulative counts.
    Ties go to the higher threshold (fewer signals). With no positive row, 0.5.
    """
    y_true = np.asarray(y, dtype=bool)
    if not y_true.any():
        return 0.5
    order = np.argsort(-np.asarray(proba), kind="mergesort")
    scores = np.asarray(proba, dtype=np.float64)[order]
    hits = np.cumsum(y_true[order])
    # Only the last position of each run of equal scores is a real cut.
    last_of_run = np.append(np.diff(scores) != 0, True)
    signalled = np.arange(1, scores.size + 1)[last_of_run]
    tp = hits[last_of_run].astype(np.float64)
    f1 = 2 * tp / (signalled + y_true.sum())
    best = int(np.argmax(f1))  # first maximum = the highest threshold among ties
    return float(scores[last_of_run][best])
