"""Stage summaries: mean ± std over folds, baselines, and the gates' boundaries."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stagegate_core.specparts import GatesSpec
from stagegate_trainer.evaluate import METRICS
from stagegate_trainer.summary import BASELINES, aggregate, evaluate_gates, summarise_stage

GATE_NAMES = ("minAccuracy", "minRecall", "minRocAuc", "minF1")
BASELINE_GATES = (
    "beatsMajority",
    "beatsAlwaysPositive",
    "beatsVolatilityTime",
    "beatsVolatilityTimeR",
)
TRADING_GATES = ("minExpectedReturn", "minTrades")


def block(**means: float | None) -> dict[str, dict[str, float | None]]:
    """An aggregated block with the given means (std unused by the gates)."""
    return {m: {"mean": means.get(m), "std": 0.0} for m in METRICS}


def passing_model() -> dict[str, Any]:
    return block(accuracy=0.7, recall=0.5, rocAuc=0.7, f1=0.6)


def weak_baselines() -> dict[str, Any]:
    return {
        "majority": block(accuracy=0.5),
        "alwaysPositive": block(f1=0.4),
        "volatilityTime": block(rocAuc=0.55),
    }


def fold(number: int, model: dict[str, Any], **baselines: dict[str, Any]) -> dict[str, Any]:
    return {
        "fold": number,
        "model": model,
        "baselines": {b: baselines.get(b, {}) for b in BASELINES},
    }


def verdicts(results: list[dict[str, Any]]) -> dict[str, bool]:
    return {r["gate"]: r["passed"] for r in results}


# --------------------------------------------------------------------------- mean and std

values = st.lists(
    st.one_of(st.none(), st.just(math.nan), st.floats(-1e3, 1e3, allow_nan=False)),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(per_fold=values)
def test_mean_std_matches_numpy_ignoring_missing(per_fold: list[float | None]) -> None:
    folds = [fold(i + 1, {"accuracy": v}) for i, v in enumerate(per_fold)]
    got = aggregate("model", folds)["accuracy"]
    present = np.array([v for v in per_fold if v is not None and not math.isnan(v)])
    if present.size == 0:
        assert got == {"mean": None, "std": None}
        return
    assert got["mean"] == pytest.approx(np.mean(present), abs=1e-6)
    assert got["std"] == pytest.approx(np.std(present), abs=1e-6)  # population std


def test_mean_std_hand_case() -> None:
    folds = [
        fold(1, {"accuracy": 0.5, "recall": None}),
        fold(2, {"accuracy": 0.7, "recall": 0.4}),
        fold(3, {"accuracy": 0.6, "rocAuc": math.nan}),
    ]
    got = aggregate("model", folds)
    assert got["accuracy"] == pytest.approx({"mean": 0.6, "std": math.sqrt(0.02 / 3)})
    assert got["recall"] == {"mean": 0.4, "std": 0.0}
    assert got["rocAuc"] == {"mean": None, "std": None}
    assert got["brier"] == {"mean": None, "std": None}
    assert set(got) == set(METRICS)


def test_aggregate_reads_the_named_baseline() -> None:
    folds = [
        fold(1, {"accuracy": 0.9}, majority={"accuracy": 0.6}),
        fold(2, {"accuracy": 0.9}, majority={"accuracy": 0.8}),
    ]
    assert aggregate("model", folds, baseline="majority")["accuracy"]["mean"] == 0.7
    assert aggregate("model", folds)["accuracy"]["mean"] == 0.9


# --------------------------------------------------------------------------- gates

THRESHOLDS = {
    "minAccuracy": "accuracy",
    "minRecall": "recall",
    "minRocAuc": "rocAuc",
    "minF1": "f1",
}
SPEC_FIELD = {
    "minAccuracy": "min_accuracy",
    "minRecall": "min_recall",
    "minRocAuc": "min_roc_auc",
    "minF1": "min_f1",
}


# The min* gates judge stage means; these tests switch the other gates off to isolate them.
MEANS_ONLY = {"must_beat_baselines": False, "min_expected_return": None, "min_trades": None}


def test_all_gates_pass_with_a_good_model() -> None:
    folds = [paired_fold(i, auc=0.6 + i / 100, r=0.3 + i / 20) for i in range(1, 6)]
    results = evaluate_gates(GatesSpec(), passing_model(), weak_baselines(), folds)
    assert [r["gate"] for r in results] == list(GATE_NAMES + BASELINE_GATES + TRADING_GATES)
    assert all(r["passed"] for r in results), [r for r in results if not r["passed"]]
    by_name = {r["gate"]: r for r in results}
    assert by_name["minAccuracy"] == {
        "gate": "minAccuracy",
        "metric": "accuracy",
        "value": 0.7,
        "threshold": 0.60,
        "passed": True,
        "verdict": "pass",
    }
    assert by_name["beatsVolatilityTime"]["threshold"] == pytest.approx(0.55)
    assert by_name["beatsAlwaysPositive"]["metric"] == "expectedR"


@pytest.mark.parametrize("gate", GATE_NAMES)
@pytest.mark.parametrize(("delta", "passed"), [(0.0, True), (1e-6, True), (-1e-6, False)])
def test_threshold_gates_are_inclusive(gate: str, delta: float, passed: bool) -> None:
    gates = GatesSpec(**MEANS_ONLY)
    threshold = getattr(gates, SPEC_FIELD[gate])
    model = passing_model()
    model[THRESHOLDS[gate]] = {"mean": threshold + delta, "std": 0.0}
    result = verdicts(evaluate_gates(gates, model, weak_baselines()))
    assert result[gate] is passed
    assert all(v for name, v in result.items() if name != gate)


def paired_fold(
    number: int, *, auc: float = 0.6, r: float = 0.3, trades: int = 40
) -> dict[str, Any]:
    """A fold whose model beats every baseline by a margin that varies a little per fold."""
    return {
        "fold": number,
        "model": {"accuracy": 0.62 + number / 200, "recall": 0.5, "rocAuc": auc, "f1": 0.6},
        "baselines": {
            "majority": {"accuracy": 0.55},
            "alwaysPositive": {"f1": 0.4},
            "volatilityTime": {"rocAuc": 0.55},
        },
        "trading": {
            "model": {"expectedR": r, "trades": trades},
            "baselines": {
                "alwaysPositive": {"expectedR": -0.6, "trades": 900},
                "volatilityTime": {"expectedR": -0.2, "trades": 100},
            },
        },
    }


def test_baselines_are_beaten_on_the_per_fold_bound_not_on_means() -> None:
    # The model's mean AUC is above the baseline's, but the per-fold difference swings around
    # zero: not enough evidence.
    folds = [paired_fold(i, auc=a) for i, a in enumerate([0.53, 0.60, 0.56], 1)]
    result = {g["gate"]: g for g in evaluate_gates(GatesSpec(), passing_model(), {}, folds)}
    gate = result["beatsVolatilityTime"]
    assert gate["value"] > gate["threshold"]
    assert gate["verdict"] == "not enough evidence" and gate["passed"] is False
    # The same mean with a steady margin passes.
    steady = [paired_fold(i, auc=a) for i, a in enumerate([0.565, 0.563, 0.562], 1)]
    result = {g["gate"]: g for g in evaluate_gates(GatesSpec(), passing_model(), {}, steady)}
    assert result["beatsVolatilityTime"]["verdict"] == "pass"
    # A tie in every fold beats nothing.
    tied = [paired_fold(i, auc=0.55) for i in range(1, 5)]
    result = {g["gate"]: g for g in evaluate_gates(GatesSpec(), passing_model(), {}, tied)}
    assert result["beatsVolatilityTime"]["verdict"] == "fail"


@pytest.mark.parametrize(("gate", "path"), [
    ("beatsMajority", ("baselines", "majority", "accuracy")),
    ("beatsVolatilityTime", ("baselines", "volatilityTime", "rocAuc")),
    ("beatsAlwaysPositive", ("trading", "baselines", "alwaysPositive", "expectedR")),
])  # fmt: skip
def test_missing_baseline_fails_its_gate(gate: str, path: tuple[str, ...]) -> None:
    folds = [paired_fold(i) for i in range(1, 5)]
    for f in folds:
        block = f
        for key in path[:-1]:
            block = block[key]
        block[path[-1]] = None
    result = verdicts(evaluate_gates(GatesSpec(), passing_model(), {}, folds))
    assert result[gate] is False


@pytest.mark.parametrize("metric", ["accuracy", "recall", "rocAuc", "f1"])
def test_missing_model_metric_fails(metric: str) -> None:
    model = passing_model()
    model[metric] = {"mean": None, "std": None}
    failed = {
        n
        for n, v in verdicts(evaluate_gates(GatesSpec(), model, weak_baselines())).items()
        if not v
    }
    assert f"min{metric[0].upper()}{metric[1:]}" in failed


def test_must_beat_baselines_false_drops_the_baseline_gates() -> None:
    folds = [paired_fold(i, auc=0.4) for i in range(1, 4)]  # below the vol/time baseline
    with_baselines = verdicts(evaluate_gates(GatesSpec(), passing_model(), {}, folds))
    assert with_baselines["beatsVolatilityTime"] is False
    gates = GatesSpec(must_beat_baselines=False)
    without = evaluate_gates(gates, passing_model(), {}, folds)
    assert [r["gate"] for r in without] == list(GATE_NAMES + TRADING_GATES)


def test_original_targets_met_by_a_trivial_classifier_fail_on_baselines() -> None:
    # "Always positive" at a 40 % positive rate: recall 1, F1 0.571 beats minF1 0.45 ...
    trivial = block(accuracy=0.6, recall=1.0, rocAuc=0.61, f1=2 * 0.4 / 1.4)
    folds = []
    for i in range(1, 6):
        f = paired_fold(i, auc=0.5, r=-0.6)  # its trades are the always-positive trades
        f["model"]["accuracy"] = 0.6  # no better than the majority class
        f["baselines"]["majority"]["accuracy"] = 0.6
        f["baselines"]["volatilityTime"]["rocAuc"] = 0.5
        folds.append(f)
    result = verdicts(evaluate_gates(GatesSpec(**MEANS_ONLY | {"must_beat_baselines": True}),
                                     trivial, {}, folds))  # fmt: skip
    assert all(result[g] for g in GATE_NAMES)
    assert not any(result[g] for g in BASELINE_GATES)  # ... but beats no baseline


# --------------------------------------------------------------------------- the stage summary


def _random_fold(draw: st.DrawFn, number: int) -> dict[str, Any]:
    unit = st.floats(0, 1, allow_nan=False)
    return fold(
        number,
        {m: draw(unit) for m in METRICS},
        **{b: {m: draw(unit) for m in METRICS} for b in BASELINES},
    )


@settings(max_examples=150, deadline=None)
@given(data=st.data(), must_beat=st.booleans())
def test_summary_passed_is_the_and_of_its_gates(data: st.DataObject, must_beat: bool) -> None:
    count = data.draw(st.integers(1, 6))
    folds = [_random_fold(data.draw, n) for n in range(1, count + 1)]
    order = data.draw(st.permutations(folds))
    gates = GatesSpec(
        min_accuracy=data.draw(st.floats(0, 1)),
        min_recall=data.draw(st.floats(0, 1)),
        min_roc_auc=data.draw(st.floats(0, 1)),
        min_f1=data.draw(st.floats(0, 1)),
        must_beat_baselines=must_beat,
    )
    summary = summarise_stage("quick", order, gates)
    assert summary["passed"] is all(g["passed"] for g in summary["gates"])
    assert len(summary["gates"]) == (10 if must_beat else 6)
    assert summary["folds"] == count
    assert [f["fold"] for f in summary["perFold"]] == list(range(1, count + 1))
    for g in summary["gates"]:
        if g["gate"].startswith("beats"):
            # Paired per fold: passes only on a lower bound above zero, never on one fold.
            expected = g["bound"] is not None and g["bound"] > 0
        elif g["gate"] in TRADING_GATES:
            expected = False  # these folds carry no trading metrics
        else:
            expected = g["value"] >= g["threshold"]
        assert g["passed"] is expected
    for metric in METRICS:
        per_fold = np.array([f["model"][metric] for f in folds])
        assert summary["model"][metric]["mean"] == pytest.approx(per_fold.mean(), abs=1e-6)
        assert summary["model"][metric]["std"] == pytest.approx(per_fold.std(), abs=1e-6)
        for b in BASELINES:
            values = np.array([f["baselines"][b][metric] for f in folds])
            assert summary["baselines"][b][metric]["mean"] == pytest.approx(values.mean(), abs=1e-6)
    # Fold order in the input does not matter.
    assert summary == summarise_stage("quick", folds, gates)


def test_summary_hand_case() -> None:
    good = {"accuracy": 0.7, "recall": 0.5, "rocAuc": 0.66, "f1": 0.55}
    folds = [
        fold(2, {**good, "accuracy": 0.8}, **weak_fold_baselines()),
        fold(1, good, **weak_fold_baselines()),
    ]
    summary = summarise_stage("full", folds, GatesSpec(**MEANS_ONLY))
    assert summary["stage"] == "full"
    assert summary["model"]["accuracy"] == pytest.approx({"mean": 0.75, "std": 0.05})
    assert summary["perFold"][0]["fold"] == 1
    assert summary["perFold"][1]["accuracy"] == 0.8
    assert summary["perFold"][0]["brier"] is None
    assert summary["passed"] is True
    failing = summarise_stage("full", folds, GatesSpec(**MEANS_ONLY | {"min_recall": 0.51}))
    assert failing["passed"] is False
    assert [g["gate"] for g in failing["gates"] if not g["passed"]] == ["minRecall"]


def weak_fold_baselines() -> dict[str, dict[str, float]]:
    return {
        "majority": {"accuracy": 0.5},
        "alwaysPositive": {"f1": 0.4},
        "volatilityTime": {"rocAuc": 0.5},
    }


@pytest.mark.parametrize(
    ("gate", "model_value", "baseline_value", "expected"),
    [
        ("minAccuracy", {"accuracy": 0.5999996}, {}, False),
        # One fold has no spread to bound: never enough evidence, however large the margin.
        ("beatsVolatilityTime", {}, {"rocAuc": 0.2}, False),
    ],
)
def test_gates_judge_unrounded_means(
    gate: str, model_value: dict[str, float], baseline_value: dict[str, float], expected: bool
) -> None:
    model = {"accuracy": 0.7, "recall": 0.5, "rocAuc": 0.7, "f1": 0.6, **model_value}
    baselines = weak_fold_baselines()
    baselines["volatilityTime"] = {"rocAuc": 0.5, **baseline_value}
    summary = summarise_stage("quick", [fold(1, model, **baselines)], GatesSpec())
    assert verdicts(summary["gates"])[gate] is expected
