"""Barrier labels: exact agreement with a slow reference, hand-built cases, real-data gaps."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Literal

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stagegate_core.spec import TrainingJobSpec
from stagegate_trainer.features import atr
from stagegate_trainer.labels import barrier_labels

from tests.support import candles

BAR = timedelta(minutes=15)
# Real candles, committed in the repository (see tests/support/candles.py).
BTC = candles.path("BTC_USDT-15m.parquet")
needs_btc = pytest.mark.skipif(not BTC.exists(), reason=f"{BTC} not present")
Barriers = Literal["volatility", "fixed"]


def slow_labels(
    frame: pd.DataFrame,
    horizon: int,
    take_profit: float,
    stop_loss: float,
    barriers: Barriers,
    atr_bars: int,
    bar: timedelta,
) -> list[float]:
    """The definition, one bar at a time. ATR comes from `atr()`, which has its own test."""
    ts = list(frame["timestamp"])
    o, h, lo = (frame[c].tolist() for c in ("open", "high", "low"))
    widths = atr(frame, atr_bars).tolist()
    out: list[float] = []
    for t in range(len(frame)):
        if t + horizon >= len(frame):
            out.append(math.nan)
            continue
        if any(ts[t + i] - ts[t + i - 1] != bar for i in range(1, horizon + 1)):
            out.append(math.nan)
            continue
        entry = o[t + 1]
        if barriers == "volatility":
            if math.isnan(widths[t]):
                out.append(math.nan)
                continue
            tp, sl = entry + take_profit * widths[t], entry - stop_loss * widths[t]
        else:
            tp, sl = entry * (1.0 + take_profit), entry * (1.0 - stop_loss)
        label = 0.0
        for i in range(1, horizon + 1):
            if lo[t + i] <= sl:  # stop first, also when both are touched in one bar
                break
            if h[t + i] >= tp:
                label = 1.0
                break
        out.append(label)
    return out


def random_frame(
    n: int, seed: int, *, gap_rate: float = 0.02, off_grid: bool = False, tick: float = 0.0
) -> pd.DataFrame:
    """Random walk with outages; optionally off-grid stamps and prices on a tick grid (ties)."""
    rng = np.random.default_rng(seed)
    total = int(n * (1 + 3 * gap_rate)) + 5
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.004, total)))
    open_ = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.003, total)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.003, total)))
    if tick:
        open_, close = np.round(open_ / tick) * tick, np.round(close / tick) * tick
        high = np.maximum(np.ceil(high / tick) * tick, np.maximum(open_, close))
        low = np.minimum(np.floor(low / tick) * tick, np.minimum(open_, close))
    ts = pd.Series(pd.date_range("2022-05-01", periods=total, freq="15min", tz="UTC"))
    if off_grid:
        # A run of stamps shifted by 2 minutes, like Binance after the 2018 outage.
        a = int(rng.integers(0, total))
        ts.iloc[a : a + int(rng.integers(1, 30))] -= timedelta(minutes=2)
    frame = pd.DataFrame(
        {
            "timestamp": ts,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.lognormal(2, 1, total),
        }
    )
    frame = frame[rng.random(total) >= gap_rate].iloc[:n]
    return frame.reset_index(drop=True)


def assert_labels_equal(got: np.ndarray, expected: list[float]) -> None:
    assert got.dtype == np.float64
    assert np.array_equal(got, np.array(expected), equal_nan=True), (
        f"first mismatch at {np.flatnonzero(~np.isclose(got, expected, equal_nan=True))[:5]}"
    )
    assert set(np.unique(got[~np.isnan(got)])) <= {0.0, 1.0}


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 80),
    seed=st.integers(0, 2**32 - 1),
    horizon=st.integers(1, 10),
    gap_rate=st.sampled_from([0.0, 0.03, 0.2]),
    off_grid=st.booleans(),
    tick=st.sampled_from([0.0, 0.1, 0.5]),
    barriers=st.sampled_from(["volatility", "fixed"]),
    atr_bars=st.integers(1, 14),
    tp_mult=st.sampled_from([0.25, 0.5, 1.0, 2.0, 3.0]),
    sl_mult=st.sampled_from([0.25, 0.5, 1.0, 2.0]),
)
def test_matches_reference_on_random_frames(
    n: int,
    seed: int,
    horizon: int,
    gap_rate: float,
    off_grid: bool,
    tick: float,
    barriers: Barriers,
    atr_bars: int,
    tp_mult: float,
    sl_mult: float,
) -> None:
    frame = random_frame(n, seed, gap_rate=gap_rate, off_grid=off_grid, tick=tick)
    # Fixed barriers take fractions; scale the multiples to a few bars' worth of movement.
    scale = 1.0 if barriers == "volatility" else 0.005
    args = (horizon, tp_mult * scale, sl_mult * scale, barriers, atr_bars, BAR)
    got = barrier_labels(
        frame,
        horizon_bars=horizon,
        take_profit=tp_mult * scale,
        stop_loss=sl_mult * scale,
        barriers=barriers,
        atr_bars=atr_bars,
        bar=BAR,
    )
    assert_labels_equal(got, slow_labels(frame, *args))


@pytest.mark.parametrize(
    ("seed", "barriers", "tp", "sl"),
    [(1, "volatility", 2.0, 1.0), (2, "fixed", 0.01, 0.005), (3, "volatility", 1.0, 1.0)],
)
def test_matches_reference_on_long_walks(
    seed: int, barriers: Barriers, tp: float, sl: float
) -> None:
    frame = random_frame(3000, seed, gap_rate=0.01, off_grid=True, tick=0.01)
    got = barrier_labels(
        frame, horizon_bars=48, take_profit=tp, stop_loss=sl, barriers=barriers, bar=BAR
    )
    expected = slow_labels(frame, 48, tp, sl, barriers, 14, BAR)
    assert_labels_equal(got, expected)
    known = got[~np.isnan(got)]
    # Both classes and NaN occur, so the comparison exercised every branch.
    assert 0 < known.mean() < 1 and np.isnan(got).sum() >= 48


def bars(
    rows: list[tuple[float, float, float, float]], *, missing: tuple[int, ...] = ()
) -> pd.DataFrame:
    """Hand-built bars (open, high, low, close) on the 15-minute grid, some slots left out."""
    ts = pd.date_range("2023-06-01", periods=len(rows), freq="15min", tz="UTC")
    frame = pd.DataFrame(rows, columns=["open", "high", "low", "close"])
    frame.insert(0, "timestamp", ts)
    frame["volume"] = 1.0
    return frame.drop(index=list(missing)).reset_index(drop=True)


def fixed(frame: pd.DataFrame, horizon: int) -> np.ndarray:
    # Entry 100 (next open) → take-profit 102, stop-loss 99.
    return barrier_labels(
        frame, horizon_bars=horizon, take_profit=0.02, stop_loss=0.01, barriers="fixed", bar=BAR
    )


DECISION = (100.0, 100.5, 99.5, 100.0)
QUIET = (100.0, 101.0, 99.5, 100.0)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ([QUIET, (100, 102.5, 100, 102)], 1.0),  # take-profit first
        ([QUIET, (100, 101, 98.9, 99)], 0.0),  # stop-loss first
        ([(100, 101, 98.5, 100), (100, 103, 100, 103)], 0.0),  # stop before a later TP
        ([(100, 103, 98, 100), QUIET], 0.0),  # both in one bar: stop-loss wins
        ([QUIET, QUIET, QUIET], 0.0),  # neither within the horizon
        ([QUIET, (100, 102.0, 100, 101)], 1.0),  # touching the take-profit counts
        ([QUIET, (100, 101, 99.0, 100)], 0.0),  # touching the stop-loss counts
        ([QUIET, QUIET, QUIET, (100, 105, 100, 105)], 0.0),  # TP after the horizon
    ],
)
def test_hand_built_paths(path: list[tuple[float, float, float, float]], expected: float) -> None:
    frame = bars([DECISION, *path, QUIET, QUIET, QUIET])
    assert fixed(frame, 3)[0] == expected


def test_entry_is_the_next_open_not_the_decision_close() -> None:
    # Decision close 100 but the next bar opens at 105: barriers are 107.1 / 103.95.
    frame = bars([DECISION, (105, 106, 104, 105), (105, 106.5, 104.5, 106), QUIET, QUIET])
    assert fixed(frame, 2)[0] == 0.0  # 106.5 < 107.1 and no stop
    assert fixed(bars([DECISION, (105, 106, 104, 105), (105, 108, 104.5, 106), QUIET]), 2)[0] == 1


def test_horizon_past_end_is_nan_not_zero() -> None:
    frame = bars([DECISION] + [QUIET] * 6)
    got = fixed(frame, 3)
    assert np.isnan(got[-3:]).all()
    assert (got[:-3] == 0.0).all()
    assert np.isnan(fixed(frame, 7)).all()
    assert np.isnan(fixed(frame.iloc[:1], 1)).all()


def test_gap_inside_horizon_is_nan() -> None:
    rows = [DECISION] + [QUIET] * 9
    frame = bars(rows, missing=(5,))  # slot 5 missing: rows 0..4 then slot 6 → row 5
    got = fixed(frame, 3)
    # Rows 2, 3, 4 look across the missing slot; row 1 (slots 2..4) and row 5 on do not.
    assert np.isnan(got[[2, 3, 4]]).all()
    assert got[0] == 0.0 and got[1] == 0.0 and got[5] == 0.0
    # A take-profit reached after a gap is still unknown, never 1.
    tp_after_gap = bars([DECISION, QUIET, QUIET, (100, 110, 100, 110), QUIET], missing=(2,))
    assert np.isnan(fixed(tp_after_gap, 2)[0])


def test_off_grid_stamp_inside_horizon_is_nan() -> None:
    frame = bars([DECISION] + [QUIET] * 6)
    frame.loc[3, "timestamp"] -= timedelta(minutes=2)
    got = fixed(frame, 2)
    assert np.isnan(got[[1, 2, 3]]).all() and got[0] == 0.0


def test_volatility_versus_fixed_barriers() -> None:
    # Every bar spans 99..101 around a flat 100: true range 2, ATR 2 with atr_bars=1.
    flat = (100.0, 101.0, 99.0, 100.0)
    frame = bars([flat, flat, (100, 103, 99.5, 100), (100, 105, 99.5, 100), flat])
    vol = barrier_labels(
        frame,
        horizon_bars=3,
        take_profit=2.0,
        stop_loss=1.0,
        barriers="volatility",
        atr_bars=1,
        bar=BAR,
    )
    fix = barrier_labels(
        frame,
        horizon_bars=3,
        take_profit=0.02,
        stop_loss=0.01,
        barriers="fixed",
        atr_bars=1,
        bar=BAR,
    )
    # Volatility: TP 104, SL 98 → bar 3's 105. Fixed: TP 102, SL 99 → bar 1's low 99 stops.
    assert vol[0] == 1.0 and fix[0] == 0.0
    # With a 14-bar ATR the first 13 decision bars have no ATR: unknown for volatility only.
    long = bars([flat] * 30)
    vol14 = barrier_labels(long, horizon_bars=2, take_profit=2.0, stop_loss=1.0, bar=BAR)
    fix14 = barrier_labels(
        long, horizon_bars=2, take_profit=0.02, stop_loss=0.01, barriers="fixed", bar=BAR
    )
    assert np.isnan(vol14[:13]).all() and (vol14[13:28] == 0.0).all()
    assert (fix14[:28] == 0.0).all()


def test_label_depends_on_nothing_after_its_horizon() -> None:
    frame = random_frame(600, 5, gap_rate=0.0)
    horizon = 24
    base = barrier_labels(frame, horizon_bars=horizon, take_profit=1.5, stop_loss=1.0, bar=BAR)
    for t in (20, 100, 400):
        changed = frame.copy()
        cols = ["open", "high", "low", "close"]
        changed.loc[t + horizon + 1 :, cols] = changed.loc[t + horizon + 1 :, cols] * 3.0
        got = barrier_labels(changed, horizon_bars=horizon, take_profit=1.5, stop_loss=1.0, bar=BAR)
        assert np.array_equal(got[: t + 1], base[: t + 1], equal_nan=True)
    # So the purge that keeps training labels out of a test period is horizon + 1 bars.
    spec = TrainingJobSpec.model_validate({"symbol": "BTC/USDT", "label": {"horizonBars": horizon}})
    assert spec.min_purge_bars == horizon + 1 == spec.purge_bars("full")


def test_rejects_bad_arguments() -> None:
    frame = bars([DECISION, QUIET, QUIET])
    for kwargs in (
        {"horizon_bars": 0},
        {"take_profit": 0.0},
        {"stop_loss": -1.0},
        {"barriers": "percent"},
        {"bar": timedelta(0)},
    ):
        params = {
            "horizon_bars": 1,
            "take_profit": 0.01,
            "stop_loss": 0.01,
            "barriers": "fixed",
            "bar": BAR,
            **kwargs,
        }
        with pytest.raises(ValueError):
            barrier_labels(frame, **params)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def btc() -> pd.DataFrame:
    return candles.read("BTC_USDT-15m.parquet")


def broken_window_rows(ts: pd.Series, horizon: int, bar: timedelta) -> set[int]:
    """Rows whose bars t+1 … t+H include a step that is not exactly one bar: gaps, off-grid."""
    steps = ts.diff().iloc[1:]
    rows: set[int] = set()
    for j in np.flatnonzero((steps != bar).to_numpy()) + 1:  # step from row j-1 to row j
        rows.update(range(max(0, int(j) - horizon), int(j)))
    rows.update(range(max(0, len(ts) - horizon), len(ts)))
    return rows


@needs_btc
def test_btc_gap_rows_are_nan_over_the_whole_history(btc: pd.DataFrame) -> None:
    horizon = 48
    got = barrier_labels(
        btc, horizon_bars=horizon, take_profit=0.01, stop_loss=0.005, barriers="fixed", bar=BAR
    )
    expected_nan = broken_window_rows(btc["timestamp"], horizon, BAR)
    assert set(np.flatnonzero(np.isnan(got)).tolist()) == expected_nan
    # 32 outages, the off-grid run and its two edges: well over a thousand unknown rows.
    assert len(expected_nan) > 32 * horizon


@needs_btc
def test_btc_2018_outage(btc: pd.DataFrame) -> None:
    ts = btc["timestamp"]
    window = btc[
        (ts >= pd.Timestamp("2018-02-01", tz="UTC")) & (ts < pd.Timestamp("2018-02-15", tz="UTC"))
    ].reset_index(drop=True)
    horizon = 48
    got = barrier_labels(window, horizon_bars=horizon, take_profit=2.0, stop_loss=1.0, bar=BAR)
    assert_labels_equal(got, slow_labels(window, horizon, 2.0, 1.0, "volatility", 14, BAR))
    steps = window["timestamp"].diff()
    outage = int(np.flatnonzero((steps > timedelta(hours=30)).to_numpy())[0])
    assert window["timestamp"][outage - 1] <= pd.Timestamp("2018-02-08 00:15", tz="UTC")
    # The 48 decision bars before the outage look into it; the one before them does not.
    assert np.isnan(got[outage - horizon : outage]).all()
    assert not np.isnan(got[outage - horizon - 1])
    # The off-grid run ends with a short step back onto the grid: its last 48 rows are NaN.
    broken = np.flatnonzero(((steps != BAR) & steps.notna()).to_numpy())
    back = int(broken[broken > outage][0])
    # The 81 bars after the outage are stamped hh:58:14.789 etc., 15 minutes apart: labels
    # inside that run are known; the step back onto the grid breaks the last 48 of them.
    assert back - outage == 81
    assert window["timestamp"][back] == pd.Timestamp("2018-02-10 06:15", tz="UTC")
    assert not np.isnan(got[outage : back - horizon]).any()
    assert np.isnan(got[back - horizon : back]).all()
    assert not np.isnan(got[back])
    # In all: the rows next to the fortnight's three broken steps or its end, and 13 rows of
    # ATR warm-up.
    assert np.isnan(got).sum() == len(broken_window_rows(window["timestamp"], horizon, BAR)) + 13


@needs_btc
def test_btc_2023_positive_rate_is_plausible(btc: pd.DataFrame) -> None:
    ts = btc["timestamp"]
    year = btc[
        (ts >= pd.Timestamp("2023-01-01", tz="UTC")) & (ts < pd.Timestamp("2024-01-01", tz="UTC"))
    ].reset_index(drop=True)
    got = barrier_labels(year, horizon_bars=48, take_profit=2.0, stop_loss=1.0, bar=BAR)
    rate = float(np.nanmean(got))
    # TP 2×ATR against SL 1×ATR: a driftless walk gives about a third, minus unresolved rows.
    assert 0.15 < rate < 0.40, rate
    assert np.isnan(got).mean() < 0.05
