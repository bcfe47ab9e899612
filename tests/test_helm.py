"""The Helm chart (helm/stagegate): lint, render, check what matters (CRD, RBAC, security),
and install it with real helm on the real control plane."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
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
    ("", "pods"): {"list", "watch"},
    ("", "configmaps"): {"get", "create"},
    ("", "events"): {"create"},
}
LEASE_RULES = {("coordination.k8s.io", "leases"): {"get", "create", "update"}}


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


@pytest.fixture(autouse=True)
def in_the_release_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the chart's downward API gives the operator, for parse_args of its arguments."""
    monkeypatch.setenv("POD_NAMESPACE", "stagegate")


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
    crb = only(docs, "ClusterRoleBinding", "sg-stagegate")
    assert crb["roleRef"]["name"] == "sg-stagegate"
    assert crb["subjects"] == [
        {"kind": "ServiceAccount", "name": "sg-stagegate", "namespace": "stagegate"}
    ]
    _no_discovery_grant(docs)
    assert not [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "sg-stagegate"]
    args = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" in args and not parse_args(args).namespaces
    _leader_election_rbac(docs)


def _no_discovery_grant(docs: list[dict[str, Any]]) -> None:
    """All the operator's account is granted is its workload and the Lease: kopf watches
    nothing (its scanning is off), so no read of CRDs or namespaces."""
    bound = {
        b["roleRef"]["name"]
        for b in docs
        if b["kind"] in ("ClusterRoleBinding", "RoleBinding")
        and {"kind": "ServiceAccount", "name": "sg-stagegate", "namespace": "stagegate"}
        in b["subjects"]
    }
    granted: dict[tuple[str, str], set[str]] = {}
    for role in docs:
        if role["kind"] in ("ClusterRole", "Role") and role["metadata"]["name"] in bound:
            for what, verbs in rules_of(role).items():
                granted.setdefault(what, set()).update(verbs)
    assert granted == {**WORKLOAD_RULES, **LEASE_RULES}, granted


def _leader_election_rbac(docs: list[dict[str, Any]]) -> None:
    """The Lease, and only it, in the release namespace only."""
    role = only(docs, "Role", "sg-stagegate-leader-election")
    assert role["metadata"]["namespace"] == "stagegate"
    assert rules_of(role) == LEASE_RULES
    binding = only(docs, "RoleBinding", "sg-stagegate-leader-election")
    assert binding["metadata"]["namespace"] == "stagegate"
    assert binding["roleRef"]["name"] == "sg-stagegate-leader-election"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sg-stagegate", "namespace": "stagegate"}
    ]


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
    _no_discovery_grant(docs)
    args = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert parse_args(args).namespaces == ["ml", "research"]
    _leader_election_rbac(docs)


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
    # With leader election the new pod stands by until the old one hands the Lease over.
    assert deploy["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}
    }  # fmt: skip
    pod = deploy["spec"]["template"]["spec"]
    assert "affinity" not in pod
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
    assert config.lease == ("stagegate", "sg-stagegate") and config.bind_address == "0.0.0.0"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["STAGEGATE_TRAINER_IMAGE"] == "reg/trainer:9"
    assert env["STAGEGATE_ARTIFACTS_URI"] == "s3://bucket/runs"
    assert env["STAGEGATE_ARTIFACTS_SECRET"] == "s3"
    assert env["STAGEGATE_QUEUE_NAME"] == "ml-queue"
    assert env["STAGEGATE_TRAINER_SERVICE_ACCOUNT"] == "stagegate-trainer"
    assert json.loads(env["STAGEGATE_TRAINER_RESOURCES"])["full"]["limits"]["memory"] == "16Gi"


