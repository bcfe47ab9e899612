"""How times and numbers are written wherever a person or the API server reads them.

Kubernetes timestamps are RFC 3339, whole seconds, UTC: the status, the plan and the local run's
status.json all use this form, so a local and a cluster run read the same.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def now_iso(now: float | None = None) -> str:
    """`now` (epoch seconds; the current time when left out) as a Kubernetes timestamp."""
    return datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime(FORMAT)


def parse_iso(text: str | None) -> float | None:
    """A Kubernetes timestamp as epoch seconds; None for none."""
    if not text:
        return None
    # fromisoformat, not strptime: a pass reads hundreds of timestamps, and strptime was 2 % of
    # the operator's CPU. A time without an offset is UTC, as Kubernetes writes them.
    parsed = datetime.fromisoformat(text)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def percent(value: float | None) -> str:
    """A rate as a person reads it: `57.3%`, or `-` when there is none."""
    return "-" if value is None else f"{value * 100:.1f}%"
