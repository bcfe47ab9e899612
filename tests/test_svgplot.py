"""svgplot, the report's hand-written SVG plotting, and the charts drawn with it: ticks, date
ticks, the display-resolution reduction, escaping, empty and non-finite input, determinism."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stagegate_trainer import charts
from stagegate_trainer.svgplot import (
    Figure,
    column_envelope,
    date_ticks,
    nice_ticks,
    tick_label,
)

from tests.support.imports import loaded_by

SVG = "{http://www.w3.org/2000/svg}"
values = st.floats(-1e12, 1e12, allow_nan=False, allow_subnormal=False)


def parse(svg: bytes) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    width, height = float(root.attrib["width"]), float(root.attrib["height"])
    assert root.attrib["viewBox"] == f"0 0 {root.attrib['width']} {root.attrib['height']}"
    assert width > 0 and height > 0 and "DejaVu Sans" in root.attrib["font-family"]
    return root


def texts(svg: bytes) -> list[str]:
    return [t.text or "" for t in parse(svg).iter(f"{SVG}text")]


# -- ticks ------------------------------------------------------------------------------------


@given(values, values, st.integers(4, 9))
@settings(max_examples=500, deadline=None)
def test_nice_ticks_cover_the_range_evenly_in_few_round_steps(a: float, b: float, n: int) -> None:
    lo, hi = min(a, b), max(a, b)
    ticks = nice_ticks(lo, hi, n)
    assert 3 <= len(ticks) <= 11
    step = ticks[1] - ticks[0]
    # Ticks a billion steps from 0 carry the float rounding of their size, relative to a step.
    rounding = 1e-6 + max(abs(ticks[0]), abs(ticks[-1])) / step * 1e-15
    assert ticks[0] <= lo + step * rounding and ticks[-1] >= hi - step * rounding
    if lo == hi:
        assert ticks[0] < lo < ticks[-1]  # a lone value sits inside, not on the frame
    assert np.allclose(np.diff(ticks), step, rtol=rounding, atol=0)
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert min(abs(mantissa - m) for m in (1, 2, 5, 10)) < rounding * 10
    labels = [tick_label(t, step) for t in ticks]
    assert len(set(labels)) == len(labels)  # neighbours never read the same
    assert all(label not in ("-0", "-0.0", "nan") for label in labels)


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (-25000.0, 0.0, [-25000.0, -20000.0, -15000.0, -10000.0, -5000.0, 0.0]),
        (0.31, 0.31, [0.26, 0.28, 0.3, 0.32, 0.34, 0.36]),
    ],
)
def test_nice_ticks_examples(lo: float, hi: float, expected: list[float]) -> None:
    assert nice_ticks(lo, hi) == pytest.approx(expected)


def test_tick_labels_have_just_the_digits_the_step_needs() -> None:
    assert tick_label(0.1 + 0.2, 0.1) == "0.3"
    assert tick_label(-25000, 5000) == "-25000"
    assert tick_label(1e-17, 0.2) == "0.0"
    assert tick_label(0.15, 0.05) == "0.15"
    assert tick_label(3.0e9, 5e8) == "3.0e+09"


def test_non_finite_bounds_give_a_default_range() -> None:
    assert nice_ticks(math.nan, math.inf) == nice_ticks(0.0, 1.0)


@given(st.floats(0, 4e9), st.floats(60, 3.2e9))  # 1970..2096, a minute to a century
@settings(max_examples=300, deadline=None)
def test_date_ticks_increase_inside_the_range_and_are_few(lo: float, span: float) -> None:
    ticks = date_ticks(lo, lo + span)
    at = [t for t, _ in ticks]
    assert 1 <= len(at) <= 8
    assert all(lo <= t <= lo + span for t in at)
    assert (np.diff(at) > 0).all()
    assert all(label for _, label in ticks)


def test_date_tick_labels_follow_the_span() -> None:
    def seconds(text: str) -> float:
        return pd.Timestamp(text, tz="UTC").timestamp()

    half_year = date_ticks(seconds("2023-07-04 12:00"), seconds("2023-12-31"))
    assert [label for _, label in half_year] == [
        "Aug 2023", "Sep 2023", "Oct 2023", "Nov 2023", "Dec 2023",
    ]  # fmt: skip
    decade = [label for _, label in date_ticks(seconds("2015-03-01"), seconds("2024-06-01"))]
    assert decade and all(len(y) == 4 and y.isdigit() for y in decade)
    days = [label for _, label in date_ticks(seconds("2023-07-03"), seconds("2023-07-09"))]
    assert days[0] == "Jul 3" and days[-1] == "Jul 9"
    assert date_ticks(5.0, 5.0) == [] and date_ticks(math.nan, 1.0) == []


# -- the display-resolution reduction ---------------------------------------------------------


@given(
    st.lists(st.floats(0, 300, allow_nan=False), min_size=0, max_size=3000),
    st.integers(0, 2**32 - 1),
)
@settings(max_examples=200, deadline=None)
def test_the_envelope_keeps_the_ends_and_every_columns_extremes(xs: list[float], seed: int) -> None:
    px = np.sort(np.array(xs, dtype=np.float64))
    py = np.random.default_rng(seed).normal(0, 50, len(px)).round(1)  # ties too
    keep = column_envelope(px, py)
    n = len(px)
    assert list(keep) == sorted(set(keep.tolist()))  # drawn in the original order
    if n == 0:
        return
    assert keep[0] == 0 and keep[-1] == n - 1
    column = np.floor(px)
    kept = np.zeros(n, dtype=bool)
    kept[keep] = True
    for c in np.unique(column):
        inside = column == c
        assert py[inside & kept].min() == py[inside].min()
        assert py[inside & kept].max() == py[inside].max()
        first, last = np.flatnonzero(inside)[[0, -1]]
        assert kept[first] and kept[last]  # where the curve enters and leaves the column
    assert len(keep) <= max(4 * len(np.unique(column)), min(n, 4))


def test_a_long_equity_curve_becomes_a_few_thousand_points() -> None:
    rng = np.random.default_rng(1)
    fig = Figure(1000, 450)
    times = 1.69e9 + np.arange(17280) * 900.0
    fig.axes[0].xdate = True
    fig.axes[0].line(times, np.cumsum(rng.normal(-1, 3, len(times))), "#1f5fa8", step=True)
    polyline = parse(fig.svg()).find(f"{SVG}polyline")
    assert polyline is not None
    points = polyline.attrib["points"].split()
    assert 1000 < len(points) <= 4 * 1000


# -- text, empty and odd input, determinism ---------------------------------------------------


def test_text_is_escaped() -> None:
    names = ["a<b", "x&y", 'say "hi"', "</svg><script>alert(1)</script>"]
    fig = Figure(800, 600)
    fig.axes[0].title = "gain <& co>"
    fig.axes[0].barh(names, [3.0, 2.0, 1.0, 0.5], "#1f5fa8")
    shown = texts(fig.svg())
    assert set(names) | {"gain <& co>"} <= set(shown)
    assert b"<script>" not in fig.svg()


@pytest.mark.parametrize(
    "x, y",
    [
        ([], []),
        ([math.nan, math.inf], [1.0, 2.0]),
        ([1.0, 2.0, 3.0], [math.nan, -math.inf, math.inf]),
    ],
)
def test_nothing_to_draw_gives_the_axes_and_a_note(x: list[float], y: list[float]) -> None:
    fig = Figure(600, 400, panels=2, sharex=True)
    top, bottom = fig.axes
    top.note = "no trades"
    top.line(x, y, "#1f5fa8", step=True, label="model")
    top.hline(0, "black")
    bottom.bars([0.0, 0.5, 1.0], [0, 0], "#b03a2e", alpha=0.6, label="none")
    svg = fig.svg()
    assert "no trades" in texts(svg) and "no data" in texts(svg)
    assert b"nan" not in svg.lower() and b"inf" not in svg.lower()


@pytest.mark.parametrize(
    "x, y",
    [([5.0], [3.0]), ([1.0, 2.0, 3.0], [7.0, 7.0, 7.0]), ([2.0, 2.0], [0.0, 1.0])],
)
def test_a_single_point_or_a_flat_series_divides_by_nothing(x: list[float], y: list[float]) -> None:
    fig = Figure(500, 400)
    fig.axes[0].xdate = x == [5.0]
    fig.axes[0].line(x, y, "#1f5fa8", marker=True, label="one")
    fig.axes[0].vline(math.nan, "black")
    svg = fig.svg()
    parse(svg)
    assert b"nan" not in svg.lower() and b"inf" not in svg.lower()
    assert len(parse(svg).findall(f".//{SVG}circle")) == len(x) + 1  # and one in the legend


def frame(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    proba = rng.uniform(0.1, 0.7, rows)
    return pd.DataFrame(
        {
            "timestamp": pd.date_range("2023-07-01", periods=rows, freq="15min", tz="UTC"),
            "label": (rng.uniform(size=rows) < proba).astype(np.int8),
            "proba": proba,
            "signal": (proba > 0.5).astype(np.int8),
            "baselineProba": rng.uniform(0.2, 0.5, rows),
            "baselineSignal": (rng.uniform(size=rows) < 0.4).astype(np.int8),
            "netR": rng.normal(-0.05, 1.0, rows),
            "tradable": np.ones(rows, dtype=np.int8),
        }
    )


def every_chart(f: pd.DataFrame) -> dict[str, bytes]:
    names = [f"f<{i}>" for i in range(25)]
    return {
        "folds": charts.equity_per_fold([(1, f), (2, f.iloc[: len(f) // 2])]),
        "stitched": charts.equity_stitched(f),
        "roc": charts.roc(f, 0.53, None),
        "calibration": charts.calibration(f),
        "importance": charts.importance(names, np.linspace(0, 1, 25)),
        "probabilities": charts.probabilities(f, [0.45, 0.5]),
    }


def test_the_charts_are_deterministic_and_valid() -> None:
    first, again = every_chart(frame(3000)), every_chart(frame(3000))
    assert first == again  # byte for byte: no ids, no dates, no randomness
    for svg in first.values():
        parse(svg)
    assert "f<24>" in texts(first["importance"]) and "f<4>" not in texts(first["importance"])
    assert {"model", "vol/time baseline"} <= set(texts(first["stitched"]))


def test_the_charts_of_a_stage_without_rows_say_so() -> None:
    empty = frame(0)
    drawn = every_chart(empty) | {"importance": charts.importance([], np.zeros(0))}
    for svg in drawn.values():
        parse(svg)
    assert texts(drawn["stitched"]).count("no trades") == 2
    assert "no trades" in texts(drawn["folds"])
    assert "no data" in texts(drawn["probabilities"]) and "no data" in texts(drawn["importance"])


def test_drawing_the_report_imports_no_plotting_library() -> None:
    modules = ["stagegate_trainer.charts", "stagegate_trainer.htmlreport"]
    assert loaded_by(modules, ["matplotlib", "PIL"]) == []


def test_nice_ticks_stay_inside_a_view_that_does_not_start_at_a_tick() -> None:
    fig = Figure(550, 550)
    fig.axes[0].line([0.137, 0.571], [0.137, 0.571], "grey", dash=":")
    labels = texts(fig.svg())
    assert "0.2" in labels and "0.5" in labels and "0.1" not in labels and "0.6" not in labels
