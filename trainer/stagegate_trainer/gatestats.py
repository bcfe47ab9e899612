"""Gates that respect noise: one-sided Student t bounds over folds, in plain Python.

Method: the folds are the sample. For "the model beats a baseline" the per-fold differences
(model - baseline, same fold, same test rows) are the sample, so the comparison is paired and
the fold-to-fold regime swings that move both cancel out. The lower one-sided bound at
confidence c is mean - t_{c, n-1} * sd / sqrt(n) (sd with n - 1 in the denominator). A gate
passes when the bound clears its threshold, fails when the upper bound (mean + t * sd / sqrt(n))
does not reach it, and otherwise reports "not enough evidence" — which does not pass. With
fewer than two folds there is no spread to judge, so there is never enough evidence.

Why t and not a bootstrap: with 3-5 folds a bootstrap over folds has only a handful of
distinct resamples and understates the spread; the t bound is exact for normal fold values,
deterministic, and checkable against scipy. Pure (math only): the operator imports it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

PASS = "pass"
FAIL = "fail"
NO_EVIDENCE = "not enough evidence"
METHOD = "one-sided Student t bound over folds (paired for baselines)"


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
            -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: int) -> float:
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: int) -> float:
    """The Student t quantile, by bisection on the CDF (60 halvings: double precision)."""
    if not 0.0 < p < 1.0 or df < 1:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df >= 1, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        mid = (low + high) / 2.0
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-13 * max(1.0, high):
            break
    return (low + high) / 2.0


def bounds(values: Sequence[float], confidence: float) -> dict[str, Any]:
    """Mean and one-sided (lower, upper) t bounds of the values; bounds None for n < 2."""
    n = len(values)
    if n == 0:
        return {"mean": None, "lower": None, "upper": None, "n": 0}
    mean = math.fsum(values) / n
    if n < 2:
        return {"mean": mean, "lower": None, "upper": None, "n": n}
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "lower": mean - half, "upper": mean + half, "n": n}


def verdict(stats: dict[str, Any], threshold: float, strict: bool) -> str:
    """pass when the lower bound clears the threshold, fail when the upper bound cannot."""
    if stats["n"] == 0:
        return FAIL
    if stats["lower"] is None:
        return NO_EVIDENCE
    clears = stats["lower"] > threshold if strict else stats["lower"] >= threshold
    if clears:
        return PASS
    misses = stats["upper"] <= threshold if strict else stats["upper"] < threshold
    return FAIL if misses else NO_EVIDENCE


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _pairs(
    folds: Sequence[dict[str, Any]], pick_model: Any, pick_baseline: Any
) -> tuple[list[float], list[float]]:
    model, base = [], []
    for fold in folds:
        m, b = pick_model(fold), pick_baseline(fold)
        if _present(m) and _present(b):
            model.append(float(m))
            base.append(float(b))
    return model, base


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _stat_gate(
    name: str, metric: str, sample: list[float], threshold: float, confidence: float, strict: bool
) -> dict[str, Any]:
    stats = bounds(sample, confidence)
    result = verdict(stats, threshold, strict)
    return {
        "gate": name,
        "metric": metric,
        "value": stats["mean"],
        "threshold": threshold,
        "passed": result == PASS,
        "verdict": result,
        "bound": stats["lower"],
        "upperBound": stats["upper"],
        "folds": stats["n"],
        "confidence": confidence,
    }


def paired_gate(
    name: str, metric: str, model: list[float], base: list[float], confidence: float
) -> dict[str, Any]:
    """The model beats the baseline when the lower bound of (model - baseline) is above 0."""
    gate = _stat_gate(
        name, metric, [m - b for m, b in zip(model, base, strict=True)], 0.0, confidence, True
    )
    # Shown as "model mean > baseline mean"; the verdict is the paired bound's.
    gate["difference"] = gate["value"]
    gate["value"], gate["threshold"] = _mean(model), _mean(base)
    if not model:  # no fold has both values: nothing was beaten
        gate.update(verdict=FAIL, passed=False)
    return gate


# (gate, metric, baseline, block). Majority: does the model classify better than never (or
# always) signalling; always positive: are its trades better than trading every bar (net R,
# the trading reading of "better than always positive" — F1 would reward signalling almost
# always); volatility/time: does it rank better, and trade better, than regimes and the clock.
# A baseline that makes no trade in a fold earns 0 R there.
BASELINE_GATES: tuple[tuple[str, str, str, str], ...] = (
    ("beatsMajority", "accuracy", "majority", "model"),
    ("beatsAlwaysPositive", "expectedR", "alwaysPositive", "trading"),
    ("beatsVolatilityTime", "rocAuc", "volatilityTime", "model"),
    ("beatsVolatilityTimeR", "expectedR", "volatilityTime", "trading"),
)


def baseline_gates(folds: Sequence[dict[str, Any]], confidence: float) -> list[dict[str, Any]]:
    out = []
    for name, metric, baseline, block in BASELINE_GATES:
        if block == "model":
            model, base = _pairs(
                folds,
                lambda f, m=metric: f["model"].get(m),
                lambda f, m=metric, b=baseline: f["baselines"][b].get(m),
            )
        else:
            model, base = _pairs(
                folds,
                lambda f, m=metric: (f.get("trading") or {}).get("model", {}).get(m),
                lambda f, m=metric, b=baseline: _baseline_r(f, b, m),
            )
        out.append(paired_gate(name, metric, model, base, confidence))
    return out


def _baseline_r(fold: dict[str, Any], baseline: str, metric: str) -> float | None:
    block = ((fold.get("trading") or {}).get("baselines") or {}).get(baseline)
    if block is None:
        return None
    return 0.0 if block.get("trades") == 0 else block.get(metric)


def trading_gates(
    folds: Sequence[dict[str, Any]],
    *,
    min_expected_return: float | None,
    min_trades: int | None,
    confidence: float,
) -> list[dict[str, Any]]:
    out = []
    if min_expected_return is not None:
        per_fold = [
            float(r)
            for f in folds
            if _present(r := (f.get("trading") or {}).get("model", {}).get("expectedR"))
        ]
        out.append(
            _stat_gate(
                "minExpectedReturn", "expectedR", per_fold, min_expected_return, confidence, False
            )
        )
    if min_trades is not None:
        total = total_trades(folds)
        ok = total is not None and total >= min_trades
        out.append(
            {
                "gate": "minTrades",
                "metric": "trades",
                "value": total,
                "threshold": min_trades,
                "passed": ok,
                "verdict": PASS if ok else FAIL,
            }
        )
    return out


def total_trades(folds: Sequence[dict[str, Any]]) -> int | None:
    counts = [(f.get("trading") or {}).get("model", {}).get("trades") for f in folds]
    present = [int(c) for c in counts if c is not None]
    return sum(present) if present else None


def decision(
    folds: Sequence[dict[str, Any]], gates: Sequence[dict[str, Any]], confidence: float
) -> dict[str, Any]:
    """The numbers a person approves on: net expected R with its bounds, trades, verdicts."""
    per_fold = [
        float(r)
        for f in folds
        if _present(r := (f.get("trading") or {}).get("model", {}).get("expectedR"))
    ]
    stats = bounds(per_fold, confidence)
    return {
        "expectedR": stats["mean"],
        "expectedRLowerBound": stats["lower"],
        "expectedRUpperBound": stats["upper"],
        "foldsWithTrades": stats["n"],
        "trades": total_trades(folds),
        "confidence": confidence,
        "method": METHOD,
        "verdicts": {g["gate"]: g.get("verdict", PASS if g["passed"] else FAIL) for g in gates},
    }
