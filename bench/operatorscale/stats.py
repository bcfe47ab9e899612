"""Figures from samples: percentiles, the operator's /metrics, py-spy's raw output."""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from pathlib import Path


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 100 values is the 99th smallest)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 100)))
    return ordered[min(rank, len(ordered)) - 1]


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = float(value)
    return out


def histogram_quantile(metrics: dict[str, float], name: str, q: float) -> float:
    buckets = []
    for key, value in metrics.items():
        m = re.fullmatch(rf'{name}_bucket\{{le="([^"]+)"\}}', key)
        if m:
            buckets.append((float(m.group(1)), value))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    target = q * buckets[-1][1]
    for le, count in buckets:
        if count >= target:
            return le
    return float("inf")


def print_profile(path: Path, top: int = 25) -> None:
    """Own time and inclusive time per function from py-spy's raw (collapsed) output."""
    if not path.exists():
        print(f"  (no py-spy output at {path})")
        return
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    print(
        f"  py-spy on the operator (its whole life, 100 Hz, --nonblocking, idle "
        f"included): {total} samples"
    )
    print("    inclusive:")
    for frame, samples in inclusive.most_common(top):
        print(f"      {samples / total:6.1%}  {frame}")
    print("    own:")
    for frame, samples in own.most_common(15):
        print(f"      {samples / total:6.1%}  {frame}")
