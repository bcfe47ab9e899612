"""The modelling table: causal features and the barrier label, built once per run.

Rows whose label cannot be known are dropped here (never turned into class 0), so every later
step, the planner included, sees only rows with a real outcome.
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from stagegate_core import featureset, timeframes
from stagegate_core.featureset import BASELINE_FEATURES
from stagegate_core.spec import TrainingJobSpec
from stagegate_core.specparts import FeaturesSpec, LabelSpec

from . import customfeatures, lookahead
from .features import build_features
from .labels import barrier_labels, horizon_labels
from .lookahead import FeatureError
from .trading import OUTCOME_R, RISK_FRACTION, trade_outcomes

LABEL = "label"
TIMESTAMP = "timestamp"


# The causality check's slice of the data and how far past each cut point it perturbs: enough
# for the longest built-in window (672 bars) and to catch a look-ahead of up to 512 bars.
GUARD_WINDOW_BARS, GUARD_AFTER_BARS = 8192, 512


# What a context symbol contributes: its return and volatility groups, with the spec's windows.
CONTEXT_GROUPS = ("returns", "volatility")
CONTEXT_PREFIX = "ctx."
# A context bar older than this many bars (an outage of the context symbol) is not used.
CONTEXT_STALE_BARS = 4


def context_columns(ohlcv: pd.DataFrame, symbol: str, bars: pd.DataFrame,
                    features: FeaturesSpec, timeframe: str) -> pd.DataFrame:  # fmt: skip
    """A context symbol's features on the main symbol's rows, causally: main bar t (open time
    T, decided at its close) sees the latest context bar opened at or before T, which has
    closed by then (same timeframe). Context bars after the main data's last bar are ignored,
    so a cut of the main data cuts the context too (what the look-ahead guard relies on)."""
    bar = timeframes.bar(timeframe)
    last = ohlcv["timestamp"].iloc[-1] if len(ohlcv) else None
    bars = bars[bars["timestamp"] <= last].reset_index(drop=True) if last is not None else bars
    windows = features.windows.model_dump()
    names = featureset.feature_names(CONTEXT_GROUPS, windows)
    own = build_features(bars, bar=bar, names=names)
    own.columns = [f"{CONTEXT_PREFIX}{symbol.replace('/', '_')}.{n}" for n in names]
    own.insert(0, "timestamp", bars["timestamp"].array)
    aligned = pd.merge_asof(
        ohlcv[["timestamp"]], own, on="timestamp", direction="backward",
        tolerance=pd.Timedelta(bar * CONTEXT_STALE_BARS),
    )  # fmt: skip
    return aligned.drop(columns="timestamp").set_axis(ohlcv.index)


def feature_table(
    ohlcv: pd.DataFrame,
    features: FeaturesSpec,
    timeframe: str,
    context: Mapping[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """The model's columns (chosen built-ins, context symbols', then custom features), then
    the baseline's columns that are not among them: the baseline model always sees the same
    inputs."""
    builtin = list(features.builtin_names())
    names = builtin + [n for n in BASELINE_FEATURES if n not in builtin]
    table = build_features(ohlcv, bar=timeframes.bar(timeframe), names=names)
    for symbol, bars in (context or {}).items():
        table = pd.concat(
            [table, context_columns(ohlcv, symbol, bars, features, timeframe)], axis=1
        )
    for custom in features.custom:
        extra = customfeatures.compute(ohlcv, custom)
        clash = [c for c in extra.columns if c in table.columns]
        if clash:
            raise FeatureError(
                f"custom feature {custom.name}: column {clash[0]} is already a feature; "
                "rename the entry point"
            )
        table = pd.concat([table, extra], axis=1)
    return table


def model_columns(features: FeaturesSpec, columns: Sequence[str]) -> list[str]:
    """The columns the model trains on, in order, out of a dataset's columns."""
    names = list(features.builtin_names())
    names += [c for c in columns if c.startswith(CONTEXT_PREFIX)]
    for custom in features.custom:
        names += [c for c in columns if c == custom.name or c.startswith(f"{custom.name}.")]
    return names


