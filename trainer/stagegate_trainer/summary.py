"""A stage's summary: mean ± std of each metric over its folds, the baselines, the gates.

Pure (plain floats and dicts), so the operator can build status from stored fold metrics
without the numeric stack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .metricnames import BASELINES, METRICS
from .spec import GatesSpec


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


def evaluate_gates(
    gates: GatesSpec, model: dict[str, Any], baselines: dict[str, Any]
) -> list[dict[str, Any]]:
    """Each gate with its value, threshold and verdict; the stage passes when all pass."""

    def mean(block: dict[str, Any], metric: str) -> float | None:
        return block[metric]["mean"]

    checks: list[tuple[str, str, float | None, float | None]] = [
        ("minAccuracy", "accuracy", mean(model, "accuracy"), gates.min_accuracy),
        ("minRecall", "recall", mean(model, "recall"), gates.min_recall),
        ("minRocAuc", "rocAuc", mean(model, "rocAuc"), gates.min_roc_auc),
        ("minF1", "f1", mean(model, "f1"), gates.min_f1),
    ]
    if gates.must_beat_baselines:
        checks += [
            (
                "beatsMajority",
                "accuracy",
                mean(model, "accuracy"),
                mean(baselines["majority"], "accuracy"),
            ),
            (
                "beatsAlwaysPositive",
                "f1",
                mean(model, "f1"),
                mean(baselines["alwaysPositive"], "f1"),
            ),
            (
                "beatsVolatilityTime",
                "rocAuc",
                mean(model, "rocAuc"),
                mean(baselines["volatilityTime"], "rocAuc"),
            ),
        ]
    results = []
    for name, metric, value, threshold in checks:
        if name.startswith("beats"):
            # A baseline is beaten only strictly: a tie means the model adds nothing.
            passed = value is not None and threshold is not None and value > threshold
        else:
            passed = value is not None and threshold is not None and value >= threshold
        results.append(
            {
                "gate": name,
                "metric": metric,
                "value": value,
                "threshold": threshold,
                "passed": passed,
            }
        )
    return results


def summarise_stage(
    stage: str, folds: Sequence[dict[str, Any]], gates: GatesSpec
) -> dict[str, Any]:
    ordered = sorted(folds, key=lambda f: f["fold"])
    model = aggregate("model", ordered)
    baselines = {b: aggregate("model", ordered, baseline=b) for b in BASELINES}
    gate_results = evaluate_gates(gates, model, baselines)
    return {
        "stage": stage,
        "folds": len(ordered),
        "model": model,
        "baselines": baselines,
        "gates": gate_results,
        "passed": all(g["passed"] for g in gate_results),
        "perFold": [
            {"fold": f["fold"], **{m: f["model"].get(m) for m in METRICS}} for f in ordered
        ],
    }
