"""Features: causality (exact, NaN-aware), shape and dtype, and slow references."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stagegate_core.featureset import BASELINE_FEATURES, FEATURE_NAMES
from stagegate_trainer.features import atr, build_features

from tests.support import candles

BAR = timedelta(minutes=15)
# Real candles, committed in the repository (see tests/support/candles.py).
BTC = candles.path("BTC_USDT-15m.parquet")
needs_btc = pytest.mark.skipif(not BTC.exists(), reason=f"{BTC} not present")


def random_ohlcv(
    n: int, seed: int, *, gap_rate: float = 0.01, start: str = "2021-03-01 00:00"
) -> pd.DataFrame:
    """A geometric random walk on the 15-minute grid with random outages (rows removed)."""
    rng = np.random.default_rng(seed)
    total = int(n * (1 + 3 * gap_rate)) + 10
    steps = rng.normal(0.0, 0.004, total)
    close = 100.0 * np.exp(np.cumsum(steps))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(rng.normal(0, 0.0005, total))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.002, total)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.002, total)))
    volume = rng.lognormal(3.0, 1.0, total)
    volume[rng.random(total) < 0.01] = 0.0
    ts = pd.date_range(start, periods=total, freq="15min", tz="UTC")
    keep = rng.random(total) >= gap_rate
    frame = pd.DataFrame(
        {"timestamp": ts, "open": open_, "high": high, "low": low, "close": close, "volume": volume}
    )[keep]
    return frame.iloc[:n].reset_index(drop=True)


def load_btc(start: str, end: str) -> pd.DataFrame:
    frame = candles.read("BTC_USDT-15m.parquet")
    ts = frame["timestamp"]
    mask = (ts >= pd.Timestamp(start, tz="UTC")) & (ts < pd.Timestamp(end, tz="UTC"))
    return frame[mask].reset_index(drop=True)


def assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Bit-for-bit equality, NaN equal to NaN; names the first differing column."""
    assert list(a.columns) == list(b.columns)
    for col in a.columns:
        x, y = a[col].to_numpy(), b[col].to_numpy()
        same = (x == y) | (np.isnan(x) & np.isnan(y))
        assert same.all(), f"{col}: first difference at row {np.flatnonzero(~same)[:1]}"


def perturb_after(frame: pd.DataFrame, t: int, seed: int) -> pd.DataFrame:
    """Rows after t replaced by a different market: other prices, volumes and spacing."""
    other = random_ohlcv(len(frame) - t - 1, seed, gap_rate=0.2)
    if other.empty:
        return frame.copy()
    scale = frame["close"].iloc[t] / other["open"].iloc[0] * 1.7
    for col in ("open", "high", "low", "close"):
        other[col] *= scale
    other["volume"] *= 50.0
    shift = frame["timestamp"].iloc[t] + timedelta(hours=7) - other["timestamp"].iloc[0]
    other["timestamp"] = other["timestamp"] + shift
    return pd.concat([frame.iloc[: t + 1], other], ignore_index=True)


def check_causal(frame: pd.DataFrame, cuts: list[int], seed: int) -> None:
    full = build_features(frame, bar=BAR)
    for i, t in enumerate(cuts):
        head = full.iloc[: t + 1]
        assert_same(build_features(frame.iloc[: t + 1], bar=BAR), head)
        changed = build_features(perturb_after(frame, t, seed + i), bar=BAR)
        assert_same(changed.iloc[: t + 1], head)
        # The perturbation must be real, or the check above proves nothing.
        if t + 1 < len(frame):
            assert not changed.iloc[t + 1 :].equals(full.iloc[t + 1 :])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_causal_on_random_walks(seed: int) -> None:
    frame = random_ohlcv(3000, seed)
    rng = np.random.default_rng(100 + seed)
    cuts = sorted({0, 1, 13, 95, 671, 672, 2998, *rng.integers(0, len(frame), 12).tolist()})
    check_causal(frame, cuts, seed=1000 * seed)


@needs_btc
def test_causal_on_real_btc_across_the_2018_outage() -> None:
    # January–March 2018 holds the 33.7 h outage and the off-grid bars after it.
    frame = load_btc("2018-01-20", "2018-02-20")
    rng = np.random.default_rng(7)
    cuts = sorted(rng.integers(0, len(frame), 15).tolist())
    check_causal(frame, cuts, seed=77)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 250),
    seed=st.integers(0, 2**32 - 1),
    cut=st.floats(0.0, 1.0),
)
def test_causal_on_small_frames(n: int, seed: int, cut: float) -> None:
    frame = random_ohlcv(n, seed, gap_rate=0.05)
    t = min(int(cut * len(frame)), len(frame) - 1)
    head = build_features(frame, bar=BAR).iloc[: t + 1]
    assert_same(build_features(frame.iloc[: t + 1], bar=BAR), head)
    assert_same(build_features(perturb_after(frame, t, seed ^ 1), bar=BAR).iloc[: t + 1], head)


