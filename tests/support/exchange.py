"""A local Binance spot API for tests: recorded kline pages from the real candles.

Real ccxt is pointed at it (`STAGEGATE_CCXT_API_URL` or `api_url=`). It serves exactly what
`ccxt.binance` asks for when limited to spot markets: `GET /api/v3/exchangeInfo` (a minimal
hand-written response in the real schema for BTCUSDT and ETHUSDT), `GET /api/v3/klines`,
`/api/v3/time` and `/api/v3/ping`. Responses follow the real formats, including Binance's JSON
error bodies. Faults can be injected (`fail_next`) and requests are recorded (`count`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import pytest

from tests.support import candles

REPO_ROOT = Path(__file__).resolve().parents[2]
KLINES = "/api/v3/klines"
EXCHANGE_INFO = "/api/v3/exchangeInfo"
_INTERVAL_MS = {
    "15m": 15 * 60_000,
    "30m": 30 * 60_000,
    "1h": 60 * 60_000,
    "4h": 240 * 60_000,
    "1d": 1440 * 60_000,
}
_SYMBOL_FILES = {"BTCUSDT": "BTC_USDT-15m.parquet", "ETHUSDT": "ETH_USDT-15m.parquet"}


def shared_ohlcv_path(symbol_file: str = "BTC_USDT-15m.parquet") -> Path:
    """The committed copy of a published candle file (see tests/support/candles.py)."""
    path = candles.path(symbol_file)
    if not path.is_file():
        pytest.fail(f"real candles {path} not found in the repository", pytrace=False)
    return path


_frames: dict[str, pd.DataFrame] = {}
_frames_lock = threading.Lock()


def shared_frame(symbol_file: str = "BTC_USDT-15m.parquet") -> pd.DataFrame:
    """The real candles as published (read once per test session; do not mutate)."""
    with _frames_lock:
        if symbol_file not in _frames:
            shared_ohlcv_path(symbol_file)
            _frames[symbol_file] = candles.read(symbol_file)
        return _frames[symbol_file]


def _symbol_info(symbol: str, base: str, quote: str, tick: str, step: str) -> dict[str, Any]:
    """One entry of /api/v3/exchangeInfo `symbols`, in the real schema (abridged filters)."""
    return {
        "symbol": symbol,
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": [
            "LIMIT",
            "LIMIT_MAKER",
            "MARKET",
            "STOP_LOSS",
            "STOP_LOSS_LIMIT",
            "TAKE_PROFIT",
            "TAKE_PROFIT_LIMIT",
        ],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "amendAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": True,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": tick,
                "maxPrice": "1000000.00000000",
                "tickSize": tick,
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": step,
                "maxQty": "9000.00000000",
                "stepSize": step,
            },
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": "0.00000000",
                "maxQty": "100.00000000",
                "stepSize": "0.00000000",
            },
            {
                "filterType": "TRAILING_DELTA",
                "minTrailingAboveDelta": 10,
                "maxTrailingAboveDelta": 2000,
                "minTrailingBelowDelta": 10,
                "maxTrailingBelowDelta": 2000,
            },
            {
                "filterType": "PERCENT_PRICE_BY_SIDE",
                "bidMultiplierUp": "5",
                "bidMultiplierDown": "0.2",
                "askMultiplierUp": "5",
                "askMultiplierDown": "0.2",
                "avgPriceMins": 5,
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": "5.00000000",
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT", "MARGIN"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": [
            "EXPIRE_TAKER",
            "EXPIRE_MAKER",
            "EXPIRE_BOTH",
            "DECREMENT",
        ],
    }


def exchange_info(server_time: int) -> dict[str, Any]:
    return {
        "timezone": "UTC",
        "serverTime": server_time,
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": 6000,
            },
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
            {
                "rateLimitType": "RAW_REQUESTS",
                "interval": "MINUTE",
                "intervalNum": 5,
                "limit": 61000,
            },
        ],
        "exchangeFilters": [],
        "symbols": [
            _symbol_info("BTCUSDT", "BTC", "USDT", "0.01000000", "0.00001000"),
            _symbol_info("ETHUSDT", "ETH", "USDT", "0.01000000", "0.00010000"),
        ],
    }


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, str]
    status: int


@dataclass
class _Fault:
    remaining: int
    status: int
    path: str | None
    retry_after: int


class _Candles:
    """Candles of one symbol as parallel arrays, for fast page slicing."""

    def __init__(self, frame: pd.DataFrame) -> None:
        ts = pd.DatetimeIndex(frame["timestamp"]).as_unit("ms").asi8
        order = np.argsort(ts, kind="stable")
        self.ts = np.asarray(ts[order], dtype=np.int64)
        self.values = {
            c: frame[c].to_numpy(np.float64)[order]
            for c in ("open", "high", "low", "close", "volume")
        }
        self._coarser: dict[int, _Candles] = {}

    def at(self, step_ms: int) -> _Candles:
        """Coarser candles the way the exchange builds them: every bucket with any trade."""
        if step_ms == _INTERVAL_MS["15m"]:
            return self
        if step_ms not in self._coarser:
            bucket = self.ts // step_ms
            starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
            ends = np.r_[starts[1:], len(bucket)] - 1
            v = self.values
            frame = pd.DataFrame(
                {
                    "timestamp": pd.to_datetime(bucket[starts] * step_ms, unit="ms", utc=True),
                    "open": v["open"][starts],
                    "high": np.maximum.reduceat(v["high"], starts),
                    "low": np.minimum.reduceat(v["low"], starts),
                    "close": v["close"][ends],
                    "volume": np.add.reduceat(v["volume"], starts),
                }
            )
            self._coarser[step_ms] = _Candles(frame)
        return self._coarser[step_ms]


class ExchangeServer:
    """A threaded HTTP server on 127.0.0.1 mimicking the Binance spot REST API."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self.seen: list[Seen] = []
        self._candles: dict[str, _Candles] = {}
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # -- test controls -------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def reset(self) -> None:
        """Forget recorded requests, pending faults and candle overrides."""
        with self._lock:
            self._faults.clear()
            self.seen.clear()
            self._candles.clear()

    def set_candles(self, symbol: str, frame: pd.DataFrame) -> None:
        """Serve `frame` (timestamp, open, high, low, close, volume) for `symbol` (`BTCUSDT`)."""
        with self._lock:
            self._candles[symbol] = _Candles(frame)

    def fail_next(
        self, n: int, status: int = 429, *, path: str | None = KLINES, retry_after: int = 1
    ) -> None:
        """The next `n` requests (to `path`, or any when None) answer `status`."""
        with self._lock:
            self._faults.append(_Fault(n, status, path, retry_after))

    def count(self, path: str | None = KLINES, status: int | None = None) -> int:
        with self._lock:
            return sum(
                1
                for s in self.seen
                if (path is None or s.path == path) and (status is None or s.status == status)
            )

    def kline_requests(self) -> list[dict[str, str]]:
        with self._lock:
            return [s.query for s in self.seen if s.path == KLINES]

    # -- serving ---------------------------------------------------------------------------

    def _candles_for(self, symbol: str) -> _Candles | None:
        with self._lock:
            if symbol in self._candles:
                return self._candles[symbol]
        if symbol not in _SYMBOL_FILES:
            return None
        candles = _Candles(shared_frame(_SYMBOL_FILES[symbol]))
        with self._lock:
            return self._candles.setdefault(symbol, candles)

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and (fault.path is None or fault.path == path):
                    fault.remaining -= 1
                    return fault
        return None

    def respond(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        fault = self._take_fault(path)
        if fault is not None:
            if fault.status in (418, 429):
                body = {
                    "code": -1003,
                    "msg": "Too many requests; current limit of IP(127.0.0.1) is 6000 requests"
                    " per minute. Please use WebSocket Streams for live updates to avoid"
                    " polling the API.",
                }
                return fault.status, {"Retry-After": str(fault.retry_after)}, _json(body)
            # Binance's 5xx come from its front end as plain text, not JSON.
            return fault.status, {"Content-Type": "text/plain"}, b"Internal Server Error"
        now = int(time.time() * 1000)
        if path == "/api/v3/ping":
            return 200, {}, _json({})
        if path == "/api/v3/time":
            return 200, {}, _json({"serverTime": now})
        if path == EXCHANGE_INFO:
            return 200, {}, _json(exchange_info(now))
        if path == KLINES:
            return self._klines(query)
        return (
            404,
            {"Content-Type": "text/html"},
            b"<html><body><h1>404 Not Found</h1></body></html>",
        )

    def _klines(self, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        symbol = query.get("symbol", "")
        candles = self._candles_for(symbol)
        if candles is None:
            return 400, {}, _json({"code": -1121, "msg": "Invalid symbol."})
        interval = query.get("interval", "")
        if interval not in _INTERVAL_MS:
            return 400, {}, _json({"code": -1120, "msg": "Invalid interval."})
        try:
            limit = int(query.get("limit", "500"))
            start = int(query["startTime"]) if "startTime" in query else None
            end = int(query["endTime"]) if "endTime" in query else None
        except ValueError:
            return (
                400,
                {},
                _json({"code": -1100, "msg": "Illegal characters found in a parameter."}),
            )
        if not 1 <= limit <= 1000:
            return (
                400,
                {},
                _json({"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."}),
            )
        step = _INTERVAL_MS[interval]
        candles = candles.at(step)
        ts = candles.ts
        hi = len(ts) if end is None else int(np.searchsorted(ts, end, side="right"))
        if start is not None:
            lo = int(np.searchsorted(ts, start, side="left"))
            hi = min(hi, lo + limit)
        else:  # Binance serves the most recent bars when no start is given
            lo = max(0, hi - limit)
        v = candles.values
        rows = [
            [
                int(ts[i]),
                f"{v['open'][i]:.8f}",
                f"{v['high'][i]:.8f}",
                f"{v['low'][i]:.8f}",
                f"{v['close'][i]:.8f}",
                f"{v['volume'][i]:.8f}",
                int(ts[i]) + step - 1,
                f"{v['volume'][i] * v['close'][i]:.8f}",
                0,
                "0.00000000",
                "0.00000000",
                "0",
            ]
            for i in range(lo, max(lo, hi))
        ]
        return 200, {}, _json(rows)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                status, headers, body = server.respond(parts.path, query)
                with server._lock:
                    server.seen.append(Seen("GET", parts.path, query, status))
                self.send_response(status)
                headers = {"Content-Type": "application/json;charset=UTF-8", **headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep pytest output clean

        return Handler


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@pytest.fixture(scope="session")
def _exchange_server_session() -> Iterator[ExchangeServer]:
    server = ExchangeServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def exchange_server(
    _exchange_server_session: ExchangeServer, monkeypatch: pytest.MonkeyPatch
) -> ExchangeServer:
    """The local Binance API, reset for this test, with STAGEGATE_CCXT_API_URL pointing at it."""
    server = _exchange_server_session
    server.reset()
    monkeypatch.setenv("STAGEGATE_CCXT_API_URL", server.url)
    return server
