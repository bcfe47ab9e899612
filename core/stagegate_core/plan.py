"""The walk-forward planner: which rows each fold trains and tests on.

Pure and light (no numpy or pandas), so the operator can import it. Times are integer
nanoseconds since the epoch (UTC); `timestamps` are the bar-open times of the labelled rows,
sorted ascending, and may have gaps (outages, rows whose label cannot be known).

Test periods tile backwards from the end of the data, so the last fold always tests on the most
recent data, and `maxFolds` keeps the most recent folds. Training ends `purge` bars before its
test period starts (a time distance, so a gap in the data never shortens the purge), which keeps
every training label's horizon out of the test period.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import formatting
from .specparts import StageSpec

NS_PER_DAY = 86_400 * 10**9


class PlanError(ValueError):
    pass


@dataclass(frozen=True)
class Fold:
    fold: int  # 1-based, chronological
    train_start: int  # ns, inclusive
    train_end: int  # ns, exclusive
    test_start: int
    test_end: int
    train_rows: tuple[int, int]  # [first, last) row indexes into the dataset
    test_rows: tuple[int, int]

    @property
    def n_train(self) -> int:
        return self.train_rows[1] - self.train_rows[0]

    @property
    def n_test(self) -> int:
        return self.test_rows[1] - self.test_rows[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "fold": self.fold,
            "trainStart": iso(self.train_start),
            "trainEnd": iso(self.train_end),
            "testStart": iso(self.test_start),
            "testEnd": iso(self.test_end),
            "trainRows": self.n_train,
            "testRows": self.n_test,
            "trainIndex": list(self.train_rows),
            "testIndex": list(self.test_rows),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fold:
        return cls(
            fold=data["fold"],
            train_start=parse_iso(data["trainStart"]),
            train_end=parse_iso(data["trainEnd"]),
            test_start=parse_iso(data["testStart"]),
            test_end=parse_iso(data["testEnd"]),
            train_rows=(data["trainIndex"][0], data["trainIndex"][1]),
            test_rows=(data["testIndex"][0], data["testIndex"][1]),
        )


@dataclass(frozen=True)
class StagePlan:
    stage: str
    folds: tuple[Fold, ...]
    data_start: int
    data_end: int  # exclusive: the last bar's open + one bar
    purge_bars: int
    train_window: str

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "dataStart": iso(self.data_start),
            "dataEnd": iso(self.data_end),
            "purgeBars": self.purge_bars,
            "trainWindow": self.train_window,
            "foldCount": len(self.folds),
            "folds": [f.to_json() for f in self.folds],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StagePlan:
        return cls(
            stage=data["stage"],
            folds=tuple(Fold.from_json(f) for f in data["folds"]),
            data_start=parse_iso(data["dataStart"]),
            data_end=parse_iso(data["dataEnd"]),
            purge_bars=data["purgeBars"],
            train_window=data["trainWindow"],
        )

    def fold(self, number: int) -> Fold:
        for f in self.folds:
            if f.fold == number:
                return f
        raise PlanError(f"stage {self.stage} has folds 1..{len(self.folds)}, not {number}")


def iso(ns: int) -> str:
    return formatting.now_iso(ns / 1e9)


def parse_iso(text: str) -> int:
    """A plan's timestamp (whole seconds) as nanoseconds, the unit of the bars."""
    seconds = formatting.parse_iso(text)
    if seconds is None:
        raise PlanError("a plan's timestamp is empty")
    return int(seconds) * 10**9


def plan_stage(
    stage: str,
    timestamps: Sequence[int],
    *,
    bar_ns: int,
    spec: StageSpec,
    purge_bars: int,
) -> StagePlan:
    """Lay out the folds of one stage. Raises PlanError when not even one fold fits."""
    if len(timestamps) == 0:
        raise PlanError(f"stage {stage}: the data set has no labelled rows")
    data_end = int(timestamps[-1]) + bar_ns
    data_start = int(timestamps[0])
    if spec.lookback_days is not None:
        data_start = max(data_start, data_end - spec.lookback_days * NS_PER_DAY)
    first_row = bisect_left(timestamps, data_start)

    test_ns = spec.test_period_days * NS_PER_DAY
    step_ns = (spec.step_days or spec.test_period_days) * NS_PER_DAY
    train_ns = spec.min_train_days * NS_PER_DAY
    purge_ns = purge_bars * bar_ns

    folds: list[Fold] = []
    k = 0
    while spec.max_folds is None or len(folds) < spec.max_folds:
        test_end = data_end - k * step_ns
        test_start = test_end - test_ns
        train_end = test_start - purge_ns
        if spec.train_window == "fixed":
            train_start = train_end - train_ns
            fits = train_start >= data_start
        else:
            train_start = data_start
            fits = train_end - train_start >= train_ns
        if not fits or test_start < data_start:
            break
        rows = (
            bisect_left(timestamps, train_start, lo=first_row),
            bisect_left(timestamps, train_end, lo=first_row),
            bisect_left(timestamps, test_start, lo=first_row),
            bisect_left(timestamps, test_end, lo=first_row),
        )
        if rows[1] > rows[0] and rows[3] > rows[2]:
            folds.append(Fold(0, train_start, train_end, test_start, test_end, rows[:2], rows[2:]))
        k += 1

    if not folds:
        raise PlanError(_too_short(stage, spec, timestamps, first_row, bar_ns, purge_bars))
    folds.reverse()
    numbered = tuple(
        Fold(i + 1, f.train_start, f.train_end, f.test_start, f.test_end, f.train_rows, f.test_rows)
        for i, f in enumerate(folds)
    )
    return StagePlan(stage, numbered, data_start, data_end, purge_bars, spec.train_window)


def _too_short(
    stage: str, spec: StageSpec, timestamps: Sequence[int], first_row: int, bar_ns: int, purge: int
) -> str:
    bars_per_day = NS_PER_DAY // bar_ns
    needed_days = spec.min_train_days + spec.test_period_days
    needed = needed_days * bars_per_day + purge
    available = len(timestamps) - first_row
    return (
        f"stage {stage}: data too short for one fold: needs {needed:,} rows "
        f"({spec.min_train_days} training days + {purge} purge bars + "
        f"{spec.test_period_days} test days at {bars_per_day} bars a day), "
        f"{available:,} rows available"
    )
