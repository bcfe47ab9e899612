"""The look-ahead guard: every feature, built in or custom, proven causal on the run's own data
before any fold trains.

A causal feature's value at row t depends on rows 0..t only. So for a few random cut points t
inside a window of the data, the features are computed three ways: on the whole window, on the
window cut after t, and on the window with every bar after t replaced by a different market
(other prices, volumes, spacing). Any value at or before t that differs between them is
look-ahead, reported with the feature's name and the first differing row. Then the quality
checks: after the warm-up no feature may be constant, all NaN, or NaN on more than
`max_nan_fraction` of the rows.

Pure (pandas and numpy only); `prepare` calls `guard` and fails the run with its message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

Compute = Callable[[pd.DataFrame], pd.DataFrame]
# Values equal up to this relative difference are the same: a library may take another code
# path (numexpr, a blocked sum) for another length of input and differ in the last bits. A
# look-ahead changes values by far more.
RTOL, ATOL = 1e-9, 1e-12


class FeatureError(ValueError):
    """A feature that must not be trained on: look-ahead, constant or mostly NaN."""


@dataclass(frozen=True)
class GuardReport:
    cuts: list[int]  # row numbers of the cut points, in the whole data
    window: tuple[int, int]  # rows [start, end) of the data the causality check used
    seconds: float
    constant: list[str] = field(default_factory=list)  # built-ins constant on this data

    def as_dict(self) -> dict[str, object]:
        return {"cuts": self.cuts, "window": list(self.window), "constant": self.constant,
                "seconds": round(self.seconds, 3)}  # fmt: skip


def _differs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    both_nan = np.isnan(a) & np.isnan(b)
    with np.errstate(invalid="ignore"):
        close = np.abs(a - b) <= ATOL + RTOL * np.abs(b)
    return ~(both_nan | close)


def _first_difference(
    reference: pd.DataFrame, other: pd.DataFrame, rows: int
) -> tuple[str, int] | None:
    """(column, row) of the first value among the first `rows` that differs, by row."""
    found: tuple[str, int] | None = None
    for column in reference.columns:
        if column not in other.columns:
            return column, 0
        diff = _differs(reference[column].to_numpy()[:rows], other[column].to_numpy()[:rows])
        hits = np.flatnonzero(diff)
        if hits.size and (found is None or hits[0] < found[1]):
            found = (column, int(hits[0]))
    return found


def perturb_after(window: pd.DataFrame, t: int, rng: np.random.Generator) -> pd.DataFrame:
    """The window with every bar after row t from a different market: a random walk from
    another level, other volumes, and other spacing (some bars missing). Rows 0..t are kept."""
    after = len(window) - t - 1
    if after <= 0:
        return window.copy()
    out = window.copy()
    level = float(window["close"].iloc[t]) * rng.uniform(1.3, 2.0)
    close = level * np.exp(np.cumsum(rng.normal(0.0, 0.01, after)))
    open_ = np.concatenate([[level], close[:-1]])
    spread = np.exp(np.abs(rng.normal(0.0, 0.005, after)))
    tail = out.index[t + 1 :]
    out.loc[tail, "open"] = open_
    out.loc[tail, "close"] = close
    out.loc[tail, "high"] = np.maximum(open_, close) * spread
    out.loc[tail, "low"] = np.minimum(open_, close) / spread
    out.loc[tail, "volume"] = rng.lognormal(5.0, 1.5, after)
    # Other spacing: the later bars shifted by whole bars, as if some had gone missing.
    if after > 1:
        stamps = out["timestamp"]
        bar_ns = (stamps.iloc[t + 1] - stamps.iloc[t]).value
        missing = np.cumsum(rng.random(after) < 0.05) * bar_ns
        out.loc[tail, "timestamp"] = stamps.iloc[t + 1 :] + pd.to_timedelta(missing).to_numpy()
    return out


def check_causality(
    compute: Compute,
    ohlcv: pd.DataFrame,
    *,
    cuts: int,
    window_bars: int,
    after_bars: int,
    warmup_bars: int,
    seed: int,
) -> GuardReport:
    """Raise FeatureError naming the first feature whose past changes with the future."""
    started = time.perf_counter()
    n = len(ohlcv)
    end = n
    start = max(0, end - window_bars)
    window = ohlcv.iloc[start:end].reset_index(drop=True)
    # Short data (daily bars, a few years) still gets its cuts: the warm-up and the bars after
    # each cut shrink to fit rather than the check being skipped.
    size = len(window)
    after = min(after_bars, max(1, size // 4))
    low, high = min(warmup_bars, size // 2), size - after - 1
    rng = np.random.default_rng(seed)
    candidates = np.arange(low, max(low, high))
    points = sorted(
        int(t) for t in rng.choice(candidates, size=min(cuts, candidates.size), replace=False)
    )
    full = compute(window) if points else None
    for t in points:
        assert full is not None
        horizon = window.iloc[: t + after + 1]
        for how, variant in (
            ("cut after", compute(window.iloc[: t + 1])),
            ("with other bars after", compute(perturb_after(horizon, t, rng))),
        ):
            hit = _first_difference(full, variant, t + 1)
            if hit is not None:
                column, row = hit
                stamp = window["timestamp"].iloc[row]
                raise FeatureError(
                    f"feature {column} looks ahead: its value at row {start + row} ({stamp}) "
                    f"changes when the data is {how} {window['timestamp'].iloc[t]} "
                    f"(row {start + t}); a feature may use only the bars up to its own"
                )
    return GuardReport([start + t for t in points], (start, end), time.perf_counter() - started)


def check_quality(
    features: pd.DataFrame,
    *,
    warmup_bars: int,
    max_nan_fraction: float,
    may_be_constant: frozenset[str] = frozenset(),
) -> list[str]:
    """Raise FeatureError naming the first feature that is all NaN or mostly NaN after the
    warm-up rows, or constant unless it is in `may_be_constant` (the built-in gap features on
    data without gaps, say: LightGBM ignores a constant column); return those constant ones."""
    body = features.iloc[warmup_bars:]
    constant: list[str] = []
    if body.empty:
        return constant
    for column in body.columns:
        values = body[column].to_numpy(dtype=np.float64)
        nan = np.isnan(values)
        if nan.all():
            raise FeatureError(f"feature {column} is NaN on every row after the warm-up")
        if nan.mean() > max_nan_fraction:
            raise FeatureError(
                f"feature {column} is NaN on {nan.mean():.1%} of the rows after the warm-up "
                f"({warmup_bars} bars); at most {max_nan_fraction:.1%} is allowed "
                "(features.guard.maxNanFraction)"
            )
        known = values[~nan]
        if known.min() == known.max() and column in may_be_constant:
            constant.append(str(column))
        elif known.min() == known.max():
            raise FeatureError(
                f"feature {column} is constant ({known[0]:g}) after the warm-up: "
                "it cannot tell one bar from another"
            )
    return constant
