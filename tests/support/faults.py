"""A fault campaign on the real control plane (issue 11): TrainingJobs run under the chart's
operator while one real fault is injected at a random moment, and each run is judged against
a fault-free run of the same spec.

A run passes when it ends `Succeeded` with every fold's `metrics.json` byte-identical to the
fault-free run's and no fold trained twice (trainings are counted as versions of
`metrics.json` in a versioned bucket: a fold writes it once, when its training is done, and a
fold that finds it skips training), or, for a fault that does not heal within the retries,
`Failed` with a message naming the cause.

Used by `bench/bench_faults.py` (30+ runs) and `tests/test_fault_campaign.py` (a few).
"""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.cluster import LocalCluster
from tests.support import chart
from tests.support.delayproxy import DelayProxy
from tests.support.kube import KubeApi, KubeBinaries, private_cluster
from tests.support.operator import training_fold
from tests.support.runs import OPEN_GATES, small_spec
from tests.support.seaweed import SeaweedS3

FAULTS = (
    "operator-pod-killed",
    "fold-pod-killed",
    "apiserver-restarted",
    "etcd-restarted",
    "s3-stopped",
    "node-agent-restarted",
    "s3-delayed",
)
# What a message must name when a fault ends a run Failed, by fault.
CAUSES = {"s3-stopped": ("connect", "endpoint", "s3", "S3")}


@dataclass
class Outcome:
    fault: str | None
    at: float  # seconds after the TrainingJob was applied
    detail: str  # what exactly was done
    phase: str
    message: str
    seconds: float  # apply -> terminal phase
    retries: int  # failed step attempts the status counted
    trainings: dict[str, int] = field(default_factory=dict)  # metrics.json key -> versions
    identical: bool | None = None  # fold metrics byte-equal to the fault-free run's

    @property
    def trained_twice(self) -> list[str]:
        return sorted(k for k, n in self.trainings.items() if n > 1)

    @property
    def injected(self) -> bool:
        return self.fault is None or not self.detail.startswith("injection failed")

    @property
    def passed(self) -> bool:
        """The run kept its promise under a fault that really happened."""
        if not self.injected:
            return False
        if self.phase == "Succeeded":
            return bool(self.identical) and not self.trained_twice
        causes = CAUSES.get(self.fault or "", ())
        return self.phase == "Failed" and any(c in self.message for c in causes)


class Campaign:
    """TrainingJobs in `namespace` of a cluster whose operator the chart installed, writing to
    `bucket` on `s3` through `proxy` (the pods' S3 endpoint)."""

    def __init__(
        self,
        cluster: LocalCluster,
        kube: KubeApi,
        s3: SeaweedS3,
        proxy: DelayProxy,
        bucket: str,
        namespace: str,
        operator_namespace: str = "stagegate",
    ) -> None:
        self.cluster, self.kube, self.s3, self.proxy = cluster, kube, s3, proxy
        self.bucket, self.namespace, self.operator_namespace = bucket, namespace, operator_namespace
        self.s3_down_seconds = (5.0, 60.0)  # how long the S3 server stays stopped
        self.reference: dict[str, bytes] = {}
        self.reference_seconds = 0.0

    # ------------------------------------------------------------------ one run
    def manifest(self, name: str) -> dict[str, Any]:
        spec = small_spec(
            approval={"policy": "auto"},
            gates=OPEN_GATES,
            maxRetries=3,
            resources={"quick": {"requests": {"cpu": "1"}}, "full": {"requests": {"cpu": "1"}}},
        )
        return {
            "apiVersion": "stagegate.io/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        }

    def run(
        self,
        name: str,
        fault: str | None = None,
        at: float = 0.0,
        rng: random.Random | None = None,
        timeout: float = 420,
    ) -> Outcome:
        rng = rng or random.Random(0)
        self.kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(self.manifest(name)))
        t0 = time.monotonic()
        details: list[str] = []
        injector: threading.Thread | None = None
        if fault is not None:
            act = self._fault(fault, name, rng)

            def inject() -> None:
                time.sleep(max(0.0, at - (time.monotonic() - t0)))
                try:
                    details.append(act())
                except Exception as exc:  # reported in the table, never hidden
                    details.append(f"injection failed: {exc}")

            injector = threading.Thread(target=inject, daemon=True)
            injector.start()
        path = f"/apis/stagegate.io/v1alpha1/namespaces/{self.namespace}/trainingjobs/{name}"

        def ended() -> dict[str, Any] | None:
            try:
                status = self.kube.get(path).get("status") or {}
            except Exception:  # the API server may be the fault
                return None
            return status if status.get("phase") in ("Succeeded", "Failed", "Rejected") else None

        status = self.kube.wait_for(ended, timeout=timeout, interval=0.5, message=f"{name} ended")
        seconds = time.monotonic() - t0
        if injector is not None:
            injector.join(120)  # a fault still healing (S3 down for a minute) finishes first
        trainings, metrics = self.fold_metrics(status)
        outcome = Outcome(
            fault=fault,
            at=round(at, 1),
            detail="; ".join(details),
            phase=status["phase"],
            message=str(status.get("message") or ""),
            seconds=round(seconds, 1),
            retries=_retries(status),
            trainings=trainings,
            identical=None if not self.reference else metrics == self.reference,
        )
        return outcome

    def run_reference(self, name: str = "reference") -> Outcome:
        outcome = self.run(name)
        assert outcome.phase == "Succeeded", outcome.message
        _, self.reference = self.fold_metrics(self._status(name))
        self.reference_seconds = outcome.seconds
        outcome.identical = True
        return outcome

    # ------------------------------------------------------------------ faults
    def _fault(self, fault: str, name: str, rng: random.Random) -> Callable[[], str]:
        plane = self.cluster.plane

        def operator_pod_killed() -> str:
            pods = self.kube.get(f"/api/v1/namespaces/{self.operator_namespace}/pods")["items"]
            running = [
                p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")
            ]
            for pod in running:
                self.kube.kubectl(
                    "delete",
                    "pod",
                    pod,
                    "-n",
                    self.operator_namespace,
                    "--grace-period=0",
                    "--force",
                    "--wait=false",
                )
            return f"deleted {', '.join(running)} (force, no grace)"

        def fold_pod_killed() -> str:
            try:
                victim = training_fold(f"{name}-", timeout=90)
            except AssertionError:
                raise TimeoutError(f"no fold of {name}-* was training within 90 s") from None
            pod = victim.environ().get("HOSTNAME", "?")
            victim.kill()
            return f"SIGKILL to pid {victim.pid} ({pod})"

        def restart(part: str) -> Callable[[], str]:
            def go() -> str:
                started = time.monotonic()
                plane.restart(part)
                return f"{part} restarted in {time.monotonic() - started:.1f} s"

            return go

        def s3_stopped() -> str:
            down = rng.uniform(*self.s3_down_seconds)
            self.s3.stop()
            time.sleep(down)
            self.s3.start()
            return f"S3 server stopped for {down:.0f} s"

        def agent_restarted() -> str:
            self.cluster.stop_agent(signal.SIGKILL)
            time.sleep(2)
            self.cluster.start_agent()
            return "node agent SIGKILLed, started again after 2 s"

        def s3_delayed() -> str:
            delay, period = rng.choice((0.2, 0.5, 1.0)), rng.uniform(10, 30)
            self.proxy.delay = delay
            time.sleep(period)
            self.proxy.delay = 0.0
            return f"{delay:g} s per chunk for {period:.0f} s"

        return {
            "operator-pod-killed": operator_pod_killed,
            "fold-pod-killed": fold_pod_killed,
            "apiserver-restarted": restart("kube-apiserver"),
            "etcd-restarted": restart("etcd"),
            "s3-stopped": s3_stopped,
            "node-agent-restarted": agent_restarted,
            "s3-delayed": s3_delayed,
        }[fault]

    # ------------------------------------------------------------------ reading results
    def _status(self, name: str) -> dict[str, Any]:
        path = f"/apis/stagegate.io/v1alpha1/namespaces/{self.namespace}/trainingjobs/{name}"
        return self.kube.get(path).get("status") or {}  # type: ignore[no-any-return]

    def fold_metrics(self, status: dict[str, Any]) -> tuple[dict[str, int], dict[str, bytes]]:
        """(versions of each fold's metrics.json, latest bytes by path relative to the run)."""
        run = str((status.get("artifacts") or {}).get("run", ""))
        prefix = run.removeprefix(f"s3://{self.bucket}/").rstrip("/") + "/"
        s3 = self.s3.client()
        versions: dict[str, int] = {}
        for page in s3.get_paginator("list_object_versions").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            for version in page.get("Versions", []):
                if "/folds/" in version["Key"] and version["Key"].endswith("/metrics.json"):
                    versions[version["Key"]] = versions.get(version["Key"], 0) + 1
        latest = {
            key.removeprefix(prefix): s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            for key in versions
        }
        return {k.removeprefix(prefix): n for k, n in versions.items()}, latest


