"""Kubernetes fixtures: real kubectl/helm binaries and a per-test Kubernetes API emulator.

Fixtures
--------
``kube_binaries`` (session) -> :class:`KubeBinaries`
    ``.kubectl`` and ``.helm``: paths of real kubectl v1.35 and helm v4, fetched once by
    ``scripts/fetch-kube-binaries`` into ``.cache/kube-bin/`` (or ``$STAGEGATE_KUBE_BIN``).

``kube_api`` (function) -> :class:`KubeApi`
    A fresh emulator (``tests/kube``: API server, kubelet, Job controller, garbage collector) on
    a free 127.0.0.1 port, running on its own asyncio loop in a background thread. Everything it
    started (pods' process groups, watch streams, kubectl subprocesses) is stopped at teardown.

``kube_api_process`` (function) -> :class:`KubeApi`
    The same, but the emulator runs as a subprocess (``python -m tests.kube serve``); use it when
    the code under test must not share the test's process. ``.emulator`` is None there.

:class:`KubeApi` API
--------------------
``url``                         base URL, e.g. ``http://127.0.0.1:43123`` (plain HTTP, no auth)
``kubeconfig``                  path of a kubeconfig pointing at it (namespace ``default``)
``home``                        the HOME (and discovery cache) kubectl/helm run with
``env``                         environment for any subprocess that should talk to the emulator
                                (``KUBECONFIG``, ``HOME``, ``PATH`` with the venv's bin first)
``kubectl(*args, input=None, check=True, timeout=60)``
                                run real kubectl; returns ``CompletedProcess[str]`` (stdout and
                                stderr captured as text); raises ``AssertionError`` with both
                                streams when ``check`` and the exit status is non-zero
``helm(*args, input=None, check=True, timeout=60)``   the same for helm
``popen(*argv)``                start a long-running process (e.g. ``kubectl get -w``) in its own
                                process group with ``env``; it is killed at teardown
``request(method, path, body=None, *, content_type="application/json", query=None)``
                                raw HTTP call; returns ``(status, parsed JSON or text)``
``get(path)`` / ``create(path, body)`` / ``patch(path, body, merge=True)``
                                shortcuts that assert success and return the object
``create_crd(crd_dict)``        create a CustomResourceDefinition and wait until its resources
                                are served; returns the stored CRD
``wait_for(predicate, timeout=10, interval=0.1, message="")``
                                poll until ``predicate()`` is truthy; returns its value
``emulator``                    the in-thread :class:`tests.kube.EmulatorThread` (None for the
                                subprocess variant): ``emulator.call(fn)`` runs ``fn`` on the
                                emulator's loop, e.g. ``kube_api.compact()`` forgets the watch
                                history so that watchers get in-stream 410s

Pods run their container ``command``+``args`` as local subprocesses (images are ignored) with the
current virtualenv's ``bin`` first on PATH; the termination-message path is remapped to a sandbox
file exported as ``KUBE_TERMINATION_MESSAGE_PATH``. Job pods are replaced after 0.2 s (doubling),
not 10 s, and containers restart after 0.2 s; watch bookmarks come every 2 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.kube.emulator import (
    EmulatorSettings,
    EmulatorThread,
    free_port,
    write_kubeconfig,
)
from tests.kube.util import kill_group

REPO = Path(__file__).resolve().parents[2]
FETCH_SCRIPT = REPO / "scripts" / "fetch-kube-binaries"
T = TypeVar("T")

# Test timings: fast retries, frequent bookmarks (kopf and kubectl tolerate both).
TEST_SETTINGS = {
    "bookmark_interval": 2.0,
    "job_backoff_seconds": 0.2,
    "restart_backoff_seconds": 0.2,
    "gc_interval": 0.5,
}


@dataclass(frozen=True)
class KubeBinaries:
    kubectl: Path
    helm: Path


def fetch_kube_binaries() -> KubeBinaries:
    """Run scripts/fetch-kube-binaries (idempotent) and return the two paths it prints."""
    cache = os.environ.get("STAGEGATE_KUBE_BIN")
    kubectl_path = Path(cache or REPO / ".cache" / "kube-bin") / "kubectl"
    helm_path = kubectl_path.with_name("helm")
    if kubectl_path.exists() and helm_path.exists():
        return KubeBinaries(kubectl_path, helm_path)
    env = {**os.environ, "PYTHON": sys.executable}
    out = subprocess.run(
        [str(FETCH_SCRIPT)], check=True, capture_output=True, text=True, env=env, timeout=600
    )
    kubectl, helm = out.stdout.strip().splitlines()[-2:]
    return KubeBinaries(Path(kubectl), Path(helm))


@dataclass
class KubeApi:
    url: str
    kubeconfig: Path
    home: Path
    binaries: KubeBinaries
    emulator: EmulatorThread | None = None
    _procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        bin_dir = os.path.dirname(sys.executable)
        return {
            **os.environ,
            "HOME": str(self.home),
            "KUBECONFIG": str(self.kubeconfig),
            "KUBECACHEDIR": str(self.home / ".kube" / "cache"),
            "HELM_CACHE_HOME": str(self.home / ".cache" / "helm"),
            "HELM_CONFIG_HOME": str(self.home / ".config" / "helm"),
            "HELM_DATA_HOME": str(self.home / ".local" / "share" / "helm"),
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        }

    # --- binaries ------------------------------------------------------------------------

    def _run(
        self, binary: Path, args: tuple[str, ...], input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.Popen(
            [str(binary), *args],
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            out, err = proc.communicate()
            raise AssertionError(
                f"{binary.name} {' '.join(args)} timed out after {timeout}s\n"
                f"stdout:\n{out}\nstderr:\n{err}"
            ) from None
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        if check and done.returncode != 0:
            raise AssertionError(
                f"{binary.name} {' '.join(args)} exited {done.returncode}\n"
                f"stdout:\n{out}\nstderr:\n{err}"
            )
        return done

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self._run(self.binaries.kubectl, args, input, check, timeout)

    def helm(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self._run(self.binaries.helm, args, input, check, timeout)

    def popen(self, *argv: str, **kwargs: Any) -> subprocess.Popen[str]:
        proc: subprocess.Popen[str] = subprocess.Popen(
            list(argv),
            env=self.env,
            stdout=kwargs.pop("stdout", subprocess.PIPE),
            stderr=kwargs.pop("stderr", subprocess.PIPE),
            text=True,
            start_new_session=True,
            **kwargs,
        )
        self._procs.append(proc)
        return proc

    # --- HTTP ----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> tuple[int, Any]:
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": content_type, **(headers or {})}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode()

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, (status, body)
        return body

    def create(self, path: str, body: Any) -> Any:
        status, out = self.request("POST", path, body)
        assert status == 201, (status, out)
        return out

    def patch(self, path: str, body: Any, merge: bool = True) -> Any:
        ctype = "application/merge-patch+json" if merge else "application/json-patch+json"
        status, out = self.request("PATCH", path, body, content_type=ctype)
        assert status == 200, (status, out)
        return out

    def create_crd(self, crd: dict[str, Any]) -> Any:
        created = self.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        spec = crd["spec"]
        version = next(v["name"] for v in spec["versions"] if v.get("served", True))
        path = f"/apis/{spec['group']}/{version}"

        def served() -> bool:
            status, body = self.request("GET", path)
            return status == 200 and any(
                r["name"] == spec["names"]["plural"] for r in body.get("resources", [])
            )

        self.wait_for(served, message=f"CRD {crd['metadata']['name']} served")
        return created

    def wait_for(
        self,
        predicate: Callable[[], T],
        timeout: float = 10,
        interval: float = 0.1,
        message: str = "",
    ) -> T:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {message or predicate}"
                )
            time.sleep(interval)

    def compact(self) -> None:
        """Forget the watch history (like etcd compaction); in-thread emulators only."""
        assert self.emulator is not None, "compact() needs the in-thread emulator"
        emu = self.emulator
        emu.call(lambda: emu.emulator.store.compact())

    def close(self) -> None:
        for proc in self._procs:
            kill_group(proc)
        self._procs.clear()


@contextlib.contextmanager
def start_kube_api(
    tmp: Path, binaries: KubeBinaries, *, subprocess_mode: bool = False
) -> Iterator[KubeApi]:
    """An emulator for one test: in a thread (default) or as a subprocess."""
    home = tmp / "kube-home"
    home.mkdir(parents=True, exist_ok=True)
    kubeconfig = tmp / "kubeconfig.yaml"
    if not subprocess_mode:
        thread = EmulatorThread(EmulatorSettings(workdir=tmp / "kubelet", **TEST_SETTINGS)).start()  # type: ignore[arg-type]
        write_kubeconfig(kubeconfig, thread.url)
        api = KubeApi(thread.url, kubeconfig, home, binaries, thread)
        try:
            yield api
        finally:
            api.close()
            thread.stop()
        return
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "tests.kube",
        "serve",
        "--port",
        str(port),
        "--kubeconfig",
        str(kubeconfig),
        "--workdir",
        str(tmp / "kubelet"),
        "--bookmark-interval",
        str(TEST_SETTINGS["bookmark_interval"]),
        "--job-backoff",
        str(TEST_SETTINGS["job_backoff_seconds"]),
        "--restart-backoff",
        str(TEST_SETTINGS["restart_backoff_seconds"]),
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=None, text=True, start_new_session=True
    )
    ready: list[str] = []
    reader = threading.Thread(
        target=lambda: ready.append(
            proc.stdout.readline()  # type: ignore[union-attr]
        ),
        daemon=True,
    )
    reader.start()
    reader.join(30)
    if not ready or "ready" not in ready[0]:
        kill_group(proc)
        raise RuntimeError(f"kube emulator did not start: {ready!r}")
    api = KubeApi(f"http://127.0.0.1:{port}", kubeconfig, home, binaries)
    try:
        yield api
    finally:
        api.close()
        kill_group(proc, grace=15)


@pytest.fixture(scope="session")
def kube_binaries() -> KubeBinaries:
    return fetch_kube_binaries()


@pytest.fixture
def kube_api(tmp_path: Path, kube_binaries: KubeBinaries) -> Iterator[KubeApi]:
    with start_kube_api(tmp_path, kube_binaries) as api:
        yield api


@pytest.fixture
def kube_api_process(tmp_path: Path, kube_binaries: KubeBinaries) -> Iterator[KubeApi]:
    with start_kube_api(tmp_path, kube_binaries, subprocess_mode=True) as api:
        yield api
