"""The processes the bench starts and samples: their lifetime, RSS and CPU seconds."""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from tests.support.procs import kill_group

from .cluster import CONTROL_PLANE


class Processes:
    """Everything the bench starts, each in its own session; stopped at exit whatever happens."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []
        atexit.register(self.stop_all)

    def start(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[Any], grace: float = 20.0) -> None:
        kill_group(proc, grace)

    def stop_all(self, verbose: bool = False) -> None:
        for proc in reversed(self.procs):
            started = time.monotonic()
            running = proc.poll() is None
            self.stop(proc)
            if verbose and running:
                print(
                    f"  stopped {Path(str(proc.args[0])).name} {' '.join(map(str, proc.args[1:3]))}"
                    f" in {time.monotonic() - started:.1f} s (exit {proc.returncode})"
                )
        self.procs.clear()


class Sampler(threading.Thread):
    """Peak RSS of the operator and of each control plane process every `interval` seconds,
    and the peak of the control plane's total (the sum within one sample, not of the peaks)."""

    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True, name="sampler")
        self.interval = interval
        self.procs: dict[str, psutil.Process] = {}
        self.peak: dict[str, int] = {}
        self.peak_at: dict[str, float] = {}
        self.last: dict[str, int] = {}
        self.samples = 0
        self.stopping = threading.Event()

    def watch(self, label: str, pid: int) -> None:
        self.procs[label] = psutil.Process(pid)

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            plane_total = 0
            for label, proc in list(self.procs.items()):
                try:
                    rss = proc.memory_info().rss
                except psutil.Error:
                    continue
                self.last[label] = rss
                if label in CONTROL_PLANE:
                    plane_total += rss
                if rss > self.peak.get(label, 0):
                    self.peak[label] = rss
                    self.peak_at[label] = time.monotonic()
            self.peak["control-plane"] = max(self.peak.get("control-plane", 0), plane_total)
            self.samples += 1


def cpu_seconds(proc: psutil.Process) -> tuple[float, float]:
    """(own CPU seconds, CPU seconds of its reaped children)."""
    t = proc.cpu_times()
    return t.user + t.system, t.children_user + t.children_system


def leftovers(work: Path, pids: list[int]) -> list[str]:
    """Processes of this run still alive: the cluster's own, or any naming the work folder."""
    out = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
                continue
            cmd = " ".join(proc.info["cmdline"] or [])
            if proc.pid in pids or str(work) in cmd:
                out.append(f"{proc.pid} {cmd[:100]}")
    return out
