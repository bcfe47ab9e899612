"""load_ohlcv: bundled data, files (parquet, CSV), S3 via moto, and the errors users hit."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from stagegate_trainer.data import (
    DataError,
    bundled_path,
    bundled_symbols,
    content_hash,
    load_ohlcv,
)
from stagegate_trainer.store import open_store

from tests.support.exchange import shared_frame

BUNDLED_FILE = (
    Path(__file__).resolve().parents[1]
    / "trainer/stagegate_trainer/data/bundled/BTC_USDT-15m.parquet"
)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    """Two weeks of real BTC/USDT bars (2023-05-01 .. 2023-05-14)."""
    raw = shared_frame()
    ts = raw["timestamp"]
    return raw[(ts >= utc(2023, 5, 1)) & (ts < utc(2023, 5, 15))].reset_index(drop=True)


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


# --------------------------------------------------------------------------- bundled


def test_bundled_file_is_small_and_exact() -> None:
    assert BUNDLED_FILE.stat().st_size <= 5 * 1024 * 1024
    assert bundled_path("BTC/USDT", "M15") == BUNDLED_FILE
    loaded = load_ohlcv(source="bundled", symbol="BTC/USDT", timeframe="M15")
    raw = shared_frame()
    ts = raw["timestamp"]
    expected = raw[(ts >= utc(2022, 1, 1)) & (ts <= utc(2023, 12, 31, 23, 45))]
    assert len(loaded.frame) == len(expected) == 70_075
    for col in ("open", "high", "low", "close", "volume"):  # float64, bit for bit
        np.testing.assert_array_equal(loaded.frame[col].to_numpy(), expected[col].to_numpy())
    r = loaded.report
    assert (r.first, r.last) == ("2022-01-01T00:00:00Z", "2023-12-31T23:45:00Z")
    assert r.bars == 70_075 and r.missing_bars == 70_080 - 70_075
    assert r.summary().startswith("70,075 M15 bars 2022-01-01 00:00 → 2023-12-31 23:45; ")
    json.dumps(r.as_dict())
    again = load_ohlcv(source="bundled", symbol="btc_usdt", timeframe="15m")
    assert again.content_hash == loaded.content_hash
    assert len(loaded.content_hash) == 64


def test_bundled_resampled_and_cut() -> None:
    loaded = load_ohlcv(
        source="bundled",
        symbol="BTC/USDT",
        timeframe="H4",
        start=datetime(2023, 1, 1),
        end=utc(2023, 1, 31, 20),  # naive start = UTC
    )
    frame = loaded.frame
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2023-01-01", tz="UTC")
    assert frame["timestamp"].iloc[-1] == pd.Timestamp("2023-01-31 20:00", tz="UTC")
    assert (frame["timestamp"].dt.hour % 4 == 0).all()
    assert loaded.report.resampled_from == "M15" and loaded.report.timeframe == "H4"
    assert len(frame) + loaded.report.missing_bars == 31 * 6


def test_bundled_unknown_symbol_lists_what_is_bundled() -> None:
    assert bundled_symbols() == ["BTC/USDT"]
    with pytest.raises(DataError, match=r"no bundled data for ETH/USDT; bundled: BTC/USDT M15"):
        load_ohlcv(source="bundled", symbol="ETH/USDT", timeframe="M15")
    with pytest.raises(DataError, match="bundled data is M15; M5 cannot be made from it"):
        load_ohlcv(source="bundled", symbol="BTC/USDT", timeframe="M5")


# --------------------------------------------------------------------------- files


def test_file_parquet_and_csv_give_the_same_data(tmp_path: Path, sample: pd.DataFrame) -> None:
    pq_path = tmp_path / "btc.parquet"
    pq_path.write_bytes(parquet_bytes(sample))
    iso_csv = tmp_path / "btc-iso.csv"
    sample.to_csv(iso_csv, index=False)  # timestamps as "2023-05-01 00:00:00+00:00"
    ms_csv = tmp_path / "btc-ms.csv"
    sample.assign(timestamp=sample["timestamp"].dt.as_unit("ms").astype("int64")).to_csv(
        ms_csv, index=False
    )
    by_path = load_ohlcv(source="file", symbol="BTC/USDT", timeframe="M15", uri=str(pq_path))
    by_uri = load_ohlcv(source="file", symbol="BTC/USDT", timeframe="M15", uri=pq_path.as_uri())
    iso = load_ohlcv(source="file", symbol="BTC/USDT", timeframe="M15", uri=str(iso_csv))
    ms = load_ohlcv(source="file", symbol="BTC/USDT", timeframe="M15", uri=str(ms_csv))
    assert len(by_path.frame) == 14 * 96
    assert by_path.content_hash == by_uri.content_hash == iso.content_hash == ms.content_hash
    assert by_path.report.origin == str(pq_path)


def test_content_hash_sees_every_value(sample: pd.DataFrame) -> None:
    frame = load_ohlcv(
        source="bundled",
        symbol="BTC/USDT",
        timeframe="M15",
        start=utc(2023, 5, 1),
        end=utc(2023, 5, 2),
    ).frame
    before = content_hash(frame)
    changed = frame.copy()
    changed.loc[50, "volume"] = np.nextafter(changed.loc[50, "volume"], np.inf)
    assert content_hash(changed) != before
    assert content_hash(frame.copy()) == before


def test_cut_outside_the_data(tmp_path: Path, sample: pd.DataFrame) -> None:
    path = tmp_path / "btc.parquet"
    path.write_bytes(parquet_bytes(sample))
    with pytest.raises(DataError, match=r"no M15 bars in .*the data covers 2023-05-01"):
        load_ohlcv(
            source="file", symbol="BTC/USDT", timeframe="M15", uri=str(path), start=utc(2024, 1, 1)
        )
    with pytest.raises(DataError, match=r"end .* is before start"):
        load_ohlcv(
            source="file",
            symbol="BTC/USDT",
            timeframe="M15",
            uri=str(path),
            start=utc(2024, 1, 1),
            end=utc(2023, 1, 1),
        )


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("empty.parquet", b"", "file is empty"),
        ("junk.parquet", b"this is not parquet at all", "not a readable parquet file"),
        ("truncated.parquet", None, "not a readable parquet file"),
    ],
)
def test_bad_parquet_files_are_named(
    tmp_path: Path, sample: pd.DataFrame, name: str, content: bytes | None, match: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content if content is not None else parquet_bytes(sample)[:5000])
    with pytest.raises(DataError) as info:
        load_ohlcv(source="file", symbol="BTC/USDT", timeframe="M15", uri=str(path))
    message = str(info.value)
    assert message.startswith(str(path)) and match in message and "\n" not in message


def test_parquet_without_rows_or_with_wrong_columns(tmp_path: Path, sample: pd.DataFrame) -> None:
    empty = tmp_path / "norows.parquet"
    empty.write_bytes(parquet_bytes(sample.iloc[:0]))
    with pytest.raises(DataError, match=f"{empty}: no rows"):
        load_ohlcv(source="file", symbol="BTC/USDT", timeframe="M15", uri=str(empty))
    wrong = tmp_path / "wrong.parquet"
    wrong.write_bytes(parquet_bytes(sample.rename(columns={"close": "price"})))
    with pytest.raises(DataError, match=rf"{wrong}: missing column\(s\) close; found: "):
        load_ohlcv(source="file", symbol="BTC/USDT", timeframe="M15", uri=str(wrong))


def test_file_with_a_bad_row_names_the_file(tmp_path: Path, sample: pd.DataFrame) -> None:
    broken = sample.copy()
    broken.loc[500, "low"] = broken.loc[500, "high"] + 10
    path = tmp_path / "broken.csv"
    broken.to_csv(path, index=False)
    with pytest.raises(
        DataError, match=rf"^{path}: bad bar at 2023-05-06 05:00:00 UTC: high < low"
    ):
        load_ohlcv(source="file", symbol="BTC/USDT", timeframe="M15", uri=str(path))


def test_missing_file_and_bad_arguments(tmp_path: Path) -> None:
    missing = tmp_path / "nope.parquet"
    with pytest.raises(DataError, match=f"data file not found: {missing}"):
        load_ohlcv(source="file", symbol="BTC/USDT", timeframe="M15", uri=str(missing))
    with pytest.raises(DataError, match=r"data\.source file needs data\.uri"):
        load_ohlcv(source="file", symbol="BTC/USDT", timeframe="M15")
    with pytest.raises(DataError, match="unknown data source 'ftp'"):
        load_ohlcv(source="ftp", symbol="BTC/USDT", timeframe="M15")
    with pytest.raises(DataError, match="unknown timeframe 'M7'"):
        load_ohlcv(source="bundled", symbol="BTC/USDT", timeframe="M7")


# --------------------------------------------------------------------------- S3


def test_s3_parquet_and_csv(any_s3_bucket: str, sample: pd.DataFrame, tmp_path: Path) -> None:
    s3_bucket = any_s3_bucket  # moto and SeaweedFS
    store = open_store(f"{s3_bucket}/data")
    store.write_bytes("btc.parquet", parquet_bytes(sample))
    store.write_bytes("btc.csv", sample.to_csv(index=False).encode())
    from_pq = load_ohlcv(
        source="s3", symbol="BTC/USDT", timeframe="H1", uri=f"{s3_bucket}/data/btc.parquet"
    )
    from_csv = load_ohlcv(
        source="s3", symbol="BTC/USDT", timeframe="H1", uri=f"{s3_bucket}/data/btc.csv"
    )
    assert len(from_pq.frame) == 14 * 24
    assert from_pq.content_hash == from_csv.content_hash
    local = tmp_path / "btc.parquet"
    local.write_bytes(parquet_bytes(sample))
    assert (
        load_ohlcv(source="file", symbol="BTC/USDT", timeframe="H1", uri=str(local)).content_hash
        == from_pq.content_hash
    )
    with pytest.raises(DataError, match=f"data file not found: {s3_bucket}/data/missing.parquet"):
        load_ohlcv(
            source="s3", symbol="BTC/USDT", timeframe="M15", uri=f"{s3_bucket}/data/missing.parquet"
        )
    store.write_bytes("corrupt.parquet", b"PAR1garbage")
    with pytest.raises(DataError, match=r"corrupt\.parquet: not a readable parquet file"):
        load_ohlcv(
            source="s3", symbol="BTC/USDT", timeframe="M15", uri=f"{s3_bucket}/data/corrupt.parquet"
        )
    with pytest.raises(DataError, match="needs an s3:// URI"):
        load_ohlcv(source="s3", symbol="BTC/USDT", timeframe="M15", uri=str(local))


def test_file_timeframe_is_read_from_the_bars(tmp_path: Path, sample: pd.DataFrame) -> None:
    path = tmp_path / "btc.parquet"
    path.write_bytes(parquet_bytes(sample))
    hourly = load_ohlcv(source="file", symbol="BTC/USDT", timeframe="H1", uri=str(path))
    assert hourly.report.resampled_from == "M15" and len(hourly.frame) == 14 * 24
    coarse = tmp_path / "h1.parquet"
    coarse.write_bytes(parquet_bytes(hourly.frame))
    with pytest.raises(DataError, match=f"{coarse}: holds H1 bars; M15 cannot be made"):
        load_ohlcv(source="file", symbol="BTC/USDT", timeframe="M15", uri=str(coarse))
