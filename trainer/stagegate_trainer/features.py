"""Causal technical features for OHLCV bars: one float32 row per input bar.

Every value at row t is a function of rows 0..t only. Rolling windows count rows, not clock
time: a window that spans an outage simply covers more wall time, and `bars_since_gap` /
`prev_gap_bars` let the model see that. Elementwise work is done in numpy on purpose: pandas
may route large Series arithmetic through numexpr, whose results can differ in the last bit
from numpy's, and the causality tests compare with exact equality.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import numpy as np
import pandas as pd
from pandas.api.typing import Rolling
from stagegate_core.featureset import _FIXED, FEATURE_NAMES, GAP_CAP_BARS, _windowed, group_of

_MINUTES_PER_DAY = 1440
_NS_PER_MINUTE = 60_000_000_000
_NS_PER_DAY = _MINUTES_PER_DAY * _NS_PER_MINUTE


def epoch_ns(timestamps: pd.Series) -> np.ndarray:
    """UTC nanoseconds since the epoch as int64, whatever the unit or tz-awareness."""
    idx = pd.DatetimeIndex(timestamps)
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    return np.asarray(idx.as_unit("ns").asi8, dtype=np.int64)


def _wilder(values: np.ndarray, bars: int) -> np.ndarray:
    # Wilder's smoothing is an EMA with alpha = 1/n; min_periods keeps the warm-up NaN.
    return (
        pd.Series(values)
        .ewm(alpha=1.0 / bars, adjust=False, min_periods=bars)
        .mean()
        .to_numpy(dtype=np.float64)
    )


def _ema(values: np.ndarray, span: int) -> np.ndarray:
    return (
        pd.Series(values)
        .ewm(span=span, adjust=False, min_periods=span)
        .mean()
        .to_numpy(dtype=np.float64)
    )


def _rolling(values: np.ndarray, window: int) -> Rolling:
    return pd.Series(values).rolling(window, min_periods=window)


def _ratio(num: np.ndarray, den: np.ndarray, fill: float) -> np.ndarray:
    """num / den, with `fill` where den is zero (flat markets) so no inf reaches the model."""
    out = np.full(num.shape, np.nan)
    ok = den != 0
    np.divide(num, den, out=out, where=ok)
    # NaN inputs stay NaN; only a real zero denominator takes the fill value.
    out[(den == 0) & ~np.isnan(num)] = fill
    return out


def _lag(values: np.ndarray, k: int) -> np.ndarray:
    out = np.full(values.shape, np.nan)
    out[k:] = values[:-k]
    return out


def _prices(ohlcv: pd.DataFrame) -> tuple[np.ndarray, ...]:
    return tuple(ohlcv[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close"))


def _true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    prev_close = _lag(close, 1)
    tr = np.maximum(high - low, np.maximum(np.abs(high - prev_close), np.abs(low - prev_close)))
    # The first bar has no previous close; its own range is all that is known.
    tr[:1] = high[:1] - low[:1]
    return tr


def atr(ohlcv: pd.DataFrame, bars: int = 14) -> np.ndarray:
    """Wilder average true range in price units; NaN for the first `bars - 1` rows."""
    if bars < 1:
        raise ValueError(f"bars must be >= 1, got {bars}")
    _, high, low, close = _prices(ohlcv)
    return _wilder(_true_range(high, low, close), bars)


def _rsi(close: np.ndarray, bars: int = 14) -> np.ndarray:
    delta = np.diff(close, prepend=np.nan)
    gain = _wilder(np.where(np.isnan(delta), np.nan, np.maximum(delta, 0.0)), bars)
    loss = _wilder(np.where(np.isnan(delta), np.nan, np.maximum(-delta, 0.0)), bars)
    # 100·G/(G+L) equals 100 − 100/(1 + G/L) but has no inf when L = 0; a flat market reads 50.
    return 100.0 * _ratio(gain, gain + loss, 0.5)


def _gap_features(ns: np.ndarray, bar: timedelta | None) -> tuple[np.ndarray, np.ndarray]:
    n = ns.size
    diffs = np.diff(ns).astype(np.float64)
    if bar is None:
        # The bar length is a property of the timeframe, not of prices; the median spacing is
        # robust to outages and off-grid stamps. Callers that know the timeframe should pass it.
        bar_ns = float(np.median(diffs)) if diffs.size else float("nan")
    else:
        bar_ns = bar / timedelta(microseconds=1) * 1000.0
    prev_gap = np.full(n, np.nan)
    prev_gap[1:] = np.maximum(diffs / bar_ns - 1.0, 0.0)
    # Off-grid stamps (e.g. 13 minutes apart) are not outages; only a missing bar counts.
    is_gap = np.zeros(n, dtype=bool)
    is_gap[1:] = diffs > 1.5 * bar_ns
    idx = np.arange(n)
    last_gap = np.maximum.accumulate(np.where(is_gap, idx, -1))
    since = np.minimum(idx - last_gap, GAP_CAP_BARS).astype(np.float64)
    # Before the first gap the distance is unknown (the data may start mid-run) until the cap.
    since[(last_gap < 0) & (idx < GAP_CAP_BARS)] = np.nan
    return prev_gap, since


def build_features(
    ohlcv: pd.DataFrame, *, bar: timedelta | None = None, names: Sequence[str] = FEATURE_NAMES
) -> pd.DataFrame:
    """Causal features, one float32 row per input row (same index), columns `names` in order
    (default: `FEATURE_NAMES`; see `feature_names` for the others a spec can ask for).

    `bar` is the timeframe's bar length, used only for the gap features; when omitted it is
    taken as the median spacing of the timestamps.
    """
    wanted = set(names)
    fixed = {n for columns in _FIXED.values() for n in columns}
    unknown = sorted(n for n in wanted if n not in fixed and _windowed(n) is None)
    if unknown:
        raise ValueError(f"unknown built-in features: {', '.join(unknown)}")
    groups = {group_of(n) for n in wanted}
    open_, high, low, close = _prices(ohlcv)
    volume = ohlcv["volume"].to_numpy(dtype=np.float64)
    ns = epoch_ns(ohlcv["timestamp"])
    log_close = np.log(close)
    ret1 = np.diff(log_close, prepend=np.nan)
    cols: dict[str, np.ndarray] = {}

    def rv(w: int) -> np.ndarray:
        key = f"rv_{w}"
        if key not in cols:
            cols[key] = _rolling(ret1, w).std(ddof=0).to_numpy(dtype=np.float64)
        return cols[key]

    for name in wanted:
        parsed = _windowed(name)
        if parsed is None:
            continue
        prefix, w = parsed
        if prefix == "ret_":
            cols[name] = log_close - _lag(log_close, w)
        elif prefix == "rv_":
            rv(w)
        elif prefix == "volume_z_":
            log_vol = np.log1p(np.maximum(volume, 0.0))
            roll = _rolling(log_vol, w)
            mean = roll.mean().to_numpy(dtype=np.float64)
            std = roll.std(ddof=0).to_numpy(dtype=np.float64)
            cols[name] = _ratio(log_vol - mean, std, 0.0)
        elif prefix == "dist_high_":
            cols[name] = log_close - np.log(_rolling(high, w).max().to_numpy(np.float64))
        elif prefix == "dist_low_":
            cols[name] = log_close - np.log(_rolling(low, w).min().to_numpy(np.float64))
        elif prefix == "ema_dist_":
            cols[name] = log_close - np.log(_ema(close, w))

    if "volatility" in groups:
        cols["rv_ratio_8_96"] = _ratio(rv(8), rv(96), 1.0)
        cols["ret_1_z96"] = _ratio(ret1, rv(96), 0.0)
        cols["atr_14"] = atr(ohlcv, 14) / close
        hl = np.log(high / low)
        cols["hl_range"] = hl
        cols["hl_range_mean_16"] = _rolling(hl, 16).mean().to_numpy(dtype=np.float64)
    if "momentum" in groups:
        cols["rsi_14"] = _rsi(close, 14)
        macd = _ema(close, 12) - _ema(close, 26)
        signal = pd.Series(macd).ewm(span=9, adjust=False, min_periods=9).mean()
        signal_values = signal.to_numpy(np.float64)
        cols["macd"] = macd / close
        cols["macd_signal"] = signal_values / close
        cols["macd_hist"] = (macd - signal_values) / close
        mid = _rolling(close, 20).mean().to_numpy(dtype=np.float64)
        sd = _rolling(close, 20).std(ddof=0).to_numpy(dtype=np.float64)
        # %B = (close − lower) / (upper − lower) with bands mid ± 2 sd.
        cols["bb_pctb_20"] = _ratio(close - (mid - 2.0 * sd), 4.0 * sd, 0.5)
        cols["bb_width_20"] = 4.0 * sd / mid
    if "candle" in groups:
        span = high - low
        cols["body"] = _ratio(close - open_, span, 0.0)
        cols["upper_wick"] = _ratio(high - np.maximum(open_, close), span, 0.0)
        cols["lower_wick"] = _ratio(np.minimum(open_, close) - low, span, 0.0)
    if "calendar" in groups:
        minute_of_day = (ns // _NS_PER_MINUTE) % _MINUTES_PER_DAY
        day_angle = 2.0 * np.pi * minute_of_day.astype(np.float64) / _MINUTES_PER_DAY
        cols["tod_sin"] = np.sin(day_angle)
        cols["tod_cos"] = np.cos(day_angle)
        # 1970-01-01 was a Thursday; +3 makes Monday 0, as pandas' dayofweek.
        day_of_week = (ns // _NS_PER_DAY + 3) % 7
        week_angle = 2.0 * np.pi * day_of_week.astype(np.float64) / 7.0
        cols["dow_sin"] = np.sin(week_angle)
        cols["dow_cos"] = np.cos(week_angle)
    if "gaps" in groups:
        cols["prev_gap_bars"], cols["bars_since_gap"] = _gap_features(ns, bar)

    with np.errstate(over="ignore"):
        matrix = np.column_stack([cols[name] for name in names]).astype(np.float32)
    # A stray inf (e.g. a zero price) would poison LightGBM's binning; unknown is NaN.
    matrix[~np.isfinite(matrix)] = np.nan
    return pd.DataFrame(matrix, index=ohlcv.index, columns=list(names))
