"""The emulator as one object: store, API, HTTP server, kubelet, Job controller and GC.

Start it on the current event loop (`await Emulator(...).start()`), in a background thread with
its own loop (`EmulatorThread`), or as a subprocess (`python -m tests.kube serve`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from aiohttp import web

from .api import Api
from .gc import GarbageCollector
from .jobs import JobController
from .kubelet import Kubelet
from .server import Server, ServerSettings
from .store import Store

T = TypeVar("T")


@dataclass
class EmulatorSettings:
    host: str = "127.0.0.1"
    port: int = 0  # 0 picks a free port
    bookmark_interval: float = 15.0
    job_backoff_seconds: float = 10.0
    restart_backoff_seconds: float = 10.0
    gc_interval: float = 1.0
    workdir: Path | None = None  # pod sandboxes and logs; a temporary directory by default


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def kubeconfig_dict(url: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "stagegate-emulator", "cluster": {"server": url}}],
        "users": [{"name": "stagegate-emulator", "user": {}}],
        "contexts": [{"name": "stagegate-emulator", "context": {
            "cluster": "stagegate-emulator", "user": "stagegate-emulator",
            "namespace": namespace}}],
        "current-context": "stagegate-emulator",
        "preferences": {},
    }


def write_kubeconfig(path: Path, url: str, namespace: str = "default") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(kubeconfig_dict(url, namespace), sort_keys=False))
    return path


class Emulator:
    def __init__(self, settings: EmulatorSettings | None = None) -> None:
        self.settings = settings or EmulatorSettings()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.store = Store()
        self.api = Api(self.store)
        self._runner: web.AppRunner | None = None
        self.port = self.settings.port
        self.server: Server | None = None
        self.kubelet: Kubelet | None = None
        self.jobs: JobController | None = None
        self.gc: GarbageCollector | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    async def start(self) -> None:
        s = self.settings
        workdir = s.workdir
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="kube-emulator-")
            workdir = Path(self._tmp.name)
        if self.port == 0:
            self.port = free_port(s.host)
        self.kubelet = Kubelet(self.api, workdir, server_host=s.host, server_port=self.port,
                               restart_backoff=s.restart_backoff_seconds)
        self.server = Server(self.api, ServerSettings(bookmark_interval=s.bookmark_interval),
                             self.kubelet, address=f"{s.host}:{self.port}")
        self._runner = web.AppRunner(self.server.app, access_log=None,
                                     handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.host, self.port)
        await site.start()
        self.kubelet.start()
        self.jobs = JobController(self.api, backoff_seconds=s.job_backoff_seconds)
        self.jobs.start()
        self.gc = GarbageCollector(self.api, interval=s.gc_interval)
        self.gc.start()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.stopping.set()
        self.store.close_watchers()
        for part in (self.gc, self.jobs):
            if part is not None:
                await part.stop()
        if self.kubelet is not None:
            await self.kubelet.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()


class EmulatorThread:
    """Runs an Emulator on its own event loop in a daemon thread (for synchronous tests).

    `call(fn)` runs `fn()` on the emulator's loop and returns its result: use it to touch the
    store or API directly (`emu.call(lambda: emu.emulator.store.compact())`).
    """

    def __init__(self, settings: EmulatorSettings | None = None) -> None:
        self.emulator = Emulator(settings)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)
        self._started: Future[None] = Future()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def boot() -> None:
            try:
                await self.emulator.start()
            except BaseException as exc:
                self._started.set_exception(exc)
                raise
            self._started.set_result(None)

        try:
            self.loop.run_until_complete(boot())
        except BaseException:
            return
        self.loop.run_forever()

    def start(self, timeout: float = 30) -> EmulatorThread:
        self._thread.start()
        self._started.result(timeout)
        return self

    @property
    def url(self) -> str:
        return self.emulator.url

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T], timeout: float = 30) -> T:
        async def wrapper() -> T:
            result = fn()
            if isinstance(result, Awaitable):
                return await result
            return result

        return self.run(wrapper(), timeout)

    def stop(self, timeout: float = 30) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self.run(self.emulator.stop(), timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()
