"""The core path of a TrainingJob with every pod a podman container of the real images
(issue 10): the chart's operator image, the trainer image for every step.

Marked `podman`: `scripts/test -m "not podman"` skips it on a machine without podman; CI runs
it. The images come from scripts/build-images (tests/support/images.py).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import faults
from tests.support.images import CHART_IMAGES, OPERATOR, TRAINER, TRAINER_EXAMPLES, base_of
from tests.support.kube import KubeBinaries, private_cluster
from tests.support.operator import training_fold
from tests.support.runs import OPEN_GATES, small_spec
from tests.support.seaweed import weed_binary

pytestmark = [pytest.mark.podman, pytest.mark.slow, pytest.mark.timeout(900)]


def _fold_pods(kube: Any, ns: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = kube.get(f"/api/v1/namespaces/{ns}/pods")["items"]
    return [p for p in pods if p["metadata"]["labels"].get("stagegate.io/step") == "fold"]


def test_core_path_with_every_pod_a_podman_container(
    images: None, kube_binaries: KubeBinaries, tmp_path: Path
) -> None:
    """The chart installs the operator image; the TrainingJob (a custom trainer image with a
    custom feature) loses a quick-stage fold to SIGKILL, waits for alice's approval, and its
    full stage loses the operator pod; it ends Succeeded with every fold trained once in that
    image, results on SeaweedFS."""
    with faults.campaign(tmp_path, kube_binaries, weed_binary(), runtime="podman",
                         chart_values=CHART_IMAGES) as c:  # fmt: skip
        kube, ns = c.kube, c.namespace
        operator = kube.get("/api/v1/namespaces/stagegate/pods")["items"][0]
        assert operator["spec"]["containers"][0]["image"] == f"{OPERATOR.split(':')[0]}:dev"
        port = next(a for a in operator["spec"]["containers"][0]["args"] if "metrics-port" in a)

        def metrics() -> bytes | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port.split('=')[1]}/metrics") as r:
                    return bytes(r.read())
            except OSError:
                return None

        assert b"stagegate_" in kube.wait_for(metrics, timeout=60, message="operator /metrics")

        # A custom trainer image (examples/features/Dockerfile) and one of its features.
        spec = small_spec(approval={"policy": "manual"}, gates=OPEN_GATES, maxRetries=2,
                          image=TRAINER_EXAMPLES, features={"custom": [{"name": "range_position"}]},
                          resources={"quick": {"requests": {"cpu": "1"}},
                                     "full": {"requests": {"cpu": "1"}}})  # fmt: skip
        tj = {"apiVersion": "stagegate.io/v1alpha1", "kind": "TrainingJob",
              "metadata": {"name": "boxed", "namespace": ns}, "spec": spec}  # fmt: skip
        kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(tj))
        path = f"/apis/stagegate.io/v1alpha1/namespaces/{ns}/trainingjobs/boxed"

        # A quick-stage fold, SIGKILLed in its container while it trains.
        victim = training_fold("boxed-quick-", timeout=240)
        killed_pod = victim.environ()["HOSTNAME"]
        victim.kill()

        def phase() -> str:
            return str((kube.get(path).get("status") or {}).get("phase"))

        kube.wait_for(lambda: phase() == "AwaitingApproval", timeout=300, interval=0.5,
                      message="boxed awaiting approval")  # fmt: skip
        kube.kubectl("create", "rolebinding", "alice-approves", "-n", ns, "--user=alice",
                     "--clusterrole=sg-stagegate-approver")  # fmt: skip
        kube.kubectl("annotate", "tj", "boxed", "-n", ns, "stagegate.io/approval=approved",
                     "stagegate.io/approved-by=alice", user="alice")  # fmt: skip

        # The operator pod deleted (with its grace period) while the full stage runs.
        kube.wait_for(lambda: any("-full-" in p["metadata"]["name"] for p in _fold_pods(kube, ns)),
                      timeout=120, interval=0.3, message="a full-stage fold pod")  # fmt: skip
        kube.kubectl("delete", "pod", operator["metadata"]["name"], "-n", "stagegate",
                     "--wait=true", timeout=90)  # fmt: skip

        def ended() -> dict[str, Any] | None:
            status: dict[str, Any] = kube.get(path).get("status") or {}
            return status if status.get("phase") in ("Succeeded", "Failed") else None

        status = kube.wait_for(ended, timeout=600, interval=1, message="boxed ended")
        assert status["phase"] == "Succeeded", status.get("message")

        # The operator answered SIGTERM within its grace period: the agent's record of how
        # its container ended says 0, not 137 (killed when the grace period ran out).
        pod_dir = f"node/pods/stagegate_{operator['metadata']['name']}_*"
        exits = list(c.cluster.workdir.glob(f"{pod_dir}/containers/operator/*/exit"))
        assert [json.loads(e.read_text())["exitCode"] for e in exits] == [0], exits

        # Every step pod ran from the trainer image in a podman container; the killed fold's
        # pod failed and its Job's retry trained it; no fold trained twice.
        pods = kube.get(f"/api/v1/namespaces/{ns}/pods")["items"]
        steps = [p for p in pods if "stagegate.io/step" in p["metadata"]["labels"]]
        assert {p["metadata"]["labels"]["stagegate.io/step"] for p in steps} >= {
            "prepare", "fold", "summary", "final"}  # fmt: skip
        for p in steps:
            (cs,) = p["status"]["containerStatuses"]
            assert cs["image"] == TRAINER_EXAMPLES, cs
            assert cs["containerID"].startswith("podman://"), cs
        killed = next(p for p in steps if p["metadata"]["name"] == killed_pod)
        assert killed["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 137
        trainings, _ = c.fold_metrics(status)
        assert len(trainings) == 6 and set(trainings.values()) == {1}, trainings
        # The final model, trained in the same image, is in the bucket, and learnt from the
        # custom feature that passed the look-ahead guard.
        bucket, key = status["artifacts"]["model"].removeprefix("s3://").split("/", 1)
        model = c.s3.client().get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        assert "range_position.position" in model


def test_the_podman_runtime_enforces_what_the_pod_spec_asks(
    images: None, kube_binaries: KubeBinaries, tmp_path: Path
) -> None:
    """Refusals and limits come from the pod spec, as a kubelet's would: a missing image is
    never pulled, runAsNonRoot refuses an image that runs as root, a memory limit kills."""
    root_image = base_of(TRAINER)  # the base image runs as root
    with private_cluster(tmp_path, kube_binaries, "podman") as (_, kube):
        kube.create(
            "/api/v1/namespaces", {"metadata": {"name": "boxes"}}
        )  # not `restricted`: pod B asks for root on purpose

        def pod(name: str, image: str, **container: Any) -> None:
            kube.create("/api/v1/namespaces/boxes/pods", {
                "metadata": {"name": name},
                "spec": {"restartPolicy": "Never", "containers": [
                    {"name": "c", "image": image, **container}]},
            })  # fmt: skip

        pod("missing", "localhost/no-such-image:1", command=["true"])
        pod("root", root_image, command=["true"], securityContext={"runAsNonRoot": True})
        hog = "b = bytearray(512 * 2**20); print(len(b))"
        pod("hog", TRAINER, command=["python", "-c", hog],
            resources={"limits": {"memory": "64Mi"}})  # fmt: skip

        def state(name: str) -> dict[str, Any] | None:
            found = kube.get(f"/api/v1/namespaces/boxes/pods/{name}")
            statuses = (found.get("status") or {}).get("containerStatuses") or [{}]
            current: dict[str, Any] = statuses[0].get("state") or {}
            return current if ("waiting" in current or "terminated" in current) else None

        missing = kube.wait_for(lambda: state("missing"), timeout=60, message="missing waits")
        assert missing["waiting"]["reason"] == "ErrImageNeverPull", missing
        assert "localhost/no-such-image:1" in missing["waiting"]["message"]
        root = kube.wait_for(lambda: state("root"), timeout=60, message="root waits")
        assert root["waiting"]["reason"] == "CreateContainerConfigError", root
        assert root["waiting"]["message"] == "container has runAsNonRoot and image will run as root"
        hog_end = kube.wait_for(lambda: (state("hog") or {}).get("terminated"), timeout=120,
                                message="hog ended")  # fmt: skip
        assert hog_end["exitCode"] == 137, hog_end  # the cgroup's OOM killer, not Python
