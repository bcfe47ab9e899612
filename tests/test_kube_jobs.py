"""Job controller and kubelet: pods run as local processes."""

from __future__ import annotations

import base64
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.kube.samples import job
from tests.support.kube import KubeApi

pytestmark = pytest.mark.timeout(60)

JOBS = "/apis/batch/v1/namespaces/default/jobs"
PODS = "/api/v1/namespaces/default/pods"


def conditions(obj: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}


def wait_condition(api: KubeApi, name: str, kind: str, timeout: float = 30) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        current: dict[str, Any] = api.get(f"{JOBS}/{name}")
        return current if conditions(current).get(kind) == "True" else None

    found = api.wait_for(done, timeout=timeout, message=f"job {name} {kind}")
    assert found is not None
    return found


def job_pods(api: KubeApi, name: str) -> list[dict[str, Any]]:
    return list(api.get(f"{PODS}?labelSelector=job-name%3D{name}")["items"])


def test_job_completes_with_parallelism(kube_api: KubeApi) -> None:
    kube_api.create(JOBS, job("ok", "print('done')", completions=3, parallelism=2))
    done = wait_condition(kube_api, "ok", "Complete")
    assert done["status"]["succeeded"] == 3
    assert "active" not in done["status"] and done["status"]["completionTime"]
    assert conditions(done)["SuccessCriteriaMet"] == "True"
    pods = job_pods(kube_api, "ok")
    assert len(pods) == 3 and {p["status"]["phase"] for p in pods} == {"Succeeded"}
    term = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (0, "Completed")


def test_job_retries_to_backoff_limit_and_fails(kube_api: KubeApi) -> None:
    kube_api.create(JOBS, job("bad", "import sys; sys.exit(1)", backoff_limit=2))
    failed = wait_condition(kube_api, "bad", "Failed")
    assert failed["status"]["failed"] == 3
    cond = next(c for c in failed["status"]["conditions"] if c["type"] == "Failed")
    assert cond["reason"] == "BackoffLimitExceeded"
    pods = job_pods(kube_api, "bad")
    assert len(pods) == 3 and {p["status"]["phase"] for p in pods} == {"Failed"}
    term = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (1, "Error")


def test_on_failure_restarts_count_towards_backoff(kube_api: KubeApi) -> None:
    kube_api.create(JOBS, job("crash", "raise SystemExit(3)", backoff_limit=1,
                              restart="OnFailure"))
    wait_condition(kube_api, "crash", "Failed")


def test_active_deadline(kube_api: KubeApi) -> None:
    kube_api.create(JOBS, job("slow", "import time; time.sleep(60)", activeDeadlineSeconds=1))
    failed = wait_condition(kube_api, "slow", "Failed")
    cond = next(c for c in failed["status"]["conditions"] if c["type"] == "Failed")
    assert cond["reason"] == "DeadlineExceeded"
    kube_api.wait_for(lambda: not job_pods(kube_api, "slow"), message="pod killed")


def test_suspend_and_resume(kube_api: KubeApi) -> None:
    kube_api.create(JOBS, job("sus", "print(1)", suspend=True))
    kube_api.wait_for(lambda: conditions(kube_api.get(f"{JOBS}/sus")).get("Suspended") == "True")
    assert job_pods(kube_api, "sus") == []
    kube_api.patch(f"{JOBS}/sus", {"spec": {"suspend": False}})
    wait_condition(kube_api, "sus", "Complete")


def test_ttl_after_finished(kube_api: KubeApi) -> None:
    kube_api.create(JOBS, job("ttl", "print(1)", ttlSecondsAfterFinished=0))
    kube_api.wait_for(lambda: kube_api.request("GET", f"{JOBS}/ttl")[0] == 404, timeout=20)
    kube_api.wait_for(lambda: not job_pods(kube_api, "ttl"), timeout=20)


