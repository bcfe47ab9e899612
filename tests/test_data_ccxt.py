"""Real ccxt (binance, sync) against the local recorded Binance API in tests/support/exchange.py."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from stagegate_trainer.data import DataError, cache_key, fetch_ohlcv_range, load_ohlcv
from stagegate_trainer.store import RetryPolicy, open_store

from tests.support.exchange import EXCHANGE_INFO, KLINES, ExchangeServer, shared_frame
from tests.support.s3 import free_port

FAST = RetryPolicy(tries=3, base_delay=0.01, max_delay=0.05)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def real_slice(start: datetime, end: datetime) -> pd.DataFrame:
    raw = shared_frame()
    ts = raw["timestamp"]
    return raw[(ts >= start) & (ts <= end)].reset_index(drop=True)


def assert_same_bars(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert len(got) == len(expected)
    np.testing.assert_array_equal(
        got["timestamp"].dt.as_unit("ms").astype("int64").to_numpy(),
        expected["timestamp"].dt.as_unit("ms").astype("int64").to_numpy(),
    )
    for col in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(got[col].to_numpy(), expected[col].to_numpy())


def test_paginates_to_the_end_of_the_data(exchange_server: ExchangeServer) -> None:
    start = utc(2023, 12, 1)
    got = fetch_ohlcv_range("BTC/USDT", "M15", start=start, retry=FAST)
    assert_same_bars(got, real_slice(start, utc(2023, 12, 31, 23, 45)))  # 2,976 bars
    # 3 pages of up to 1000 bars, then one empty page tells the history has ended.
    assert exchange_server.count(KLINES) == 4
    assert exchange_server.count(EXCHANGE_INFO) == 1
    assert exchange_server.count(None) == 5  # nothing else: no futures, margin or keys calls
    starts = [int(q["startTime"]) for q in exchange_server.kline_requests()]
    assert starts[0] == ms(start)
    assert starts[1] == ms(start) + 1000 * 15 * 60_000
    assert {q["symbol"] for q in exchange_server.kline_requests()} == {"BTCUSDT"}


def test_paginates_across_pages_up_to_end(exchange_server: ExchangeServer) -> None:
    start, end = utc(2023, 11, 1), utc(2023, 11, 10, 23, 45)  # 960 bars
    got = fetch_ohlcv_range("BTC/USDT", "15m", start=start, end=end, page_limit=300, retry=FAST)
    assert_same_bars(got, real_slice(start, end))
    # 300 + 300 + 300 + 60: the last page reaches `end`, so no extra request is made.
    assert exchange_server.count(KLINES) == 4
    assert {q["limit"] for q in exchange_server.kline_requests()} == {"300"}
    assert {int(q["endTime"]) for q in exchange_server.kline_requests()} == {ms(end)}


def test_pagination_crosses_an_exchange_outage(exchange_server: ExchangeServer) -> None:
    # 2018-02-08 00:15 -> 2018-02-09 09:58 is a 33.7 h outage, with off-grid bars after it.
    start, end = utc(2018, 2, 7), utc(2018, 2, 10, 12)
    got = fetch_ohlcv_range("BTC/USDT", "M15", start=start, end=end, page_limit=100, retry=FAST)
    assert_same_bars(got, real_slice(start, end))
    assert exchange_server.count(KLINES) == 3


@pytest.mark.parametrize(("status", "expected_sleep"), [(429, 0.05), (500, 0.01)])
def test_transient_errors_are_retried(
    exchange_server: ExchangeServer, status: int, expected_sleep: float
) -> None:
    start, end = utc(2023, 6, 1), utc(2023, 6, 2, 23, 45)
    exchange_server.fail_next(1, status, retry_after=1)
    sleeps: list[float] = []
    got = fetch_ohlcv_range(
        "BTC/USDT", "M15", start=start, end=end, retry=FAST, sleep=sleeps.append
    )
    assert_same_bars(got, real_slice(start, end))
    assert exchange_server.count(KLINES, status=status) == 1
    assert exchange_server.count(KLINES, status=200) == 1
    # 429 carries Retry-After: 1 s, honoured up to the policy's cap; 500 uses the backoff.
    assert sleeps == [expected_sleep]


def test_persistent_errors_give_up_with_one_line(exchange_server: ExchangeServer) -> None:
    exchange_server.fail_next(10, 503)
    sleeps: list[float] = []
    with pytest.raises(DataError) as info:
        fetch_ohlcv_range(
            "BTC/USDT",
            "M15",
            start=utc(2023, 6, 1),
            end=utc(2023, 6, 2),
            retry=FAST,
            sleep=sleeps.append,
        )
    message = str(info.value)
    assert "failed after 3 tries" in message and "ExchangeNotAvailable" in message
    assert exchange_server.url in message and "\n" not in message
    assert exchange_server.count(KLINES) == 3
    assert sleeps == [0.01, 0.02]


def test_unreachable_exchange(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(DataError, match=r"failed after 2 tries \(NetworkError"):
        fetch_ohlcv_range(
            "BTC/USDT",
            "M15",
            start=utc(2023, 6, 1),
            api_url=url,
            retry=RetryPolicy(2, 0.0, 0.0),
        )


def test_empty_ranges(exchange_server: ExchangeServer) -> None:
    # Before BTC/USDT was listed: the exchange answers one empty page.
    got = fetch_ohlcv_range(
        "BTC/USDT", "M15", start=utc(2017, 1, 1), end=utc(2017, 2, 1), retry=FAST
    )
    assert got.empty and list(got.columns) == [
        "timestamp",
        "open",
        "high",
        "low",
        "close",
        "volume",
    ]
    assert exchange_server.count(KLINES) == 1
    # end before start: nothing to ask.
    got = fetch_ohlcv_range("BTC/USDT", "M15", start=utc(2023, 2, 1), end=utc(2023, 1, 1))
    assert got.empty
    assert exchange_server.count(KLINES) == 1
    with pytest.raises(DataError, match="returned no bars"):
        load_ohlcv(
            source="ccxt",
            symbol="BTC/USDT",
            timeframe="M15",
            start=utc(2017, 1, 1),
            end=utc(2017, 2, 1),
        )


def test_unknown_market(exchange_server: ExchangeServer) -> None:
    with pytest.raises(DataError, match="no market 'DOGE/USDT'"):
        fetch_ohlcv_range("DOGE/USDT", "M15", start=utc(2023, 1, 1), retry=FAST)
    assert exchange_server.count(KLINES) == 0


def test_resumes_from_the_cache(exchange_server: ExchangeServer, tmp_path: Path) -> None:
    cache = open_store(str(tmp_path / "cache"))
    start, mid, end = utc(2023, 12, 1), utc(2023, 12, 15, 23, 45), utc(2023, 12, 31, 23, 45)

    first = fetch_ohlcv_range("BTC/USDT", "M15", start=start, end=mid, cache=cache, retry=FAST)
    assert_same_bars(first, real_slice(start, mid))  # 1,440 bars: 2 pages
    assert exchange_server.count(KLINES) == 2
    key = cache_key("binance", "BTC/USDT", "M15")
    assert key == "cache/ohlcv/binance/BTC_USDT-15m.parquet"
    assert cache.exists(key)

    exchange_server.reset()
    second = fetch_ohlcv_range("BTC/USDT", "M15", start=start, end=end, cache=cache, retry=FAST)
    assert_same_bars(second, real_slice(start, end))
    requests = exchange_server.kline_requests()
    # Only the 1,536 bars after the last cached one: 2 pages, the first right after `mid`.
    assert len(requests) == 2
    assert int(requests[0]["startTime"]) == ms(mid) + 15 * 60_000

    exchange_server.reset()
    third = fetch_ohlcv_range("BTC/USDT", "M15", start=utc(2023, 12, 10), end=end, cache=cache)
    assert_same_bars(third, real_slice(utc(2023, 12, 10), end))
    assert exchange_server.count(None) == 0  # all cached: the exchange is not contacted

    exchange_server.reset()
    earlier = fetch_ohlcv_range("BTC/USDT", "M15", start=utc(2023, 11, 30), end=end, cache=cache)
    assert_same_bars(earlier, real_slice(utc(2023, 11, 30), end))
    requests = exchange_server.kline_requests()
    assert len(requests) == 1 and int(requests[0]["endTime"]) == ms(start) - 15 * 60_000


def test_the_forming_bar_is_never_fetched(exchange_server: ExchangeServer, tmp_path: Path) -> None:
    cache = open_store(str(tmp_path))
    now = utc(2023, 12, 31, 23, 50)  # the 23:45 bar is still open
    got = fetch_ohlcv_range("BTC/USDT", "M15", start=utc(2023, 12, 31), cache=cache, now=now)
    assert got["timestamp"].iloc[-1] == pd.Timestamp("2023-12-31 23:30", tz="UTC")
    assert len(got) == 95
    assert exchange_server.count(KLINES) == 1  # the page reached the last complete bar


def test_loader_ccxt_resamples_and_caches(exchange_server: ExchangeServer, tmp_path: Path) -> None:
    cache = open_store(str(tmp_path))
    start, end = utc(2023, 3, 1), utc(2023, 3, 3, 23, 59)
    loaded = load_ohlcv(
        source="ccxt", symbol="btc/usdt", timeframe="H4", start=start, end=end, cache=cache
    )
    assert len(loaded.frame) == 18
    assert loaded.report.timeframe == "H4" and loaded.report.resampled_from is None
    assert loaded.frame["timestamp"].dt.hour.tolist()[:6] == [0, 4, 8, 12, 16, 20]
    raw = real_slice(start, end)
    assert loaded.frame["high"].iloc[0] == raw["high"].iloc[:16].max()
    assert loaded.report.origin == "ccxt:binance:BTC/USDT:4h"
    again = load_ohlcv(
        source="ccxt", symbol="BTC/USDT", timeframe="H4", start=start, end=end, cache=cache
    )
    assert again.content_hash == loaded.content_hash


def test_a_damaged_cache_is_refetched(exchange_server: ExchangeServer, tmp_path: Path) -> None:
    cache = open_store(str(tmp_path))
    key = cache_key("binance", "BTC/USDT", "M15")
    cache.write_bytes(key, b"PAR1 torn write")
    start, end = utc(2023, 4, 1), utc(2023, 4, 1, 23, 45)
    got = fetch_ohlcv_range("BTC/USDT", "M15", start=start, end=end, cache=cache)
    assert_same_bars(got, real_slice(start, end))
    assert exchange_server.count(KLINES) == 1
    assert cache.read_bytes(key)[:4] == b"PAR1" and len(cache.read_bytes(key)) > 1000


def test_an_unwritable_cache_is_a_data_error(
    exchange_server: ExchangeServer, tmp_path: Path
) -> None:
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    cache = open_store(str(tmp_path / "cache"))
    with pytest.raises(DataError, match="cannot update the candle cache: cannot create folder"):
        fetch_ohlcv_range(
            "BTC/USDT", "M15", start=utc(2023, 4, 1), end=utc(2023, 4, 2), cache=cache
        )