def _retries(status: dict[str, Any]) -> int:
    reported = status.get("reportedFailures") or {}
    return int(sum(int(n) for n in reported.values()))


def moment(fault: str, rng: random.Random, reference_seconds: float) -> float:
    """When to inject: uniform over the first 80 % of a fault-free run; a fold can only be
    killed while folds train, in the first ~60 % (prepare comes before, summaries and the
    final model after)."""
    share = 0.6 if fault == "fold-pod-killed" else 0.8
    return rng.uniform(1.0, share * reference_seconds)


def table(outcomes: list[Outcome], reference_seconds: float) -> str:
    """The campaign as a person reads it: one row per run."""
    rows = [("fault", "at s", "outcome", "extra s", "retries", "trainings", "metrics", "detail")]
    for o in outcomes:
        most = max(o.trainings.values(), default=0)
        rows.append(
            (
                o.fault or "(none)",
                f"{o.at:.1f}",
                o.phase
                + ("" if o.passed else " FAIL" if o.injected else " (not injected)")
                + (f": {o.message[:60]}" if o.phase != "Succeeded" else ""),
                f"{o.seconds - reference_seconds:+.1f}",
                str(o.retries),
                f"{len(o.trainings)} folds, max {most}",
                "identical" if o.identical else ("-" if o.identical is None else "DIFFERENT"),
                o.detail[:70],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


@contextlib.contextmanager
def campaign(
    work: Path,
    binaries: KubeBinaries,
    weed: Path,
    runtime: str = "process",
    chart_values: tuple[str, ...] = (),
) -> Iterator[Campaign]:
    """A private cluster (pods run by `runtime`) with the chart installed (`chart_values` on
    top of the test values), SeaweedFS behind a delay proxy as the S3 of every pod, and a
    versioned bucket; everything stopped at the end."""
    s3 = SeaweedS3(weed, work / "seaweedfs")
    s3.start()
    proxy = DelayProxy(s3.port)
    proxy.start()
    try:
        client = s3.client()
        bucket = "faults"
        client.create_bucket(Bucket=bucket)
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        with private_cluster(work, binaries, runtime) as (cluster, kube):
            chart.install(kube, f"s3://{bucket}", proxy.url, *chart_values)
            yield Campaign(cluster, kube, s3, proxy, bucket, chart.WATCHED)
    finally:
        proxy.stop()
        s3.stop()
