"""Validate and canonicalise an OHLCV frame, and report what was done to it.

The canonical frame has columns `timestamp` (datetime64[ns, UTC], bar OPEN time) and `open`,
`high`, `low`, `close`, `volume` (float64), a RangeIndex, strictly increasing timestamps that
all sit on the timeframe's grid (UTC epoch multiples of the bar length). Gaps are reported,
never filled: a forward-filled bar would be a price that never traded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from stagegate_core import timeframes

from stagegate_trainer.data.errors import DataError

OHLCV_COLUMNS: tuple[str, ...] = ("timestamp", "open", "high", "low", "close", "volume")
VALUE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")

_NS_PER_MINUTE = 60 * 1_000_000_000
_NS_PER_MS = 1_000_000
# Integer epochs below this are before 1973 in milliseconds: almost surely seconds instead.
_MIN_PLAUSIBLE_MS = 100_000_000_000
# Relative slack of the OHLC consistency checks (spec.data.ohlcTolerance): exchanges and format
# conversions leave ~1e-15 relative rounding in high/low, which is noise, not a broken bar.
DEFAULT_OHLC_TOLERANCE = 1e-9


@dataclass(frozen=True)
class DataReport:
    """What the data looked like and what loading did to it (JSON-able via `as_dict`)."""

    origin: str
    timeframe: str
    rows_read: int
    bars: int
    first: str | None
    last: str | None
    duplicates_dropped: int = 0
    off_grid_snapped: int = 0
    off_grid_dropped: int = 0
    gaps: int = 0
    missing_bars: int = 0
    longest_gap_bars: int = 0
    longest_gap_start: str | None = None
    zero_volume_bars: int = 0
    resampled_from: str | None = None
    incomplete_bars_dropped: int = 0
    ohlc_tolerated: int = 0  # bars off by rounding noise (within the tolerance), clamped

    @property
    def longest_gap_hours(self) -> float:
        return self.longest_gap_bars * timeframes.minutes(self.timeframe) / 60.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["longest_gap_hours"] = round(self.longest_gap_hours, 4)
        return out

    def summary(self) -> str:
        """One line, e.g. `222,910 bars 2017-08-17 04:00 → 2023-12-31 23:45; 32 gaps (...)`."""
        if self.bars == 0 or self.first is None or self.last is None:
            head = f"0 bars ({self.timeframe})"
        else:
            head = f"{self.bars:,} {self.timeframe} bars {_short(self.first)} → {_short(self.last)}"
        parts = [head]
        if self.resampled_from:
            parts.append(
                f"resampled from {self.resampled_from} "
                f"({self.incomplete_bars_dropped:,} incomplete bars dropped)"
            )
        if self.duplicates_dropped:
            parts.append(f"{self.duplicates_dropped:,} duplicates dropped")
        if self.off_grid_snapped:
            parts.append(f"{self.off_grid_snapped:,} off-grid snapped")
        if self.off_grid_dropped:
            parts.append(f"{self.off_grid_dropped:,} off-grid dropped")
        if self.ohlc_tolerated:
            parts.append(f"{self.ohlc_tolerated:,} bars' high/low rounding clamped")
        if self.gaps:
            parts.append(
                f"{self.gaps:,} gaps ({self.missing_bars:,} missing bars, "
                f"longest {self.longest_gap_hours:.1f} h)"
            )
        else:
            parts.append("no gaps")
        parts.append(f"{self.zero_volume_bars:,} zero-volume bars")
        return "; ".join(parts)


def _short(iso: str) -> str:
    return pd.Timestamp(iso).strftime("%Y-%m-%d %H:%M")


def _iso(ns: int) -> str:
    return pd.Timestamp(int(ns), unit="ns", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def _fmt(ns: int) -> str:
    return pd.Timestamp(int(ns), unit="ns", tz="UTC").strftime("%Y-%m-%d %H:%M:%S UTC")


def bar_ns(timeframe: str) -> int:
    return timeframes.minutes(timeframe) * _NS_PER_MINUTE


def timestamps_ns(column: pd.Series, *, origin: str) -> np.ndarray:
    """Epoch nanoseconds (int64) from a datetime column (any tz; naive = UTC) or integer ms."""
    if isinstance(column.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(column):
        values = pd.DatetimeIndex(column)
        values = values.tz_localize("UTC") if values.tz is None else values.tz_convert("UTC")
        if values.hasnans:
            _raise_missing_ts(np.asarray(values.isna()), origin)
        return np.asarray(values.as_unit("ns").asi8, dtype=np.int64)
    if pd.api.types.is_bool_dtype(column):
        raise DataError(f"{origin}: column 'timestamp' is boolean; expected datetime or ms epoch")
    if pd.api.types.is_numeric_dtype(column):
        raw = column.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(raw) | (raw != np.round(raw))
        if bad.any():
            _raise_missing_ts(bad, origin)
        ms = raw.astype(np.int64) if column.dtype.kind == "f" else column.to_numpy(np.int64)
        if len(ms) and int(np.abs(ms).max()) < _MIN_PLAUSIBLE_MS:
            raise DataError(
                f"{origin}: integer timestamps must be milliseconds since the epoch; "
                f"{int(ms[0])} looks like seconds"
            )
        return ms * _NS_PER_MS
    # Strings (CSV): ISO 8601 with or without offset; naive means UTC.
    parsed = pd.to_datetime(column, utc=True, errors="coerce", format="mixed")
    if parsed.isna().any():
        _raise_missing_ts(np.asarray(parsed.isna()), origin, column)
    return np.asarray(pd.DatetimeIndex(parsed).as_unit("ns").asi8, dtype=np.int64)


def _raise_missing_ts(bad: np.ndarray, origin: str, raw: pd.Series | None = None) -> None:
    row = int(np.flatnonzero(bad)[0])
    shown = f" ({_plain(raw.iloc[row])!r})" if raw is not None else ""
    raise DataError(
        f"{origin}: missing or unreadable timestamp at row {row}{shown}; "
        f"{int(bad.sum()):,} such rows"
    )


def _columns(frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Select the OHLCV columns (names matched case-insensitively) or name what is missing."""
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{origin}: expected a table, got {type(frame).__name__}")
    by_name = {str(c).strip().lower(): c for c in frame.columns}
    missing = [c for c in OHLCV_COLUMNS if c not in by_name]
    if missing:
        found = ", ".join(str(c) for c in frame.columns) or "none"
        raise DataError(
            f"{origin}: missing column(s) {', '.join(missing)}; found: {found}; "
            f"expected: {', '.join(OHLCV_COLUMNS)}"
        )
    if len(frame) == 0:
        raise DataError(f"{origin}: no rows")
    return frame[[by_name[c] for c in OHLCV_COLUMNS]].set_axis(list(OHLCV_COLUMNS), axis=1)


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python number it holds, so messages show 29216.1, not np.float64."""
    return value.item() if isinstance(value, np.generic) else value


def _check_values(
    ts: np.ndarray, values: dict[str, np.ndarray], origin: str, tolerance: float
) -> int:
    """Reject impossible bars, naming the first bad one (rows are already in time order).

    High and low may miss open/close (or each other) by `tolerance` relative to the price:
    such bars are clamped in place (high = max(open, high, close), low = min(...)) and counted.
    Returns that count.
    """
    o, h, lo, c, v = (values[k] for k in VALUE_COLUMNS)
    prices = np.column_stack([o, h, lo, c])
    top, bottom = np.maximum(o, c), np.minimum(o, c)
    with np.errstate(invalid="ignore"):
        # Beyond the slack: a bar no rounding explains.
        rules: list[tuple[str, np.ndarray]] = [
            ("NaN or infinite value", ~np.isfinite(np.column_stack([prices, v])).all(axis=1)),
            ("non-positive price", np.asarray((prices <= 0).any(axis=1), dtype=bool)),
            ("high < low", lo - h > tolerance * lo),
            ("high < max(open, close)", top - h > tolerance * top),
            ("low > min(open, close)", lo - bottom > tolerance * lo),
            ("negative volume", v < 0),
        ]
    any_bad = np.zeros(len(ts), dtype=bool)
    for _, mask in rules:
        any_bad |= mask
    if any_bad.any():
        row = int(np.flatnonzero(any_bad)[0])
        reason = next(name for name, mask in rules if mask[row])
        bar = ", ".join(f"{k}={_plain(values[k][row])!r}" for k in VALUE_COLUMNS)
        raise DataError(
            f"{origin}: bad bar at {_fmt(ts[row])}: {reason} ({bar}); "
            f"{int(any_bad.sum()):,} bad rows in all (OHLC tolerance {tolerance:g} relative)"
        )
    tolerated = (h < top) | (lo > bottom) | (h < lo)
    if tolerated.any():
        values["high"] = np.maximum(h, top)
        values["low"] = np.minimum(lo, bottom)
    return int(tolerated.sum())


@dataclass(frozen=True)
class GapStats:
    gaps: int
    missing_bars: int
    longest_gap_bars: int
    longest_gap_start_ns: int | None


def gap_stats(ts_ns: np.ndarray, step_ns: int) -> GapStats:
    """Gaps between consecutive on-grid timestamps (sorted, unique)."""
    if len(ts_ns) < 2:
        return GapStats(0, 0, 0, None)
    missing = np.diff(ts_ns) // step_ns - 1
    gap_at = np.flatnonzero(missing > 0)
    if len(gap_at) == 0:
        return GapStats(0, 0, 0, None)
    worst = int(gap_at[np.argmax(missing[gap_at])])
    return GapStats(
        gaps=len(gap_at),
        missing_bars=int(missing[gap_at].sum()),
        longest_gap_bars=int(missing[worst]),
        longest_gap_start_ns=int(ts_ns[worst] + step_ns),
    )


def canonical_frame(ts_ns: np.ndarray, values: dict[str, np.ndarray]) -> pd.DataFrame:
    data: dict[str, Any] = {"timestamp": pd.to_datetime(ts_ns, unit="ns", utc=True)}
    for k in VALUE_COLUMNS:
        data[k] = np.ascontiguousarray(values[k], dtype=np.float64)
    return pd.DataFrame(data)


def describe(frame: pd.DataFrame, timeframe: str, *, origin: str, rows_read: int) -> DataReport:
    """A report of a canonical frame: size, range, gaps and zero-volume bars."""
    tf = timeframes.canonical(timeframe)
    ts = np.asarray(pd.DatetimeIndex(frame["timestamp"]).as_unit("ns").asi8, dtype=np.int64)
    stats = gap_stats(ts, bar_ns(tf))
    return DataReport(
        origin=origin,
        timeframe=tf,
        rows_read=rows_read,
        bars=len(ts),
        first=_iso(ts[0]) if len(ts) else None,
        last=_iso(ts[-1]) if len(ts) else None,
        gaps=stats.gaps,
        missing_bars=stats.missing_bars,
        longest_gap_bars=stats.longest_gap_bars,
        longest_gap_start=(
            _iso(stats.longest_gap_start_ns) if stats.longest_gap_start_ns is not None else None
        ),
        zero_volume_bars=int((frame["volume"].to_numpy() == 0).sum()),
    )


def infer_timeframe(frame: pd.DataFrame, *, origin: str, default: str) -> str:
    """The timeframe of a table from its most common step between bars.

    Files carry no timeframe tag; taking their bars to be at the requested timeframe would
    silently snap 15-minute bars onto an hourly grid. `default` is used for a single bar.
    """
    table = _columns(frame, origin)
    ts = np.unique(timestamps_ns(table["timestamp"], origin=origin))
    if len(ts) < 2:
        return timeframes.canonical(default)
    steps, counts = np.unique(np.diff(ts), return_counts=True)
    step_min = int(steps[np.argmax(counts)]) / _NS_PER_MINUTE
    for name, minutes in timeframes.MINUTES.items():
        if minutes == step_min:
            return name
    raise DataError(
        f"{origin}: bars are {step_min:g} minutes apart, which is no supported timeframe "
        f"({', '.join(timeframes.MINUTES)})"
    )


def validate_ohlcv(
    frame: pd.DataFrame,
    timeframe: str,
    *,
    origin: str,
    ohlc_tolerance: float = DEFAULT_OHLC_TOLERANCE,
) -> tuple[pd.DataFrame, DataReport]:
    """Check, sort, de-duplicate and grid-align OHLCV bars; raise `DataError` on bad data.

    - duplicates (same timestamp): the last row in file order wins, as exchanges re-publish
      corrected bars;
    - off-grid bars are snapped to the nearest grid slot when that slot is free, else dropped;
    - gaps are counted, never filled;
    - high/low that miss open/close by at most `ohlc_tolerance` (relative) are clamped and
      counted; beyond it, the bar is refused.
    """
    try:
        tf = timeframes.canonical(timeframe)
    except ValueError as exc:
        raise DataError(f"{origin}: {exc}") from None
    table = _columns(frame, origin)
    rows_read = len(table)
    ts = timestamps_ns(table["timestamp"], origin=origin)
    values: dict[str, np.ndarray] = {}
    for k in VALUE_COLUMNS:
        col = table[k]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            col = pd.to_numeric(col, errors="coerce")  # unparseable text becomes NaN, rejected
        values[k] = col.to_numpy(dtype=np.float64, na_value=np.nan)

    # Stable sort keeps file order among equal timestamps, so "keep last" means last in file.
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    values = {k: v[order] for k, v in values.items()}
    tolerated = _check_values(ts, values, origin, ohlc_tolerance)

    last_of_run = np.ones(len(ts), dtype=bool)
    last_of_run[:-1] = ts[1:] != ts[:-1]
    duplicates = int((~last_of_run).sum())
    ts = ts[last_of_run]
    values = {k: v[last_of_run] for k, v in values.items()}

    step = bar_ns(tf)
    off = ts % step != 0
    snapped = np.where(off, (ts + step // 2) // step * step, ts)
    # A snapped bar may not displace a bar that was on the grid, nor another snapped bar
    # (rounding is monotonic, so "first" is the earlier one).
    free = ~np.isin(snapped, ts[~off])
    first_claim = np.ones(len(ts), dtype=bool)
    first_claim[1:] = snapped[1:] != snapped[:-1]
    keep = ~off | (free & first_claim)
    off_snapped = int((off & keep).sum())
    off_dropped = int((off & ~keep).sum())
    ts = snapped[keep]
    values = {k: v[keep] for k, v in values.items()}

    clean = canonical_frame(ts, values)
    report = describe(clean, tf, origin=origin, rows_read=rows_read)
    report = DataReport(
        **{
            **asdict(report),
            "duplicates_dropped": duplicates,
            "off_grid_snapped": off_snapped,
            "off_grid_dropped": off_dropped,
            "ohlc_tolerated": tolerated,
        }
    )
    return clean, report
