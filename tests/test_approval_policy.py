"""Who may approve, enforced by the real API server: the chart's ValidatingAdmissionPolicy,
its roles aggregated into the built-in ones, and the record of who decided.

Users are the test cluster's static tokens: alice and carol are in `stagegate-approvers`, bob
in no group; each test binds what the scenario needs.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import chart
from tests.support.chart import REPO
from tests.support.kube import KubeApi, KubeBinaries, private_cluster
from tests.support.runs import OPEN_GATES, small_spec, stagegate

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

NS = chart.WATCHED
TJ_PATH = f"/apis/stagegate.io/v1alpha1/namespaces/{NS}/trainingjobs"


def trainingjob(name: str, **annotations: str) -> str:
    spec = small_spec(gates=OPEN_GATES, resources={"quick": {"requests": {"cpu": "1"}},
                                                   "full": {"requests": {"cpu": "1"}}})  # fmt: skip
    meta: dict[str, Any] = {"name": name, "namespace": NS}
    if annotations:
        meta["annotations"] = {f"stagegate.io/{k.replace('_', '-')}": v
                               for k, v in annotations.items()}  # fmt: skip
    return yaml.safe_dump({"apiVersion": "stagegate.io/v1alpha1", "kind": "TrainingJob",
                           "metadata": meta, "spec": spec})  # fmt: skip


def annotate(kube: KubeApi, user: str, name: str, *pairs: str,
             dry_run: bool = False) -> subprocess.CompletedProcess[str]:  # fmt: skip
    extra = ["--dry-run=server"] if dry_run else []
    return kube.kubectl("annotate", "--overwrite", "tj", name, "-n", NS, *pairs, *extra,
                        user=user, check=False)  # fmt: skip


def denied(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0, result.stdout
    for needle in needles:
        assert needle in result.stderr, result.stderr


def phase(kube: KubeApi, name: str) -> dict[str, Any]:
    return kube.get(f"{TJ_PATH}/{name}").get("status") or {}


def wait_phase(kube: KubeApi, name: str, *phases: str, timeout: float = 240) -> dict[str, Any]:
    return kube.wait_for(lambda: (s := phase(kube, name)).get("phase") in phases and s,
                         timeout=timeout, interval=0.5,
                         message=f"{name} in {phases}")  # fmt: skip


def sg(kube: KubeApi, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    return stagegate(*args, "--kubeconfig", str(kube.kubeconfig_for(user)), "-n", NS,
                     cwd=REPO, env={"HOME": str(kube.home)})  # fmt: skip


def bind(kube: KubeApi, role: str, *users: str) -> None:
    subjects = [f"--user={u}" for u in users]
    kube.kubectl("create", "rolebinding", f"{role}-" + "-".join(users), f"--clusterrole={role}",
                 "-n", NS, *subjects)  # fmt: skip


def test_only_approvers_approve_and_the_record_names_them(
    kube_binaries: KubeBinaries, tmp_path: Path, s3_bucket: str, moto_server: str
) -> None:
    with private_cluster(tmp_path, kube_binaries) as (_, kube):
        values, _ = chart.install(kube, s3_bucket, moto_server)
        # bob and alice edit the namespace (the built-in `edit` role, which the chart's editor
        # role is aggregated into); carol and alice hold the chart's approver role.
        bind(kube, "edit", "bob", "alice")
        bind(kube, "sg-stagegate-approver", "alice", "carol")
        kube.kubectl("apply", "-f", "-", user="bob", input=trainingjob("gated"))
        kube.wait_for(lambda: annotate(kube, "bob", "gated", "stagegate.io/approval=approved",
                                       "stagegate.io/approved-by=bob", dry_run=True
                                       ).returncode != 0,
                      timeout=30, message="the policy in force")  # fmt: skip
        wait_phase(kube, "gated", "AwaitingApproval")

        # Patch rights are not enough: bob may edit, not approve.
        assert annotate(kube, "bob", "gated", "note=ok").returncode == 0
        denied(annotate(kube, "bob", "gated", "stagegate.io/approval=approved",
                        "stagegate.io/approved-by=bob"),
               "stagegate approval policy", "bob may not approve or reject",
               "stagegate-approvers")  # fmt: skip
        # An approver cannot write someone else's name.
        denied(annotate(kube, "alice", "gated", "stagegate.io/approval=approved",
                        "stagegate.io/approved-by=carol"),
               "approved-by must be the requesting user, alice, not 'carol'")  # fmt: skip
        assert "stagegate.io/approval" not in (
            kube.get(f"{TJ_PATH}/gated")["metadata"].get("annotations") or {}
        )

        # `stagegate approve` learns the caller's name from the API server.
        out = sg(kube, "alice", "approve", "gated")
        assert out.returncode == 0, out.stderr
        status = wait_phase(kube, "gated", "Succeeded", "Failed")
        assert status["phase"] == "Succeeded", status.get("message")
        assert status["approvedBy"] == "alice" and status["approval"]["via"] == "annotation"
        prefix = status["artifacts"]["model"].removesuffix("model/model.txt")
        card = _read_json(moto_server, prefix + "model/model_card.json")
        assert (card["approvedBy"], card["approvedAt"]) == ("alice", status["approvedAt"])
        events = kube.get(f"/api/v1/namespaces/{NS}/events")["items"]
        approvals = [
            e["message"]
            for e in events
            if e["reason"] == "Approval" and e["involvedObject"]["name"] == "gated"
        ]
        assert approvals == [f"full gate approved by alice (annotation) at "
                             f"{status['approvedAt']}"], approvals  # fmt: skip

        # Four eyes: every new TrainingJob names its creator, who may not decide it.
        kube.helm("upgrade", "sg", str(chart.CHART), "-n", "stagegate", "--wait", *values,
                  "--set", "approval.fourEyes=true", timeout=180)  # fmt: skip
        unnamed = trainingjob("own")
        kube.wait_for(lambda: kube.kubectl("apply", "--dry-run=server", "-f", "-", user="alice",
                                           input=unnamed, check=False).returncode != 0,
                      timeout=30, message="four eyes in force")  # fmt: skip
        denied(kube.kubectl("apply", "-f", "-", user="alice", input=unnamed, check=False),
               "must carry stagegate.io/created-by=alice")  # fmt: skip
        denied(kube.kubectl("apply", "-f", "-", user="alice", check=False,
                            input=trainingjob("own", created_by="carol")),
               "created-by=alice, the creating user")  # fmt: skip
        kube.kubectl("apply", "-f", "-", user="alice", input=trainingjob("own", created_by="alice"))
        denied(annotate(kube, "alice", "own", "stagegate.io/created-by=bob"),
               "created-by cannot change")  # fmt: skip
        wait_phase(kube, "own", "AwaitingApproval")
        denied(sg_error(sg(kube, "alice", "approve", "own")),
               "alice created this TrainingJob and may not approve or reject it")  # fmt: skip
        out = sg(kube, "carol", "reject", "own", "--reason", "AUC within noise")
        assert out.returncode == 0, out.stderr
        status = wait_phase(kube, "own", "Rejected", "Failed", "Succeeded")
        assert status["phase"] == "Rejected"
        assert (status["rejectedBy"], status["rejectionReason"]) == ("carol", "AUC within noise")
        assert status["message"].endswith("by carol: AUC within noise"), status["message"]

        # restrict: false removes the policy; anyone with patch rights decides again.
        kube.helm("upgrade", "sg", str(chart.CHART), "-n", "stagegate", "--wait", *values,
                  "--set", "approval.restrict=false", timeout=180)  # fmt: skip
        policies = kube.kubectl(
            "get", "validatingadmissionpolicies,validatingadmissionpolicybindings", "-o", "name"
        ).stdout
        assert "sg-stagegate-approval" not in policies, policies
        free = trainingjob("free")
        kube.wait_for(
            lambda: kube.kubectl("apply", "--dry-run=server", "-f", "-", user="bob", input=free,
                                 check=False).returncode == 0,
            timeout=30, message="the policy's removal in force",
        )  # fmt: skip
        kube.kubectl("apply", "-f", "-", user="bob", input=free)
        kube.wait_for(lambda: annotate(kube, "bob", "free", "stagegate.io/approval=approved",
                                       "stagegate.io/approved-by=bob").returncode == 0,
                      timeout=30, message="the policy gone")  # fmt: skip


def sg_error(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """A CLI refusal is one line, never a traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return result


