"""A small pool of long-lived worker processes that knows which task each worker runs.

concurrent.futures' pool cannot say which task died with a killed worker (it breaks the whole
pool), so a run could not retry just that fold. Here each worker has its own pipe: a result, an
error or a death is always tied to one task, and a dead worker is replaced.

Workers come from multiprocessing's fork server where there is one (not forked from the parent,
which runs a progress-bar thread): a clean process that imports the heavy modules once, while
the parent prepares, and then forks each worker in milliseconds. Spawning each worker instead
cost every worker that import again (a quick stage is 3 folds of under a second each, so
start-up was most of its time). Workers ignore SIGINT, as the fork server does, so Ctrl-C
reaches the parent alone, which then stops them in order.

The pool keeps the number of busy workers in shared memory, where a task can read it
(`busy_workers`) to use the cores that idle workers leave free (threadshare.py).
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing as mp
import os
import signal
import traceback
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from multiprocessing import forkserver
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

Task = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]

_busy: Any = None  # in a worker: its pool's count of busy workers (a shared ctypes int)


def busy_workers() -> int | None:
    """In a pool's worker, how many of the pool's workers run a task now (this one included);
    None outside a pool."""
    return None if _busy is None else max(1, int(_busy.value))


@dataclass
class Done:
    key: Hashable
    ok: bool
    value: Any = None  # the function's return value when ok
    error: str = ""  # one line when not ok


def _serve(conn: Connection, preload: tuple[str, ...], environ: dict[str, str], busy: Any) -> None:
    global _busy
    _busy = busy
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A fork server's environment is the parent's when the server started: give the worker the
    # parent's of now, as a spawned process would have (e.g. S3 credentials set since).
    os.environ.clear()
    os.environ.update(environ)
    # Already imported by the fork server; with spawn, imported now, not on the first task.
    for module in preload:
        importlib.import_module(module)
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        fn, args, kwargs = message
        try:
            conn.send((True, fn(*args, **kwargs)))
        except Exception as exc:  # reported to the parent, which decides on retries
            last = traceback.extract_tb(exc.__traceback__)[-1:]
            where = f" ({os.path.basename(last[0].filename)}:{last[0].lineno})" if last else ""
            conn.send((False, f"{type(exc).__name__}: {exc}{where}"))


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    key: Hashable | None = None


class WorkerPool:
    def __init__(self, size: int, preload: tuple[str, ...] = ()) -> None:
        served = "forkserver" in mp.get_all_start_methods()
        self._ctx = mp.get_context("forkserver") if served else mp.get_context("spawn")
        if served:
            # One server per process: the first pool's preload is the one it keeps.
            self._ctx.set_forkserver_preload(list(preload))
        self._size = max(1, size)
        self._preload = preload
        self._workers: list[_Worker] = []
        self._busy = self._ctx.Value("i", 0, lock=False)  # written here only

    def start(self) -> None:
        """Get ready in the background: the fork server starts and imports `preload` while
        the caller goes on (without a fork server, the workers start and import it)."""
        if self._ctx.get_start_method() == "forkserver":
            forkserver.ensure_running()  # returns at once; the first worker waits for it
            return
        while len(self._workers) < self._size:
            self._start()

    def _start(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(
            target=_serve, args=(child, self._preload, dict(os.environ), self._busy), daemon=True
        )
        process.start()
        child.close()
        worker = _Worker(process, parent)
        self._workers.append(worker)
        return worker

    @property
    def running(self) -> list[Hashable]:
        return [w.key for w in self._workers if w.key is not None]

    def _count_busy(self) -> None:
        self._busy.value = len(self.running)

    def submit(self, key: Hashable, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        # An idle worker may have died (killed from outside): drop it and start another.
        for dead in [w for w in self._workers if w.key is None and not w.process.is_alive()]:
            dead.conn.close()
            self._workers.remove(dead)
        worker = next((w for w in self._workers if w.key is None), None)
        if worker is None:
            if len(self._workers) >= self._size:
                raise RuntimeError("no idle worker")
            worker = self._start()
        worker.key = key
        self._count_busy()
        # A worker that died between the check and the send is reported by wait() as this
        # task's failure.
        with contextlib.suppress(OSError):
            worker.conn.send((fn, args, kwargs))

    def wait(self, timeout: float | None) -> list[Done]:
        """Results of tasks that ended (or whose worker died) within `timeout` seconds."""
        busy = [w for w in self._workers if w.key is not None]
        if not busy:
            return []
        handles: list[Any] = [w.conn for w in busy] + [w.process.sentinel for w in busy]
        ready = set(wait(handles, timeout))
        done: list[Done] = []
        for w in busy:
            key = w.key
            if w.conn in ready:
                try:
                    ok, value = w.conn.recv()
                except (EOFError, OSError):
                    ok, value = False, None
                if ok:
                    done.append(Done(key, True, value))
                    w.key = None
                    continue
                if value is not None:
                    done.append(Done(key, False, error=value))
                    w.key = None
                    continue
            if w.process.sentinel in ready or not w.process.is_alive():
                w.process.join(timeout=1)
                code = w.process.exitcode
                done.append(Done(key, False, error=_death(code)))
                self._workers.remove(w)
        self._count_busy()
        return done

    def stop(self, grace: float = 3.0) -> None:
        """Terminate every worker: SIGTERM, then SIGKILL after `grace` seconds."""
        for w in self._workers:
            if w.process.is_alive():
                w.process.terminate()
        for w in self._workers:
            w.process.join(timeout=grace)
            if w.process.is_alive():
                w.process.kill()
                w.process.join(timeout=1)
            w.conn.close()
        self._workers.clear()
        self._count_busy()

    def close(self) -> None:
        """Let idle workers exit; busy ones are stopped."""
        for w in self._workers:
            if w.key is None and w.process.is_alive():
                with contextlib.suppress(OSError):
                    w.conn.send(None)
        self.stop()


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"worker process killed by {name}"
    return f"worker process exited with code {code}"
