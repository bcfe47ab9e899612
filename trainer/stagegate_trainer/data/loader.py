"""One entry point for OHLCV data: pick the source, validate, resample, cut, hash."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from stagegate_core import timeframes

from stagegate_trainer.data.bundled import BUNDLED_TIMEFRAME, bundled_path, normalise_symbol
from stagegate_trainer.data.ccxt_source import fetch_ohlcv_range
from stagegate_trainer.data.errors import DataError
from stagegate_trainer.data.resample import resample_ohlcv
from stagegate_trainer.data.uri import parse_table, read_table
from stagegate_trainer.data.validate import (
    DEFAULT_OHLC_TOLERANCE,
    VALUE_COLUMNS,
    DataReport,
    describe,
    infer_timeframe,
    validate_ohlcv,
)
from stagegate_trainer.store import ArtifactStore

SOURCES = ("bundled", "ccxt", "s3", "file")


@dataclass(frozen=True)
class LoadedData:
    frame: pd.DataFrame
    report: DataReport
    content_hash: str  # sha256 hex of the canonical frame; equal data <=> equal hash

    @property
    def start(self) -> pd.Timestamp:
        return pd.Timestamp(self.frame["timestamp"].iloc[0])

    @property
    def end(self) -> pd.Timestamp:
        return pd.Timestamp(self.frame["timestamp"].iloc[-1])


def content_hash(frame: pd.DataFrame) -> str:
    """sha256 over the canonical bytes: column names, int64 ns timestamps, float64 values.

    Explicit little-endian dtypes make the hash the same on every platform.
    """
    digest = hashlib.sha256()
    digest.update(b"stagegate-ohlcv-v1\n")
    digest.update(",".join(["timestamp", *VALUE_COLUMNS]).encode() + b"\n")
    ts = pd.DatetimeIndex(frame["timestamp"]).as_unit("ns").asi8
    digest.update(np.ascontiguousarray(ts, dtype="<i8").tobytes())
    for col in VALUE_COLUMNS:
        digest.update(np.ascontiguousarray(frame[col].to_numpy(), dtype="<f8").tobytes())
    return digest.hexdigest()


def _utc(when: datetime | None, name: str) -> pd.Timestamp | None:
    if when is None:
        return None
    if not isinstance(when, datetime):
        raise DataError(f"{name} must be a datetime, got {type(when).__name__}")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return pd.Timestamp(when).tz_convert("UTC")


def load_ohlcv(
    *,
    source: str,
    symbol: str,
    timeframe: str,
    exchange: str = "binance",
    uri: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    cache: ArtifactStore | None = None,
    ohlc_tolerance: float = DEFAULT_OHLC_TOLERANCE,
) -> LoadedData:
    """Load bars of `symbol` at `timeframe` whose open time lies in [start, end].

    `bundled` reads the package's M15 file, `ccxt` downloads from `exchange` (cached in `cache`
    when given), `s3` and `file` read `uri` (parquet or CSV). Coarser timeframes than the
    source's are resampled, keeping complete bars only.
    """
    try:
        tf = timeframes.canonical(timeframe)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    lo, hi = _utc(start, "start"), _utc(end, "end")
    if lo is not None and hi is not None and hi < lo:
        raise DataError(f"end {hi} is before start {lo}")

    if source == "bundled":
        path = bundled_path(symbol, tf)
        origin = str(path)
        raw = parse_table(path.read_bytes(), origin=origin)
        source_tf = BUNDLED_TIMEFRAME
    elif source == "ccxt":
        sym = normalise_symbol(symbol)
        origin = f"ccxt:{exchange}:{sym}:{timeframes.to_ccxt(tf)}"
        raw = fetch_ohlcv_range(sym, tf, exchange=exchange, start=start, end=end, cache=cache)
        if len(raw) == 0:
            raise DataError(f"{origin}: the exchange returned no bars in {_range(lo, hi)}")
        source_tf = tf
    elif source in ("s3", "file"):
        if not uri:
            raise DataError(f"data.source {source} needs data.uri")
        if source == "s3" and not uri.startswith("s3://"):
            raise DataError(f"data.source s3 needs an s3:// URI, got {uri!r}")
        if source == "file" and uri.startswith("s3://"):
            raise DataError(f"data.source file needs a path or file:// URI, got {uri!r}")
        origin = uri
        raw = read_table(uri)
        source_tf = infer_timeframe(raw, origin=origin, default=tf)
        if timeframes.minutes(source_tf) > timeframes.minutes(tf):
            raise DataError(f"{origin}: holds {source_tf} bars; {tf} cannot be made from them")
    else:
        raise DataError(f"unknown data source {source!r}; expected one of {', '.join(SOURCES)}")

    frame, report = validate_ohlcv(raw, source_tf, origin=origin, ohlc_tolerance=ohlc_tolerance)
    dropped = 0
    if tf != source_tf:
        frame, dropped = resample_ohlcv(frame, source_tf, tf)

    ts = pd.DatetimeIndex(frame["timestamp"])
    inside = np.ones(len(frame), dtype=bool)
    if lo is not None:
        inside &= ts >= lo
    if hi is not None:
        inside &= ts <= hi
    frame = frame.loc[inside].reset_index(drop=True)
    if len(frame) == 0:
        covers = f"{report.first} → {report.last}"
        raise DataError(f"{origin}: no {tf} bars in {_range(lo, hi)} (the data covers {covers})")

    final = describe(frame, tf, origin=origin, rows_read=report.rows_read)
    merged = replace(
        final,
        duplicates_dropped=report.duplicates_dropped,
        off_grid_snapped=report.off_grid_snapped,
        off_grid_dropped=report.off_grid_dropped,
        ohlc_tolerated=report.ohlc_tolerated,
        resampled_from=source_tf if tf != source_tf else None,
        incomplete_bars_dropped=dropped,
    )
    return LoadedData(frame=frame, report=merged, content_hash=content_hash(frame))


def _range(lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> str:
    return f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'latest'}]"
