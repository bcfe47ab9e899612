"""Validation and resampling, on the real shared candles and on small hand-made frames."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stagegate_core import timeframes
from stagegate_trainer.data import DataError, resample_ohlcv, validate_ohlcv

from tests.support.exchange import shared_frame, shared_ohlcv_path

ORIGIN = "file:///data/BTC_USDT-15m.parquet"


def bars(start: str, n: int, minutes: int = 15, price: float = 100.0) -> pd.DataFrame:
    ts = pd.date_range(start, periods=n, freq=f"{minutes}min", tz="UTC")
    base = price + np.arange(n, dtype=np.float64)
    return pd.DataFrame(
        {
            "timestamp": ts,
            "open": base,
            "high": base + 2.0,
            "low": base - 1.0,
            "close": base + 1.0,
            "volume": np.full(n, 10.0),
        }
    )


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def btc() -> tuple[pd.DataFrame, object]:
    return validate_ohlcv(shared_frame(), "M15", origin=str(shared_ohlcv_path()))


def test_real_btc_report(btc: tuple[pd.DataFrame, object]) -> None:
    _, report = btc
    r = report.as_dict()  # type: ignore[attr-defined]
    json.dumps(r)  # JSON-able
    assert r["rows_read"] == 222_910
    assert r["bars"] == 222_910
    assert r["first"] == "2017-08-17T04:00:00Z" and r["last"] == "2023-12-31T23:45:00Z"
    assert r["duplicates_dropped"] == 0
    assert r["off_grid_snapped"] == 81 and r["off_grid_dropped"] == 0
    # The data README counts 32 gaps on the raw stamps; 31 remain on the grid: the raw step
    # 05:58:14 -> 06:15 after the 2018-02 outage is no gap once 05:58:14 snaps to 06:00.
    assert r["gaps"] == 31
    assert r["missing_bars"] == 562
    assert r["longest_gap_bars"] == 134  # 2018-02-08 00:30 .. 2018-02-09 09:45
    assert r["longest_gap_start"] == "2018-02-08T00:30:00Z"
    assert r["longest_gap_hours"] == 33.5
    assert r["zero_volume_bars"] == 60
    assert report.summary() == (  # type: ignore[attr-defined]
        "222,910 M15 bars 2017-08-17 04:00 → 2023-12-31 23:45; 81 off-grid snapped; "
        "31 gaps (562 missing bars, longest 33.5 h); 60 zero-volume bars"
    )


def test_real_btc_frame_is_canonical(btc: tuple[pd.DataFrame, object]) -> None:
    frame, _ = btc
    assert list(frame.columns) == ["timestamp", "open", "high", "low", "close", "volume"]
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert all(frame[c].dtype == np.float64 for c in ("open", "high", "low", "close", "volume"))
    assert isinstance(frame.index, pd.RangeIndex)
    ns = frame["timestamp"].astype("int64").to_numpy()
    assert (np.diff(ns) > 0).all()
    assert (ns % (15 * 60 * 10**9) == 0).all()
    # Gaps stay gaps: no bar was invented (no forward fill).
    assert len(frame) == len(shared_frame())


def test_off_grid_bars_snap_to_the_nearest_slot(btc: tuple[pd.DataFrame, object]) -> None:
    frame, _ = btc
    raw = shared_frame()
    quirk = raw[raw["timestamp"] == pd.Timestamp("2018-02-09 09:58:14.789", tz="UTC")]
    assert len(quirk) == 1
    snapped = frame[frame["timestamp"] == pd.Timestamp("2018-02-09 10:00", tz="UTC")]
    assert snapped[["open", "high", "low", "close", "volume"]].to_numpy().tolist() == (
        quirk[["open", "high", "low", "close", "volume"]].to_numpy().tolist()
    )
    # The bar before the outage and the one after it border the longest gap.
    window = frame[(frame["timestamp"] >= "2018-02-08") & (frame["timestamp"] < "2018-02-09 11:00")]
    assert window["timestamp"].dt.strftime("%m-%d %H:%M").tolist() == [
        "02-08 00:00",
        "02-08 00:15",
        "02-09 10:00",
        "02-09 10:15",
        "02-09 10:30",
        "02-09 10:45",
    ]


def test_real_btc_since_2019_matches_the_data_readme() -> None:
    raw = shared_frame()
    recent = raw[raw["timestamp"] >= pd.Timestamp("2019-01-01", tz="UTC")]
    _, report = validate_ohlcv(recent, "M15", origin="btc-2019")
    assert (report.gaps, report.missing_bars, report.off_grid_snapped) == (21, 269, 0)
    assert report.longest_gap_hours <= 10


def test_real_eth_zero_volume_bars() -> None:
    # The committed ETH candles end 2018-03-31: 137 of the 154 published zero-volume bars.
    _, report = validate_ohlcv(shared_frame("ETH_USDT-15m.parquet"), "15m", origin="eth")
    assert report.zero_volume_bars == 137
    assert report.off_grid_snapped == 81


# --------------------------------------------------------------------------- cleaning


def test_duplicates_keep_the_last_row_in_file_order() -> None:
    frame = bars("2024-01-01", 20)
    dup = frame.iloc[[3, 7, 11]].copy()
    dup["close"] = dup["open"]  # a corrected re-publication of the same bars
    # The corrections come after the originals in file order; the rows are out of time order.
    shuffled = pd.concat([frame.sample(frac=1.0, random_state=1), dup])
    clean, report = validate_ohlcv(shuffled, "M15", origin="t")
    assert report.duplicates_dropped == 3
    assert report.bars == 20 and report.rows_read == 23
    assert clean["timestamp"].tolist() == frame["timestamp"].tolist()
    assert clean.loc[[3, 7, 11], "close"].tolist() == dup["close"].tolist()
    assert clean.loc[[2, 4], "close"].tolist() == frame.loc[[2, 4], "close"].tolist()


def test_off_grid_bar_is_dropped_when_its_slot_is_taken() -> None:
    frame = bars("2024-01-01", 8)
    extra = frame.iloc[[2, 5]].copy()
    extra["timestamp"] = extra["timestamp"] + pd.Timedelta(minutes=2)  # 00:32 and 01:17
    free = frame.iloc[[7]].copy()
    free["timestamp"] = pd.Timestamp("2024-01-01 02:13", tz="UTC")  # -> 02:15, a free slot
    clean, report = validate_ohlcv(pd.concat([frame, extra, free]), "M15", origin="t")
    assert (report.off_grid_snapped, report.off_grid_dropped) == (1, 2)
    assert clean["timestamp"].iloc[-1] == pd.Timestamp("2024-01-01 02:15", tz="UTC")
    assert len(clean) == 9


def test_gaps_are_counted_not_filled() -> None:
    frame = bars("2024-01-01", 40).drop(index=[5, 6, 7, 20]).reset_index(drop=True)
    clean, report = validate_ohlcv(frame, "M15", origin="t")
    assert len(clean) == 36
    assert (report.gaps, report.missing_bars, report.longest_gap_bars) == (2, 4, 3)
    assert report.longest_gap_start == "2024-01-01T01:15:00Z"
    assert report.summary().endswith("2 gaps (4 missing bars, longest 0.8 h); 0 zero-volume bars")


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("close", np.nan, "NaN or infinite value"),
        ("volume", np.inf, "NaN or infinite value"),
        ("low", 0.0, "non-positive price"),
        ("high", 50.0, "high < low"),
        ("high", 113.5, r"high < max\(open, close\)"),
        ("low", 114.5, r"low > min\(open, close\)"),
        ("volume", -1.0, "negative volume"),
    ],
)
def test_bad_bars_are_rejected_naming_file_and_time(column: str, value: float, reason: str) -> None:
    frame = bars("2024-03-01", 30)
    frame.loc[13, column] = value  # open 113, high 115, low 112, close 114
    frame.loc[20, "close"] = np.nan  # a later bad row: the first one is reported
    with pytest.raises(DataError) as info:
        validate_ohlcv(frame.iloc[::-1], "M15", origin=ORIGIN)  # unsorted input
    message = str(info.value)
    assert message.startswith(f"{ORIGIN}: bad bar at 2024-03-01 03:15:00 UTC: ")
    assert pytest.importorskip("re").search(reason, message)
    assert "2 bad rows in all" in message
    assert "\n" not in message


def test_real_data_with_a_broken_row_is_rejected() -> None:
    raw = shared_frame().iloc[100_000:100_500].copy()
    when = raw["timestamp"].iloc[123]
    raw.loc[raw.index[123], "high"] = raw["low"].iloc[123] - 1.0
    with pytest.raises(
        DataError,
        match=rf"{ORIGIN}: bad bar at {when:%Y-%m-%d %H:%M}:00 UTC: "
        r"high < low",
    ):
        validate_ohlcv(raw, "M15", origin=ORIGIN)


def test_empty_and_missing_columns() -> None:
    with pytest.raises(DataError, match=f"{ORIGIN}: no rows"):
        validate_ohlcv(bars("2024-01-01", 0), "M15", origin=ORIGIN)
    with pytest.raises(DataError, match=r"missing column\(s\) volume; found: timestamp, open"):
        validate_ohlcv(bars("2024-01-01", 3).drop(columns="volume"), "M15", origin=ORIGIN)


def test_timestamp_spellings() -> None:
    frame = bars("2024-01-01", 5)
    expected, _ = validate_ohlcv(frame, "M15", origin="t")
    as_ms = frame.assign(timestamp=frame["timestamp"].dt.as_unit("ms").astype("int64"))
    naive = frame.assign(timestamp=frame["timestamp"].dt.tz_localize(None))
    tokyo = frame.assign(timestamp=frame["timestamp"].dt.tz_convert("Asia/Tokyo"))
    text = frame.assign(timestamp=frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    upper = frame.rename(columns=str.upper)
    for variant in (as_ms, naive, tokyo, text, upper):
        got, _ = validate_ohlcv(variant, "M15", origin="t")
        pd.testing.assert_frame_equal(got, expected)
    seconds = frame.assign(timestamp=frame["timestamp"].dt.as_unit("s").astype("int64"))
    with pytest.raises(DataError, match="milliseconds"):
        validate_ohlcv(seconds, "M15", origin="t")
    broken = text.copy()
    broken.loc[2, "timestamp"] = "yesterday-ish"
    with pytest.raises(DataError, match="unreadable timestamp at row 2 \\('yesterday-ish'\\)"):
        validate_ohlcv(broken, "M15", origin="t")


# --------------------------------------------------------------------------- resample


def test_resample_real_data_to_h1_at_utc_boundaries(btc: tuple[pd.DataFrame, object]) -> None:
    frame, _ = btc
    hourly, dropped = resample_ohlcv(frame, "M15", "H1")
    ns = hourly["timestamp"].astype("int64").to_numpy()
    assert (ns % (3600 * 10**9) == 0).all()
    # The data starts at 04:00, so the first hour is complete; the last is 23:00 on 12-31.
    assert hourly["timestamp"].iloc[0] == pd.Timestamp("2017-08-17 04:00", tz="UTC")
    assert hourly["timestamp"].iloc[-1] == pd.Timestamp("2023-12-31 23:00", tz="UTC")
    # A reference computed the slow way: pandas resample, keeping hours with all 4 bars.
    ref = frame.set_index("timestamp").resample("1h", label="left", closed="left")
    agg = ref.agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    counts = ref["open"].count()
    full = agg[counts == 4].reset_index()
    np.testing.assert_array_equal(hourly["timestamp"].to_numpy(), full["timestamp"].to_numpy())
    for col in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(hourly[col].to_numpy(), full[col].to_numpy())
    np.testing.assert_allclose(hourly["volume"].to_numpy(), full["volume"].to_numpy(), rtol=1e-12)
    assert dropped == int(((counts > 0) & (counts < 4)).sum())
    assert dropped > 0  # the outages leave incomplete hours behind


def test_resample_h4_and_d1_boundaries_and_no_partial_last_bar() -> None:
    frame, _ = validate_ohlcv(bars("2024-01-01 01:00", 4 * 24 * 3 - 6), "M15", origin="t")
    # 01:00 on day 1 .. 22:15 on day 3
    h4, dropped4 = resample_ohlcv(frame, "M15", "H4")
    assert h4["timestamp"].dt.hour.tolist()[:3] == [4, 8, 12]
    assert h4["timestamp"].iloc[-1] == pd.Timestamp("2024-01-03 16:00", tz="UTC")
    assert dropped4 == 2  # 00:00-04:00 on day 1 and 20:00-24:00 on day 3 are partial
    first = h4.iloc[0]
    src = frame[
        (frame["timestamp"] >= "2024-01-01 04:00") & (frame["timestamp"] < "2024-01-01 08:00")
    ]
    assert first["open"] == src["open"].iloc[0] and first["close"] == src["close"].iloc[-1]
    assert first["high"] == src["high"].max() and first["low"] == src["low"].min()
    assert first["volume"] == src["volume"].sum()
    d1, dropped1 = resample_ohlcv(frame, "15m", "1d")
    assert d1["timestamp"].tolist() == [pd.Timestamp("2024-01-02", tz="UTC")]
    assert dropped1 == 2


def test_resample_rejects_finer_and_non_multiple(monkeypatch: pytest.MonkeyPatch) -> None:
    frame, _ = validate_ohlcv(bars("2024-01-01", 8), "M15", origin="t")
    with pytest.raises(DataError, match="finer timeframe M5"):
        resample_ohlcv(frame, "M15", "M5")
    monkeypatch.setitem(timeframes.MINUTES, "M45", 45)
    with pytest.raises(DataError, match="not a multiple"):
        resample_ohlcv(frame, "M30", "M45")
    same, dropped = resample_ohlcv(frame, "M15", "M15")
    pd.testing.assert_frame_equal(same, frame)
    assert dropped == 0


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.booleans(), min_size=1, max_size=200),
    st.sampled_from(["M30", "H1", "H4"]),
    st.integers(min_value=0, max_value=95),
)
def test_resample_emits_exactly_the_complete_buckets(
    present: list[bool], target: str, offset: int
) -> None:
    full = bars("2024-01-01", len(present) + offset).iloc[offset:]
    frame = full[np.array(present)].reset_index(drop=True)
    if frame.empty:
        return
    out, dropped = resample_ohlcv(frame, "M15", target)
    per = timeframes.minutes(target) // 15
    bucket = frame["timestamp"].dt.as_unit("ns").astype("int64") // (
        timeframes.minutes(target) * 60 * 10**9
    )
    sizes = bucket.value_counts()
    assert len(out) == int((sizes == per).sum())
    assert dropped == int((sizes < per).sum())
    for _, row in out.iterrows():
        src = frame[
            (frame["timestamp"] >= row["timestamp"])
            & (
                frame["timestamp"]
                < row["timestamp"] + pd.Timedelta(minutes=timeframes.minutes(target))
            )
        ]
        assert len(src) == per
        assert row["high"] == src["high"].max() and row["low"] == src["low"].min()
        assert row["open"] == src["open"].iloc[0] and row["close"] == src["close"].iloc[-1]
