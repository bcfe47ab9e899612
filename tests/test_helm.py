"""The Helm chart (helm/stagegate): lint, render, check what matters (CRD, RBAC, security),
and apply the rendered manifests with real kubectl to the Kubernetes emulator."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from stagegate_operator.main import parse_args

from tests.kube.emulator import free_port
from tests.support.kube import KubeApi, KubeBinaries
from tests.support.runs import small_spec

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "stagegate"
ALL_ON = ("--set", "metrics.serviceMonitor.enabled=true",
          "--set", "alerts.prometheusRule.enabled=true")  # fmt: skip
NAMESPACED = ("--set", "operator.watchNamespaces={ml,research}")

# The operator's namespaced permissions, exactly (see templates/_helpers.tpl for each reason).
WORKLOAD_RULES = {
    ("stagegate.io", "trainingjobs"): {"get", "list", "watch"},
    ("stagegate.io", "trainingjobs/status"): {"patch"},
    ("stagegate.io", "trainingjobs/finalizers"): {"update"},
    ("batch", "jobs"): {"list", "watch", "create", "delete"},
    ("", "pods"): {"list"},
    ("", "configmaps"): {"get", "create"},
    ("", "events"): {"create"},
}
CRD_RULES = {("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"}}
NAMESPACE_RULES = {("", "namespaces"): {"list", "watch"}}


def render(helm: Path, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(helm), "template", "sg", str(CHART), "-n", "stagegate", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def only(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in found])
    return found[0]


def rules_of(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
        assert not rule.get("resourceNames"), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


@pytest.fixture(scope="module")
def helm(kube_binaries: KubeBinaries) -> Path:
    return kube_binaries.helm


@pytest.mark.parametrize("args", [(), NAMESPACED, ALL_ON, (*NAMESPACED, *ALL_ON)])
def test_helm_lint(helm: Path, args: tuple[str, ...]) -> None:
    out = subprocess.run([str(helm), "lint", "--strict", str(CHART), *args],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_values_schema_refuses_bad_values(helm: Path) -> None:
    for bad in ("bogus=1", "operator.resyncSeconds=0", "artifacts.uri=http://x",
                "operator.watchNamespaces={Not_A_Namespace}"):  # fmt: skip
        out = subprocess.run([str(helm), "template", str(CHART), "--set", bad],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert out.returncode != 0, bad
        assert "values don't meet the specifications of the schema" in out.stderr, out.stderr


def test_the_chart_crd_is_the_generated_crd(helm: Path) -> None:
    chart_crd = CHART / "crds" / "trainingjob.yaml"
    assert chart_crd.read_bytes() == (REPO / "crds" / "trainingjob.yaml").read_bytes(), (
        "helm/stagegate/crds/trainingjob.yaml differs from crds/trainingjob.yaml: "
        "cp crds/trainingjob.yaml helm/stagegate/crds/"
    )
    docs = render(helm, "--include-crds")
    crd = only(docs, "CustomResourceDefinition")
    assert crd == yaml.safe_load((REPO / "crds" / "trainingjob.yaml").read_text())
    assert not [d for d in render(helm) if d["kind"] == "CustomResourceDefinition"]


def test_rbac_all_namespaces_is_least_privilege(helm: Path) -> None:
    docs = render(helm)
    assert rules_of(only(docs, "ClusterRole", "sg-stagegate")) == WORKLOAD_RULES
    assert rules_of(only(docs, "ClusterRole", "sg-stagegate-discovery")) == CRD_RULES
    for binding in ("sg-stagegate", "sg-stagegate-discovery"):
        crb = only(docs, "ClusterRoleBinding", binding)
        assert crb["roleRef"]["name"] == binding
        assert crb["subjects"] == [
            {"kind": "ServiceAccount", "name": "sg-stagegate", "namespace": "stagegate"}
        ]
    assert not [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "sg-stagegate"]
    args = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" in args and not parse_args(args).namespaces


def test_rbac_namespaced_is_least_privilege(helm: Path) -> None:
    docs = render(helm, *NAMESPACED)
    roles = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "sg-stagegate"]
    assert {r["metadata"]["namespace"] for r in roles} == {"ml", "research"}
    for role in roles:
        assert rules_of(role) == WORKLOAD_RULES
    bindings = [
        d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["name"] == "sg-stagegate"
    ]
    assert {b["metadata"]["namespace"] for b in bindings} == {"ml", "research"}
    assert all(b["subjects"][0]["namespace"] == "stagegate" for b in bindings)
    assert not [
        d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "sg-stagegate"
    ]
    assert rules_of(only(docs, "ClusterRole", "sg-stagegate-discovery")) == {
        **CRD_RULES,
        **NAMESPACE_RULES,
    }
    args = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert parse_args(args).namespaces == ["ml", "research"]


@pytest.mark.parametrize("args", [(), NAMESPACED])
def test_trainer_service_account_grants_nothing(helm: Path, args: tuple[str, ...]) -> None:
    docs = render(helm, *args)
    namespaces = {"ml", "research"} if args else {"stagegate"}
    sas = [
        d
        for d in docs
        if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "stagegate-trainer"
    ]
    assert {s["metadata"]["namespace"] for s in sas} == namespaces
    assert all(s["automountServiceAccountToken"] is False for s in sas)
    roles = [
        d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "stagegate-trainer"
    ]
    assert {r["metadata"]["namespace"] for r in roles} == namespaces
    assert all(r["rules"] == [] for r in roles)
    trainer_bindings = [
        d for d in docs
        if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
        and any(s["name"] == "stagegate-trainer" for s in d["subjects"])
    ]  # fmt: skip
    assert {b["roleRef"]["name"] for b in trainer_bindings} == {"stagegate-trainer"}
    assert {b["kind"] for b in trainer_bindings} == {"RoleBinding"}


def test_deployment_is_hardened_and_probed(helm: Path) -> None:
    docs = render(helm, "--set", "image.tag=1.2.3", "--set", "trainer.image=reg/trainer:9",
                  "--set", "artifacts.uri=s3://bucket/runs", "--set", "artifacts.secretName=s3",
                  "--set", "kueue.queueName=ml-queue")  # fmt: skip
    deploy = only(docs, "Deployment")
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    pod = deploy["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "sg-stagegate"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/stagegate/operator:1.2.3"
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8000, "health": 8080}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    config = parse_args(container["args"])
    assert (config.metrics_port, config.health_port) == (8000, 8080)
    assert config.trainer_command == ("stagegate",)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["STAGEGATE_TRAINER_IMAGE"] == "reg/trainer:9"
    assert env["STAGEGATE_ARTIFACTS_URI"] == "s3://bucket/runs"
    assert env["STAGEGATE_ARTIFACTS_SECRET"] == "s3"
    assert env["STAGEGATE_QUEUE_NAME"] == "ml-queue"
    assert env["STAGEGATE_TRAINER_SERVICE_ACCOUNT"] == "stagegate-trainer"
    assert json.loads(env["STAGEGATE_TRAINER_RESOURCES"])["full"]["limits"]["memory"] == "16Gi"


def test_metrics_service_monitor_rules_and_dashboard(helm: Path) -> None:
    docs = render(helm)
    service = only(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8000, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert not [d for d in docs if d["kind"] in ("ServiceMonitor", "PrometheusRule")]
    dashboard = only(docs, "ConfigMap", "sg-stagegate-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["stagegate.json"]) == json.loads(
        (CHART / "dashboards" / "stagegate.json").read_text()
    )
    docs = render(helm, *ALL_ON, "--set", "metrics.serviceMonitor.labels.release=kps")
    monitor = only(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # The scrape job is named by the Service's label: the name the operator-down alert selects.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "stagegate-operator"
    assert only(docs, "PrometheusRule")["spec"]["groups"][0]["rules"]


def _served(kube: KubeApi) -> set[tuple[str, str]]:
    kinds = {("v1", r["kind"]) for r in kube.get("/api/v1")["resources"] if "/" not in r["name"]}
    for group in kube.get("/apis")["groups"]:
        for version in group["versions"]:
            gv = version["groupVersion"]
            resources = kube.get(f"/apis/{gv}")["resources"]
            kinds |= {(gv, r["kind"]) for r in resources if "/" not in r["name"]}
    return kinds


def _monitoring_crd(kind: str, plural: str) -> dict[str, Any]:
    """A minimal stand-in for a Prometheus Operator CRD (the chart ships none of its own)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(),
                      "listKind": f"{kind}List"},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                }}},
            }],
        },
    }  # fmt: skip


