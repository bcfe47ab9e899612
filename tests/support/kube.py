"""Kubernetes fixtures: real kubectl/helm and a real control plane shared by the test run.

One cluster (``python -m tests.cluster serve``: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and our node agent) is started by the first test that needs it and shared by
every xdist worker; the pytest controller stops it at the end of the run. Each test gets a
namespace of its own, labelled for the ``restricted`` Pod Security level, so tests run in
parallel without seeing each other. Tests that break the cluster on purpose (restart the API
server, etcd or the node agent) start a private one with :func:`private_cluster`.

Fixtures
--------
``kube_binaries`` (session) -> :class:`KubeBinaries`: real kubectl v1.35 and helm v4.
``kube_api`` (function) -> :class:`KubeApi`: the shared cluster, as admin, in a fresh namespace.
``kube_api_module`` (module): the same, one namespace for a whole test module.

:class:`KubeApi`: ``server``, ``namespace``, ``kubeconfig`` (admin, namespace preset), ``env``
(KUBECONFIG, HOME, PATH for subprocesses), ``kubectl(*args)``, ``helm(*args)``,
``popen(*argv)``, ``request(method, path, body)`` (raw HTTPS as admin, or as ``user=``),
``get``/``create``/``patch``, ``wait_for(predicate)``, ``kubeconfig_for(user)``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.cluster.cluster import LocalCluster
from tests.cluster.controlplane import token, write_kubeconfig
from tests.support import httpjson
from tests.support.procs import kill_group

REPO = Path(__file__).resolve().parents[2]
FETCH_SCRIPT = REPO / "scripts" / "fetch-kube-binaries"
CLUSTER_ENV = "STAGEGATE_TEST_CLUSTER"
T = TypeVar("T")
# The shared node is overcommitted on purpose: parallel tests each ask for CPUs and GiBs they
# never use. The one test about capacity asks for more than even this.
NODE_CPU, NODE_MEMORY, NODE_PODS = "64", "512Gi", 2000
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
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
    server: str
    ca: Path
    kubeconfig: Path
    home: Path
    binaries: KubeBinaries
    namespace: str = "default"
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

    def kubeconfig_for(self, user: str) -> Path:
        """A kubeconfig acting as one of tests.cluster.controlplane.USERS."""
        return write_kubeconfig(
            self.home / f"{user}.kubeconfig", self.server, self.ca, user, self.namespace
        )

    # --- binaries ------------------------------------------------------------------------

    def _run(
        self,
        binary: Path,
        args: tuple[str, ...],
        input: str | None,
        check: bool,
        timeout: float,
        user: str | None,
    ) -> subprocess.CompletedProcess[str]:
        env = self.env
        if user is not None:
            env["KUBECONFIG"] = str(self.kubeconfig_for(user))
        proc = subprocess.Popen(
            [str(binary), *args],
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
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
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
        user: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return self._run(self.binaries.kubectl, args, input, check, timeout, user)

    def helm(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120,
        user: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return self._run(self.binaries.helm, args, input, check, timeout, user)

    def popen(self, *argv: str, **kwargs: Any) -> subprocess.Popen[str]:
        proc: subprocess.Popen[str] = subprocess.Popen(
            list(argv),
            env=kwargs.pop("env", self.env),
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
        user: str = "admin",
    ) -> tuple[int, Any]:
        url = self.server + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            url,
            data=data,
            method=method,
            headers={
                "Content-Type": content_type,
                "Authorization": f"Bearer {token(user)}",
                **(headers or {}),
            },
        )
        return httpjson.send(req, ssl.create_default_context(cafile=str(self.ca)), timeout)

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

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        self.create(
            "/api/v1/namespaces",
            {"metadata": {"name": name, "labels": {**RESTRICTED, **(labels or {})}}},
        )
        # The ServiceAccount controller makes `default` a moment later; pods need it.
        self.wait_for(
            lambda: (
                self.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")[0] == 200
            ),
            timeout=30,
            message=f"namespace {name}'s default ServiceAccount",
        )

    def close(self) -> None:
        for proc in self._procs:
            kill_group(proc)
        self._procs.clear()


# --- the shared cluster -------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or CLUSTER_ENV in os.environ:
        return
    # xdist workers inherit the controller's environment: they all find the cluster here.
    os.environ[CLUSTER_ENV] = tempfile.mkdtemp(prefix="stagegate-test-cluster-", dir="/var/tmp")
    config.stash[_OWNER] = os.environ[CLUSTER_ENV]


_OWNER = pytest.StashKey[str]()


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(_OWNER, None)
    if folder is None:
        return
    pid_file = Path(folder) / "serve.pid"
    with contextlib.suppress(OSError, ValueError, ProcessLookupError):
        pid = int(pid_file.read_text())
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class SharedCluster:
    server: str
    ca: Path
    admin_kubeconfig: Path


def shared_cluster() -> SharedCluster:
    """Start the run's cluster if no worker has yet; return how to reach it."""
    folder = Path(os.environ.get(CLUSTER_ENV) or tempfile.mkdtemp(dir="/var/tmp"))
    os.environ[CLUSTER_ENV] = str(folder)
    kubeconfig = folder / "kubeconfig.yaml"
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not kubeconfig.exists():
            out = folder / "serve.out"
            with open(out, "w") as log:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.cluster",
                        "serve",
                        "--kubeconfig",
                        str(kubeconfig),
                        "--workdir",
                        str(folder / "state"),
                        "--cpu",
                        NODE_CPU,
                        "--memory",
                        NODE_MEMORY,
                        "--pods",
                        str(NODE_PODS),
                    ],
                    cwd=REPO,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            (folder / "serve.pid").write_text(str(proc.pid))
            # The first run on a machine builds the control plane (~5-20 min).
            deadline = time.monotonic() + 3000
            while "ready" not in out.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the test cluster did not start:\n{out.read_text()}")
                time.sleep(0.2)
    import yaml

    config = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    return SharedCluster(cluster["server"], Path(cluster["certificate-authority"]), kubeconfig)