def test_the_user_roles_are_aggregated_where_they_belong(
    kube_binaries: KubeBinaries, tmp_path: Path, s3_bucket: str, moto_server: str
) -> None:
    """viewer → view (and so edit, admin); editor → edit, admin; approver → nothing."""
    with private_cluster(tmp_path, kube_binaries) as (_, kube):
        chart.install(kube, s3_bucket, moto_server)
        bind(kube, "view", "bob")
        bind(kube, "edit", "carol")

        def can(user: str, verb: str, what: str = "trainingjobs") -> bool:
            answer = kube.kubectl("auth", "can-i", verb, what, "-n", NS, user=user, check=False)
            return answer.stdout.strip() == "yes"

        kube.wait_for(lambda: can("bob", "list"), timeout=30, message="view aggregated")
        assert not can("bob", "patch") and not can("bob", "create")
        assert can("carol", "create") and can("carol", "patch") and can("carol", "watch")
        assert not can("alice", "get")  # a group alone grants nothing: approving is bound
        approver = kube.get("/apis/rbac.authorization.k8s.io/v1/clusterroles/"
                            "sg-stagegate-approver")  # fmt: skip
        assert not any(k.startswith("rbac.authorization.k8s.io/aggregate")
                       for k in approver["metadata"]["labels"])  # fmt: skip


def _read_json(endpoint: str, uri: str) -> Any:
    import boto3

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")  # fmt: skip
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