def test_columns_dtype_index_and_warmup() -> None:
    frame = random_ohlcv(1500, 3)
    frame.index = pd.RangeIndex(500, 500 + len(frame))
    feats = build_features(frame, bar=BAR)
    assert tuple(feats.columns) == FEATURE_NAMES
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert feats.index.equals(frame.index)
    assert (feats.dtypes == np.float32).all()
    assert np.isfinite(feats.to_numpy()[~feats.isna().to_numpy()]).all()
    # Lookbacks not yet filled are NaN, filled ones are not.
    for name, warmup in {
        "ret_96": 96,
        "rv_96": 96,
        "atr_14": 13,
        "rsi_14": 14,
        "macd": 25,
        "macd_signal": 33,
        "bb_pctb_20": 19,
        "volume_z_96": 95,
        "dist_high_672": 671,
        "ema_dist_200": 199,
    }.items():
        col = feats[name].to_numpy()
        assert np.isnan(col[:warmup]).all(), name
        assert not np.isnan(col[warmup:]).any(), name
    assert not feats.iloc[700:].isna().any().any()


def test_baseline_features_are_a_non_directional_subset() -> None:
    assert set(BASELINE_FEATURES) <= set(FEATURE_NAMES)
    assert {"tod_sin", "tod_cos", "dow_sin", "dow_cos", "atr_14"} <= set(BASELINE_FEATURES)
    directional = ("ret_", "rsi", "macd", "dist_", "ema_", "bb_pctb", "body", "volume")
    assert not [f for f in BASELINE_FEATURES if f.startswith(directional)]


@needs_btc
def test_no_inf_on_real_data_and_degenerate_bars() -> None:
    real = build_features(load_btc("2018-01-01", "2018-04-01"), bar=BAR)
    assert not np.isinf(real.to_numpy()).any()
    # Flat market, zero volume: every division has a zero denominator somewhere.
    n = 300
    flat = pd.DataFrame(
        {
            "timestamp": pd.date_range("2023-01-01", periods=n, freq="15min", tz="UTC"),
            **{c: np.full(n, 50.0) for c in ("open", "high", "low", "close")},
            "volume": np.zeros(n),
        }
    )
    feats = build_features(flat, bar=BAR)
    assert not np.isinf(feats.to_numpy()).any()
    last = feats.iloc[-1]
    assert last["rsi_14"] == 50.0 and last["bb_pctb_20"] == 0.5 and last["volume_z_20"] == 0.0
    assert last["ret_96"] == 0.0 and last["rv_96"] == 0.0 and last["body"] == 0.0


def test_time_of_day_and_day_of_week_for_known_timestamps() -> None:
    stamps = [
        "2024-01-01 00:00",
        "2024-01-01 06:00",
        "2024-01-03 12:00",
        "2024-01-06 18:00",
        "2023-12-31 23:45",
    ]
    frame = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(stamps, utc=True).as_unit("ms"),
            **{c: np.full(len(stamps), 10.0) for c in ("open", "high", "low", "close", "volume")},
        }
    )
    feats = build_features(frame, bar=BAR)
    tol = 1e-6
    # 2024-01-01 is a Monday (day 0): angle 0.
    np.testing.assert_allclose(
        feats[["tod_sin", "tod_cos", "dow_sin", "dow_cos"]].iloc[0], [0, 1, 0, 1], atol=tol
    )
    np.testing.assert_allclose(feats[["tod_sin", "tod_cos"]].iloc[1], [1, 0], atol=tol)
    np.testing.assert_allclose(feats[["tod_sin", "tod_cos"]].iloc[2], [0, -1], atol=tol)
    np.testing.assert_allclose(feats[["tod_sin", "tod_cos"]].iloc[3], [-1, 0], atol=tol)
    ts = frame["timestamp"]
    minute = (ts.dt.hour * 60 + ts.dt.minute).to_numpy()
    dow = ts.dt.day_of_week.to_numpy()
    np.testing.assert_allclose(feats["tod_sin"], np.sin(2 * np.pi * minute / 1440), atol=tol)
    np.testing.assert_allclose(feats["dow_sin"], np.sin(2 * np.pi * dow / 7), atol=tol)
    np.testing.assert_allclose(feats["dow_cos"], np.cos(2 * np.pi * dow / 7), atol=tol)
    assert dow.tolist() == [0, 0, 2, 5, 6]
    # Naive timestamps are read as UTC and give the same values.
    naive = frame.assign(timestamp=frame["timestamp"].dt.tz_localize(None))
    assert_same(build_features(naive, bar=BAR), feats)


