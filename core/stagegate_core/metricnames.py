"""The names of the out-of-sample metrics, defined once.

metrics.json, stage summaries, the TrainingJob status, the gates and the operator's Prometheus
gauges all use these keys. Kept free of numpy so the operator can import it.
"""

from __future__ import annotations

# In display order.
METRICS: tuple[str, ...] = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "rocAuc",
    "brier",
    "hitRateTp1",
    "positiveRate",
    "predictedPositiveRate",
)
BASELINES: tuple[str, ...] = ("majority", "alwaysPositive", "volatilityTime")

# Trading metrics of the signalled bars (see trading.py), net of costs, in display order.
# R is the risk unit: the distance from entry to the stop-loss.
TOP_PERCENTS: tuple[int, ...] = (1, 5, 10, 20)
TRADING_METRICS: tuple[str, ...] = (
    "trades",
    "signalRate",
    "precision",
    "expectedR",
    "expectedReturnPct",
    "profitFactor",
    "totalR",
    "maxDrawdownR",
    *(f"{name}Top{p}" for p in TOP_PERCENTS for name in ("expectedR", "precision", "trades")),
)


def snake(metric: str) -> str:
    """`rocAuc` -> `roc_auc`, the spelling of log lines and Prometheus labels."""
    return "".join("_" + c.lower() if c.isupper() else c for c in metric)
