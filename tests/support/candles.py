"""The real Binance candles the tests use, committed in the repository (tests/data/ohlcv).

A fresh clone has no `../shared`, so the tests read these files. To keep them small they are
stored losslessly as integers: prices in cents and volumes in 1e-8 units (every published
value has at most 2 and 8 decimals), delta-encoded and zstd-compressed. Dividing by the
power of ten gives back the exact published doubles, because IEEE division is correctly
rounded. `python -m tests.support.candles SHARED_DATA_DIR` regenerates them from the
published files (and checks the round trip).

- BTC_USDT-15m: every bar, 2017-08-17 04:00 to 2023-12-31 23:45 (222,910 bars).
- ETH_USDT-15m: 2017-08-17 04:00 to 2018-03-31 23:45 (its 2017 zero-volume bars and the
  off-grid bars after the 2018-02 outage).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

DATA = Path(__file__).resolve().parents[1] / "data" / "ohlcv"
SCALES = {"open": 100, "high": 100, "low": 100, "close": 100, "volume": 10**8}
ETH_END = pd.Timestamp("2018-04-01", tz="UTC")


def path(symbol_file: str) -> Path:
    """The committed fixture for a published file name such as BTC_USDT-15m.parquet."""
    return DATA / symbol_file


def read(symbol_file: str) -> pd.DataFrame:
    """The candles as published: timestamp[ms, UTC] and float64 columns."""
    table = pq.read_table(path(symbol_file))
    frame = pd.DataFrame({"timestamp": table.column("timestamp").to_pandas()})
    for column, scale in SCALES.items():
        frame[column] = table.column(column).to_numpy() / scale
    return frame


def write(frame: pd.DataFrame, target: Path) -> None:
    columns: dict[str, pa.Array] = {"timestamp": pa.array(frame["timestamp"])}
    for column, scale in SCALES.items():
        values = frame[column].to_numpy()
        ints = np.round(values * scale).astype(np.int64)
        if not np.array_equal(ints / scale, values):
            raise ValueError(
                f"{target.name}: {column} has more than {len(str(scale)) - 1} decimals"
            )
        columns[column] = pa.array(ints)
    encodings = {name: "DELTA_BINARY_PACKED" for name in columns}
    pq.write_table(pa.table(columns), target, compression="zstd", compression_level=19,
                   use_dictionary=False, column_encoding=encodings)  # fmt: skip


def main(shared: Path) -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    for name in ("BTC_USDT-15m.parquet", "ETH_USDT-15m.parquet"):
        frame = pd.read_parquet(shared / "ohlcv" / name)
        if name.startswith("ETH"):
            frame = frame[frame["timestamp"] < ETH_END].reset_index(drop=True)
        write(frame, path(name))
        pd.testing.assert_frame_equal(read(name), frame, check_exact=True)
        print(f"{path(name)}: {len(frame)} bars, {path(name).stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