def _applied(out: str) -> dict[str, str]:
    """kubectl apply's output lines (`kind.group/name created`) as {kind.group/name: verb}."""
    lines = [line.rsplit(" ", 1) for line in out.splitlines() if line.strip()]
    return {ref: verb for ref, verb in lines}


def _ref(doc: dict[str, Any]) -> str:
    group = doc["apiVersion"].rpartition("/")[0]
    kind = doc["kind"].lower() + (f".{group}" if group else "")
    return f"{kind}/{doc['metadata']['name']}"


def _apply_chart(kube: KubeApi, docs: list[dict[str, Any]]) -> None:
    """Apply every rendered document with real kubectl (CRDs first, as helm does), then again."""
    namespaces = {d["metadata"].get("namespace") for d in docs} - {None, "default"}
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(
        [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
         for ns in sorted(namespaces)]))  # fmt: skip
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    rest = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
    if crds:
        kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(crds))
        kube.wait_for(lambda: ("stagegate.io/v1alpha1", "TrainingJob") in _served(kube))
    out = kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rest)).stdout
    # One output line per document; namespaced copies (ml, research) share a line text.
    assert set(_applied(out)) == {_ref(d) for d in rest}, out
    assert set(_applied(out).values()) == {"created"}, out
    assert len(out.splitlines()) == len(rest), out
    again = kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs)).stdout
    assert set(_applied(again).values()) == {"unchanged"}, again  # stable, no generated names
    assert len(again.splitlines()) == len(docs), again


