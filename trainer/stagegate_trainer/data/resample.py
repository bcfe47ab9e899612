"""Resample canonical OHLCV bars to a coarser timeframe, emitting complete bars only.

Target bars are aligned to UTC epoch multiples of the target length (H4 bars open at 00, 04,
08 ... UTC; D1 bars at 00:00 UTC). A target bar is emitted only when every source bar inside it
is present: a partial bar (an outage, or the still-open last bar) would carry a wrong high, low
or volume, so it is dropped and counted instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from stagegate_core import timeframes

from stagegate_trainer.data.errors import DataError
from stagegate_trainer.data.validate import bar_ns, canonical_frame


def resample_ohlcv(
    frame: pd.DataFrame, from_timeframe: str, to_timeframe: str
) -> tuple[pd.DataFrame, int]:
    """Return (bars at `to_timeframe`, number of incomplete target bars dropped).

    `frame` must be canonical (as returned by `validate_ohlcv`): sorted, unique, on the grid.
    """
    try:
        src, dst = timeframes.canonical(from_timeframe), timeframes.canonical(to_timeframe)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    src_min, dst_min = timeframes.minutes(src), timeframes.minutes(dst)
    if dst_min < src_min:
        raise DataError(f"cannot resample {src} to the finer timeframe {dst}")
    if dst_min % src_min:
        raise DataError(f"cannot resample {src} to {dst}: {dst_min} min is not a multiple")
    if dst == src:
        return frame.reset_index(drop=True), 0
    if len(frame) == 0:
        return frame.reset_index(drop=True), 0

    per_bar = dst_min // src_min
    ts = np.asarray(pd.DatetimeIndex(frame["timestamp"]).as_unit("ns").asi8, dtype=np.int64)
    step = bar_ns(dst)
    bucket = ts // step  # floor division: correct for pre-1970 stamps too
    # Rows are sorted, so each bucket is one contiguous run; reduceat works on run starts.
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    counts = np.diff(np.r_[starts, len(ts)])
    complete = counts == per_bar

    o = frame["open"].to_numpy(np.float64)
    h = frame["high"].to_numpy(np.float64)
    lo = frame["low"].to_numpy(np.float64)
    c = frame["close"].to_numpy(np.float64)
    v = frame["volume"].to_numpy(np.float64)
    ends = np.r_[starts[1:], len(ts)] - 1
    values = {
        "open": o[starts],
        "high": np.maximum.reduceat(h, starts),
        "low": np.minimum.reduceat(lo, starts),
        "close": c[ends],
        "volume": np.add.reduceat(v, starts),
    }
    out_ts = bucket[starts] * step
    keep = complete
    out = canonical_frame(out_ts[keep], {k: arr[keep] for k, arr in values.items()})
    return out, int((~keep).sum())
