"""What each step reports back to the operator through its pod's termination message.

Kubernetes keeps at most 4 KiB of a container's termination message, so these are compact
extracts of the artifacts (the artifacts themselves stay in the store). Pure and light: the
operator imports this module to read them back.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .metricnames import BASELINES, METRICS

RESULT_FILE_ENV = "STAGEGATE_RESULT_FILE"
LIMIT = 4096


def prepare_result(plan: dict[str, Any]) -> dict[str, Any]:
    stages = {}
    for stage, entry in plan["stages"].items():
        if "error" in entry:
            stages[stage] = {"error": entry["error"][:300]}
            continue
        stages[stage] = {
            k: entry[k] for k in ("foldCount", "dataStart", "dataEnd", "purgeBars", "trainWindow")
        }
    return {
        "step": "prepare",
        "bars": plan["bars"],
        "labelledRows": plan["labelledRows"],
        "dataHash": plan.get("dataHash"),
        "dataSummary": (plan.get("dataSummary") or "")[:400],
        "stages": stages,
    }


def fold_result(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "step": "fold",
        "stage": metrics["stage"],
        "fold": metrics["fold"],
        "folds": metrics["folds"],
        "train": metrics["train"],
        "test": metrics["test"],
        "model": {m: metrics["model"].get(m) for m in METRICS},
        "bestIteration": metrics.get("bestIteration"),
        "baselines": {
            "volatilityTime": {"rocAuc": metrics["baselines"]["volatilityTime"]["rocAuc"]},
            "alwaysPositive": {"f1": metrics["baselines"]["alwaysPositive"]["f1"]},
        },
    }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def summary_result(summary: dict[str, Any]) -> dict[str, Any]:
    def block(stats: dict[str, Any]) -> dict[str, Any]:
        return {m: {"mean": _r(stats[m]["mean"]), "std": _r(stats[m]["std"])} for m in METRICS}

    return {
        "step": "summary",
        "stage": summary["stage"],
        "folds": summary["folds"],
        "passed": summary["passed"],
        "model": block(summary["model"]),
        "baselines": {b: block(summary["baselines"][b]) for b in BASELINES},
        "gates": [
            {
                k: _r(v) if isinstance(v, float) else v
                for k, v in g.items()
                # The bound's details live in summary.json; the message keeps the verdict.
                if k not in ("upperBound", "confidence", "difference")
            }
            for g in summary["gates"]
        ],
        **({"decision": _decision(summary["decision"])} if summary.get("decision") else {}),
    }


def _decision(decision: dict[str, Any]) -> dict[str, Any]:
    return {k: _r(v) if isinstance(v, float) else v for k, v in decision.items() if k != "method"}


def encode(result: dict[str, Any]) -> str:
    text = json.dumps(result, separators=(",", ":"), sort_keys=True)
    if len(text.encode()) > LIMIT:
        raise ValueError(f"{result.get('step')} result is {len(text)} bytes, over {LIMIT}")
    return text


def write_result(result: dict[str, Any]) -> None:
    """Write the result where the pod's termination message is read, when running in one."""
    path = os.environ.get(RESULT_FILE_ENV)
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(encode(result))


def decode(message: str | None) -> dict[str, Any] | None:
    """A step's result from a termination message; None when it holds none (e.g. a crash log)."""
    if not message:
        return None
    try:
        value = json.loads(message)
    except ValueError:
        return None
    return value if isinstance(value, dict) and "step" in value else None
