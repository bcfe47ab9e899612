"""What the signals would have earned: each signalled bar as a barrier trade, net of costs.

The trade of bar t is the label's trade: a long entry at the open of bar t+1, a take-profit and
a stop-loss at the label's barriers, and an exit at the close of bar t+H when neither is hit.

* Outcome in R, where 1 R is the distance from entry to the stop-loss: +tp/sl when the
  take-profit comes first, -1 when the stop-loss does, the mark-to-market (close_{t+H} - entry)
  / risk otherwise. A bar that reaches both barriers counts as a stop, as the label does. A bar
  that opens below the stop fills at that open (worse than -1 R): a stop is a market order.
  A bar that opens above the take-profit fills at the take-profit (a limit order would do
  better; the conservative reading wins).
* Costs: `feeBps` and `slippageBps` are charged on each side, both on the entry notional, so a
  round trip costs 2 × (fee + slippage) of the entry price, i.e. that divided by the risk
  fraction in R.
* Overlap: every signalled bar is its own trade of 1 R risk, also while earlier trades are
  still open (as many as H at once). Expected R and precision are per-trade averages; the
  equity curve adds each trade's net R at its entry bar, in time order.
* A test row is a trade candidate only when its whole horizon (bars t+1 … t+H) lies inside the
  test period: no trade's outcome needs bars after it. The rule looks at the horizon, not at
  the outcome, so it selects nothing by result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from stagegate_core.metricnames import TOP_PERCENTS

from .features import atr
from .labels import _complete_horizon

Floats = NDArray[np.float64]

# Extra columns of the modelling table (dataset.py); the model never sees them.
OUTCOME_R = "outcomeR"  # gross outcome in R
RISK_FRACTION = "riskFraction"  # (entry - stop) / entry


@dataclass(frozen=True)
class TradingContext:
    """What a fold needs to price its trades: the cost model and the label's horizon."""

    fee_bps: float
    slippage_bps: float
    horizon_bars: int
    bar_ns: int

    @property
    def cost_fraction(self) -> float:
        """Round-trip cost as a fraction of the entry price."""
        return 2.0 * (self.fee_bps + self.slippage_bps) / 10_000.0