@pytest.mark.parametrize("args", [(), (*NAMESPACED, *ALL_ON)], ids=["default", "namespaced-all-on"])
def test_rendered_chart_applies_with_kubectl(
    helm: Path, kube_api: KubeApi, args: tuple[str, ...]
) -> None:
    docs = render(helm, "--include-crds", *args)
    if ALL_ON[1] in args:
        for kind, plural in (("ServiceMonitor", "servicemonitors"),
                             ("PrometheusRule", "prometheusrules")):  # fmt: skip
            kube_api.create_crd(_monitoring_crd(kind, plural))
    served = _served(kube_api)
    assert {(d["apiVersion"], d["kind"]) for d in docs} - served <= {
        ("stagegate.io/v1alpha1", "TrainingJob")  # served once the chart's CRD is applied
    }
    _apply_chart(kube_api, docs)

    # What the emulator stored is what was rendered (plus server defaults).
    deploy = only(docs, "Deployment")
    live = kube_api.get("/apis/apps/v1/namespaces/stagegate/deployments/sg-stagegate")
    assert (
        live["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        == deploy["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    )
    assert live["spec"]["strategy"] == {"type": "Recreate"}
    assert live["metadata"]["generation"] == 1
    service = kube_api.get("/api/v1/namespaces/stagegate/services/sg-stagegate-metrics")
    assert service["spec"]["clusterIP"].startswith("10.96.")
    sa = kube_api.get("/api/v1/namespaces/stagegate/serviceaccounts/sg-stagegate")
    assert sa["automountServiceAccountToken"] is True
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    if args:
        for ns in ("ml", "research"):
            role = kube_api.get(f"{rbac}/namespaces/{ns}/roles/sg-stagegate")
            assert rules_of(role) == WORKLOAD_RULES
            kube_api.get(f"{rbac}/namespaces/{ns}/rolebindings/stagegate-trainer")
            trainer = kube_api.get(f"/api/v1/namespaces/{ns}/serviceaccounts/stagegate-trainer")
            assert trainer["automountServiceAccountToken"] is False
        assert kube_api.request("GET", f"{rbac}/clusterroles/sg-stagegate")[0] == 404
        kube_api.get(
            "/apis/monitoring.coreos.com/v1/namespaces/stagegate/servicemonitors/sg-stagegate"
        )
    else:
        assert rules_of(kube_api.get(f"{rbac}/clusterroles/sg-stagegate")) == WORKLOAD_RULES
        crb = kube_api.get(f"{rbac}/clusterrolebindings/sg-stagegate-discovery")
        assert crb["subjects"][0]["namespace"] == "stagegate"
    tables = kube_api.kubectl(
        "get", "deploy,svc,sa,role,rolebinding,cm", "-n", "stagegate", "-o", "wide"
    ).stdout
    for text in ("deployment.apps/sg-stagegate", "0/1", "ghcr.io/stagegate/operator:0.1.0",
                 "service/sg-stagegate-metrics", "ClusterIP", "8000/TCP",
                 "serviceaccount/stagegate-trainer" if not args else "serviceaccount/sg-stagegate",
                 "configmap/sg-stagegate-dashboard"):  # fmt: skip
        assert text in tables, (text, tables)
    bindings = kube_api.kubectl(
        "get", "clusterrolebinding", "sg-stagegate-discovery", "-o", "wide"
    ).stdout
    assert "ClusterRole/sg-stagegate-discovery" in bindings
    assert "stagegate/sg-stagegate" in bindings, bindings

    # Server-side validation is as strict as kube-apiserver's for what the chart uses.
    broken = json.loads(json.dumps(deploy))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    out = kube_api.kubectl("apply", "-f", "-", input=yaml.safe_dump(broken), check=False)
    assert (
        out.returncode != 0
        and 'unknown field "spec.template.spec.containers[0].securityContxt"' in out.stderr
    ), out.stderr
    broken = json.loads(json.dumps(deploy))
    broken["spec"]["replicas"] = "one"
    out = kube_api.kubectl("apply", "-f", "-", input=yaml.safe_dump(broken), check=False)
    assert out.returncode != 0 and "spec.replicas" in out.stderr, out.stderr
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "bad"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "x"},
               "subjects": [{"kind": "ServiceAccount", "name": "x"}]}  # fmt: skip
    out = kube_api.kubectl("apply", "-f", "-", input=yaml.safe_dump(binding), check=False)
    assert out.returncode != 0, out.stdout
    assert "roleRef.kind: Unsupported value" in out.stderr, out.stderr
    assert "subjects[0].namespace: Required value" in out.stderr, out.stderr

    # Uninstalling: what the chart's objects own goes with them (garbage collection).
    owner = kube_api.get("/apis/apps/v1/namespaces/stagegate/deployments/sg-stagegate")
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sg-stagegate",
           "uid": owner["metadata"]["uid"]}  # fmt: skip
    kube_api.create(
        "/api/v1/namespaces/stagegate/configmaps",
        {"metadata": {"name": "owned", "ownerReferences": [ref]}},
    )
    kube_api.kubectl("delete", "-f", "-", input=yaml.safe_dump_all(
        [d for d in docs if d["kind"] != "CustomResourceDefinition"]))  # fmt: skip
    kube_api.wait_for(
        lambda: kube_api.request("GET", "/api/v1/namespaces/stagegate/configmaps/owned")[0] == 404,
        message="the Deployment's dependent collected",
    )


