"""The Helm chart (helm/stagegate): lint, render, check what matters (CRD, RBAC, security),
and install it with real helm on the real control plane."""

from __future__ import annotations

import contextlib
import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from stagegate_operator.main import parse_args

from tests.support import chart
from tests.support.kube import KubeApi, KubeBinaries, private_cluster
from tests.support.runs import small_spec

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "stagegate"
ALL_ON = ("--set", "metrics.serviceMonitor.enabled=true",
          "--set", "alerts.prometheusRule.enabled=true",
          "--set", "approval.fourEyes=true", "--set", "approval.users={dana}")  # fmt: skip
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


def _can_i(kube: KubeApi, user: str, namespace: str) -> dict[tuple[str, str], set[str]]:
    """`kubectl auth can-i --list` as {(group, resource): verbs}, without what every
    authenticated user may do (the self-review APIs of system:basic-user) and without URLs."""
    out = kube.kubectl("auth", "can-i", "--list", "-n", namespace, f"--as={user}").stdout
    rules: dict[tuple[str, str], set[str]] = {}
    for line in out.splitlines()[1:]:
        fields = line.split()
        if not fields or fields[0].startswith("[") or "selfsubject" in fields[0]:
            continue
        name, _, group = fields[0].partition(".")
        resource, _, sub = name.partition("/")
        group = group.split("/")[0]
        sub = sub or (fields[0].split("/", 1)[1] if "/" in fields[0] else "")
        key = (group, f"{resource}/{sub}" if sub else resource)
        verbs = line[line.rindex("[") + 1 : line.rindex("]")].split()
        rules.setdefault(key, set()).update(verbs)
    return rules


def _pods(kube: KubeApi, namespace: str) -> list[dict[str, Any]]:
    return kube.get(f"/api/v1/namespaces/{namespace}/pods")["items"]  # type: ignore[no-any-return]


