"""The walk-forward planner: agreement with scikit-learn, purge, tiling, limits, errors, JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.model_selection import TimeSeriesSplit
from stagegate_core.plan import (
    NS_PER_DAY,
    Fold,
    PlanError,
    StagePlan,
    iso,
    parse_iso,
    plan_stage,
)
from stagegate_core.specparts import FullStageSpec, QuickStageSpec, StageSpec

MIN_NS = 60 * 10**9
M15 = 15 * MIN_NS
H1 = 60 * MIN_NS
START = int(datetime(2023, 1, 1, tzinfo=UTC).timestamp()) * 10**9


def grid(bar_ns: int, days: int, start: int = START) -> list[int]:
    """Gapless bar-open times covering `days` days."""
    return [start + i * bar_ns for i in range(days * NS_PER_DAY // bar_ns)]


def bars_per_day(bar_ns: int) -> int:
    return NS_PER_DAY // bar_ns


# (id, bar, days of data, stage spec, purge bars)
CONFIGS: list[tuple[str, int, int, StageSpec, int]] = [
    (
        "15m fixed 60/14",
        M15,
        200,
        StageSpec(train_window="fixed", min_train_days=60, test_period_days=14),
        0,
    ),
    (
        "15m fixed 60/14 purge",
        M15,
        200,
        StageSpec(train_window="fixed", min_train_days=60, test_period_days=14),
        49,
    ),
    (
        "15m expanding 90/21",
        M15,
        200,
        StageSpec(train_window="expanding", min_train_days=90, test_period_days=21),
        49,
    ),
    (
        "15m expanding 30/7",
        M15,
        120,
        StageSpec(train_window="expanding", min_train_days=30, test_period_days=7),
        0,
    ),
    ("15m full defaults", M15, 365, FullStageSpec(), 49),
    (
        "1h fixed 180/60 max 3",
        H1,
        500,
        StageSpec(train_window="fixed", min_train_days=180, test_period_days=60, max_folds=3),
        49,
    ),
    (
        "1h fixed 30/10",
        H1,
        150,
        StageSpec(train_window="fixed", min_train_days=30, test_period_days=10),
        0,
    ),
    (
        "1h expanding 120/30",
        H1,
        400,
        StageSpec(train_window="expanding", min_train_days=120, test_period_days=30),
        49,
    ),
    ("1h quick defaults (lookback 365)", H1, 700, QuickStageSpec(), 49),
    (
        "1h expanding lookback 300",
        H1,
        700,
        StageSpec(
            train_window="expanding", min_train_days=100, test_period_days=40, lookback_days=300
        ),
        49,
    ),
]


def _sklearn_folds(
    n_rows: int, spec: StageSpec, bpd: int, purge: int, n_splits: int
) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    splitter = TimeSeriesSplit(
        n_splits=n_splits,
        test_size=spec.test_period_days * bpd,
        gap=purge,
        max_train_size=spec.min_train_days * bpd if spec.train_window == "fixed" else None,
    )
    out = []
    for train, test in splitter.split(np.zeros(n_rows)):
        # Every split is one contiguous block: compare as [first, last) ranges.
        assert np.array_equal(train, np.arange(train[0], train[-1] + 1))
        assert np.array_equal(test, np.arange(test[0], test[-1] + 1))
        out.append(((int(train[0]), int(train[-1]) + 1), (int(test[0]), int(test[-1]) + 1)))
    return out


@pytest.mark.parametrize(
    ("bar", "days", "spec", "purge"), [c[1:] for c in CONFIGS], ids=[c[0] for c in CONFIGS]
)
def test_matches_sklearn_time_series_split(
    bar: int, days: int, spec: StageSpec, purge: int
) -> None:
    ts = grid(bar, days)
    bpd = bars_per_day(bar)
    plan = plan_stage("quick", ts, bar_ns=bar, spec=spec, purge_bars=purge)
    count = len(plan.folds)
    assert count >= 2  # TimeSeriesSplit needs two splits
    offset = 0
    if spec.lookback_days is not None:
        offset = len(ts) - spec.lookback_days * bpd
        assert plan.data_start == ts[offset]
    expected = _sklearn_folds(len(ts) - offset, spec, bpd, purge, count)
    got = [
        (
            (f.train_rows[0] - offset, f.train_rows[1] - offset),
            (f.test_rows[0] - offset, f.test_rows[1] - offset),
        )
        for f in plan.folds
    ]
    assert got == expected
    # Fixed windows train on exactly min_train_days; the first expanding fold on at least that.
    min_train = spec.min_train_days * bpd
    if spec.train_window == "fixed":
        assert all(f.n_train == min_train for f in plan.folds)
    else:
        assert plan.folds[0].n_train >= min_train
        assert plan.folds[0].n_train - min_train < spec.test_period_days * bpd
    # The planner keeps every fold that fits: one more split would train on too little.
    if spec.max_folds is None or count < spec.max_folds:
        extra = _sklearn_folds(len(ts) - offset, spec, bpd, purge, count + 1)
        first_train = extra[0][0]
        assert first_train[1] - first_train[0] < min_train


@pytest.mark.parametrize(
    ("bar", "days", "spec", "purge"), [c[1:] for c in CONFIGS], ids=[c[0] for c in CONFIGS]
)
def test_tests_tile_backwards_from_the_end(
    bar: int, days: int, spec: StageSpec, purge: int
) -> None:
    ts = grid(bar, days)
    plan = plan_stage("full", ts, bar_ns=bar, spec=spec, purge_bars=purge)
    assert plan.data_end == ts[-1] + bar
    assert plan.folds[-1].test_end == plan.data_end
    assert plan.folds[-1].test_rows[1] == len(ts)
    assert [f.fold for f in plan.folds] == list(range(1, len(plan.folds) + 1))
    for before, after in pairwise(plan.folds):
        assert before.test_end == after.test_start  # step = test: adjacent, disjoint
        assert before.test_rows[1] == after.test_rows[0]
        assert before.test_start < after.test_start
    assert (plan.purge_bars, plan.train_window, plan.stage) == (purge, spec.train_window, "full")


def test_step_days_spaces_test_periods() -> None:
    spec = StageSpec(train_window="fixed", min_train_days=30, test_period_days=7, step_days=10)
    plan = plan_stage("quick", grid(H1, 120), bar_ns=H1, spec=spec, purge_bars=5)
    starts = [f.test_start for f in plan.folds]
    assert all(b - a == 10 * NS_PER_DAY for a, b in pairwise(starts))
    assert all(f.test_end - f.test_start == 7 * NS_PER_DAY for f in plan.folds)
    assert all(f.n_test == 7 * 24 for f in plan.folds)


@pytest.mark.parametrize("window", ["fixed", "expanding"])
@pytest.mark.parametrize("max_folds", [1, 2, 4])
def test_max_folds_keeps_the_most_recent(window: str, max_folds: int) -> None:
    ts = grid(H1, 300)
    base: dict[str, Any] = {
        "train_window": window,
        "min_train_days": 60,
        "test_period_days": 20,
    }
    every = plan_stage("quick", ts, bar_ns=H1, spec=StageSpec(**base), purge_bars=49)
    kept = plan_stage(
        "quick", ts, bar_ns=H1, spec=StageSpec(**base, max_folds=max_folds), purge_bars=49
    )
    assert len(every.folds) > max_folds
    assert len(kept.folds) == max_folds
    assert [f.fold for f in kept.folds] == list(range(1, max_folds + 1))
    strip = [(f.train_rows, f.test_rows, f.train_start, f.test_end) for f in every.folds]
    assert [(f.train_rows, f.test_rows, f.train_start, f.test_end) for f in kept.folds] == strip[
        -max_folds:
    ]


@pytest.mark.parametrize("window", ["fixed", "expanding"])
def test_lookback_limits_the_data(window: str) -> None:
    ts = grid(M15, 400)
    spec = StageSpec(train_window=window, min_train_days=60, test_period_days=30, lookback_days=200)
    plan = plan_stage("quick", ts, bar_ns=M15, spec=spec, purge_bars=49)
    first = len(ts) - 200 * 96
    assert plan.data_start == ts[first] == plan.data_end - 200 * NS_PER_DAY
    assert min(f.train_rows[0] for f in plan.folds) >= first
    assert min(f.train_start for f in plan.folds) >= plan.data_start
    if window == "expanding":
        assert all(f.train_rows[0] == first for f in plan.folds)
    # Same as planning on the last 200 days alone, with row indexes shifted.
    alone = plan_stage(
        "quick",
        ts[first:],
        bar_ns=M15,
        spec=spec.model_copy(update={"lookback_days": None}),
        purge_bars=49,
    )
    shift = [
        ((a + first, b + first), (c + first, d + first))
        for (a, b), (c, d) in ((f.train_rows, f.test_rows) for f in alone.folds)
    ]
    assert [(f.train_rows, f.test_rows) for f in plan.folds] == shift


def test_lookback_longer_than_the_data_uses_all_of_it() -> None:
    ts = grid(H1, 100)
    spec = StageSpec(
        train_window="expanding", min_train_days=30, test_period_days=10, lookback_days=1000
    )
    plan = plan_stage("quick", ts, bar_ns=H1, spec=spec, purge_bars=0)
    assert plan.data_start == ts[0]
    assert plan.folds[0].train_rows[0] == 0


@pytest.mark.parametrize(
    ("bar", "window", "train", "test", "purge"),
    [
        (M15, "fixed", 180, 60, 49),
        (M15, "expanding", 120, 21, 49),
        (H1, "fixed", 30, 10, 0),
        (H1, "expanding", 10, 5, 7),
    ],
)
def test_too_short_boundary_and_message(
    bar: int, window: str, train: int, test: int, purge: int
) -> None:
    spec = StageSpec(train_window=window, min_train_days=train, test_period_days=test)
    bpd = bars_per_day(bar)
    needed = (train + test) * bpd + purge
    ts = [START + i * bar for i in range(needed)]
    plan = plan_stage("quick", ts, bar_ns=bar, spec=spec, purge_bars=purge)
    assert len(plan.folds) == 1
    assert plan.folds[0].n_train == train * bpd
    with pytest.raises(PlanError) as err:
        plan_stage("quick", ts[1:], bar_ns=bar, spec=spec, purge_bars=purge)
    message = str(err.value)
    assert message.startswith("stage quick: data too short for one fold")
    assert f"needs {needed:,} rows" in message
    assert f"{needed - 1:,} rows available" in message
    assert f"{train} training days + {purge} purge bars + {test} test days" in message
    assert f"at {bpd} bars a day" in message


def test_too_short_message_counts_rows_after_lookback() -> None:
    ts = grid(M15, 400)
    spec = QuickStageSpec(lookback_days=100)  # 180 + 60 days needed, 100 kept
    with pytest.raises(PlanError) as err:
        plan_stage("quick", ts, bar_ns=M15, spec=spec, purge_bars=49)
    assert "needs 23,089 rows" in str(err.value)
    assert "9,600 rows available" in str(err.value)


def test_no_rows_is_an_error() -> None:
    with pytest.raises(PlanError, match="no labelled rows"):
        plan_stage("full", [], bar_ns=M15, spec=FullStageSpec(), purge_bars=49)


# --------------------------------------------------------------------------- random data with gaps


@st.composite
def gappy_timestamps(draw: st.DrawFn, bar: int, days: int) -> list[int]:
    n = days * bars_per_day(bar)
    keep = np.ones(n, dtype=bool)
    for _ in range(draw(st.integers(0, 6))):
        start = draw(st.integers(0, n - 1))
        length = draw(st.integers(1, max(1, n // 8)))
        keep[start : start + length] = False
    keep[-1] = True
    offset = draw(st.integers(0, 10**6)) * bar
    return [START + offset + i * bar for i in np.flatnonzero(keep).tolist()]


@st.composite
def planning_cases(draw: st.DrawFn) -> tuple[list[int], int, StageSpec, int]:
    bar = draw(st.sampled_from([M15, H1, 4 * H1]))
    days = draw(st.integers(5, 60))
    ts = draw(gappy_timestamps(bar, days))
    spec = StageSpec(
        train_window=draw(st.sampled_from(["fixed", "expanding"])),
        min_train_days=draw(st.integers(1, 20)),
        test_period_days=draw(st.integers(1, 10)),
        step_days=draw(st.none() | st.integers(1, 12)),
        max_folds=draw(st.none() | st.integers(1, 6)),
        lookback_days=draw(st.none() | st.integers(3, 70)),
    )
    purge = draw(st.integers(0, 3 * bars_per_day(bar)))
    return ts, bar, spec, purge


@settings(max_examples=300, deadline=None)
@given(case=planning_cases())
def test_random_plans_are_purged_and_consistent(
    case: tuple[list[int], int, StageSpec, int],
) -> None:
    ts, bar, spec, purge = case
    try:
        plan = plan_stage("quick", ts, bar_ns=bar, spec=spec, purge_bars=purge)
    except PlanError as exc:
        assert "data too short for one fold" in str(exc)
        span = ts[-1] + bar - ts[0]
        if spec.lookback_days is not None:
            span = min(span, spec.lookback_days * NS_PER_DAY)
        needed = (spec.min_train_days + spec.test_period_days) * NS_PER_DAY + purge * bar
        gapless = len(ts) == (ts[-1] - ts[0]) // bar + 1
        assert span < needed or not gapless
        return
    data_end = ts[-1] + bar
    assert plan.data_end == data_end
    assert plan.data_start >= ts[0]
    if spec.lookback_days is not None:
        assert plan.data_start >= data_end - spec.lookback_days * NS_PER_DAY
    test_ns = spec.test_period_days * NS_PER_DAY
    step_ns = (spec.step_days or spec.test_period_days) * NS_PER_DAY
    assert 1 <= len(plan.folds) <= (spec.max_folds or len(ts))
    for number, fold in enumerate(plan.folds, start=1):
        assert fold.fold == number
        a, b = fold.train_rows
        c, d = fold.test_rows
        assert 0 <= a < b <= c < d <= len(ts)
        # Rows are exactly those whose bar opens inside each window.
        assert all(fold.train_start <= t < fold.train_end for t in ts[a:b])
        assert all(fold.test_start <= t < fold.test_end for t in ts[c:d])
        assert a == 0 or ts[a - 1] < max(fold.train_start, plan.data_start)
        assert b == len(ts) or ts[b] >= fold.train_end
        assert c == 0 or ts[c - 1] < fold.test_start
        assert d == len(ts) or ts[d] >= fold.test_end
        # The purge: no training bar opens within purge_bars bars of the test period.
        assert fold.test_start - ts[b - 1] > purge * bar
        assert ts[c] - ts[b - 1] > purge * bar
        assert fold.test_start - fold.train_end == purge * bar
        assert fold.test_end - fold.test_start == test_ns
        assert fold.train_start >= plan.data_start
        if spec.train_window == "fixed":
            assert fold.train_end - fold.train_start == spec.min_train_days * NS_PER_DAY
        else:
            assert fold.train_start == plan.data_start
            assert fold.train_end - fold.train_start >= spec.min_train_days * NS_PER_DAY
        # Test periods sit a whole number of steps back from the end of the data.
        assert (data_end - fold.test_end) % step_ns == 0
    for before, after in pairwise(plan.folds):
        assert before.test_start < after.test_start
        if spec.step_days is None or spec.step_days >= spec.test_period_days:
            assert before.test_end <= after.test_start
            assert before.test_rows[1] <= after.test_rows[0]
    # maxFolds keeps the most recent folds of the unlimited plan.
    if spec.max_folds is not None:
        every = plan_stage(
            "quick",
            ts,
            bar_ns=bar,
            spec=spec.model_copy(update={"max_folds": None}),
            purge_bars=purge,
        )
        tail = every.folds[-len(plan.folds) :]
        assert [(f.train_rows, f.test_rows) for f in plan.folds] == [
            (f.train_rows, f.test_rows) for f in tail
        ]
    # The JSON form round-trips (bar opens are whole seconds).
    assert StagePlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan


# --------------------------------------------------------------------------- JSON


def test_json_round_trip_and_shape() -> None:
    plan = plan_stage("quick", grid(M15, 400), bar_ns=M15, spec=QuickStageSpec(), purge_bars=49)
    data = plan.to_json()
    # lookbackDays 365 leaves room for three 180 + 60-day folds, below maxFolds 5.
    assert data["foldCount"] == len(plan.folds) == 3
    assert data["stage"] == "quick"
    assert data["purgeBars"] == 49
    assert data["trainWindow"] == "fixed"
    assert data["dataEnd"] == iso(plan.data_end)
    first = data["folds"][0]
    fold = plan.folds[0]
    assert first["trainRows"] == fold.n_train == 180 * 96
    assert first["testRows"] == fold.n_test == 60 * 96
    assert first["trainIndex"] == list(fold.train_rows)
    assert first["testStart"].endswith("Z")
    assert StagePlan.from_json(json.loads(json.dumps(data))) == plan
    assert Fold.from_json(first) == fold
    assert plan.fold(3) == plan.folds[2]
    with pytest.raises(PlanError, match=r"folds 1\.\.3, not 4"):
        plan.fold(4)


@settings(max_examples=200, deadline=None)
@given(seconds=st.integers(0, 4_000_000_000))
def test_iso_round_trip(seconds: int) -> None:
    ns = seconds * 10**9
    text = iso(ns)
    assert parse_iso(text) == ns
    assert text == datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