def test_two_replicas_elect_a_leader_and_spread_over_nodes(helm: Path) -> None:
    deploy = only(render(helm, "--set", "operator.replicas=2"), "Deployment")
    assert deploy["spec"]["replicas"] == 2
    pod = deploy["spec"]["template"]["spec"]
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (
        term["podAffinityTerm"]["labelSelector"]["matchLabels"]
        == deploy["spec"]["selector"]["matchLabels"]
    )
    env = {e["name"]: e.get("valueFrom") for e in pod["containers"][0]["env"]}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    # One replica without election: Recreate, never two at once. Two without it: refused.
    single = only(render(helm, "--set", "operator.leaderElection.enabled=false"), "Deployment")
    assert single["spec"]["strategy"] == {"type": "Recreate"}
    assert "--leader-election" not in single["spec"]["template"]["spec"]["containers"][0]["args"]
    out = subprocess.run(
        [str(helm), "template", "sg", str(CHART), "--set", "operator.replicas=2",
         "--set", "operator.leaderElection.enabled=false"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode != 0 and "leaderElection/enabled" in out.stderr, out.stderr


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


def _running(kube: KubeApi, namespace: str) -> list[dict[str, Any]]:
    return [p for p in _pods(kube, namespace) if p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")]  # fmt: skip


def _pod_of(identity: str) -> str:
    """The pod of a leader identity, `<pod>_<nonce>` (a restarted container is someone new)."""
    return identity.rsplit("_", 1)[0]


def _operator_process(pod: str) -> psutil.Process:
    """The operator process of one pod (the node agent sets HOSTNAME to the pod's name)."""
    for p in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            argv = p.info["cmdline"] or []
            container = not any(a.endswith("shim.py") for a in argv)  # not the node's shim
            if (
                container
                and any("stagegate-operator" in a for a in argv)
                and (p.environ().get("HOSTNAME") == pod)
            ):
                return p
    raise AssertionError(f"no operator process for pod {pod}")


def test_helm_install_upgrade_uninstall_on_the_real_control_plane(
    kube_binaries: KubeBinaries, tmp_path: Path, s3_bucket: str, moto_server: str
) -> None:
    """`helm install` for real: the operator runs as the chart's Deployment, its pods started
    by the node agent under the chart's ServiceAccount, so RBAC and the `restricted` Pod
    Security level are enforced by the API server on them and on every step pod. Two replicas
    elect a leader; the leader is SIGKILLed mid-run and the standby takes the run over."""
    with private_cluster(tmp_path, kube_binaries) as (_, kube):
        # Pods share the node's network here: each replica listens on its own pod IP.
        values, health_port = chart.install(kube, s3_bucket, moto_server,
                                            "--set", "operator.replicas=2",
                                            "--set", "operator.bindAddress=$(POD_IP)")  # fmt: skip
        operators = kube.wait_for(
            lambda: (lambda r: r if len(r) == 2 else None)(_running(kube, "stagegate")),
            timeout=60, message="both operator pods running",
        )  # fmt: skip
        assert {p["spec"]["serviceAccountName"] for p in operators} == {"sg-stagegate"}
        assert len({p["status"]["podIP"] for p in operators}) == 2
        for pod in operators:  # leader and standby alike are healthy
            kube.wait_for(lambda pod=pod: _healthy(pod["status"]["podIP"], health_port),
                          timeout=60, message="operator /healthz")  # fmt: skip
        lease_path = "/apis/coordination.k8s.io/v1/namespaces/stagegate/leases/sg-stagegate"
        holder = kube.wait_for(lambda: kube.get(lease_path)["spec"].get("holderIdentity"),
                               timeout=30, message="a leader")  # fmt: skip
        leader = _pod_of(holder)
        assert leader in {p["metadata"]["name"] for p in operators}

        # RBAC, enforced: exactly what the operator needs where it works, no Secrets.
        sa = "system:serviceaccount:stagegate:sg-stagegate"
        granted = _can_i(kube, sa, "research")
        assert granted == WORKLOAD_RULES, granted
        for verb, what, ns, expected in (
            ("get", "secrets", "research", "no"),
            ("create", "jobs", "default", "no"),
            ("delete", "trainingjobs", "research", "no"),
            ("list", "secrets", "stagegate", "no"),
            ("update", "leases", "stagegate", "yes"),
            ("delete", "leases", "stagegate", "no"),
            ("update", "leases", "research", "no"),
        ):
            answer = kube.kubectl(
                "auth", "can-i", verb, what, "-n", ns, f"--as={sa}", check=False
            ).stdout.strip()
            assert answer == expected, (verb, what, ns, answer)

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

        # The leader's process SIGKILLed mid-run: it cannot hand the Lease back, so the
        # standby waits out the lease (10 s) and takes over from the run's status and Jobs.
        kube.wait_for(lambda: any(p["metadata"]["labels"].get("stagegate.io/step") == "fold"
                                  for p in _pods(kube, "research")),
                      timeout=120, interval=0.3, message="a fold pod")  # fmt: skip
        _operator_process(leader).kill()
        killed = time.monotonic()
        successor = kube.wait_for(
            lambda: (lambda h: h if h and _pod_of(h) != leader else None)(
                kube.get(lease_path)["spec"].get("holderIdentity")
            ),
            timeout=30, interval=0.2, message="the standby taking the Lease over",
        )  # fmt: skip
        takeover = time.monotonic() - killed
        print(f"standby {successor} took over {takeover:.1f} s after the leader was killed")
        assert takeover <= 15, takeover

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
        # No fold trained twice across the change of leader.
        assert len(folds) == done["status"]["stages"]["quick"]["plan"]["foldCount"], [
            p["metadata"]["name"] for p in folds
        ]
        assert all(p["status"]["phase"] == "Succeeded" for p in folds)
        # The killed container was restarted by its pod and stands by.
        restarted = next(p for p in _pods(kube, "stagegate") if p["metadata"]["name"] == leader)
        assert restarted["status"]["containerStatuses"][0]["restartCount"] >= 1
        assert kube.get(lease_path)["spec"]["holderIdentity"] == successor

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
            running = _running(kube, "stagegate")
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


def _healthy(host: str, port: int) -> bool:
    with (
        contextlib.suppress(OSError),
        urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=1) as response,
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
