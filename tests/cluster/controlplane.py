"""etcd, kube-apiserver, kube-controller-manager and kube-scheduler as local processes.

The binaries are the real ones, built from the Kubernetes sources by scripts/build-control-plane.
Flags follow how controller-runtime's envtest and kwok's binary runtime start them: loopback
only, etcd without fsync, certificates and service-account keys made fresh at every start, RBAC
authorization, and the admission plugins a production cluster runs (PodSecurity included).

People are static bearer tokens (`USERS`): `admin` is in system:masters; the others have no
rights until a test binds them some, so RBAC tests can act as an ordinary user.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .pki import Pki, make_pki

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-control-plane"

# name -> groups. Tokens are "<name>-token".
USERS: dict[str, tuple[str, ...]] = {
    "admin": ("system:masters",),
    "alice": ("stagegate-approvers",),
    "bob": (),
    "carol": ("stagegate-approvers",),
}
ADMISSION = (
    "NamespaceLifecycle,LimitRanger,ServiceAccount,TaintNodesByCondition,PodSecurity,Priority,"
    "DefaultTolerationSeconds,DefaultStorageClass,StorageObjectInUseProtection,"
    "PersistentVolumeClaimResize,RuntimeClass,MutatingAdmissionWebhook,"
    "ValidatingAdmissionPolicy,ValidatingAdmissionWebhook,ResourceQuota"
)


def token(user: str) -> str:
    return f"{user}-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def control_plane_binaries() -> Path:
    """Build (or find cached) binaries; returns their folder."""
    out = subprocess.run(
        [str(BUILD_SCRIPT)], check=True, capture_output=True, text=True, timeout=3600
    )
    return Path(out.stdout.strip().splitlines()[-1])


def write_kubeconfig(
    path: Path, server: str, ca: Path, user: str, namespace: str = "default"
) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "stagegate", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": user, "user": {"token": token(user)}}],
        "contexts": [
            {
                "name": user,
                "context": {"cluster": "stagegate", "user": user, "namespace": namespace},
            }
        ],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@dataclass
class ControlPlane:
    """The four server processes; `start()` returns when the API server is ready to serve."""

    workdir: Path
    bin_dir: Path
    api_port: int = field(default_factory=free_port)
    etcd_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    pki: Pki | None = None

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    def _log(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    def _spawn(self, name: str, argv: list[str]) -> None:
        self._log(name).parent.mkdir(parents=True, exist_ok=True)
        with open(self._log(name), "ab") as log:
            self.procs[name] = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki = make_pki(self.workdir / "pki")
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(
            "".join(
                f'{token(u)},{u},uid-{u},"{",".join(groups)}"\n'
                if groups
                else f"{token(u)},{u},uid-{u}\n"
                for u, groups in USERS.items()
            )
        )
        write_kubeconfig(self.admin_kubeconfig, self.server, self.pki.ca, "admin")
        self.start_etcd()
        self.start_apiserver()
        self.wait_ready("kube-apiserver", "/readyz")
        self.start_controllers()

    def start_etcd(self) -> None:
        peer = free_port()
        self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name",
                "default",
                "--data-dir",
                str(self.workdir / "etcd"),
                "--listen-client-urls",
                f"http://127.0.0.1:{self.etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{self.etcd_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
        )

    def start_apiserver(self) -> None:
        assert self.pki is not None
        pki = self.pki
        self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                "--etcd-servers",
                f"http://127.0.0.1:{self.etcd_port}",
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                "--secure-port",
                str(self.api_port),
                "--tls-cert-file",
                str(pki.cert("apiserver")),
                "--tls-private-key-file",
                str(pki.key("apiserver")),
                "--client-ca-file",
                str(pki.ca),
                "--token-auth-file",
                str(self.workdir / "tokens.csv"),
                "--service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
                "--service-account-key-file",
                str(pki.sa_public),
                "--service-account-signing-key-file",
                str(pki.sa_private),
                "--service-cluster-ip-range",
                "10.0.0.0/24",
                "--authorization-mode",
                "RBAC",
                "--enable-admission-plugins",
                ADMISSION,
                "--endpoint-reconciler-type",
                "none",
                "--allow-privileged=true",
                "--kubelet-certificate-authority",
                str(pki.ca),
                "--kubelet-client-certificate",
                str(pki.cert("apiserver-kubelet-client")),
                "--kubelet-client-key",
                str(pki.key("apiserver-kubelet-client")),
                "--kubelet-preferred-address-types",
                "InternalIP",
                # A test run makes thousands of objects quickly: don't throttle the harness.
                "--max-requests-inflight",
                "800",
                "--max-mutating-requests-inflight",
                "400",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "-v",
                "1",
            ],
        )

    def _common(self) -> list[str]:
        kubeconfig = str(self.admin_kubeconfig)
        return [
            "--kubeconfig",
            kubeconfig,
            "--authentication-kubeconfig",
            kubeconfig,
            "--authorization-kubeconfig",
            kubeconfig,
            "--leader-elect=false",
            "--kube-api-qps",
            "200",
            "--kube-api-burst",
            "400",
            "-v",
            "1",
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            str(free_port()),
        ]

    def start_controllers(self) -> None:
        self.start_controller_manager()
        self.start_scheduler()

    def start_controller_manager(self) -> None:
        assert self.pki is not None
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                *self._common(),
                "--use-service-account-credentials=true",
                "--service-account-private-key-file",
                str(self.pki.sa_private),
                "--root-ca-file",
                str(self.pki.ca),
                "--cluster-signing-cert-file",
                str(self.pki.cert("apiserver")),
                "--cluster-signing-key-file",
                str(self.pki.key("apiserver")),
                "--controllers",
                "*",
                "--concurrent-job-syncs",
                "20",
                "--concurrent-gc-syncs",
                "40",
            ],
        )

    def start_scheduler(self) -> None:
        self._spawn("kube-scheduler", [str(self.bin_dir / "kube-scheduler"), *self._common()])

    def wait_ready(self, name: str, path: str, timeout: float = 60) -> None:
        assert self.pki is not None
        ctx = ssl.create_default_context(cafile=str(self.pki.ca))
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited {proc.returncode}:\n{self.log_tail(name)}")
            req = urllib.request.Request(
                self.server + path, headers={"Authorization": f"Bearer {token('admin')}"}
            )
            try:
                with urllib.request.urlopen(req, timeout=2, context=ctx) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready after {timeout}s ({last}):\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self._log(name).read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop_one(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def restart(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop one server and start it again with the same flags and state (a real fault)."""
        self.stop_one(name, sig)
        starters = {
            "etcd": self.start_etcd,
            "kube-apiserver": self.start_apiserver,
            "kube-controller-manager": self.start_controller_manager,
            "kube-scheduler": self.start_scheduler,
        }
        starters[name]()
        if name in ("etcd", "kube-apiserver"):
            self.wait_ready("kube-apiserver", "/readyz")

    def stop(self) -> None:
        # Controllers first, etcd last, so nothing logs a storm of connection errors.
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            self.stop_one(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.procs)
