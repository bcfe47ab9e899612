"""A stage's summary: mean ± std of each metric over its folds, the baselines, the gates.

Pure (plain floats and dicts), so the operator can build status from stored fold metrics
without the numeric stack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from stagegate_core.metricnames import BASELINES, METRICS, TRADING_METRICS
from stagegate_core.specparts import GatesSpec

from .gatestats import baseline_gates, decision, trading_gates


def _mean_std(values: Sequence[float | None]) -> dict[str, float | None]:
    present = [v for v in values if v is not None and not math.isnan(v)]
    if not present:
        return {"mean": None, "std": None}
    mean = math.fsum(present) / len(present)
    # Population std over folds: the folds are the whole population being described.
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in present) / len(present))
    # Unrounded: the gates compare these values, and rounding could flip a verdict.
    return {"mean": mean, "std": std}


def aggregate(
    block: str, folds: Sequence[dict[str, Any]], baseline: str | None = None
) -> dict[str, Any]:
    def pick(fold: dict[str, Any]) -> dict[str, Any]:
        return fold["baselines"][baseline] if baseline else fold[block]

    return {m: _mean_std([pick(f).get(m) for f in folds]) for m in METRICS}


def aggregate_trading(
    folds: Sequence[dict[str, Any]], baseline: str | None = None
) -> dict[str, Any]:
    def pick(fold: dict[str, Any]) -> dict[str, Any]:
        trading = fold.get("trading") or {}
        block = (trading.get("baselines") or {}).get(baseline) if baseline else trading.get("model")
        return block or {}

    return {m: _mean_std([pick(f).get(m) for f in folds]) for m in TRADING_METRICS}


def evaluate_gates(
    gates: GatesSpec,
    model: dict[str, Any],
    baselines: dict[str, Any],
    folds: Sequence[dict[str, Any]] = (),
) -> list[dict[str, Any]]:
    """Each gate with its value, threshold and verdict; the stage passes when all pass.

    The min* classification gates judge the stage means. The baseline gates are paired per
    fold and judged by a confidence bound (gatestats.py), so they need `folds`; so do the
    trading gates.
    """

    def mean(block: dict[str, Any], metric: str) -> float | None:
        return block[metric]["mean"]

    checks: list[tuple[str, str, float | None, float | None]] = [
        ("minAccuracy", "accuracy", mean(model, "accuracy"), gates.min_accuracy),
        ("minRecall", "recall", mean(model, "recall"), gates.min_recall),
        ("minRocAuc", "rocAuc", mean(model, "rocAuc"), gates.min_roc_auc),
        ("minF1", "f1", mean(model, "f1"), gates.min_f1),
    ]
    results = []
    for name, metric, value, threshold in checks:
        passed = value is not None and threshold is not None and value >= threshold
        results.append(
            {
                "gate": name,
                "metric": metric,
                "value": value,
                "threshold": threshold,
                "passed": passed,
                "verdict": "pass" if passed else "fail",
            }
        )
    if gates.must_beat_baselines:
        results += baseline_gates(folds, gates.confidence)
    results += trading_gates(
        folds,
        min_expected_return=gates.min_expected_return,
        min_trades=gates.min_trades,
        confidence=gates.confidence,
    )
    return results


def summarise_stage(
    stage: str, folds: Sequence[dict[str, Any]], gates: GatesSpec
) -> dict[str, Any]:
    ordered = sorted(folds, key=lambda f: f["fold"])
    model = aggregate("model", ordered)
    baselines = {b: aggregate("model", ordered, baseline=b) for b in BASELINES}
    gate_results = evaluate_gates(gates, model, baselines, ordered)
    return {
        "stage": stage,
        "folds": len(ordered),
        "model": model,
        "baselines": baselines,
        "gates": gate_results,
        "passed": all(g["passed"] for g in gate_results),
        "trading": {
            "model": aggregate_trading(ordered),
            "baselines": {b: aggregate_trading(ordered, baseline=b) for b in BASELINES},
        },
        "decision": decision(ordered, gate_results, gates.confidence),
        "perFold": [
            {"fold": f["fold"], **{m: f["model"].get(m) for m in METRICS}} for f in ordered
        ],
    }