def prepare_dataset(
    ohlcv: pd.DataFrame,
    spec: TrainingJobSpec,
    context: Mapping[str, pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, lookahead.GuardReport]:
    """The dataset, after every model feature passed the look-ahead guard and the quality
    checks (FeatureError otherwise); with the guard's report. `context`: the bars of each
    `spec.data.context` symbol."""
    timeframe, guard = spec.canonical_timeframe, spec.features.guard
    table = feature_table(ohlcv, spec.features, timeframe, context)
    started = time.perf_counter()
    constant = lookahead.check_quality(
        table[model_columns(spec.features, table.columns)],
        warmup_bars=guard.warmup_bars,
        max_nan_fraction=guard.max_nan_fraction,
        may_be_constant=frozenset(spec.features.builtin_names()),
    )
    causality = lookahead.check_causality(
        lambda frame: feature_table(frame, spec.features, timeframe, context),
        ohlcv,
        cuts=guard.cuts,
        window_bars=GUARD_WINDOW_BARS,
        after_bars=GUARD_AFTER_BARS,
        warmup_bars=guard.warmup_bars,
        seed=spec.model.seed,
    )
    report = dataclasses.replace(
        causality, constant=constant, seconds=time.perf_counter() - started
    )
    return build_dataset(ohlcv, spec.label, timeframe, features=table), report


def build_dataset(
    ohlcv: pd.DataFrame,
    label: LabelSpec,
    timeframe: str,
    *,
    features: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Features (default: today's built-in set), label and trade outcome of every bar whose
    label can be known."""
    if features is None:
        features = build_features(ohlcv, bar=timeframes.bar(timeframe))
    if label.kind == "horizon":
        y = horizon_labels(
            ohlcv,
            horizon_bars=label.horizon_bars,
            dead_band=label.dead_band,
            bar=timeframes.bar(timeframe),
        )
    else:
        y = barrier_labels(
            ohlcv,
            horizon_bars=label.horizon_bars,
            take_profit=label.take_profit,
            stop_loss=label.stop_loss,
            barriers=label.barriers,
            atr_bars=label.atr_bars,
            bar=timeframes.bar(timeframe),
        )
    outcome, risk_fraction = trade_outcomes(
        ohlcv,
        horizon_bars=label.horizon_bars,
        take_profit=label.take_profit,
        stop_loss=label.stop_loss,
        barriers=label.barriers,
        atr_bars=label.atr_bars,
        bar_ns=timeframes.bar_ns(timeframe),
    )
    table = features.copy()
    # .array, not .to_numpy(): that makes one Python object per tz-aware time (0.2 s here).
    table.insert(0, TIMESTAMP, ohlcv[TIMESTAMP].array)
    table[LABEL] = y
    # What each row's trade earned (trading.py): read by the trading metrics and the
    # expectedReturn threshold, never by the model.
    table[OUTCOME_R] = outcome
    table[RISK_FRACTION] = risk_fraction
    # The barrier label is known exactly where its trade is; a horizon label can be known
    # where the trade is not (ATR still warming up): such rows have nothing to score.
    known = ~np.isnan(y) & ~np.isnan(outcome)
    out = table.loc[known].reset_index(drop=True)
    out[LABEL] = out[LABEL].astype(np.int8)
    return out


def timestamps_ns(frame: pd.DataFrame) -> np.ndarray:
    """Bar-open times as int64 nanoseconds, whatever the column's unit."""
    return frame[TIMESTAMP].to_numpy(dtype="datetime64[ns]").astype(np.int64)


def to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    # No pandas metadata, fixed compression: the same frame always gives the same bytes.
    # No dictionary pages: columns of distinct floats gain nothing from them, and building
    # them made writing the dataset 5x slower (0.39 s vs 0.08 s) and its file 50 % larger.
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata(None)
    pq.write_table(table, sink, compression="zstd", use_dictionary=False)
    return sink.getvalue()


def from_parquet_bytes(data: bytes) -> pd.DataFrame:
    return pq.read_table(io.BytesIO(data)).to_pandas()
