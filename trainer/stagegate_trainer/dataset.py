"""The modelling table: causal features and the barrier label, built once per run.

Rows whose label cannot be known are dropped here (never turned into class 0), so every later
step, the planner included, sees only rows with a real outcome.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import timeframes
from .features import FEATURE_NAMES, build_features
from .labels import barrier_labels
from .spec import LabelSpec
from .trading import OUTCOME_R, RISK_FRACTION, trade_outcomes

LABEL = "label"
TIMESTAMP = "timestamp"


def build_dataset(ohlcv: pd.DataFrame, label: LabelSpec, timeframe: str) -> pd.DataFrame:
    features = build_features(ohlcv, bar=timeframes.bar(timeframe))
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
    table = features.loc[:, list(FEATURE_NAMES)].copy()
    table.insert(0, TIMESTAMP, ohlcv[TIMESTAMP].to_numpy())
    table[LABEL] = y
    # What each row's trade earned (trading.py): read by the trading metrics and the
    # expectedReturn threshold, never by the model.
    table[OUTCOME_R] = outcome
    table[RISK_FRACTION] = risk_fraction
    known = ~np.isnan(y)
    out = table.loc[known].reset_index(drop=True)
    out[LABEL] = out[LABEL].astype(np.int8)
    return out


def timestamps_ns(frame: pd.DataFrame) -> np.ndarray:
    """Bar-open times as int64 nanoseconds, whatever the column's unit."""
    return frame[TIMESTAMP].to_numpy(dtype="datetime64[ns]").astype(np.int64)


def to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    # No pandas metadata, fixed compression: the same frame always gives the same bytes.
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata(None)
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def from_parquet_bytes(data: bytes) -> pd.DataFrame:
    return pq.read_table(io.BytesIO(data)).to_pandas()
