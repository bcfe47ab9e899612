"""Small helpers shared by the emulator's modules: time formats, JSONPath, deep copies."""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import os
import re
import signal
import subprocess
from typing import Any

Obj = dict[str, Any]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def rfc3339(when: dt.datetime | None = None) -> str:
    """Kubernetes `metav1.Time`: second precision, `Z` suffix."""
    return (when or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def human_duration(seconds: float) -> str:
    """`k8s.io/apimachinery/pkg/util/duration.HumanDuration`, as kubectl shows ages."""
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    return human_duration((now() - parse_time(timestamp)).total_seconds())


_ATOMS = (str, int, float, bool, type(None))


def deep(obj: Any) -> Any:
    """Deep copy through JSON types only: cheaper than copy.deepcopy for API objects.

    dicts and lists are copied recursively, JSON scalars shared (they are immutable); anything
    else (never expected in an API object) falls back to copy.deepcopy.
    """
    cls = type(obj)
    if cls is dict:
        return {k: v if type(v) in _ATOMS else deep(v) for k, v in obj.items()}
    if cls is list:
        return [v if type(v) in _ATOMS else deep(v) for v in obj]
    if cls in _ATOMS:
        return obj
    return copy.deepcopy(obj)


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


# --- JSONPath (the subset printer columns use) -------------------------------------------------

_TOKEN = re.compile(
    r"""\.(?P<field>[A-Za-z0-9_$\-/]+)          # .field
      | \[(?P<index>-?\d+|\*)\]                 # [0] [*]
      | \[\?\(@\.(?P<fpath>[A-Za-z0-9_.\-]+)\s*(?P<op>==|!=)\s*(?P<val>"[^"]*"|'[^']*'|[^)]*)\)\]
      | \['(?P<qfield>[^']+)'\]                 # ['a.b/c']
      | \.\*                                    # .*
    """,
    re.VERBOSE,
)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Evaluate a printer-column JSONPath (`.status.conditions[?(@.type=="Ready")].status`)."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if path.startswith("$"):
        path = path[1:]
    current: list[Any] = [obj]
    pos = 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if not m:
            raise ValueError(f"unsupported JSONPath {path!r} at {pos}")
        pos = m.end()
        nxt: list[Any] = []
        if m.group("field") is not None or m.group("qfield") is not None:
            name = m.group("field") or m.group("qfield")
            for item in current:
                if isinstance(item, dict) and name in item:
                    nxt.append(item[name])
        elif m.group("index") is not None:
            idx = m.group("index")
            for item in current:
                if isinstance(item, list):
                    if idx == "*":
                        nxt.extend(item)
                    elif -len(item) <= int(idx) < len(item):
                        nxt.append(item[int(idx)])
        elif m.group("fpath") is not None:
            want = m.group("val").strip()
            if want[:1] in "\"'":
                want = want[1:-1]
            for item in current:
                for element in item if isinstance(item, list) else []:
                    got = jsonpath(element, "." + m.group("fpath"))
                    text = _scalar_text(got[0]) if got else None
                    if (m.group("op") == "==") == (text == want):
                        nxt.append(element)
        else:  # .*
            for item in current:
                if isinstance(item, dict):
                    nxt.extend(item.values())
                elif isinstance(item, list):
                    nxt.extend(item)
        current = nxt
    return current


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return dumps(value)


def cell_text(values: list[Any]) -> str:
    return ",".join(_scalar_text(v) for v in values)


def kill_group(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """Stop a process started with start_new_session: SIGTERM its group, SIGKILL after
    `grace` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(grace)
