"""Triple-barrier labels for a long entry: did the take-profit come before the stop-loss?

The decision is taken at the close of bar t and filled at the open of bar t+1; bars
t+1 … t+H decide the outcome. A label that cannot be known is NaN, never 0: callers drop it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

import numpy as np
import pandas as pd

from stagegate_trainer.features import atr, epoch_ns


def _complete_horizon(ns: np.ndarray, horizon_bars: int, bar: timedelta) -> np.ndarray:
    """True where bars t+1 … t+H all exist, each exactly one bar after the previous."""
    n = ns.size
    bar_ns = bar // timedelta(microseconds=1) * 1000
    # Cumulative count of broken steps (a gap, or an off-grid stamp) lets every window be
    # checked with one subtraction instead of H comparisons.
    broken = np.zeros(n, dtype=np.int64)
    broken[1:] = np.cumsum(np.diff(ns) != bar_ns)
    ok = np.zeros(n, dtype=bool)
    if n > horizon_bars:
        ok[: n - horizon_bars] = broken[horizon_bars:] == broken[: n - horizon_bars]
    return ok


def barrier_labels(
    ohlcv: pd.DataFrame,
    *,
    horizon_bars: int,
    take_profit: float,
    stop_loss: float,
    barriers: Literal["volatility", "fixed"] = "volatility",
    atr_bars: int = 14,
    bar: timedelta,
) -> np.ndarray:
    """1.0 if the take-profit is hit strictly before the stop-loss within H bars, else 0.0.

    volatility: barriers at entry ± multiple × ATR_t (ATR of the decision bar, price units).
    fixed: barriers at entry × (1 ± fraction).
    A bar whose high reaches the take-profit and whose low reaches the stop-loss counts as a
    stop-loss: the order inside a bar is unknown, so the conservative reading wins.
    NaN where the horizon runs past the data, a bar inside it is missing or off-grid, or
    (volatility barriers) ATR_t is not yet defined.
    """
    if horizon_bars < 1:
        raise ValueError(f"horizon_bars must be >= 1, got {horizon_bars}")
    if not (take_profit > 0 and stop_loss > 0):
        raise ValueError("take_profit and stop_loss must be positive")
    if barriers not in ("volatility", "fixed"):
        raise ValueError(f"barriers must be 'volatility' or 'fixed', got {barriers!r}")
    if bar <= timedelta(0):
        raise ValueError("bar must be a positive duration")

    n = len(ohlcv)
    open_ = ohlcv["open"].to_numpy(dtype=np.float64)
    high = ohlcv["high"].to_numpy(dtype=np.float64)
    low = ohlcv["low"].to_numpy(dtype=np.float64)

    entry = np.full(n, np.nan)
    entry[:-1] = open_[1:]
    if barriers == "volatility":
        width = atr(ohlcv, atr_bars)
        tp_price = entry + take_profit * width
        sl_price = entry - stop_loss * width
    else:
        tp_price = entry * (1.0 + take_profit)
        sl_price = entry * (1.0 - stop_loss)

    label = np.zeros(n)
    undecided = np.ones(n, dtype=bool)
    # H passes of array comparisons: bar t+k is compared for every t at once. Rows whose
    # horizon is incomplete are masked at the end, so the padding values never matter.
    for k in range(1, horizon_bars + 1):
        if k >= n:
            break
        sl_hit = np.zeros(n, dtype=bool)
        tp_hit = np.zeros(n, dtype=bool)
        sl_hit[: n - k] = low[k:] <= sl_price[: n - k]
        tp_hit[: n - k] = high[k:] >= tp_price[: n - k]
        label[undecided & tp_hit & ~sl_hit] = 1.0
        undecided &= ~(sl_hit | tp_hit)

    known = _complete_horizon(epoch_ns(ohlcv["timestamp"]), horizon_bars, bar)
    known &= np.isfinite(tp_price) & np.isfinite(sl_price)
    label[~known] = np.nan
    return label


def horizon_labels(
    ohlcv: pd.DataFrame, *, horizon_bars: int, dead_band: float, bar: timedelta
) -> np.ndarray:
    """1.0 when the close H bars after the decision is above the entry (the next bar's open)
    by more than `dead_band` (a fraction), 0.0 when below it by more; NaN inside the band, and
    where the horizon runs past the data or a bar inside it is missing or off-grid (the same
    rows as the barrier label's, so the same purge covers both)."""
    if horizon_bars < 1:
        raise ValueError(f"horizon_bars must be >= 1, got {horizon_bars}")
    if not 0 <= dead_band < 1:
        raise ValueError(f"dead_band must be in [0, 1), got {dead_band}")
    n = len(ohlcv)
    open_ = ohlcv["open"].to_numpy(dtype=np.float64)
    close = ohlcv["close"].to_numpy(dtype=np.float64)
    entry = np.full(n, np.nan)
    entry[:-1] = open_[1:]
    later = np.full(n, np.nan)
    if n > horizon_bars:
        later[: n - horizon_bars] = close[horizon_bars:]
    change = later / entry - 1.0
    label = np.full(n, np.nan)
    label[change > dead_band] = 1.0
    label[change < -dead_band] = 0.0
    label[~_complete_horizon(epoch_ns(ohlcv["timestamp"]), horizon_bars, bar)] = np.nan
    return label