def test_pod_env_workdir_and_termination_message(kube_api: KubeApi, tmp_path: Any) -> None:
    kube_api.create("/api/v1/namespaces/default/secrets", {
        "metadata": {"name": "s"}, "data": {"token": base64.b64encode(b"t0p").decode()}})
    kube_api.create("/api/v1/namespaces/default/configmaps", {
        "metadata": {"name": "c"}, "data": {"mode": "fast"}})
    workdir = tmp_path / "work"
    script = (
        "import os, sys, pathlib\n"
        "keys = ['TOKEN', 'MODE', 'POD', 'NS', 'LBL', 'GREETING']\n"
        "print(' '.join(os.environ[k] for k in keys))\n"
        "print(os.getcwd())\n"
        "print(sys.executable)\n"
        "pathlib.Path(sys.argv[1]).write_text('x' * 5000)\n"
        "sys.exit(4)\n")
    kube_api.create(PODS, {"metadata": {"name": "envpod", "labels": {"app": "demo"}}, "spec": {
        "restartPolicy": "Never",
        "containers": [{
            "name": "main", "image": "ignored", "workingDir": str(workdir),
            "command": ["python", "-c", script], "args": ["/dev/termination-log"],
            "env": [
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "mode"}}},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "LBL", "valueFrom": {"fieldRef": {
                    "fieldPath": "metadata.labels['app']"}}},
                {"name": "GREETING", "value": "hi-$(POD)"},
            ]}]}})
    pod = kube_api.wait_for(lambda: (p := kube_api.get(f"{PODS}/envpod"))["status"].get(
        "phase") == "Failed" and p, message="pod failed")
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 4 and term["reason"] == "Error"
    assert term["message"] == "x" * 4096
    _, logs = kube_api.request("GET", f"{PODS}/envpod/log")
    lines = logs.splitlines()
    assert lines[0] == "t0p fast envpod default demo hi-envpod"
    assert lines[1] == str(workdir)
    assert lines[2].startswith(str(Path(sys.executable).parent))


def test_missing_secret_blocks_start(kube_api: KubeApi) -> None:
    kube_api.create(PODS, {"metadata": {"name": "wait"}, "spec": {
        "restartPolicy": "Never", "containers": [{
            "name": "main", "image": "i", "command": ["python", "-c", "print(1)"],
            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "late",
                                                                  "key": "k"}}}]}]}})

    def waiting_reason() -> str:
        statuses = kube_api.get(f"{PODS}/wait")["status"].get("containerStatuses") or [{}]
        return str(statuses[0].get("state", {}).get("waiting", {}).get("reason", ""))

    kube_api.wait_for(lambda: waiting_reason() == "CreateContainerConfigError")
    kube_api.create("/api/v1/namespaces/default/secrets", {
        "metadata": {"name": "late"}, "stringData": {"k": "v"}})
    kube_api.wait_for(lambda: kube_api.get(f"{PODS}/wait")["status"]["phase"] == "Succeeded")


def test_pod_deletion_sends_sigterm_then_sigkill(kube_api: KubeApi, tmp_path: Any) -> None:
    marker = tmp_path / "got-term"
    script = (
        "import signal, time, pathlib\n"
        f"def h(*a): pathlib.Path({str(marker)!r}).write_text('term')\n"
        "signal.signal(signal.SIGTERM, h)\n"
        "print('ready', flush=True)\n"
        "while True: time.sleep(0.1)\n")
    kube_api.create(PODS, {"metadata": {"name": "stubborn"}, "spec": {
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": "i", "command": ["python", "-c", script]}]}})
    kube_api.wait_for(lambda: "ready" in str(kube_api.request("GET", f"{PODS}/stubborn/log")[1]))
    started = time.monotonic()
    status, body = kube_api.request("DELETE", f"{PODS}/stubborn")
    assert status == 202 and body["metadata"]["deletionGracePeriodSeconds"] == 1
    kube_api.wait_for(lambda: kube_api.request("GET", f"{PODS}/stubborn")[0] == 404)
    assert marker.read_text() == "term"
    assert time.monotonic() - started >= 0.9  # it had to wait for the SIGKILL