def trade_outcomes(
    ohlcv: pd.DataFrame,
    *,
    horizon_bars: int,
    take_profit: float,
    stop_loss: float,
    barriers: Literal["volatility", "fixed"],
    atr_bars: int,
    bar_ns: int,
) -> tuple[Floats, Floats]:
    """(gross outcome in R, risk fraction) of the trade of every bar; NaN where unknowable.

    Vectorised over bars like the labels: H passes, each deciding the still-open trades that
    hit a barrier at bar t+k. NaN exactly where the label is NaN.
    """
    from datetime import timedelta

    n = len(ohlcv)
    open_ = ohlcv["open"].to_numpy(dtype=np.float64)
    high = ohlcv["high"].to_numpy(dtype=np.float64)
    low = ohlcv["low"].to_numpy(dtype=np.float64)
    close = ohlcv["close"].to_numpy(dtype=np.float64)
    entry = np.full(n, np.nan)
    entry[:-1] = open_[1:]
    if barriers == "volatility":
        width = atr(ohlcv, atr_bars)
        tp_price, sl_price = entry + take_profit * width, entry - stop_loss * width
    else:
        tp_price, sl_price = entry * (1.0 + take_profit), entry * (1.0 - stop_loss)
    risk = entry - sl_price

    exit_price = np.full(n, np.nan)
    open_trade = np.ones(n, dtype=bool)
    for k in range(1, horizon_bars + 1):
        if k >= n:
            break
        rows = slice(0, n - k)
        sl_hit = np.zeros(n, dtype=bool)
        tp_hit = np.zeros(n, dtype=bool)
        sl_hit[rows] = low[k:] <= sl_price[rows]
        tp_hit[rows] = high[k:] >= tp_price[rows]
        bar_open = np.full(n, np.nan)
        bar_open[rows] = open_[k:]
        stopped = open_trade & sl_hit
        # A stop is filled at the stop, or at the bar's open when the bar opens through it.
        exit_price[stopped] = np.minimum(sl_price[stopped], bar_open[stopped])
        won = open_trade & tp_hit & ~sl_hit
        exit_price[won] = tp_price[won]
        open_trade &= ~(sl_hit | tp_hit)
        if k == horizon_bars:
            at_close = np.full(n, np.nan)
            at_close[rows] = close[k:]
            exit_price[open_trade] = at_close[open_trade]

    known = _complete_horizon(
        ohlcv["timestamp"].to_numpy(dtype="datetime64[ns]").astype(np.int64),
        horizon_bars,
        timedelta(microseconds=bar_ns // 1000),
    )
    known &= np.isfinite(tp_price) & np.isfinite(sl_price) & (risk > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        outcome = (exit_price - entry) / risk
        fraction = risk / entry
    outcome[~known] = np.nan
    fraction[~known] = np.nan
    return outcome, fraction


def net_r(outcome_r: Floats, risk_fraction: Floats, cost_fraction: float) -> Floats:
    """Outcome in R after costs: a round trip costs cost_fraction of entry, i.e. that / risk."""
    return np.asarray(outcome_r, np.float64) - cost_fraction / np.asarray(risk_fraction, np.float64)


def eligible_rows(
    ts_ns: NDArray[np.int64], test_end_ns: int, context: TradingContext
) -> NDArray[np.bool_]:
    """Test rows whose whole horizon ends inside the test period (test_end is exclusive)."""
    return np.asarray(ts_ns, np.int64) + context.horizon_bars * context.bar_ns < test_end_ns


def _profit_factor(r: Floats) -> float | None:
    gains = float(r[r > 0].sum())
    losses = float(-r[r < 0].sum())
    if losses == 0.0:
        return None  # undefined without a losing trade (infinite or 0/0)
    return gains / losses


def max_drawdown(equity: Floats) -> float:
    """Largest fall of the cumulative R from its running peak; the curve starts at 0."""
    if equity.size == 0:
        return 0.0
    peak = np.maximum.accumulate(np.concatenate(([0.0], equity)))
    return float(np.max(peak[1:] - equity))


def _top(score: Floats, label: Floats, r: Floats, percent: int) -> dict[str, float | None]:
    """The `percent` % highest-scored candidates (ties to the earlier bar) as trades."""
    count = math.ceil(score.size * percent / 100.0)
    if count == 0:
        return {"expectedR": None, "precision": None, "trades": 0}
    # Stable sort of -score: among equal scores the earlier bar ranks first, deterministically.
    chosen = np.argsort(-score, kind="stable")[:count]
    return {
        "expectedR": float(r[chosen].mean()),
        "precision": float(label[chosen].mean()),
        "trades": int(count),
    }


def trading_metrics(
    *,
    signal: NDArray[np.bool_],
    label: Floats,
    r_net: Floats,
    risk_fraction: Floats,
    score: Floats | None = None,
) -> dict[str, Any]:
    """Trading metrics over trade candidates (already filtered to eligible rows, time order).

    `score` ranks the candidates for the top-percent metrics; None (a constant predictor)
    leaves them out.
    """
    signal = np.asarray(signal, dtype=bool)
    r = np.asarray(r_net, np.float64)[signal]
    trades = int(signal.sum())
    # Percent return of a trade: its R times its risk fraction, costs included through R.
    pct = r * np.asarray(risk_fraction, np.float64)[signal] * 100.0
    equity = np.cumsum(r)
    out: dict[str, Any] = {
        "trades": trades,
        "signalRate": trades / signal.size if signal.size else 0.0,
        "precision": float(np.asarray(label)[signal].mean()) if trades else None,
        "expectedR": float(r.mean()) if trades else None,
        "expectedReturnPct": float(pct.mean()) if trades else None,
        "profitFactor": _profit_factor(r) if trades else None,
        "totalR": float(r.sum()),
        "maxDrawdownR": max_drawdown(equity),
    }
    for percent in TOP_PERCENTS:
        if score is None:
            top: dict[str, float | None] = {"expectedR": None, "precision": None, "trades": None}
        else:
            top = _top(
                np.asarray(score, np.float64),
                np.asarray(label, np.float64),
                np.asarray(r_net, np.float64),
                percent,
            )
        for name, value in top.items():
            out[f"{name}Top{percent}"] = value
    return out


def rounded(metrics: dict[str, Any]) -> dict[str, Any]:
    """Six decimals, as every metrics.json value: the same inputs give the same bytes."""
    return {
        k: (v if v is None or isinstance(v, int) else round(float(v), 6))
        for k, v in metrics.items()
    }


def fold_trading(
    test: pd.DataFrame,
    *,
    test_end_ns: int,
    context: TradingContext,
    label: Floats,
    signals: dict[str, NDArray[np.bool_]],
    scores: dict[str, Floats | None],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A fold's trading metrics per predictor, and its per-row columns for predictions.parquet.

    `signals` and `scores` are keyed by predictor ("model" and the baselines), over all test
    rows; only the eligible ones become trades.
    """
    ts = test["timestamp"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    eligible = eligible_rows(ts, test_end_ns, context)
    fraction = test[RISK_FRACTION].to_numpy(dtype=np.float64)
    r = net_r(test[OUTCOME_R].to_numpy(dtype=np.float64), fraction, context.cost_fraction)
    blocks: dict[str, Any] = {}
    for name, signal in signals.items():
        score = scores.get(name)
        blocks[name] = rounded(
            trading_metrics(
                signal=np.asarray(signal, bool)[eligible],
                label=np.asarray(label, np.float64)[eligible],
                r_net=r[eligible],
                risk_fraction=fraction[eligible],
                score=None if score is None else np.asarray(score, np.float64)[eligible],
            )
        )
    model = blocks.pop("model")
    summary = {
        "model": model,
        "baselines": blocks,
        "candidates": int(eligible.sum()),
        "costBps": round(context.cost_fraction * 10_000, 6),
    }
    columns = {"netR": r, "tradable": eligible.astype(np.int8)}
    return summary, columns


def context_for(spec: Any) -> TradingContext:
    """The TradingContext of a TrainingJobSpec (its costs, label horizon and bar length)."""
    from stagegate_core import timeframes

    return TradingContext(
        fee_bps=spec.costs.fee_bps,
        slippage_bps=spec.costs.slippage_bps,
        horizon_bars=spec.label.horizon_bars,
        bar_ns=timeframes.bar_ns(spec.canonical_timeframe),
    )
