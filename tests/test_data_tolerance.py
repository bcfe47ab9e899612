"""OHLC checks tolerate rounding noise (and count it) but refuse a truly broken bar, in plain
numbers; on the bundled candles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from stagegate_trainer.data import DataError, bundled_path, load_ohlcv, validate_ohlcv

ORIGIN = "bundled-btc"


@pytest.fixture(scope="module")
def bundled() -> pd.DataFrame:
    from stagegate_trainer.data.uri import parse_table

    path = bundled_path("BTC/USDT", "M15")
    return parse_table(path.read_bytes(), origin=str(path)).iloc[-20_000:].reset_index(drop=True)


def _with_rounding_noise(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """High a hair below max(open, close) and low a hair above min(...), 1e-15 relative, on
    every bar where they coincide: what a float round trip through another format leaves."""
    noisy = frame.copy()
    top = np.maximum(noisy["open"], noisy["close"])
    bottom = np.minimum(noisy["open"], noisy["close"])
    at_top, at_bottom = noisy["high"] == top, noisy["low"] == bottom
    noisy.loc[at_top, "high"] = top[at_top] * (1 - 1e-15)
    noisy.loc[at_bottom, "low"] = bottom[at_bottom] * (1 + 1e-15)
    # Count the bars the noise actually moved (some products round back to the same float).
    touched = (noisy["high"] < top) | (noisy["low"] > bottom)
    return noisy, int(touched.sum())


def test_rounding_noise_is_tolerated_clamped_and_counted(bundled: pd.DataFrame) -> None:
    noisy, touched = _with_rounding_noise(bundled)
    assert touched > 1000  # the real data has many bars whose high is the open or close
    clean, report = validate_ohlcv(noisy, "M15", origin=ORIGIN)
    assert report.ohlc_tolerated == touched
    assert f"{touched:,} bars' high/low rounding clamped" in report.summary()
    assert (clean["high"] >= np.maximum(clean["open"], clean["close"])).all()
    assert (clean["low"] <= np.minimum(clean["open"], clean["close"])).all()
    # Clamped back onto open/close: at most the noise away from the original file.
    assert np.allclose(clean["high"], bundled["high"], rtol=1e-14, atol=0)

    # The tolerance is configurable: zero refuses the same file, counting every noisy bar.
    with pytest.raises(DataError, match=rf"{touched:,} bad rows in all"):
        validate_ohlcv(noisy, "M15", origin=ORIGIN, ohlc_tolerance=0.0)


def test_a_truly_broken_bar_is_refused_in_plain_numbers(bundled: pd.DataFrame) -> None:
    noisy, _ = _with_rounding_noise(bundled)
    top = np.maximum(noisy["open"], noisy["close"])
    # A bar with room below its top, whose high is then put 1e-6 (1000 tolerances) under it.
    row = int(np.flatnonzero((noisy["low"] < top * (1 - 1e-4)).to_numpy())[4321])
    broken_high = float(top[row] * (1 - 1e-6))
    noisy.loc[row, "high"] = broken_high
    with pytest.raises(DataError) as info:
        validate_ohlcv(noisy, "M15", origin=ORIGIN)
    message = str(info.value)
    when = pd.Timestamp(noisy.at[row, "timestamp"]).tz_convert("UTC")
    assert message.startswith(f"{ORIGIN}: bad bar at {when:%Y-%m-%d %H:%M:%S} UTC: ")
    assert "high < max(open, close)" in message
    assert f"high={broken_high!r}" in message  # a plain number, as Python prints it
    assert "np." not in message and "float64" not in message
    assert "1 bad rows in all" in message


def test_the_spec_tolerance_reaches_the_loader(tmp_path: Path, bundled: pd.DataFrame) -> None:
    noisy, touched = _with_rounding_noise(bundled)
    file = tmp_path / "noisy.parquet"
    noisy.to_parquet(file)
    loaded = load_ohlcv(source="file", symbol="BTC/USDT", timeframe="M15", uri=str(file))
    assert loaded.report.ohlc_tolerated == touched
    with pytest.raises(DataError, match="bad rows in all"):
        load_ohlcv(
            source="file", symbol="BTC/USDT", timeframe="M15", uri=str(file), ohlc_tolerance=0.0
        )
