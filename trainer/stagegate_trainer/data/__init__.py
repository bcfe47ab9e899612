"""OHLCV data: sources (bundled, ccxt, s3, file), validation, resampling and the loader."""

from stagegate_trainer.data.bundled import BUNDLED_TIMEFRAME, bundled_path, bundled_symbols
from stagegate_trainer.data.ccxt_source import cache_key, fetch_ohlcv_range
from stagegate_trainer.data.errors import DataError
from stagegate_trainer.data.loader import SOURCES, LoadedData, content_hash, load_ohlcv
from stagegate_trainer.data.resample import resample_ohlcv
from stagegate_trainer.data.uri import read_table
from stagegate_trainer.data.validate import (
    OHLCV_COLUMNS,
    DataReport,
    describe,
    infer_timeframe,
    validate_ohlcv,
)

__all__ = [
    "BUNDLED_TIMEFRAME",
    "OHLCV_COLUMNS",
    "SOURCES",
    "DataError",
    "DataReport",
    "LoadedData",
    "bundled_path",
    "bundled_symbols",
    "cache_key",
    "content_hash",
    "describe",
    "fetch_ohlcv_range",
    "infer_timeframe",
    "load_ohlcv",
    "read_table",
    "resample_ohlcv",
    "validate_ohlcv",
]
