"""The test cluster itself: real servers, and a node agent that behaves like a kubelet where
Stagegate depends on it (env, volumes, tokens, logs, exit codes, deletion, restarts,
capacity). Everything goes through real kubectl and the real API server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from tests.support.kube import KubeApi, KubeBinaries, private_cluster
from tests.support.procs import kill_group

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def pod(name: str, script: str, **spec: Any) -> dict[str, Any]:
    container = {
        "name": "main",
        "image": "busybox",
        "command": ["sh", "-c", script],
        "securityContext": RESTRICTED_CONTAINER,
        **spec.pop("container", {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


def apply(kube: KubeApi, *docs: dict[str, Any]) -> None:
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def phase(kube: KubeApi, name: str, *phases: str, timeout: float = 60) -> dict[str, Any]:
    path = f"/api/v1/namespaces/{kube.namespace}/pods/{name}"
    return kube.wait_for(
        lambda: (p := kube.get(path))["status"].get("phase") in phases and p,
        timeout=timeout,
        interval=0.2,
        message=f"{name} in {phases}",
    )


def test_real_servers_and_version(kube_api: KubeApi) -> None:
    version = json.loads(kube_api.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.35.4"
    assert (version["serverVersion"]["major"], version["serverVersion"]["minor"]) == ("1", "35")
    nodes = kube_api.kubectl("get", "nodes", "-o", "wide").stdout
    assert "stagegate-node" in nodes and "Ready" in nodes


def test_env_volumes_token_exit_code_and_termination_message(kube_api: KubeApi) -> None:
    ns = kube_api.namespace
    apply(
        kube_api,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s"},
            "stringData": {"k": "secret-value"},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "c"},
            "data": {"k": "config-value"},
        },
    )
    script = (
        "echo $FROM_SECRET $FROM_CONFIG $POD $NS $(A)-$B; "
        "test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo token; "
        "echo scratch > /scratch/f && cat /scratch/f; "
        "echo the result > /dev/termination-log; exit 3"
    )
    apply(
        kube_api,
        pod(
            "env",
            script,
            container={
                "env": [
                    {
                        "name": "FROM_SECRET",
                        "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                    },
                    {
                        "name": "FROM_CONFIG",
                        "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}},
                    },
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "A", "value": "x"},
                    {"name": "B", "value": "$(A)y"},
                ],
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            },
            volumes=[{"name": "scratch", "emptyDir": {}}],
        ),
    )
    done = phase(kube_api, "env", "Failed")
    (state,) = done["status"]["containerStatuses"]
    assert state["state"]["terminated"]["exitCode"] == 3
    assert state["state"]["terminated"]["message"].strip() == "the result"
    logs = kube_api.kubectl("logs", "env").stdout.splitlines()
    assert logs[0] == f"secret-value config-value env {ns} x-xy"  # $(A) expanded as kubelet does
    assert logs[1:] == ["token", "scratch"]
    # The token was issued by the API server for this pod's ServiceAccount.
    review = kube_api.create(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": _token_of(kube_api, done)},
        },
    )
    assert review["status"]["user"]["username"] == f"system:serviceaccount:{ns}:default"


def _token_of(kube: KubeApi, pod_obj: dict[str, Any]) -> str:
    """The token file the node agent projected for a pod (its folder on this machine)."""
    uid = pod_obj["metadata"]["uid"]
    (path,) = Path("/var/tmp").glob(
        f"stagegate-test-cluster-*/state/node/pods/*_{uid}/volumes/kube-api-access-*/token"
    )
    return path.read_text()


def test_pod_security_restricted_is_enforced(kube_api: KubeApi) -> None:
    bad = pod("root", "true", container={"securityContext": {"privileged": True}})
    out = kube_api.kubectl("apply", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert out.returncode != 0 and 'violates PodSecurity "restricted:latest"' in out.stderr


def test_logs_follow_deletion_grace_and_restart_policy(kube_api: KubeApi) -> None:
    apply(
        kube_api,
        pod(
            "slow",
            "trap 'echo got TERM; exit 0' TERM; i=0; "
            "while true; do echo tick $i; i=$((i+1)); sleep 0.2; done",
        ),
        pod(
            "flaky",
            "test -f /scratch/once && exit 0; touch /scratch/once; exit 1",
            restartPolicy="OnFailure",
            container={"volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]},
            volumes=[{"name": "scratch", "emptyDir": {}}],
        ),
    )
    phase(kube_api, "slow", "Running")
    follow = kube_api.popen(str(kube_api.binaries.kubectl), "logs", "-f", "slow")
    time.sleep(1.5)
    kube_api.kubectl("delete", "pod", "slow", "--grace-period=10", "--wait=true")
    out, _ = follow.communicate(timeout=30)
    assert follow.returncode == 0
    assert "tick 0" in out and "tick 3" in out and out.rstrip().endswith("got TERM")
    done = phase(kube_api, "flaky", "Succeeded")
    assert done["status"]["containerStatuses"][0]["restartCount"] == 1


def test_a_pod_larger_than_the_node_stays_pending(kube_api: KubeApi) -> None:
    apply(
        kube_api,
        pod(
            "huge",
            "true",
            container={
                "resources": {"requests": {"memory": "100Ti"}, "limits": {"memory": "100Ti"}}
            },
        ),
    )

    def unschedulable() -> bool:
        events = kube_api.get(f"/api/v1/namespaces/{kube_api.namespace}/events")["items"]
        return any(
            e["reason"] == "FailedScheduling" and "Insufficient memory" in e["message"]
            for e in events
        )

    kube_api.wait_for(unschedulable, timeout=60, message="FailedScheduling")
    assert phase(kube_api, "huge", "Pending")["spec"].get("nodeName") is None


def test_serve_starts_fast_and_leaves_no_process(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.cluster", "serve", "--kubeconfig", str(kubeconfig)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "ready" in line, line
        seconds = float(line.split("ready in ")[1].split("s")[0])
        assert seconds < 120  # a sanity bound, not a benchmark: the figure is in the README
        children = psutil.Process(proc.pid).children(recursive=True)
        names = {c.name() for c in children}
        assert {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} <= names
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert not [c for c in children if c.is_running() and c.status() != "zombie"]
    finally:
        kill_group(proc)


def test_restarted_servers_and_node_agent_lose_nothing(
    tmp_path: Path, kube_binaries: KubeBinaries
) -> None:
    """Real faults: the API server, etcd and the node agent each restarted while a pod runs;
    the pod keeps running (adopted by the new agent) and its end is still reported."""
    with private_cluster(tmp_path, kube_binaries) as (cluster, kube):
        apply(kube, pod("long", "sleep 6; echo finished"))
        phase(kube, "long", "Running")
        cluster.plane.restart("kube-apiserver")
        cluster.plane.restart("etcd")
        cluster.stop_agent()
        cluster.start_agent()
        done = phase(kube, "long", "Succeeded", "Failed", timeout=60)
        assert done["status"]["phase"] == "Succeeded"
        logs = kube.wait_for(
            lambda: kube.kubectl("logs", "long", check=False).stdout.strip(),
            timeout=20,
            interval=0.5,
            message="kubectl logs long",
        )
        assert logs == "finished"
