"""Download candles with real ccxt: paginated, rate limited, retried, and cached incrementally.

The fetched candles are cached in an artifacts store under
`cache/ohlcv/<exchange>/<BASE_QUOTE>-<tf>.parquet`; a later call fetches only the bars after
the last cached one (and before the first, if an earlier start is asked for). Only complete
bars are cached: the bar still forming on the exchange is never requested.

`api_url` (or the env var `STAGEGATE_CCXT_API_URL`) replaces the scheme and host of every API
URL of the exchange; tests use it to point real ccxt at a local server of recorded pages.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd
from stagegate_core import timeframes

from stagegate_trainer.data.errors import DataError
from stagegate_trainer.data.validate import OHLCV_COLUMNS
from stagegate_trainer.store import ArtifactStore, RetryPolicy, StoreError

API_URL_ENV = "STAGEGATE_CCXT_API_URL"
PAGE_LIMIT = 1000  # Binance spot serves at most 1000 klines a request

_NS_PER_MS = 1_000_000


def cache_key(exchange: str, symbol: str, timeframe: str) -> str:
    pair = symbol.upper().replace("/", "_").replace(":", "_")
    return f"cache/ohlcv/{exchange.lower()}/{pair}-{timeframes.to_ccxt(timeframe)}.parquet"


def to_ms(when: datetime | None) -> int | None:
    """Epoch milliseconds; a naive datetime is taken as UTC."""
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(pd.Timestamp(when).as_unit("ms").value // _NS_PER_MS)


def _rebase(url: str, base: str) -> str:
    """`https://api.binance.com/api/v3` + `http://127.0.0.1:9` -> `http://127.0.0.1:9/api/v3`."""
    new = urlsplit(base)
    old = urlsplit(url)
    path = new.path.rstrip("/") + old.path
    return urlunsplit((new.scheme, new.netloc, path, old.query, old.fragment))


def _rebase_all(urls: Any, base: str) -> Any:
    if isinstance(urls, str):
        return _rebase(urls, base)
    if isinstance(urls, dict):
        return {k: _rebase_all(v, base) for k, v in urls.items()}
    return urls


def make_exchange(exchange: str, *, api_url: str | None = None, timeout_ms: int = 10_000) -> Any:
    """A real ccxt exchange (sync API), rate limited, restricted to the spot market data."""
    import ccxt

    cls = getattr(ccxt, exchange.lower(), None)
    if cls is None or exchange.lower() not in ccxt.exchanges:
        raise DataError(f"unknown exchange {exchange!r}: ccxt knows e.g. binance, kraken, okx")
    options: dict[str, Any] = {}
    if exchange.lower().startswith("binance"):
        # Only spot exchangeInfo: no futures/margin/currency endpoints (they need keys or are
        # irrelevant to spot klines, and each one is a request a mirror would have to serve).
        options = {
            "fetchMarkets": {"types": ["spot"]},
            "fetchMargins": False,
            "fetchCurrencies": False,
        }
    client = cls({"enableRateLimit": True, "timeout": timeout_ms, "options": options})
    client.enableLastResponseHeaders = True
    base = api_url or os.environ.get(API_URL_ENV)
    if base:
        client.urls["api"] = _rebase_all(client.urls["api"], base)
    return client


class _Fetcher:
    """One exchange connection with bounded retries around every call."""

    def __init__(
        self, client: Any, retry: RetryPolicy, sleep: Callable[[float], None], where: str
    ) -> None:
        self.client = client
        self.retry = retry
        self.sleep = sleep
        self.where = where

    def call(self, what: str, fn: Callable[[], Any]) -> Any:
        import ccxt

        last = ""
        for attempt in range(self.retry.tries):
            try:
                return fn()
            except ccxt.BadSymbol:
                raise DataError(f"{self.where}: no such market for {what}") from None
            except ccxt.NetworkError as exc:
                # NetworkError covers RateLimitExceeded/DDoSProtection (429, 418),
                # ExchangeNotAvailable (5xx) and RequestTimeout.
                last = f"{type(exc).__name__}: {_first_line(exc)}"
            except ccxt.OperationFailed as exc:
                # Binance's -1001 "Internal error; please try again" maps to OperationFailed.
                if type(exc) is not ccxt.OperationFailed:
                    raise DataError(f"{self.where}: {what} failed: {_first_line(exc)}") from None
                last = f"{type(exc).__name__}: {_first_line(exc)}"
            except ccxt.BaseError as exc:
                raise DataError(f"{self.where}: {what} failed: {_first_line(exc)}") from None
            if attempt + 1 < self.retry.tries:
                self.sleep(self._delay(attempt))
        raise DataError(f"{self.where}: {what} failed after {self.retry.tries} tries ({last})")

    def _delay(self, attempt: int) -> float:
        """Exponential backoff, or the server's Retry-After when longer (both capped)."""
        delay = self.retry.delay(attempt)
        headers = getattr(self.client, "last_response_headers", None) or {}
        try:
            retry_after = float(headers.get("Retry-After", 0) or 0)
        except (TypeError, ValueError):
            retry_after = 0.0
        return min(self.retry.max_delay, max(delay, retry_after))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _frame_from_rows(rows: list[list[Any]]) -> pd.DataFrame:
    if not rows:
        return _empty()
    arr = np.asarray([r[:6] for r in rows], dtype=np.float64)
    return pd.DataFrame(
        {
            "timestamp": pd.to_datetime(arr[:, 0].astype(np.int64), unit="ms", utc=True),
            "open": arr[:, 1],
            "high": arr[:, 2],
            "low": arr[:, 3],
            "close": arr[:, 4],
            "volume": arr[:, 5],
        }
    )


