"""Which features exist: their groups, windows and column names (no numpy or pandas, so the
spec model and the operator can name them too; `features.py` computes them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

RETURN_LAGS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 96)
VOL_WINDOWS: tuple[int, ...] = (8, 16, 32, 96)
RANGE_WINDOWS: tuple[int, ...] = (32, 96, 672)
VOLUME_WINDOWS: tuple[int, ...] = (20, 96)
EMA_SPANS: tuple[int, ...] = (50, 200)
# One week of 15-minute bars; beyond it the distance to the last gap no longer matters, and the
# cap makes the value independent of where the data set happens to start.
GAP_CAP_BARS = 672

# The "volatility + time-of-day" baseline: it may know how much the market moves and when,
# never which way. Anything directional (returns, RSI, MACD, distances) stays out.
BASELINE_FEATURES: tuple[str, ...] = (
    *(f"rv_{w}" for w in VOL_WINDOWS),
    "atr_14",
    "hl_range",
    "hl_range_mean_16",
    "tod_sin",
    "tod_cos",
    "dow_sin",
    "dow_cos",
)


# The groups a spec chooses from (`spec.features.groups`), in the order their columns take.
GROUPS: tuple[str, ...] = (
    "returns", "volatility", "momentum", "volume", "candle", "range", "trend", "calendar", "gaps",
)  # fmt: skip
# Groups whose columns are one per window (`spec.features.windows`), and the windows' defaults.
DEFAULT_WINDOWS: dict[str, tuple[int, ...]] = {
    "returns": RETURN_LAGS,
    "volatility": VOL_WINDOWS,
    "volume": VOLUME_WINDOWS,
    "range": RANGE_WINDOWS,
    "trend": EMA_SPANS,
}
_WINDOWED = {"ret_": "returns", "rv_": "volatility", "volume_z_": "volume",
             "dist_high_": "range", "dist_low_": "range", "ema_dist_": "trend"}  # fmt: skip
_FIXED: dict[str, tuple[str, ...]] = {
    "volatility": ("rv_ratio_8_96", "ret_1_z96", "atr_14", "hl_range", "hl_range_mean_16"),
    "momentum": ("rsi_14", "macd", "macd_signal", "macd_hist", "bb_pctb_20", "bb_width_20"),
    "candle": ("body", "upper_wick", "lower_wick"),
    "calendar": ("tod_sin", "tod_cos", "dow_sin", "dow_cos"),
    "gaps": ("prev_gap_bars", "bars_since_gap"),
}


def group_columns(group: str, windows: tuple[int, ...] | None = None) -> tuple[str, ...]:
    """The columns of one group, with `windows` for a windowed group (default: the defaults)."""
    ws = DEFAULT_WINDOWS.get(group, ()) if windows is None else windows
    windowed = tuple(f"{p}{w}" for p, g in _WINDOWED.items() if g == group for w in ws)
    return windowed + _FIXED.get(group, ())


def feature_names(
    groups: Sequence[str] = GROUPS, windows: Mapping[str, Sequence[int]] | None = None
) -> tuple[str, ...]:
    """The model's columns for a choice of groups and windows, always in `GROUPS` order (so a
    spec that lists them differently trains the same model)."""
    windows = windows or {}
    out: list[str] = []
    for group in GROUPS:
        if group in groups:
            chosen = windows.get(group)
            out += group_columns(group, tuple(sorted(set(chosen))) if chosen else None)
    return tuple(out)


def _windowed(name: str) -> tuple[str, int] | None:
    """(prefix, window) of a windowed column name such as `ret_4`, else None."""
    for prefix in sorted(_WINDOWED, key=len, reverse=True):
        rest = name.removeprefix(prefix)
        if rest != name and rest.isdigit() and int(rest) > 0:
            return prefix, int(rest)
    return None


def group_of(name: str) -> str:
    parsed = _windowed(name)
    if parsed is not None:
        return _WINDOWED[parsed[0]]
    return next(g for g, fixed in _FIXED.items() if name in fixed)


# Today's full set: every group with its default windows.
FEATURE_NAMES: tuple[str, ...] = feature_names()
