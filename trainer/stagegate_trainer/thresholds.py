"""The decision threshold, chosen on the inner validation rows by `model.threshold.objective`.

Every candidate cut is a distinct validation score; a row is signalled when its score is at
least the cut. All objectives are evaluated at once from cumulative counts over the scores
sorted in descending order. Ties between cuts go to the higher cut (fewer signals).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from stagegate_core.specparts import ThresholdSpec

from .evaluate import best_f1_threshold

Floats = NDArray[np.float64]


def _cuts(proba: Floats) -> tuple[Floats, NDArray[np.intp], NDArray[np.bool_]]:
    order = np.argsort(-np.asarray(proba, np.float64), kind="mergesort")
    scores = np.asarray(proba, np.float64)[order]
    # Only the last position of each run of equal scores is a real cut.
    last_of_run = np.append(np.diff(scores) != 0, True)
    return scores, order, last_of_run


def best_expected_return_threshold(proba: Floats, r_net: Floats, min_trades: int) -> float:
    """The cut with the highest mean net R per signalled row among cuts with >= min_trades.

    With fewer rows than min_trades, the lowest cut (signal every row). The best mean may be
    negative: the model then still trades, so its out-of-sample loss is measured and shown
    rather than hidden behind zero trades.
    """
    if np.asarray(proba).size == 0:
        return 0.5
    scores, order, last = _cuts(proba)
    counts = np.arange(1, scores.size + 1)[last]
    mean_r = np.cumsum(np.asarray(r_net, np.float64)[order])[last] / counts
    allowed = counts >= min(min_trades, scores.size)
    mean_r = np.where(allowed, mean_r, -np.inf)
    best = int(np.argmax(mean_r))  # first maximum = the highest cut among ties
    return float(scores[last][best])


def best_precision_at_recall_threshold(y: Floats, proba: Floats, recall: float) -> float:
    """The cut with the highest precision among cuts whose recall reaches `recall`."""
    y_true = np.asarray(y, dtype=bool)
    if not y_true.any():
        return 0.5
    scores, order, last = _cuts(proba)
    hits = np.cumsum(y_true[order])[last].astype(np.float64)
    counts = np.arange(1, scores.size + 1)[last]
    # A small tolerance so a recall of exactly `recall` in exact arithmetic qualifies.
    allowed = hits / y_true.sum() >= recall - 1e-12
    precision = np.where(allowed, hits / counts, -np.inf)
    best = int(np.argmax(precision))
    return float(scores[last][best])


def choose_threshold(spec: ThresholdSpec, y: Floats, proba: Floats, r_net: Floats | None) -> float:
    if spec.objective == "fixed":
        return float(spec.value)
    if spec.objective == "f1":
        return best_f1_threshold(y, proba)
    if spec.objective == "precisionAtRecall":
        return best_precision_at_recall_threshold(y, proba, spec.recall)
    if r_net is None:
        raise ValueError("model.threshold.objective expectedReturn needs the rows' trade outcomes")
    return best_expected_return_threshold(proba, r_net, spec.min_trades)