@pytest.fixture(scope="session")
def kube_binaries() -> KubeBinaries:
    return fetch_kube_binaries()


@pytest.fixture(scope="session")
def kube_cluster() -> SharedCluster:
    return shared_cluster()


def new_namespace() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@contextlib.contextmanager
def namespaced_api(cluster: SharedCluster, binaries: KubeBinaries, home: Path) -> Iterator[KubeApi]:
    namespace = new_namespace()
    home.mkdir(parents=True, exist_ok=True)
    kubeconfig = write_kubeconfig(
        home / "admin.kubeconfig", cluster.server, cluster.ca, "admin", namespace
    )
    api = KubeApi(cluster.server, cluster.ca, kubeconfig, home, binaries, namespace)
    api.create_namespace(namespace)
    try:
        yield api
    finally:
        api.close()
        api.request("DELETE", f"/api/v1/namespaces/{namespace}")


@pytest.fixture
def kube_api(
    kube_cluster: SharedCluster, kube_binaries: KubeBinaries, tmp_path: Path
) -> Iterator[KubeApi]:
    with namespaced_api(kube_cluster, kube_binaries, tmp_path / "kube-home") as api:
        yield api


@pytest.fixture(scope="module")
def kube_api_module(
    kube_cluster: SharedCluster,
    kube_binaries: KubeBinaries,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[KubeApi]:
    """One namespace for a whole module (for many quick, independent checks)."""
    home = tmp_path_factory.mktemp("kube-home")
    with namespaced_api(kube_cluster, kube_binaries, home) as api:
        yield api


@contextlib.contextmanager
def private_cluster(
    tmp: Path, binaries: KubeBinaries, runtime: str = "process"
) -> Iterator[tuple[LocalCluster, KubeApi]]:
    """A cluster of one's own, for tests that restart its parts."""
    workdir = Path(tempfile.mkdtemp(prefix="stagegate-private-", dir="/var/tmp"))
    cluster = LocalCluster(
        workdir, cpu=NODE_CPU, memory=NODE_MEMORY, max_pods=NODE_PODS, runtime=runtime
    )
    try:
        cluster.start()
        home = tmp / "kube-home"
        home.mkdir(parents=True, exist_ok=True)
        assert cluster.plane.pki is not None
        api = KubeApi(cluster.server, cluster.plane.pki.ca, cluster.kubeconfig, home, binaries)
        try:
            yield cluster, api
        finally:
            api.close()
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
