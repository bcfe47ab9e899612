"""What the bench's watches saw, and waiting on it."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from .client import LABEL_TJ


class State:
    """What the watches saw, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.job_added: dict[str, float] = {}
        self.job_done: dict[str, float] = {}
        self.first_full: dict[str, float] = {}
        self.phase_at: dict[str, dict[str, float]] = {}
        self.phase: dict[str, str] = {}
        self.active_jobs = 0
        self.max_active = 0

    def on_job(self, kind: str, job: dict[str, Any], now: float) -> None:
        meta = job["metadata"]
        name, labels = meta["name"], meta.get("labels") or {}
        with self.lock:
            if kind == "ADDED" and name not in self.job_added:
                self.job_added[name] = now
                self.active_jobs += 1
                self.max_active = max(self.max_active, self.active_jobs)
                if (
                    labels.get("stagegate.io/stage") == "full"
                    and labels.get("stagegate.io/step") == "fold"
                ):
                    self.first_full.setdefault(labels[LABEL_TJ], now)
            conditions = {
                c["type"]: c["status"] for c in (job.get("status") or {}).get("conditions", [])
            }
            if name not in self.job_done and "True" in (
                conditions.get("Complete"),
                conditions.get("Failed"),
            ):
                self.job_done[name] = now
                self.active_jobs -= 1

    def on_tj(self, kind: str, tj: dict[str, Any], now: float) -> None:
        name = tj["metadata"]["name"]
        phase = (tj.get("status") or {}).get("phase") or "Pending"
        with self.lock:
            self.phase[name] = phase
            self.phase_at.setdefault(name, {}).setdefault(phase, now)

    def count(self, names: list[str], phases: tuple[str, ...]) -> int:
        with self.lock:
            return sum(1 for n in names if self.phase.get(n) in phases)


def wait_all(
    state: State,
    names: list[str],
    phases: tuple[str, ...],
    timeout: float,
    label: str,
    extra: Any = None,
) -> bool:
    start = time.monotonic()
    last = -1.0
    while True:
        done = state.count(names, phases)
        now = time.monotonic()
        if done == len(names):
            return True
        if now - start > timeout:
            print(f"  TIMEOUT after {timeout:.0f} s waiting for {label}: {done}/{len(names)}")
            return False
        if now - last >= 10:
            with state.lock:
                phases_now = Counter(state.phase.get(n, "-") for n in names)
                jobs, active = len(state.job_added), state.active_jobs
            line = (
                f"  [{now - start:6.1f} s] {label}: {done}/{len(names)}  phases "
                f"{dict(phases_now)}  jobs created {jobs}, unfinished {active}"
            )
            print(line + (f"  {extra()}" if extra else ""), flush=True)
            last = now
        time.sleep(0.2)
