"""Trade outcomes and trading metrics against slow, obvious references and hand-made series."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stagegate_core.metricnames import TOP_PERCENTS, TRADING_METRICS
from stagegate_trainer.features import atr
from stagegate_trainer.labels import barrier_labels
from stagegate_trainer.trading import (
    TradingContext,
    eligible_rows,
    max_drawdown,
    net_r,
    trade_outcomes,
    trading_metrics,
)

BAR_NS = 15 * 60 * 10**9
BAR = pd.Timedelta(minutes=15)


def bars(
    rows: list[tuple[float, float, float, float]], gap_after: int | None = None
) -> pd.DataFrame:
    """OHLC rows 15 minutes apart; `gap_after` drops the bar slot after that row (an outage)."""
    stamps = []
    t = pd.Timestamp("2023-01-01", tz="UTC")
    for i in range(len(rows)):
        stamps.append(t)
        t += BAR * (2 if gap_after is not None and i == gap_after else 1)
    o, h, low, c = (np.array(col, dtype=np.float64) for col in zip(*rows, strict=True))
    return pd.DataFrame(
        {"timestamp": stamps, "open": o, "high": h, "low": low, "close": c, "volume": 1.0}
    )


def fixed(frame: pd.DataFrame, horizon: int = 3) -> tuple[np.ndarray, np.ndarray]:
    return trade_outcomes(
        frame,
        horizon_bars=horizon,
        take_profit=0.02,
        stop_loss=0.01,
        barriers="fixed",
        atr_bars=2,
        bar_ns=BAR_NS,
    )


# Row 0 decides; its trade enters at row 1's open (100): take-profit 102, stop 99, 1 R = 1.0.
FLAT = (100.0, 100.2, 99.8, 100.0)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        pytest.param([FLAT, (100, 102.5, 99.5, 102), FLAT, FLAT], 2.0, id="take-profit first"),
        pytest.param([FLAT, (100, 100.5, 98.9, 99), FLAT, FLAT], -1.0, id="stop first"),
        pytest.param(
            [FLAT, (100, 101, 99.5, 100), (100, 101.5, 99.2, 100.2), (100.2, 100.9, 99.6, 100.5)],
            0.5,
            id="neither: mark-to-market at the horizon close",
        ),
        pytest.param([FLAT, (100, 102.5, 98.5, 101), FLAT, FLAT], -1.0, id="both in one bar"),
        pytest.param(
            [FLAT, (100, 100.5, 99.5, 99.6), (97, 97.5, 96.5, 97), FLAT],
            -3.0,
            id="price gap through the stop fills at the open",
        ),
        pytest.param(
            [FLAT, (100, 100.5, 99.5, 100.4), (103, 104, 102.8, 103.5), FLAT],
            2.0,
            id="price gap over the take-profit fills at the take-profit",
        ),
        pytest.param(
            [FLAT, (100, 101, 99.5, 100), (100, 102.5, 99.5, 102), FLAT],
            2.0,
            id="take-profit on the second bar",
        ),
    ],
)
def test_hand_made_outcomes(rows: list[tuple[float, ...]], expected: float) -> None:
    outcome, fraction = fixed(bars(rows))  # type: ignore[arg-type]
    assert outcome[0] == pytest.approx(expected)
    assert fraction[0] == pytest.approx(0.01)
    assert np.isnan(outcome[1:]).all()  # their horizons run past the data


def test_a_missing_bar_inside_the_horizon_makes_the_outcome_unknowable() -> None:
    rows = [FLAT, (100, 102.5, 99.5, 102), FLAT, FLAT, FLAT, FLAT]
    assert fixed(bars(rows))[0][0] == pytest.approx(2.0)
    outcome, fraction = fixed(bars(rows, gap_after=2))
    assert np.isnan(outcome[0]) and np.isnan(fraction[0])
    # Row 3's horizon (rows 4, 5 and the row after) runs past the data; rows 2.. all span
    # or follow the gap without three complete bars after them.
    assert np.isnan(outcome).all()


def test_costs_in_r_and_percent() -> None:
    context = TradingContext(fee_bps=10, slippage_bps=2, horizon_bars=3, bar_ns=BAR_NS)
    assert context.cost_fraction == pytest.approx(0.0024)
    got = net_r(np.array([2.0, -1.0, 0.5]), np.array([0.01, 0.01, 0.004]), context.cost_fraction)
    # 24 bps round trip on a 1 % stop is 0.24 R; on a 0.4 % stop, 0.6 R.
    np.testing.assert_allclose(got, [1.76, -1.24, -0.1])
    metrics = trading_metrics(
        signal=np.array([True, True, False]),
        label=np.array([1.0, 0.0, 0.0]),
        r_net=got,
        risk_fraction=np.array([0.01, 0.01, 0.004]),
    )
    assert metrics["expectedR"] == pytest.approx(0.26)
    # Percent per trade: +2 % - 0.24 % and -1 % - 0.24 %, averaged.
    assert metrics["expectedReturnPct"] == pytest.approx((1.76 - 1.24) / 2)
    assert metrics["profitFactor"] == pytest.approx(1.76 / 1.24)
    assert metrics["precision"] == 0.5 and metrics["trades"] == 2
    assert metrics["signalRate"] == pytest.approx(2 / 3)


def test_only_rows_whose_horizon_ends_inside_the_test_period_trade() -> None:
    context = TradingContext(fee_bps=0, slippage_bps=0, horizon_bars=4, bar_ns=BAR_NS)
    ts = np.arange(10, dtype=np.int64) * BAR_NS
    end = 10 * BAR_NS  # exclusive: the period is bars 0..9
    # Bar t's horizon is t+1..t+4, inside the period iff t + 4 <= 9.
    assert eligible_rows(ts, end, context).tolist() == [True] * 6 + [False] * 4


# --------------------------------------------------------------------------- slow references


def reference_outcomes(
    frame: pd.DataFrame,
    horizon: int,
    tp: float,
    sl: float,
    barriers: Literal["volatility", "fixed"],
    atr_bars: int,
) -> np.ndarray:
    """One trade at a time, bar by bar, exactly as a trader would book it."""
    o, h, low, c = (frame[k].to_numpy(np.float64) for k in ("open", "high", "low", "close"))
    ns = frame["timestamp"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    width = atr(frame, atr_bars)
    out = np.full(len(frame), np.nan)
    for t in range(len(frame) - horizon):
        if any(ns[t + k + 1] - ns[t + k] != BAR_NS for k in range(horizon)):
            continue
        entry = o[t + 1]
        if barriers == "volatility":
            if not math.isfinite(width[t]):
                continue
            take, stop = entry + tp * width[t], entry - sl * width[t]
        else:
            take, stop = entry * (1 + tp), entry * (1 - sl)
        risk = entry - stop
        exit_price = c[t + horizon]
        for k in range(1, horizon + 1):
            if low[t + k] <= stop:
                exit_price = min(stop, o[t + k])
                break
            if h[t + k] >= take:
                exit_price = take
                break
        out[t] = (exit_price - entry) / risk
    return out


@st.composite
def random_bars(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(20, 90))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, 0.01, n)
    # Occasional jumps between close and the next open: gaps through the barriers.
    jumps = np.where(rng.random(n) < 0.1, rng.normal(0, 0.03, n), 0.0)
    close = 100 * np.exp(np.cumsum(steps + jumps))
    open_ = np.concatenate(([100.0], close[:-1] * np.exp(jumps[1:])))
    wiggle = np.abs(rng.normal(0, 0.006, n)) * close
    slots = np.arange(n)
    outage = draw(st.one_of(st.none(), st.integers(1, n - 1)))
    if outage is not None:  # an exchange outage: every later bar shifts by one slot
        slots = np.where(slots < outage, slots, slots + 1)
    stamps = pd.Timestamp("2023-01-01", tz="UTC") + BAR * slots
    return pd.DataFrame(
        {
            "timestamp": stamps,
            "open": open_,
            "high": np.maximum(open_, close) + wiggle,
            "low": np.minimum(open_, close) - wiggle,
            "close": close,
            "volume": 1.0,
        }
    )


@settings(max_examples=150, deadline=None)
@given(
    frame=random_bars(),
    horizon=st.integers(1, 12),
    barriers=st.sampled_from(["volatility", "fixed"]),
)
def test_outcomes_match_the_slow_reference_and_the_labels(
    frame: pd.DataFrame, horizon: int, barriers: Literal["volatility", "fixed"]
) -> None:
    tp, sl = (2.0, 1.0) if barriers == "volatility" else (0.02, 0.01)
    outcome, fraction = trade_outcomes(
        frame,
        horizon_bars=horizon,
        take_profit=tp,
        stop_loss=sl,
        barriers=barriers,
        atr_bars=5,
        bar_ns=BAR_NS,
    )
    expected = reference_outcomes(frame, horizon, tp, sl, barriers, 5)
    np.testing.assert_allclose(outcome, expected, rtol=1e-9, atol=1e-9, equal_nan=True)
    labels = barrier_labels(
        frame,
        horizon_bars=horizon,
        take_profit=tp,
        stop_loss=sl,
        barriers=barriers,
        atr_bars=5,
        bar=BAR.to_pytimedelta(),
    )
    # Unknowable exactly where the label is, and +tp/sl R exactly where the label is 1.
    assert np.array_equal(np.isnan(outcome), np.isnan(labels))
    known = ~np.isnan(labels)
    assert np.array_equal(np.isclose(outcome[known], tp / sl), labels[known] == 1)
    assert (fraction[known] > 0).all()


def reference_metrics(
    signal: list[bool], label: list[float], r: list[float], score: list[float]
) -> dict[str, float | int | None]:
    trades = [i for i, s in enumerate(signal) if s]
    out: dict[str, float | int | None] = {"trades": len(trades)}
    out["expectedR"] = sum(r[i] for i in trades) / len(trades) if trades else None
    out["precision"] = sum(label[i] for i in trades) / len(trades) if trades else None
    equity, peak, worst = 0.0, 0.0, 0.0
    for i in trades:
        equity += r[i]
        peak = max(peak, equity)
        worst = max(worst, peak - equity)
    out["maxDrawdownR"] = worst
    out["totalR"] = equity
    wins = sum(r[i] for i in trades if r[i] > 0)
    losses = -sum(r[i] for i in trades if r[i] < 0)
    out["profitFactor"] = wins / losses if trades and losses else None
    ranked = sorted(range(len(score)), key=lambda i: (-score[i], i))
    for p in TOP_PERCENTS:
        chosen = ranked[: math.ceil(len(score) * p / 100)]
        out[f"tradesTop{p}"] = len(chosen)
        out[f"expectedRTop{p}"] = sum(r[i] for i in chosen) / len(chosen) if chosen else None
    return out


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.booleans(),
            st.sampled_from([0.0, 1.0]),
            st.floats(-3, 3, allow_nan=False),
            st.sampled_from([0.1, 0.2, 0.3, 0.9]),  # ties in the score on purpose
        ),
        max_size=60,
    )
)
def test_trading_metrics_match_the_reference(
    rows: list[tuple[bool, float, float, float]],
) -> None:
    signal, label, r, score = (
        (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [], [])
    )
    got = trading_metrics(
        signal=np.array(signal, dtype=bool),
        label=np.array(label, dtype=np.float64),
        r_net=np.array(r, dtype=np.float64),
        risk_fraction=np.full(len(rows), 0.01),
        score=np.array(score, dtype=np.float64),
    )
    assert set(got) == set(TRADING_METRICS)
    for name, value in reference_metrics(signal, label, r, score).items():
        if value is None:
            assert got[name] is None, name
        else:
            assert got[name] == pytest.approx(value, rel=1e-12, abs=1e-9), name


def test_max_drawdown_counts_from_the_start() -> None:
    assert max_drawdown(np.cumsum([-1.0, -1.0, 2.0, -0.5])) == 2.0
    assert max_drawdown(np.cumsum([1.0, 2.0, -1.5, 1.0])) == 1.5
    assert max_drawdown(np.array([])) == 0.0