def test_gap_features() -> None:
    frame = random_ohlcv(800, 4, gap_rate=0.0)
    # Remove bars 700..702: bar 703 follows a 3-bar outage.
    frame = frame.drop(index=[700, 701, 702]).reset_index(drop=True)
    feats = build_features(frame, bar=BAR)
    prev_gap = feats["prev_gap_bars"].to_numpy()
    since = feats["bars_since_gap"].to_numpy()
    assert np.isnan(prev_gap[0])
    assert prev_gap[700] == 3.0 and (np.delete(prev_gap[1:], 699) == 0.0).all()
    # Before the first gap and before a week of history the distance is unknown.
    assert np.isnan(since[:672]).all() and (since[672:700] == 672).all()
    assert since[700] == 0 and since[705] == 5
    # Inferring the bar length from the spacing gives the same answer.
    assert_same(build_features(frame), feats)


def slow_wilder(values: list[float], n: int) -> list[float]:
    out, avg, count = [], math.nan, 0
    for v in values:
        if math.isnan(v) and count == 0:
            out.append(math.nan)
            continue
        avg = v if count == 0 else avg + (v - avg) / n
        count += 1
        out.append(avg if count >= n else math.nan)
    return out


def slow_ema(values: list[float], span: int) -> list[float]:
    alpha = 2.0 / (span + 1)
    out, avg, count = [], math.nan, 0
    for v in values:
        if math.isnan(v) and count == 0:
            out.append(math.nan)
            continue
        avg = v if count == 0 else alpha * v + (1 - alpha) * avg
        count += 1
        out.append(avg if count >= span else math.nan)
    return out


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return random_ohlcv(400, 11, gap_rate=0.02)


def test_atr_matches_slow_wilder(small: pd.DataFrame) -> None:
    h, lo, c = (small[k].tolist() for k in ("high", "low", "close"))
    tr = [h[0] - lo[0]] + [
        max(h[i] - lo[i], abs(h[i] - c[i - 1]), abs(lo[i] - c[i - 1])) for i in range(1, len(c))
    ]
    for n in (1, 5, 14):
        np.testing.assert_allclose(atr(small, n), slow_wilder(tr, n), rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(
        build_features(small, bar=BAR)["atr_14"], np.array(slow_wilder(tr, 14)) / c, rtol=1e-6
    )


def test_rsi_matches_slow_reference(small: pd.DataFrame) -> None:
    c = small["close"].tolist()
    gains = [math.nan] + [max(c[i] - c[i - 1], 0.0) for i in range(1, len(c))]
    losses = [math.nan] + [max(c[i - 1] - c[i], 0.0) for i in range(1, len(c))]
    g, lo = slow_wilder(gains, 14), slow_wilder(losses, 14)
    expected = [
        math.nan if math.isnan(a) else 100 - 100 / (1 + a / b) for a, b in zip(g, lo, strict=True)
    ]
    rsi = build_features(small, bar=BAR)["rsi_14"].to_numpy()
    np.testing.assert_allclose(rsi, expected, rtol=1e-5, equal_nan=True)
    assert np.nanmin(rsi) >= 0 and np.nanmax(rsi) <= 100


def test_macd_bollinger_returns_match_slow_references(small: pd.DataFrame) -> None:
    c = small["close"].tolist()
    line = [a - b for a, b in zip(slow_ema(c, 12), slow_ema(c, 26), strict=True)]
    signal = slow_ema(line, 9)
    feats = build_features(small, bar=BAR)
    cc = np.array(c)
    np.testing.assert_allclose(feats["macd"], np.array(line) / cc, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(feats["macd_signal"], np.array(signal) / cc, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(
        feats["macd_hist"], (np.array(line) - np.array(signal)) / cc, rtol=1e-4, atol=1e-9
    )
    pctb, width = [], []
    for i in range(len(c)):
        if i < 19:
            pctb.append(math.nan)
            width.append(math.nan)
            continue
        win = c[i - 19 : i + 1]
        mid = sum(win) / 20
        sd = math.sqrt(sum((x - mid) ** 2 for x in win) / 20)
        pctb.append((c[i] - (mid - 2 * sd)) / (4 * sd))
        width.append(4 * sd / mid)
    np.testing.assert_allclose(feats["bb_pctb_20"], pctb, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(feats["bb_width_20"], width, rtol=1e-4)
    for k in (1, 8, 96):
        expected = [math.nan] * k + [math.log(c[i] / c[i - k]) for i in range(k, len(c))]
        np.testing.assert_allclose(feats[f"ret_{k}"], expected, rtol=1e-5, atol=1e-8)
    rets = [math.nan] + [math.log(c[i] / c[i - 1]) for i in range(1, len(c))]
    rv = [math.nan if i < 16 else float(np.std(rets[i - 15 : i + 1])) for i in range(len(c))]
    np.testing.assert_allclose(feats["rv_16"], rv, rtol=1e-4)
