"""Real kubectl (and helm) against the emulator."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube.samples import widget_crd
from tests.support.kube import KubeApi

pytestmark = pytest.mark.timeout(90)

WIDGET_YAML = """\
apiVersion: example.stagegate.io/v1
kind: Widget
metadata:
  name: w1
spec:
  size: {size}
  color: blue
"""


def _apply_crd(api: KubeApi, tmp_path: Path) -> None:
    path = tmp_path / "crd.yaml"
    path.write_text(yaml.safe_dump(widget_crd()))
    out = api.kubectl("apply", "-f", str(path))
    assert "customresourcedefinition.apiextensions.k8s.io/widgets.example.stagegate.io created" \
        in out.stdout
    api.kubectl("wait", "--for=condition=Established", "crd/widgets.example.stagegate.io",
                "--timeout=20s")


def test_apply_get_annotate_describe_delete(kube_api: KubeApi, tmp_path: Path) -> None:
    _apply_crd(kube_api, tmp_path)
    out = kube_api.kubectl("apply", "-f", "-", input=WIDGET_YAML.format(size=3))
    assert out.stdout.strip() == "widget.example.stagegate.io/w1 created"
    out = kube_api.kubectl("apply", "-f", "-", input=WIDGET_YAML.format(size=4))
    assert out.stdout.strip() == "widget.example.stagegate.io/w1 configured"
    out = kube_api.kubectl("apply", "-f", "-", input=WIDGET_YAML.format(size=4))
    assert out.stdout.strip() == "widget.example.stagegate.io/w1 unchanged"

    table = kube_api.kubectl("get", "widgets").stdout.splitlines()
    assert table[0].split() == ["NAME", "SIZE", "PHASE", "AGE"]
    assert table[1].split()[:2] == ["w1", "4"]
    wide = kube_api.kubectl("get", "wd", "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "SIZE", "PHASE", "COLOR", "AGE"]
    assert wide[1].split()[:3] == ["w1", "4", "blue"]
    obj = yaml.safe_load(kube_api.kubectl("get", "widget", "w1", "-o", "yaml").stdout)
    assert obj["spec"] == {"size": 4, "color": "blue"}
    assert "kubectl.kubernetes.io/last-applied-configuration" in obj["metadata"]["annotations"]

    kube_api.kubectl("annotate", "widget", "w1", "stagegate.io/approval=approved")
    obj = json.loads(kube_api.kubectl("get", "widget", "w1", "-o", "json").stdout)
    assert obj["metadata"]["annotations"]["stagegate.io/approval"] == "approved"

    kube_api.create("/api/v1/namespaces/default/events", {
        "metadata": {"name": "w1.1"}, "type": "Normal", "reason": "Tested",
        "message": "hello from the test",
        "involvedObject": {"apiVersion": "example.stagegate.io/v1", "kind": "Widget",
                           "name": "w1", "namespace": "default", "uid": obj["metadata"]["uid"]},
        "firstTimestamp": obj["metadata"]["creationTimestamp"],
        "lastTimestamp": obj["metadata"]["creationTimestamp"], "count": 1,
        "source": {"component": "test"}})
    described = kube_api.kubectl("describe", "widget", "w1").stdout
    assert "Size:" in described and "hello from the test" in described and "Tested" in described

    out = kube_api.kubectl("delete", "widget", "w1", "--timeout=20s")
    assert out.stdout.startswith('widget.example.stagegate.io "w1" deleted')
    out = kube_api.kubectl("get", "widgets", check=False)
    assert "No resources found" in out.stderr


def test_rejections_as_a_real_server(kube_api: KubeApi, tmp_path: Path) -> None:
    _apply_crd(kube_api, tmp_path)
    bad = WIDGET_YAML.format(size=0)
    out = kube_api.kubectl("apply", "-f", "-", input=bad, check=False)
    assert out.returncode != 0
    assert 'The Widget "w1" is invalid' in out.stderr
    assert "spec.size in body should be greater than or equal to 1" in out.stderr
    unknown = WIDGET_YAML.format(size=2) + "  sizee: 3\n"
    out = kube_api.kubectl("apply", "-f", "-", input=unknown, check=False)
    assert out.returncode != 0 and 'unknown field "spec.sizee"' in out.stderr
    job: dict[str, Any] = {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
           "spec": {"suspend": True, "template": {"spec": {
               "restartPolicy": "Never",
               "containers": [{"name": "c", "image": "i", "command": ["true"]}]}}}}
    kube_api.kubectl("apply", "-f", "-", input=json.dumps(job))
    job["spec"]["template"]["spec"]["containers"][0]["command"] = ["false"]
    out = kube_api.kubectl("apply", "-f", "-", input=json.dumps(job), check=False)
    assert out.returncode != 0 and "field is immutable" in out.stderr
    job["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "x"
    out = kube_api.kubectl("create", "-f", "-", input=json.dumps(job | {"metadata": {
        "name": "j2"}}), check=False)
    assert out.returncode != 0 and "imagePullPolicyy" in out.stderr
    current = json.loads(kube_api.kubectl("get", "job", "j", "-o", "json").stdout)
    kube_api.kubectl("annotate", "job", "j", "a=b")
    out = kube_api.kubectl("replace", "-f", "-", input=json.dumps(current), check=False)
    assert out.returncode != 0 and "the object has been modified" in out.stderr


def test_job_logs_wait_and_cascading_delete(kube_api: KubeApi) -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "hello"},
           "spec": {"backoffLimit": 0, "template": {"spec": {
               "restartPolicy": "Never",
               "containers": [{"name": "main", "image": "python:3.11", "command": [
                   "python", "-c",
                   "import sys; print('hello', flush=True); print('err', file=sys.stderr)"]}]}}}}
    kube_api.kubectl("apply", "-f", "-", input=json.dumps(job))
    kube_api.kubectl("wait", "--for=condition=Complete", "job/hello", "--timeout=30s")
    kube_api.kubectl("wait", "--for=jsonpath={.status.succeeded}=1", "job/hello",
                     "--timeout=10s")
    logs = kube_api.kubectl("logs", "job/hello").stdout
    assert logs.splitlines() == ["hello", "err"]
    table = kube_api.kubectl("get", "jobs").stdout.splitlines()
    assert table[0].split() == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert table[1].split()[:3] == ["hello", "Complete", "1/1"]
    pods = kube_api.kubectl("get", "pods", "-l", "job-name=hello").stdout.splitlines()
    assert pods[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert pods[1].split()[1:3] == ["0/1", "Completed"]
    described = kube_api.kubectl("describe", "job", "hello").stdout
    assert "SuccessfulCreate" in described
    kube_api.kubectl("delete", "job", "hello", "--timeout=20s")
    kube_api.wait_for(lambda: "No resources" in kube_api.kubectl(
        "get", "pods", check=False).stderr, message="pods collected")


def test_logs_follow(kube_api: KubeApi) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ticker"},
           "spec": {"restartPolicy": "Never", "containers": [{
               "name": "main", "image": "python", "command": [
                   "python", "-u", "-c",
                   "import time\nfor i in range(3):\n  print('tick', i)\n  time.sleep(0.3)"]}]}}
    kube_api.kubectl("apply", "-f", "-", input=json.dumps(pod))
    kube_api.kubectl("wait", "--for=jsonpath={.status.phase}=Running", "pod/ticker",
                     "--timeout=20s")
    out = kube_api.kubectl("logs", "-f", "ticker", timeout=30)
    assert out.stdout.splitlines() == ["tick 0", "tick 1", "tick 2"]


def test_get_watch(kube_api: KubeApi, tmp_path: Path) -> None:
    _apply_crd(kube_api, tmp_path)
    kube_api.kubectl("apply", "-f", "-", input=WIDGET_YAML.format(size=3))
    proc = kube_api.popen(str(kube_api.binaries.kubectl), "get", "widgets", "-w")
    time.sleep(1.5)
    kube_api.patch("/apis/example.stagegate.io/v1/namespaces/default/widgets/w1",
                   {"spec": {"size": 9}})
    time.sleep(1.5)
    proc.terminate()
    out, err = proc.communicate(timeout=10)
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "PHASE", "AGE"], (out, err)
    assert [line.split()[1] for line in lines[1:]] == ["3", "9"], (out, err)


CHART = {
    "Chart.yaml": "apiVersion: v2\nname: demo\nversion: 0.1.0\n",
    "values.yaml": "size: 5\n",
    "templates/widget.yaml": (
        "apiVersion: example.stagegate.io/v1\nkind: Widget\nmetadata:\n"
        "  name: {{ .Release.Name }}-w\n  labels:\n    app.kubernetes.io/managed-by: "
        "{{ .Release.Service }}\nspec:\n  size: {{ .Values.size }}\n"),
    "templates/cm.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cfg\n"
        "data:\n  size: {{ .Values.size | quote }}\n"),
}


def test_helm_template_pipe_to_kubectl_apply(kube_api: KubeApi, tmp_path: Path) -> None:
    _apply_crd(kube_api, tmp_path)
    chart = tmp_path / "demo"
    for name, text in CHART.items():
        (chart / name).parent.mkdir(parents=True, exist_ok=True)
        (chart / name).write_text(text)
    kube_api.helm("lint", str(chart))
    rendered = kube_api.helm("template", "rel", str(chart), "--set", "size=7").stdout
    out = kube_api.kubectl("apply", "-f", "-", input=rendered)
    assert "widget.example.stagegate.io/rel-w created" in out.stdout
    assert "configmap/rel-cfg created" in out.stdout
    got = kube_api.get("/apis/example.stagegate.io/v1/namespaces/default/widgets/rel-w")
    assert got["spec"]["size"] == 7
