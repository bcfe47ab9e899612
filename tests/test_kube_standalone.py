"""`python -m tests.kube serve` as a subprocess, driven by kubectl."""

from __future__ import annotations

import json

import pytest

from tests.support.kube import KubeApi

pytestmark = pytest.mark.timeout(60)


def test_subprocess_emulator_runs_a_job(kube_api_process: KubeApi) -> None:
    api = kube_api_process
    assert api.emulator is None
    assert "default" in api.kubectl("get", "namespaces").stdout
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "standalone"},
           "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{
               "name": "main", "image": "x", "command": ["python", "-c", "print('ok')"]}]}}}}
    api.kubectl("create", "-f", "-", input=json.dumps(job))
    api.kubectl("wait", "--for=condition=Complete", "job/standalone", "--timeout=30s")
    assert api.kubectl("logs", "job/standalone").stdout == "ok\n"
