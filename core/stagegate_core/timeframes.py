"""Timeframe names: Stagegate's (M15) and ccxt's (15m) spellings of one bar length."""

from __future__ import annotations

from datetime import timedelta

# Canonical name -> bar length in minutes.
MINUTES: dict[str, int] = {
    "M1": 1,
    "M5": 5,
    "M15": 15,
    "M30": 30,
    "H1": 60,
    "H4": 240,
    "D1": 1440,
}
_CCXT = {"M1": "1m", "M5": "5m", "M15": "15m", "M30": "30m", "H1": "1h", "H4": "4h", "D1": "1d"}
_FROM_CCXT = {v: k for k, v in _CCXT.items()}


class TimeframeError(ValueError):
    pass


def canonical(name: str) -> str:
    """`15m` or `M15` -> `M15`; anything else raises with the accepted spellings."""
    key = name.strip()
    if key.upper() in MINUTES:
        return key.upper()
    if key in _FROM_CCXT:
        return _FROM_CCXT[key]
    accepted = ", ".join(list(MINUTES) + list(_FROM_CCXT))
    raise TimeframeError(f"unknown timeframe {name!r}; accepted: {accepted}")


def minutes(name: str) -> int:
    return MINUTES[canonical(name)]


def bar(name: str) -> timedelta:
    return timedelta(minutes=minutes(name))


def bar_ns(name: str) -> int:
    return minutes(name) * 60 * 10**9


def to_ccxt(name: str) -> str:
    return _CCXT[canonical(name)]


def bars_per_day(name: str) -> int:
    return 1440 // minutes(name)
