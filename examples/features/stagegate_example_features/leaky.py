"""Two look-ahead mistakes, kept as examples of what Stagegate refuses to train on."""

from __future__ import annotations

import numpy as np
import pandas as pd


def next_return(ohlcv: pd.DataFrame) -> pd.DataFrame:
    """WRONG: shift(-1) reads the next bar's close, which is not known at bar t."""
    ret = np.log(ohlcv["close"]).diff().shift(-1)
    return pd.DataFrame({"value": ret}, index=ohlcv.index)


def centred_mean(ohlcv: pd.DataFrame, window: int = 9) -> pd.DataFrame:
    """WRONG: a centred window averages window//2 bars of the future into bar t."""
    mean = ohlcv["close"].rolling(window, center=True, min_periods=window).mean()
    return pd.DataFrame({"value": mean / ohlcv["close"]}, index=ohlcv.index)
