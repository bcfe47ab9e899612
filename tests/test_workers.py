"""The worker pool ties every result, error and death to one task."""

from __future__ import annotations

import os
import signal
import time

import pytest
from stagegate_trainer.workers import WorkerPool


def _collect(pool: WorkerPool, timeout: float = 30) -> list:  # type: ignore[type-arg]
    done = []
    deadline = time.monotonic() + timeout
    while pool.running and time.monotonic() < deadline:
        done += pool.wait(timeout=0.5)
    return done


def test_results_errors_and_deaths_are_tied_to_their_task() -> None:
    pool = WorkerPool(2)
    try:
        pool.submit("ok", sum, [1, 2, 3])
        pool.submit("bad", int, "x")
        done = {d.key: d for d in _collect(pool)}
        assert done["ok"].ok and done["ok"].value == 6
        assert not done["bad"].ok and done["bad"].error.startswith("ValueError: invalid literal")

        pool.submit("slow", time.sleep, 30)
        pid = next(w.process.pid for w in pool._workers if w.key == "slow")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        died = _collect(pool)
        assert [(d.key, d.ok, d.error) for d in died] == [
            ("slow", False, "worker process killed by SIGKILL")
        ]
    finally:
        pool.stop()


def test_an_idle_worker_killed_from_outside_is_replaced() -> None:
    pool = WorkerPool(1)
    pool.start()
    try:
        pool.submit("first", sum, [1])
        assert _collect(pool)[0].value == 1
        (worker,) = pool._workers
        os.kill(worker.process.pid, signal.SIGKILL)  # type: ignore[arg-type]
        worker.process.join(5)
        pool.submit("second", sum, [2])
        (done,) = _collect(pool)
        assert done.ok and done.value == 2
    finally:
        pool.stop()


def test_a_worker_sees_the_environment_of_now_not_the_fork_servers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fork server keeps the environment it started with; a worker must see the parent's
    when the worker started (credentials set after the first run, say)."""
    first = WorkerPool(1)
    try:
        first.submit("before", os.getenv, "STAGEGATE_TEST_LATE")
        assert _collect(first)[0].value is None
    finally:
        first.stop()
    monkeypatch.setenv("STAGEGATE_TEST_LATE", "set later")
    pool = WorkerPool(1)
    try:
        pool.submit("after", os.getenv, "STAGEGATE_TEST_LATE")
        assert _collect(pool)[0].value == "set later"
    finally:
        pool.stop()
