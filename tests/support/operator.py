"""The real operator (`stagegate-operator`, a subprocess) against the real control plane,
with artifacts in moto S3 over HTTP.

Fixture ``cluster`` -> :class:`Cluster`: the shared cluster with the CRD applied by real
kubectl, a namespace of the test's own holding a Secret with the S3 credentials, and a running
operator watching that namespace, which can be stopped, killed and restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psutil
import pytest
import yaml

from tests.support.kube import KubeApi
from tests.support.procs import free_port
from tests.support.runs import small_spec

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CRD = REPO / "crds" / "trainingjob.yaml"
SECRET = "s3-credentials"


@dataclass
class Cluster:
    kube: KubeApi
    bucket: str
    s3_endpoint: str
    log_dir: Path
    metrics_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None
    starts: int = 0

    @property
    def ns(self) -> str:
        return self.kube.namespace

    @property
    def tj_path(self) -> str:
        return f"/apis/stagegate.io/v1alpha1/namespaces/{self.ns}/trainingjobs"

    def run_prefix(self, tj: dict[str, Any]) -> str:
        """Where a TrainingJob's artifacts are in the bucket."""
        return f"runs/{self.ns}/{tj['metadata']['name']}/{tj['metadata']['uid']}/"

    # -- operator lifecycle
    def start_operator(self) -> None:
        self.starts += 1
        log = open(self.log_dir / f"operator-{self.starts}.log", "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                str(BIN / "stagegate-operator"),
                "--kubeconfig",
                str(self.kube.kubeconfig),
                "--namespace",
                self.ns,
                "--metrics-port",
                str(self.metrics_port),
                "--health-port",
                str(self.health_port),
                "--resync-seconds",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env={**os.environ, "HOME": str(self.kube.home)},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(
                    f"http://127.0.0.1:{self.health_port}/healthz", timeout=1
                ) as response,
            ):
                if response.status == 200:
                    return
            assert self.process.poll() is None, self.operator_log()
            time.sleep(0.2)
        raise AssertionError("operator not healthy:\n" + self.operator_log())

    def stop_operator(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def operator_log(self) -> str:
        return "".join(p.read_text() for p in sorted(self.log_dir.glob("operator-*.log")))

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    # -- TrainingJobs
    def manifest(self, name: str, **overrides: Any) -> dict[str, Any]:
        spec = small_spec(**overrides)
        spec.setdefault(
            "artifacts", {"uri": f"s3://{self.bucket}/runs", "secretRef": {"name": SECRET}}
        )
        spec.setdefault(
            "resources", {"quick": {"requests": {"cpu": "1"}}, "full": {"requests": {"cpu": "1"}}}
        )
        return {
            "apiVersion": "stagegate.io/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": spec,
        }

    def apply(self, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))

    def tj(self, name: str) -> dict[str, Any]:
        return self.kube.get(f"{self.tj_path}/{name}")  # type: ignore[no-any-return]

    def wait_phase(self, name: str, *phases: str, timeout: float = 180) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            tj = self.tj(name)
            return tj if tj.get("status", {}).get("phase") in phases else None

        try:
            return self.kube.wait_for(
                reached, timeout=timeout, interval=0.3, message=f"{name} in {phases}"
            )
        except AssertionError as exc:
            status = self.tj(name).get("status", {})
            raise AssertionError(
                f"{exc}; phase {status.get('phase')}: {status.get('message')}"
                f"\n{self.operator_log()[-3000:]}"
            ) from None

    def events(self, name: str) -> list[dict[str, Any]]:
        items = self.kube.get(f"/api/v1/namespaces/{self.ns}/events")["items"]
        return [e for e in items if e["involvedObject"]["name"] == name]

    def jobs(self, name: str) -> list[dict[str, Any]]:
        path = f"/apis/batch/v1/namespaces/{self.ns}/jobs"
        return self.kube.get(f"{path}?labelSelector=stagegate.io/trainingjob%3D{name}")["items"]

    def pods(self, name: str) -> list[dict[str, Any]]:
        path = f"/api/v1/namespaces/{self.ns}/pods"
        return self.kube.get(f"{path}?labelSelector=stagegate.io/trainingjob%3D{name}")["items"]

    def s3(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def objects(self, prefix: str = "") -> dict[str, Any]:
        listing = self.s3().list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return {o["Key"]: o for o in listing.get("Contents", [])}

    def read_json(self, key: str) -> Any:
        return json.loads(self.s3().get_object(Bucket=self.bucket, Key=key)["Body"].read())


@pytest.fixture
def cluster(
    kube_api: KubeApi, s3_bucket: str, moto_server: str, tmp_path: Path
) -> Iterator[Cluster]:
    install_crd(kube_api)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": kube_api.namespace},
        "stringData": {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL": moto_server,
            "AWS_DEFAULT_REGION": "us-east-1",
        },
    }
    kube_api.kubectl("apply", "-f", "-", input=yaml.safe_dump(secret))
    logs = tmp_path / "operator-logs"
    logs.mkdir()
    bucket = s3_bucket.removeprefix("s3://")
    found = Cluster(kube_api, bucket, moto_server, logs)
    found.start_operator()
    try:
        yield found
    finally:
        found.stop_operator()


def install_crd(kube: KubeApi) -> None:
    """The CRD is cluster-wide: apply it (idempotent, every worker may race) and wait until the
    API server serves it."""
    for attempt in range(5):
        done = kube.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", str(CRD), check=attempt == 4
        )
        if done.returncode == 0:
            break
        time.sleep(1)
    # Not `kubectl wait`: it fails at once ("accessor error: <nil>") while the new CRD has no
    # conditions yet.
    established = '{.status.conditions[?(@.type=="Established")].status}'
    poll(
        lambda: (
            kube.kubectl(
                "get", "crd/trainingjobs.stagegate.io", "-o", f"jsonpath={established}", check=False
            ).stdout.strip()
            == "True"
        )
    )


async def until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> None:
    """`poll` inside an event loop: wait without blocking the tasks under test."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {predicate}"
        await asyncio.sleep(interval)


def poll(predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {predicate}")


def training_fold(pod_prefix: str, timeout: float = 120) -> psutil.Process:
    """The trainer process of a fold pod whose name starts with `pod_prefix`, while it trains.
    The node agent sets HOSTNAME to the pod's name, which tells its process apart from every
    other test's."""

    def training() -> psutil.Process | None:
        for p in psutil.process_iter(["cmdline", "create_time"]):
            if "--fold" not in (p.info["cmdline"] or []):
                continue
            try:
                if not p.environ().get("HOSTNAME", "").startswith(pod_prefix):
                    continue
                if time.time() - p.info["create_time"] > 1 and p.cpu_percent(0.05) > 10:
                    return p
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return None

    found: psutil.Process = poll(training, timeout=timeout, interval=0.05)
    return found


def kill_training_fold(pod_prefix: str, timeout: float = 120) -> psutil.Process:
    """SIGKILL a training fold's process (see training_fold)."""
    victim = training_fold(pod_prefix, timeout)
    victim.kill()
    return victim