def test_operator_runs_from_the_rendered_settings(
    helm: Path, kube_api: KubeApi, tmp_path: Path
) -> None:
    artifacts = tmp_path / "artifacts"
    docs = render(
        helm,
        "--include-crds",
        "--set",
        "trainer.image=registry.local/trainer:9",
        "--set",
        "kueue.queueName=",
        "--set",
        f"artifacts.uri=file://{artifacts}",
    )
    _apply_chart(kube_api, docs)
    (container,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    # The rendered command and arguments, except for the two ports: the rendered ones are fixed
    # container ports (8000, 8080) that a local process cannot count on, so they get free ones.
    metrics_port, health_port = free_port(), free_port()
    args = [f"--metrics-port={metrics_port}" if a.startswith("--metrics-port") else
            f"--health-port={health_port}" if a.startswith("--health-port") else a
            for a in container["args"]]  # fmt: skip
    assert args != container["args"] and len(args) == len(container["args"])
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert env["STAGEGATE_TRAINER_IMAGE"] == "registry.local/trainer:9"
    (command,) = container["command"]
    argv = [str(Path(sys.executable).parent / command), *args,
            "--kubeconfig", str(kube_api.kubeconfig)]  # fmt: skip
    log = tmp_path / "operator.log"
    with log.open("w") as out:
        operator = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**kube_api.env, **env, "TMPDIR": str(tmp_path)},
        )  # fmt: skip
    try:

        def healthy() -> bool:
            assert operator.poll() is None, log.read_text()
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(
                    f"http://127.0.0.1:{health_port}/healthz", timeout=1
                ) as response,
            ):
                return response.status == 200
            return False

        kube_api.wait_for(healthy, timeout=30, interval=0.2, message="operator /healthz")
        tj = {"apiVersion": "stagegate.io/v1alpha1", "kind": "TrainingJob",
              "metadata": {"name": "helm-quick", "namespace": "stagegate"},
              "spec": small_spec(mode="quick")}  # fmt: skip
        kube_api.kubectl("apply", "-f", "-", input=yaml.safe_dump(tj))
        path = "/apis/stagegate.io/v1alpha1/namespaces/stagegate/trainingjobs/helm-quick"

        def finished() -> dict[str, Any]:
            found: dict[str, Any] = kube_api.get(path)
            done = (found.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Rejected")
            return found if done else {}

        done = kube_api.wait_for(
            finished, timeout=120, interval=0.5, message="TrainingJob finished"
        )
        assert done["status"]["phase"] == "Succeeded", (done["status"], log.read_text()[-3000:])
        # The chart's defaults reached the step Jobs: image, service account, resources, queue.
        jobs = kube_api.get("/apis/batch/v1/namespaces/stagegate/jobs")["items"]
        folds = [j for j in jobs if j["metadata"]["labels"].get("stagegate.io/step") == "fold"]
        assert folds, [j["metadata"]["name"] for j in jobs]
        resources = json.loads(env["STAGEGATE_TRAINER_RESOURCES"])["quick"]
        for job in folds:
            pod = job["spec"]["template"]["spec"]
            (step,) = pod["containers"]
            assert step["image"] == "registry.local/trainer:9"
            assert step["resources"] == resources
            assert pod["serviceAccountName"] == "stagegate-trainer"
            assert job["spec"]["suspend"] is False
            assert "kueue.x-k8s.io/queue-name" not in job["metadata"].get("labels", {})
        assert list(artifacts.rglob("summary.json")), sorted(artifacts.rglob("*"))
    finally:
        if operator.poll() is None:
            operator.send_signal(signal.SIGTERM)
        try:
            code = operator.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(operator.pid, signal.SIGKILL)
            operator.wait(5)
            raise AssertionError(
                "the operator ignored SIGTERM:\n" + log.read_text()[-3000:]
            ) from None
    assert code == 0, log.read_text()[-3000:]
