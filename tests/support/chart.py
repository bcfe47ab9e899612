"""`helm install` of the chart on a test cluster: the operator as the chart's Deployment,
watching `research`, storing runs in the moto bucket."""

from __future__ import annotations

from pathlib import Path

from tests.support.kube import KubeApi
from tests.support.procs import free_port

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "stagegate"
WATCHED = "research"


def chart_values(s3_bucket: str) -> tuple[list[str], int]:
    """The --set flags of a test install, and the operator's health port."""
    metrics_port, health_port = free_port(), free_port()
    values = ["--set", f"operator.watchNamespaces={{{WATCHED}}}", "--set", "kueue.queueName=",
              "--set", f"artifacts.uri={s3_bucket}/runs",
              "--set", "artifacts.secretName=s3-credentials",
              "--set", f"operator.metricsPort={metrics_port}",
              "--set", f"operator.healthPort={health_port}"]  # fmt: skip
    return values, health_port


def install(kube: KubeApi, s3_bucket: str, moto_server: str, *extra: str) -> tuple[list[str], int]:
    """Namespaces `stagegate` (the release) and `research` (watched, with the S3 Secret), then
    `helm install sg`; returns the values used (for upgrades) and the health port."""
    for ns in ("stagegate", WATCHED):
        kube.create_namespace(ns)
    kube.kubectl("create", "secret", "generic", "s3-credentials", "-n", WATCHED,
                 "--from-literal=AWS_ACCESS_KEY_ID=testing",
                 "--from-literal=AWS_SECRET_ACCESS_KEY=testing",
                 f"--from-literal=AWS_ENDPOINT_URL={moto_server}",
                 "--from-literal=AWS_DEFAULT_REGION=us-east-1")  # fmt: skip
    values, health_port = chart_values(s3_bucket)
    kube.helm("install", "sg", str(CHART), "-n", "stagegate", "--wait", "--timeout", "120s",
              *values, *extra, timeout=180)  # fmt: skip
    return values, health_port
