"""Classification metrics and the F1 threshold against scikit-learn and brute force."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from stagegate_trainer.evaluate import (
    METRICS,
    best_f1_threshold,
    classification_metrics,
    roc_auc,
    snake,
)

# Scores drawn from a small grid, so ties are common; 0.0 and 1.0 included.
tied_scores = st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.5, 0.5, 0.7, 0.75, 0.9, 1.0])
free_scores = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def labelled(draw: st.DrawFn, both: bool = False, scores: st.SearchStrategy[float] = tied_scores):
    n = draw(st.integers(2 if both else 1, 60))
    y = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    if both:
        one = draw(st.integers(0, n - 1))
        zero = (one + draw(st.integers(1, n - 1))) % n
        y[one], y[zero] = 1, 0
    p = draw(st.lists(scores, min_size=n, max_size=n))
    return np.array(y, dtype=np.float64), np.array(p, dtype=np.float64)


@settings(max_examples=300, deadline=None)
@given(data=labelled(both=True, scores=st.one_of(tied_scores, free_scores)))
def test_roc_auc_matches_sklearn(data: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = data
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(data=labelled(both=True))
def test_roc_auc_with_heavy_ties_matches_sklearn(data: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = data
    p = np.round(p * 2) / 2  # three distinct values at most
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_roc_auc_hand_cases() -> None:
    assert roc_auc(np.array([0, 0, 1, 1.0]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(np.array([1, 1, 0, 0.0]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.0
    assert roc_auc(np.array([0, 1, 0, 1.0]), np.full(4, 0.5)) == 0.5
    # One tie between a positive and a negative counts a half.
    assert roc_auc(np.array([0, 1.0]), np.array([0.5, 0.5])) == 0.5
    assert roc_auc(np.array([0, 0, 1.0]), np.array([0.2, 0.5, 0.5])) == 0.75


@pytest.mark.parametrize("label", [0.0, 1.0])
@pytest.mark.parametrize("n", [0, 1, 5])
def test_roc_auc_is_nan_for_one_class(label: float, n: int) -> None:
    assert math.isnan(roc_auc(np.full(n, label), np.linspace(0, 1, n)))


def _sklearn_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = (p >= threshold).astype(int)
    truth = y.astype(int)
    both = 0 < truth.sum() < truth.size
    return {
        "accuracy": accuracy_score(truth, predicted),
        "precision": precision_score(truth, predicted, zero_division=0),
        "recall": recall_score(truth, predicted, zero_division=0),
        "f1": f1_score(truth, predicted, zero_division=0),
        "rocAuc": roc_auc_score(truth, p) if both else math.nan,
        "brier": brier_score_loss(truth, p, pos_label=1) if both else np.mean((p - truth) ** 2),
        "hitRateTp1": precision_score(truth, predicted, zero_division=0),
        "positiveRate": truth.mean(),
        "predictedPositiveRate": predicted.mean(),
    }


@settings(max_examples=150, deadline=None)
@given(
    data=labelled(scores=st.one_of(tied_scores, free_scores)),
    threshold=st.one_of(tied_scores, free_scores),
)
def test_classification_metrics_match_sklearn(
    data: tuple[np.ndarray, np.ndarray], threshold: float
) -> None:
    y, p = data
    got = classification_metrics(y, p, threshold)
    expected = _sklearn_metrics(y, p, threshold)
    assert set(got) == set(METRICS)
    for metric in METRICS:
        if math.isnan(expected[metric]):
            assert math.isnan(got[metric]), metric
        else:
            assert got[metric] == pytest.approx(expected[metric], abs=1e-12), metric
        assert isinstance(got[metric], float), metric


def test_classification_metrics_hand_case() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0, 1, 0], dtype=np.float64)
    p = np.array([0.9, 0.6, 0.4, 0.6, 0.2, 0.1, 0.55, 0.3, 0.5, 0.0])
    got = classification_metrics(y, p, 0.5)
    # Predicted positive: rows 0, 1, 3, 6, 8 -> tp 3 (0, 1, 8), fp 2 (3, 6), fn 1 (2).
    assert got["precision"] == pytest.approx(3 / 5)
    assert got["recall"] == pytest.approx(3 / 4)
    assert got["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert got["accuracy"] == pytest.approx(7 / 10)
    assert got["hitRateTp1"] == got["precision"]
    assert got["positiveRate"] == pytest.approx(0.4)
    assert got["predictedPositiveRate"] == pytest.approx(0.5)


def test_classification_metrics_with_no_positive_prediction_are_zero() -> None:
    got = classification_metrics(np.array([1.0, 0.0, 1.0]), np.array([0.1, 0.2, 0.3]), 0.9)
    assert (got["precision"], got["recall"], got["f1"], got["predictedPositiveRate"]) == (
        0.0,
        0.0,
        0.0,
        0.0,
    )
    assert got["rocAuc"] == pytest.approx(0.5)


def _f1(y: np.ndarray, p: np.ndarray, threshold: float) -> Fraction:
    predicted = p >= threshold
    truth = y.astype(bool)
    tp = int(np.sum(predicted & truth))
    denominator = int(predicted.sum()) + int(truth.sum())
    return Fraction(2 * tp, denominator) if denominator else Fraction(0)


@settings(max_examples=200, deadline=None)
@given(data=labelled(scores=st.one_of(tied_scores, free_scores)))
def test_best_f1_threshold_is_the_highest_best_cut(data: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = data
    threshold = best_f1_threshold(y, p)
    if not y.any():
        assert threshold == 0.5
        return
    # Brute force: every distinct score, and one cut above the highest (no signal at all).
    candidates = [*sorted({float(v) for v in p}), math.inf]
    scored = {c: _f1(y, p, c) for c in candidates}
    best = max(scored.values())
    assert threshold in scored
    assert scored[threshold] == best
    assert threshold == max(c for c, f in scored.items() if f == best)
    # Agrees with sklearn's F1 at the chosen cut.
    assert float(best) == pytest.approx(f1_score(y.astype(int), (p >= threshold).astype(int)))


def test_best_f1_threshold_hand_cases() -> None:
    # Cuts at 0.9 (tp 1 of 1 signal: F1 2/3), 0.8 (tp 1 of 2: 1/2), 0.4 (tp 2 of 3: 4/5).
    y = np.array([1, 0, 1.0])
    p = np.array([0.9, 0.8, 0.4])
    assert best_f1_threshold(y, p) == 0.4
    # A tie in F1: 0.9 (tp 1 of 1, F1 2/3) against 0.2 (tp 2 of 4, F1 2/3): the higher wins.
    y = np.array([1, 0, 0, 1.0])
    p = np.array([0.9, 0.5, 0.5, 0.2])
    assert best_f1_threshold(y, p) == 0.9
    # Tied scores are one cut: the four rows at 0.7 go in together (F1 1/3), so 0.1 (4/7)
    # wins; counting the positive at 0.7 alone would have given F1 2/3 at 0.7.
    y = np.array([1, 0, 0, 0, 1.0])
    p = np.array([0.7, 0.7, 0.7, 0.7, 0.1])
    assert best_f1_threshold(y, p) == 0.1
    assert best_f1_threshold(np.zeros(4), np.linspace(0, 1, 4)) == 0.5


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("accuracy", "accuracy"),
        ("rocAuc", "roc_auc"),
        ("hitRateTp1", "hit_rate_tp1"),
        ("positiveRate", "positive_rate"),
        ("predictedPositiveRate", "predicted_positive_rate"),
        ("f1", "f1"),
    ],
)
def test_snake(metric: str, expected: str) -> None:
    assert snake(metric) == expected


def test_snake_covers_every_metric() -> None:
    names = [snake(m) for m in METRICS]
    assert len(set(names)) == len(METRICS)
    assert all(n == n.lower() and not n.startswith("_") for n in names)
