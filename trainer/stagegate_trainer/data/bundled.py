"""The data set shipped inside the package: the offline default for a newcomer.

Only M15 bars are shipped; coarser timeframes are resampled from them by the loader.
"""

from __future__ import annotations

from pathlib import Path

from stagegate_core import timeframes

from stagegate_trainer.data.errors import DataError

BUNDLED_DIR = Path(__file__).with_name("bundled")
BUNDLED_TIMEFRAME = "M15"
# symbol -> file name inside BUNDLED_DIR
BUNDLED: dict[str, str] = {"BTC/USDT": "BTC_USDT-15m.parquet"}


def normalise_symbol(symbol: str) -> str:
    """`btc/usdt`, `BTC_USDT`, `BTC-USDT` -> `BTC/USDT`."""
    return symbol.strip().upper().replace("_", "/").replace("-", "/")


def bundled_symbols() -> list[str]:
    return sorted(BUNDLED)


def _listing() -> str:
    return ", ".join(f"{s} {BUNDLED_TIMEFRAME}" for s in bundled_symbols())


def bundled_path(symbol: str, timeframe: str) -> Path:
    """The bundled file that serves `symbol` at `timeframe` (M15, or coarser by resampling)."""
    sym = normalise_symbol(symbol)
    try:
        tf = timeframes.canonical(timeframe)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    if sym not in BUNDLED:
        raise DataError(
            f"no bundled data for {symbol}; bundled: {_listing()} "
            "(use data.source ccxt, s3 or file for other symbols)"
        )
    base = timeframes.minutes(BUNDLED_TIMEFRAME)
    if timeframes.minutes(tf) % base:
        raise DataError(
            f"bundled data is {BUNDLED_TIMEFRAME}; {tf} cannot be made from it "
            f"(bundled: {_listing()}; coarser timeframes are resampled)"
        )
    path = BUNDLED_DIR / BUNDLED[sym]
    if not path.is_file():
        raise DataError(f"bundled data file {path} is missing from the installation")
    return path