def _empty() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in OHLCV_COLUMNS})
    frame["timestamp"] = pd.Series(dtype="datetime64[ms, UTC]")
    return frame


def _ms(frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(pd.DatetimeIndex(frame["timestamp"]).as_unit("ms").asi8, dtype=np.int64)


def _read_cache(cache: ArtifactStore, key: str) -> pd.DataFrame:
    try:
        if not cache.exists(key):
            return _empty()
        data = cache.read_bytes(key)
    except StoreError as exc:
        raise DataError(f"candle cache unavailable: {exc}") from None
    try:
        cached = pd.read_parquet(io.BytesIO(data))
        if list(cached.columns) != list(OHLCV_COLUMNS):
            raise ValueError("unexpected columns")
        return cached
    except Exception:  # pyarrow raises several unrelated types for a damaged file
        # A damaged cache is only a cache: refetch rather than fail the run.
        return _empty()


def _write_cache(cache: ArtifactStore, key: str, frame: pd.DataFrame) -> None:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False, compression="zstd")
    try:
        cache.write_bytes(key, buf.getvalue())
    except StoreError as exc:
        raise DataError(f"cannot update the candle cache: {exc}") from None


def fetch_ohlcv_range(
    symbol: str,
    timeframe: str,
    *,
    exchange: str = "binance",
    start: datetime | None = None,
    end: datetime | None = None,
    cache: ArtifactStore | None = None,
    api_url: str | None = None,
    retry: RetryPolicy | None = None,
    page_limit: int = PAGE_LIMIT,
    sleep: Callable[[float], None] = time.sleep,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Candles with open time in [start, end] (inclusive), oldest first, complete bars only.

    Columns: timestamp (UTC), open, high, low, close, volume. Not validated: pass the result
    through `validate_ohlcv`. `start=None` means from the exchange's first bar; `end=None`
    means the last complete bar as of `now`.
    """
    tf = timeframes.canonical(timeframe)
    step = timeframes.minutes(tf) * 60_000
    now_ms = to_ms(now) if now is not None else int(time.time() * 1000)
    assert now_ms is not None
    last_complete = (now_ms // step - 1) * step  # the bar opened at now//step is still forming
    start_ms = to_ms(start)
    end_ms = min(to_ms(end) or last_complete, last_complete)
    if start_ms is not None and end_ms < start_ms:
        return _empty()

    key = cache_key(exchange, symbol, tf)
    cached = _read_cache(cache, key) if cache is not None else _empty()
    cached_ms = _ms(cached)

    ranges: list[tuple[int, int]] = []
    if len(cached_ms) == 0:
        ranges.append((start_ms if start_ms is not None else 0, end_ms))
    else:
        if start_ms is not None and start_ms < cached_ms[0]:
            ranges.append((start_ms, int(cached_ms[0]) - step))
        if int(cached_ms[-1]) + step <= end_ms:
            ranges.append((int(cached_ms[-1]) + step, end_ms))

    fetched: list[pd.DataFrame] = []
    if ranges:
        client = make_exchange(exchange, api_url=api_url)
        where = f"{exchange} ({api_url or os.environ.get(API_URL_ENV) or 'public API'})"
        fetcher = _Fetcher(client, retry or RetryPolicy(), sleep, where)
        fetcher.call(f"loading markets for {symbol}", client.load_markets)
        if symbol not in client.markets:
            raise DataError(f"{where}: no market {symbol!r} (e.g. BTC/USDT, ETH/USDT)")
        for lo, hi in ranges:
            fetched.append(_paginate(fetcher, symbol, tf, lo, hi, step, page_limit))

    new = [f for f in fetched if len(f)]
    merged = cached
    if new:
        merged = (
            pd.concat([cached, *new], ignore_index=True)
            if len(cached)
            else pd.concat(new, ignore_index=True)
        )
        # Fresh bars win over cached ones with the same open time.
        merged = (
            merged.drop_duplicates("timestamp", keep="last")
            .sort_values("timestamp", kind="stable")
            .reset_index(drop=True)
        )
        if cache is not None:
            _write_cache(cache, key, merged)

    ms = _ms(merged)
    lo_ms = start_ms if start_ms is not None else np.iinfo(np.int64).min
    inside = (ms >= lo_ms) & (ms <= end_ms)
    return merged.loc[inside].reset_index(drop=True)


def _paginate(
    fetcher: _Fetcher, symbol: str, tf: str, lo: int, hi: int, step: int, limit: int
) -> pd.DataFrame:
    """Pages of at most `limit` bars from `lo` until `hi` is reached or the exchange runs out."""
    ccxt_tf = timeframes.to_ccxt(tf)
    rows: list[list[Any]] = []
    since = lo
    while since <= hi:

        def page_from(start: int = since) -> list[list[Any]]:
            rows: list[list[Any]] = fetcher.client.fetch_ohlcv(
                symbol, ccxt_tf, since=start, limit=limit, params={"until": hi}
            )
            return rows

        page = fetcher.call(f"fetching {symbol} {ccxt_tf} candles since {since}", page_from)
        if not page:
            break
        rows.extend(r for r in page if lo <= int(r[0]) <= hi)
        newest = int(page[-1][0])
        if newest < since:  # the exchange did not move forward: stop instead of looping
            break
        since = newest + step
    return _frame_from_rows(rows)
