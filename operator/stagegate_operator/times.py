"""Kubernetes timestamps (RFC 3339, whole seconds, UTC) to and from epoch seconds."""

from __future__ import annotations

from datetime import UTC, datetime

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def now_iso(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime(FORMAT)


def parse_iso(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.strptime(text, FORMAT).replace(tzinfo=UTC).timestamp()
