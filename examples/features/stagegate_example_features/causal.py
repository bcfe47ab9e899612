"""Causal features: the value at bar t uses bars 0..t only (trailing windows, no shift(-k))."""

from __future__ import annotations

import numpy as np
import pandas as pd


def return_zscore(ohlcv: pd.DataFrame, window: int = 96) -> pd.DataFrame:
    """The last bar's log return in units of its trailing `window`-bar standard deviation."""
    ret = np.log(ohlcv["close"]).diff()
    sd = ret.rolling(window, min_periods=window).std(ddof=0)
    return pd.DataFrame({"value": ret / sd.replace(0.0, np.nan)}, index=ohlcv.index)


def range_position(ohlcv: pd.DataFrame, window: int = 48) -> pd.DataFrame:
    """Where the close sits in the trailing `window`-bar high-low range (0 = low, 1 = high),
    and how wide that range is relative to the close."""
    high = ohlcv["high"].rolling(window, min_periods=window).max()
    low = ohlcv["low"].rolling(window, min_periods=window).min()
    span = (high - low).replace(0.0, np.nan)
    return pd.DataFrame(
        {"position": (ohlcv["close"] - low) / span, "width": span / ohlcv["close"]},
        index=ohlcv.index,
    )