def test_helm_install_upgrade_uninstall_on_the_real_control_plane(
    kube_binaries: KubeBinaries, tmp_path: Path, s3_bucket: str, moto_server: str
) -> None:
    """`helm install` for real: the operator runs as the chart's Deployment, its pod started
    by the node agent under the chart's ServiceAccount, so RBAC and the `restricted` Pod
    Security level are enforced by the API server on it and on every step pod."""
    with private_cluster(tmp_path, kube_binaries) as (_, kube):
        values, health_port = chart.install(kube, s3_bucket, moto_server)
        operator_pod = kube.wait_for(
            lambda: next(
                (p for p in _pods(kube, "stagegate") if p["status"].get("phase") == "Running"), None
            ),
            timeout=60,
            message="the operator pod running",
        )
        assert operator_pod["spec"]["serviceAccountName"] == "sg-stagegate"
        kube.wait_for(lambda: _healthy(health_port), timeout=60, message="operator /healthz")

        # RBAC, enforced: exactly what the operator needs where it works, no Secrets.
        sa = "system:serviceaccount:stagegate:sg-stagegate"
        granted = _can_i(kube, sa, "research")
        assert granted == {**WORKLOAD_RULES, **CRD_RULES, **NAMESPACE_RULES}, granted
        for verb, what, ns in (
            ("get", "secrets", "research"),
            ("create", "jobs", "default"),
            ("delete", "trainingjobs", "research"),
            ("list", "secrets", "stagegate"),
        ):
            answer = kube.kubectl(
                "auth", "can-i", verb, what, "-n", ns, f"--as={sa}", check=False
            ).stdout.strip()
            assert answer == "no", (verb, what, ns, answer)

        # A TrainingJob in the watched namespace runs to the end under `restricted`.
        tj = {
            "apiVersion": "stagegate.io/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": "helm-quick", "namespace": "research"},
            "spec": small_spec(
                mode="quick", resources={"quick": {"requests": {"cpu": "1", "memory": "1Gi"}}}
            ),
        }
        kube.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(tj))
        path = "/apis/stagegate.io/v1alpha1/namespaces/research/trainingjobs/helm-quick"

        # The operator pod deleted mid-run: the Deployment brings a new one, which picks the
        # run up from its status and its Jobs.
        kube.wait_for(lambda: any(p["metadata"]["labels"].get("stagegate.io/step") == "fold"
                                  for p in _pods(kube, "research")),
                      timeout=120, interval=0.3, message="a fold pod")  # fmt: skip
        kube.kubectl("delete", "pod", operator_pod["metadata"]["name"], "-n", "stagegate",
                     "--wait=false")  # fmt: skip
        kube.wait_for(
            lambda: [p for p in _pods(kube, "stagegate") if p["status"].get("phase") == "Running"
                     and p["metadata"]["name"] != operator_pod["metadata"]["name"]],
            timeout=90, message="the Deployment's new operator pod")  # fmt: skip

        def finished() -> dict[str, Any] | None:
            found: dict[str, Any] = kube.get(path)
            phase = (found.get("status") or {}).get("phase")
            return found if phase in ("Succeeded", "Failed", "Rejected") else None

        done = kube.wait_for(finished, timeout=240, interval=0.5, message="helm-quick finished")
        assert done["status"]["phase"] == "Succeeded", done["status"].get("message")
        folds = [
            p
            for p in _pods(kube, "research")
            if p["metadata"]["labels"].get("stagegate.io/step") == "fold"
        ]
        assert folds and all(p["spec"]["serviceAccountName"] == "stagegate-trainer" for p in folds)
        # No fold trained twice across the operator's replacement.
        assert len(folds) == done["status"]["stages"]["quick"]["plan"]["foldCount"], [
            p["metadata"]["name"] for p in folds
        ]
        assert all(p["status"]["phase"] == "Succeeded" for p in folds)

        # Upgrade: a changed value reaches the running operator through a new pod.
        kube.helm(
            "upgrade",
            "sg",
            str(CHART),
            "-n",
            "stagegate",
            "--wait",
            "--timeout",
            "120s",
            *values,
            "--set",
            "trainer.image=registry.local/trainer:2",
            timeout=180,
        )

        def upgraded() -> bool:
            running = [
                p
                for p in _pods(kube, "stagegate")
                if p["status"].get("phase") == "Running"
                and not p["metadata"].get("deletionTimestamp")
            ]
            return any(
                e.get("value") == "registry.local/trainer:2"
                for p in running
                for e in p["spec"]["containers"][0]["env"]
            )

        kube.wait_for(upgraded, timeout=90, interval=0.5, message="the upgraded operator pod")

        # Uninstall leaves nothing of ours but the CRD (Helm never deletes crds/ files) and
        # the TrainingJob, which the CRD holds.
        kube.helm("uninstall", "sg", "-n", "stagegate", "--wait", "--timeout", "120s", timeout=180)
        kube.wait_for(
            lambda: not _pods(kube, "stagegate"), timeout=60, message="the operator pod gone"
        )
        left = kube.kubectl(
            "get", "all,sa,role,rolebinding,cm,secret", "-n", "stagegate", "-o", "name"
        ).stdout.split()
        assert [n for n in left if "sg-stagegate" in n or "stagegate-trainer" in n] == [], left
        rbac = "/apis/rbac.authorization.k8s.io/v1"
        admission = "/apis/admissionregistration.k8s.io/v1"
        leftover = [
            r["metadata"]["name"]
            for path in (f"{rbac}/clusterroles", f"{rbac}/clusterrolebindings",
                         f"{admission}/validatingadmissionpolicies",
                         f"{admission}/validatingadmissionpolicybindings")
            for r in kube.get(path)["items"]
            if r["metadata"]["name"].startswith("sg-")
        ]  # fmt: skip
        assert leftover == [], leftover
        kube.get(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/trainingjobs.stagegate.io"
        )


def _healthy(port: int) -> bool:
    with (
        contextlib.suppress(OSError),
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response,
    ):
        return response.status == 200
    return False


def test_the_api_server_refuses_what_the_chart_must_not_contain(
    helm: Path, kube_api: KubeApi
) -> None:
    deploy = only(render(helm), "Deployment")
    deploy["metadata"]["namespace"] = kube_api.namespace
    broken = json.loads(json.dumps(deploy))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    out = kube_api.kubectl("apply", "-f", "-", input=yaml.safe_dump(broken), check=False)
    assert out.returncode != 0
    assert 'unknown field "spec.template.spec.containers[0].securityContxt"' in out.stderr
    broken = json.loads(json.dumps(deploy))
    broken["spec"]["replicas"] = "one"
    out = kube_api.kubectl("apply", "-f", "-", input=yaml.safe_dump(broken), check=False)
    assert out.returncode != 0 and "spec.replicas" in out.stderr, out.stderr
    # The rendered Deployment itself is admitted under `restricted` (dry run on the server).
    out = kube_api.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(deploy))
    assert "PodSecurity" not in out.stderr, out.stderr
