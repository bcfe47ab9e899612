"""Status writes as JSON merge patches: only what changed goes over the wire, never a null.

Most passes change nothing but the clock-driven fields (VOLATILE); a write for those alone is
sent at most every ELAPSED_REFRESH_SECONDS, so an idle run does not cost a request per pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Status fields that change every pass.
VOLATILE = ("elapsedSeconds", "etaSeconds", "conditions", "phaseSeconds")
ELAPSED_REFRESH_SECONDS = 30.0


def stable(status: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k not in VOLATILE}


def pruned(value: Any) -> Any:
    """Without null members: a merge patch deletes them, so the stored status never has them."""
    # Every pass prunes the whole status: recursing only into containers saves a fifth.
    if type(value) is dict:
        return {
            k: pruned(v) if type(v) in _CONTAINERS else v for k, v in value.items() if v is not None
        }
    if type(value) is list:
        return [pruned(v) if type(v) in _CONTAINERS else v for v in value]
    return value


_CONTAINERS = (dict, list)


def merge_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch that turns `old` into `new` (lists are replaced whole)."""
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for key, value in new.items():
        before = old.get(key)
        if key not in old:
            patch[key] = value
        elif isinstance(before, dict) and isinstance(value, dict):
            inner = merge_diff(before, value)
            if inner:
                patch[key] = inner
        elif before != value:
            patch[key] = value
    return patch


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """The patch that writes `new` (already pruned) over `old`, or None when it is not worth
    a request: nothing stable changed and the elapsed time is fresh enough."""
    elapsed_stale = abs(new.get("elapsedSeconds", 0) - old.get("elapsedSeconds", 0)) >= (
        ELAPSED_REFRESH_SECONDS
    )
    if stable(new) == stable(old) and not elapsed_stale:
        return None
    return merge_diff(old, new)
