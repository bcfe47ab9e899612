"""The one-sided t bounds against scipy, the gate verdicts, and the threshold objectives
against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from stagegate_core.specparts import ThresholdSpec
from stagegate_trainer.gatestats import (
    FAIL,
    NO_EVIDENCE,
    PASS,
    baseline_gates,
    bounds,
    paired_gate,
    t_quantile,
    trading_gates,
)
from stagegate_trainer.thresholds import (
    best_expected_return_threshold,
    best_precision_at_recall_threshold,
    choose_threshold,
)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 20, 80])
@pytest.mark.parametrize("p", [0.6, 0.8, 0.9, 0.95, 0.99, 0.1])
def test_t_quantile_matches_scipy(df: int, p: float) -> None:
    assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(-5, 5, allow_nan=False), min_size=2, max_size=40),
    confidence=st.sampled_from([0.8, 0.9, 0.95]),
)
def test_bounds_match_scipys_one_sided_t_interval(values: list[float], confidence: float) -> None:
    got = bounds(values, confidence)
    sample = np.array(values)
    sem = stats.sem(sample)
    # A one-sided bound at c is one end of the two-sided interval at 2c - 1.
    if sem == 0:  # scipy wants a positive scale; with no spread both bounds are the mean
        low = high = sample.mean()
    else:
        low, high = stats.t.interval(
            2 * confidence - 1, len(values) - 1, loc=sample.mean(), scale=sem
        )
    assert got["n"] == len(values)
    assert got["mean"] == pytest.approx(sample.mean(), abs=1e-9)
    assert got["lower"] == pytest.approx(low, abs=1e-7)
    assert got["upper"] == pytest.approx(high, abs=1e-7)


def test_no_bound_below_two_folds() -> None:
    assert bounds([], 0.9) == {"mean": None, "lower": None, "upper": None, "n": 0}
    assert bounds([0.3], 0.9)["lower"] is None


def test_paired_gate_hand_case() -> None:
    # Differences 0.02, 0.03, 0.01: mean 0.02, sd 0.01, t_{0.9,2} = 1.8856.
    gate = paired_gate("beatsX", "rocAuc", [0.55, 0.56, 0.53], [0.53, 0.53, 0.52], 0.9)
    assert gate["bound"] == pytest.approx(0.02 - 1.885618 * 0.01 / math.sqrt(3), abs=1e-6)
    assert gate["verdict"] == PASS and gate["passed"] is True
    assert gate["value"] == pytest.approx(0.5466667) and gate["threshold"] == pytest.approx(
        0.5266667
    )


def test_a_hair_above_the_baseline_with_three_noisy_folds_is_not_enough_evidence() -> None:
    # The case: model 51.8 % vs baseline 51.3 % mean AUC, fold spread ± 2.3 %.
    model, base = [0.495, 0.541, 0.518], [0.500, 0.520, 0.519]
    gate = paired_gate("beatsVolatilityTime", "rocAuc", model, base, 0.9)
    assert np.mean(model) > np.mean(base)
    assert gate["verdict"] == NO_EVIDENCE and gate["passed"] is False
    # Clearly worse in every fold: a failure, not a lack of evidence.
    worse = paired_gate("beatsVolatilityTime", "rocAuc", [0.49, 0.50, 0.48], base, 0.9)
    assert worse["verdict"] == FAIL


def _fold(number: int, auc: float, base_auc: float, r: float | None, trades: int) -> dict:
    return {
        "fold": number,
        "model": {"accuracy": 0.6, "rocAuc": auc},
        "baselines": {
            "majority": {"accuracy": 0.55},
            "alwaysPositive": {},
            "volatilityTime": {"rocAuc": base_auc},
        },
        "trading": {
            "model": {"expectedR": r, "trades": trades},
            "baselines": {
                "alwaysPositive": {"expectedR": -0.5, "trades": 1000},
                "volatilityTime": {"expectedR": None, "trades": 0},
            },
        },
    }


def test_baseline_gates_and_a_baseline_without_trades_earns_zero() -> None:
    folds = [_fold(i, 0.56 + i / 100, 0.5, 0.2 + i / 10, 40) for i in range(1, 6)]
    gates = {g["gate"]: g for g in baseline_gates(folds, 0.9)}
    assert set(gates) == {
        "beatsMajority",
        "beatsAlwaysPositive",
        "beatsVolatilityTime",
        "beatsVolatilityTimeR",
    }
    assert all(g["verdict"] == PASS for g in gates.values())
    assert gates["beatsVolatilityTimeR"]["threshold"] == 0.0  # no trades: 0 R
    assert gates["beatsAlwaysPositive"]["threshold"] == -0.5


def test_trading_gates() -> None:
    folds = [_fold(i, 0.5, 0.5, r, 30) for i, r in enumerate([-0.4, -0.5, -0.45, -0.6], 1)]
    gates = {
        g["gate"]: g
        for g in trading_gates(folds, min_expected_return=0.0, min_trades=100, confidence=0.9)
    }
    assert gates["minExpectedReturn"]["verdict"] == FAIL  # even the upper bound is below 0
    assert gates["minTrades"] == {
        "gate": "minTrades",
        "metric": "trades",
        "value": 120,
        "threshold": 100,
        "passed": True,
        "verdict": PASS,
    }
    none = trading_gates([_fold(1, 0.5, 0.5, None, 0)], min_expected_return=0.0, min_trades=1,
                         confidence=0.9)  # fmt: skip
    assert [g["verdict"] for g in none] == [FAIL, FAIL]  # no trade at all: nothing to bound
    assert trading_gates(folds, min_expected_return=None, min_trades=None, confidence=0.9) == []


# --------------------------------------------------------------------------- thresholds

scored = st.lists(
    st.tuples(
        st.sampled_from([0.1, 0.2, 0.35, 0.5, 0.7, 0.9]),
        st.sampled_from([0.0, 1.0]),
        # Quarter steps are exact in binary, so tied means are exactly equal in any order.
        st.integers(-8, 12).map(lambda q: q / 4),
    ),
    min_size=1,
    max_size=40,
)


def _columns(rows: list[tuple[float, float, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p, y, r = (np.array(c, dtype=np.float64) for c in zip(*rows, strict=True))
    return p, y, r


@settings(max_examples=300, deadline=None)
@given(rows=scored, min_trades=st.integers(1, 20))
def test_expected_return_threshold_is_the_brute_force_best(
    rows: list[tuple[float, float, float]], min_trades: int
) -> None:
    p, _, r = _columns(rows)
    cut = best_expected_return_threshold(p, r, min_trades)
    need = min(min_trades, len(rows))
    candidates = {c: r[p >= c].mean() for c in set(p.tolist()) if (p >= c).sum() >= need}
    best = max(candidates.values())
    assert candidates[cut] == pytest.approx(best)
    # Among equally good cuts, the highest (fewest trades).
    assert cut == max(c for c, v in candidates.items() if v == best)


@settings(max_examples=300, deadline=None)
@given(rows=scored, recall=st.sampled_from([0.1, 0.3, 0.5, 1.0]))
def test_precision_at_recall_threshold_is_the_brute_force_best(
    rows: list[tuple[float, float, float]], recall: float
) -> None:
    p, y, _ = _columns(rows)
    cut = best_precision_at_recall_threshold(y, p, recall)
    if y.sum() == 0:
        assert cut == 0.5
        return
    ok = {
        c: y[p >= c].mean() for c in set(p.tolist()) if y[p >= c].sum() / y.sum() >= recall - 1e-12
    }
    best = max(ok.values())
    assert ok[cut] == pytest.approx(best)
    assert cut == max(c for c, v in ok.items() if v == best)


def test_choose_threshold_dispatches_on_the_objective() -> None:
    p = np.array([0.2, 0.4, 0.6, 0.8])
    y = np.array([0.0, 1.0, 0.0, 1.0])
    r = np.array([-1.0, 2.0, -1.0, 2.0])
    assert choose_threshold(ThresholdSpec(objective="fixed", value=0.33), y, p, None) == 0.33
    assert choose_threshold(ThresholdSpec(objective="f1"), y, p, None) == 0.4
    assert choose_threshold(ThresholdSpec(objective="expectedReturn", min_trades=1), y, p, r) == 0.8
    assert (
        choose_threshold(ThresholdSpec(objective="precisionAtRecall", recall=1.0), y, p, r) == 0.4
    )
    with pytest.raises(ValueError, match="expectedReturn"):
        choose_threshold(ThresholdSpec(), y, p, None)
