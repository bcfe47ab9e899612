"""A fold takes the cores idle workers leave free, and that changes no result."""

from __future__ import annotations

import ctypes
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lightgbm import basic
from stagegate_core import layout
from stagegate_trainer import steps, threadshare, workers
from stagegate_trainer.workers import WorkerPool

from tests.support.runs import prepared_run


class GoingIdle:
    """A pool's busy count that reads 2 for the first `after` reads and 1 from then on: the
    other worker finishing while this one fits."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.reads = 0

    @property
    def value(self) -> int:
        self.reads += 1
        return 2 if self.reads <= self.after else 1


def max_threads() -> int:
    out = ctypes.c_int(0)
    basic._safe_call(basic._LIB.LGBM_GetMaxThreads(ctypes.byref(out)))
    return out.value


@pytest.fixture
def uncapped() -> Iterator[None]:
    yield
    basic._safe_call(basic._LIB.LGBM_SetMaxThreads(ctypes.c_int(-1)))
    threadshare._capped[0] = 0


def test_a_cap_that_rises_mid_fit_changes_no_tree_and_no_metric(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uncapped: None
) -> None:
    run = prepared_run(tmp_path)
    alone = steps.fold(run, "quick", 1, num_threads=2, force=True)
    model = run.store.read_bytes(layout.fold_model("quick", 1))
    busy = GoingIdle(after=15)
    monkeypatch.setattr(workers, "_busy", busy)
    shared = steps.fold(run, "quick", 1, num_threads=2, force=True)
    assert busy.reads > 30, "the cap was read at the start and between rounds"
    assert max_threads() == 2, "alone at the end, the fold had both cores"
    assert run.store.read_bytes(layout.fold_model("quick", 1)) == model
    assert shared.metrics == alone.metrics


def test_outside_a_pool_nothing_is_capped(uncapped: None) -> None:
    assert workers.busy_workers() is None
    assert threadshare.cap(4) == 4
    assert max_threads() == -1


def report_busy(delay: float) -> int | None:
    time.sleep(delay)
    return workers.busy_workers()


def test_a_worker_reads_how_many_of_its_pool_are_busy() -> None:
    pool = WorkerPool(2)
    try:
        pool.submit("long", report_busy, 1.5)
        pool.submit("short", report_busy, 0.0)
        seen = {}
        deadline = time.monotonic() + 30
        while pool.running and time.monotonic() < deadline:
            seen.update({d.key: d.value for d in pool.wait(timeout=0.2)})
        assert seen == {"short": 2, "long": 1}, "the long task outlived the short one"
    finally:
        pool.stop()
