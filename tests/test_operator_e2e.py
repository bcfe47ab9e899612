"""The operator end to end: real kubectl, the Kubernetes emulator, real trainer pods on the
bundled candles, artifacts in moto S3 over HTTP."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from tests.support.kube import KubeBinaries, private_cluster
from tests.support.operator import REPO, Cluster, install_crd, kill_training_fold, poll
from tests.support.runs import OPEN_GATES

pytestmark = [pytest.mark.timeout(420), pytest.mark.slow]


def reasons(cluster: Cluster, name: str) -> list[str]:
    return [e["reason"] for e in cluster.events(name)]


def run_keys(cluster: Cluster, tj: dict[str, Any]) -> dict[str, Any]:
    return cluster.objects(cluster.run_prefix(tj))


def test_sequential_manual_approval(cluster: Cluster) -> None:
    cluster.apply(cluster.manifest("btc"))
    waiting = cluster.wait_phase("btc", "AwaitingApproval")
    status = waiting["status"]
    assert status["progress"] == "2/2"
    assert status["stages"]["quick"]["plan"]["foldCount"] == 2
    assert all("metrics" in f for f in status["stages"]["quick"]["folds"])
    assert {g["gate"] for g in status["stages"]["quick"]["gates"]} >= {"minRocAuc", "minF1"}
    assert not [
        j for j in cluster.jobs("btc") if j["metadata"]["labels"]["stagegate.io/stage"] == "full"
    ]
    table = cluster.kube.kubectl("get", "tj").stdout
    assert "AwaitingApproval" in table and "2/2" in table and "%" in table

    cluster.kube.kubectl(
        "annotate", "tj", "btc", "stagegate.io/approval=approved", "stagegate.io/approved-by=alice"
    )
    done = cluster.wait_phase("btc", "Succeeded", "Failed")
    status = done["status"]
    assert status["phase"] == "Succeeded", status["message"]
    assert status["approval"]["decision"] == "approved"
    assert status["approval"]["by"] == "alice" and status["approval"]["via"] == "annotation"
    assert (status["approvedBy"], status["approvedAt"]) == ("alice", status["approval"]["at"])
    wide = cluster.kube.kubectl("get", "tj", "btc", "-o", "wide").stdout.splitlines()
    assert "APPROVED BY" in wide[0] and " alice " in wide[1], wide
    assert status["progress"] == "4/4"
    assert [c["type"] for c in status["conditions"] if c["status"] == "True"].count("Complete")
    keys = run_keys(cluster, done)
    prefix = cluster.run_prefix(done)
    for rel in (
        "model/model.txt",
        "model/model_card.json",
        "plan.json",
        "quick/summary.json",
        "full/summary.json",
        "full/folds/04/metrics.json",
        "data/ohlcv.parquet",
    ):
        assert prefix + rel in keys, rel
    assert status["artifacts"]["model"] == f"s3://{cluster.bucket}/{prefix}model/model.txt"
    card = cluster.read_json(prefix + "model/model_card.json")
    assert (card["approvedBy"], card["approvedAt"]) == ("alice", status["approvedAt"])
    seen = reasons(cluster, "btc")
    for reason in ("Quick", "AwaitingApproval", "Full", "Approval", "Succeeded", "StageSummarised"):
        assert reason in seen, (reason, seen)
    described = cluster.kube.kubectl("describe", "tj", "btc").stdout
    assert "AwaitingApproval" in described and "StageSummarised" in described
    logs = cluster.kube.kubectl(
        "logs", "-l", "stagegate.io/stage=quick,stagegate.io/step=fold", "--tail=-1"
    ).stdout
    assert "Fold 1/2: accuracy=" in logs and "Fold 2/2: accuracy=" in logs
    # Each fold trained once: one Job and one pod per fold.
    folds = [
        j for j in cluster.jobs("btc") if j["metadata"]["labels"]["stagegate.io/step"] == "fold"
    ]
    assert len(folds) == 6
    assert all(j["status"].get("succeeded") == 1 and not j["status"].get("failed") for j in folds)
    metrics = cluster.metrics()
    assert 'stagegate_trainingjobs{phase="Succeeded"} 1.0' in metrics
    assert "stagegate_stage_metric{" in metrics and "stagegate_gate_passed{" in metrics
    assert 'stagegate_folds_total{result="succeeded",stage="full"} 4.0' in metrics


def test_auto_policy_passes_and_rejects(cluster: Cluster) -> None:
    # null switches a trading gate off, and the summary Job must see the null, not the
    # default. A client-side kubectl apply (since 1.31) drops nulls; server-side keeps them.
    off = {"minTrades": None, "minExpectedReturn": None}
    open_gates = cluster.manifest("open", approval={"policy": "auto"}, gates={**OPEN_GATES, **off})
    cluster.kube.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(open_gates))
    cluster.apply(
        cluster.manifest("strict", approval={"policy": "auto"}, gates={"minRocAuc": 0.99})
    )
    passed = cluster.wait_phase("open", "Succeeded", "Failed", "Rejected")["status"]
    assert passed["phase"] == "Succeeded", passed["message"]
    assert (passed["approval"]["by"], passed["approval"]["via"]) == ("gates", "policy-auto")
    judged = {g["gate"] for g in passed["stages"]["quick"]["gates"]}
    assert "minF1" in judged and not judged & off.keys()
    rejected = cluster.wait_phase("strict", "Rejected", "Failed", "Succeeded")["status"]
    assert rejected["phase"] == "Rejected"
    assert "failed its gates" in rejected["message"]
    assert "full" not in {
        j["metadata"]["labels"]["stagegate.io/stage"]
        for j in cluster.jobs("strict")
        if j["metadata"]["labels"]["stagegate.io/step"] == "fold"
    }
    assert "Rejected" in reasons(cluster, "strict")
    assert any(e["type"] == "Warning" for e in cluster.events("strict"))


def test_mode_quick_and_manual_rejection(cluster: Cluster) -> None:
    cluster.apply(cluster.manifest("quick-only", mode="quick"))
    cluster.apply(cluster.manifest("no"))
    quick = cluster.wait_phase("quick-only", "Succeeded", "Failed")
    assert quick["status"]["phase"] == "Succeeded"
    assert "full" not in quick["status"]["stages"]
    keys = run_keys(cluster, quick)
    assert any(k.endswith("quick/summary.json") for k in keys)
    assert not any("/model/" in k for k in keys)

    cluster.wait_phase("no", "AwaitingApproval")
    cluster.kube.kubectl("annotate", "tj", "no", "stagegate.io/approval=rejected")
    rejected = cluster.wait_phase("no", "Rejected")["status"]
    assert rejected["message"] == "rejected at the quick gate"
    assert rejected["approval"]["decision"] == "rejected"


def test_delete_mid_run_leaves_nothing(cluster: Cluster) -> None:
    cluster.apply(
        cluster.manifest(
            "gone", model={"maxRounds": 400, "earlyStoppingRounds": 400, "learningRate": 0.01}
        )
    )
    poll(
        lambda: any(
            j["metadata"]["labels"]["stagegate.io/step"] == "fold" for j in cluster.jobs("gone")
        ),
        timeout=60,
    )
    cluster.kube.kubectl("delete", "tj", "gone", "--timeout=60s")
    poll(lambda: not cluster.jobs("gone") and not cluster.pods("gone"), timeout=60)
    cms = cluster.kube.get(f"/api/v1/namespaces/{cluster.ns}/configmaps")["items"]
    assert not [c for c in cms if c["metadata"]["name"] == "gone-spec"]
    time.sleep(1)
    assert not pod_processes("gone-")


def pod_processes(prefix: str) -> list[psutil.Process]:
    """Live processes of pods whose names start with `prefix` (the kubelet sets HOSTNAME)."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("HOSTNAME", "").startswith(prefix) and p.status() != "zombie":
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_suspend_and_resume(cluster: Cluster) -> None:
    cluster.apply(
        cluster.manifest("pause", suspend=True, approval={"policy": "auto"}, gates=OPEN_GATES)
    )
    time.sleep(3)
    assert cluster.tj("pause")["status"]["phase"] == "Pending"
    assert not cluster.jobs("pause")
    cluster.kube.patch(f"{cluster.tj_path}/pause", {"spec": {"suspend": False}})
    poll(
        lambda: any(
            j["metadata"]["labels"]["stagegate.io/step"] == "fold" for j in cluster.jobs("pause")
        ),
        timeout=60,
    )
    cluster.kube.patch(f"{cluster.tj_path}/pause", {"spec": {"suspend": True}})
    poll(lambda: "suspended" in cluster.tj("pause")["status"].get("message", ""), timeout=30)
    poll(
        lambda: all(j.get("status", {}).get("succeeded") for j in cluster.jobs("pause")), timeout=30
    )
    cluster.kube.patch(f"{cluster.tj_path}/pause", {"spec": {"suspend": False}})
    status = cluster.wait_phase("pause", "Succeeded", "Failed")["status"]
    assert status["phase"] == "Succeeded", status["message"]
    # suspend steers the run: with the API server's and the operator's defaults in the
    # stored spec, nothing else reads as changed.
    assert "SpecChangeRefused" not in reasons(cluster, "pause")


def test_operator_killed_mid_stage_and_restarted(cluster: Cluster) -> None:
    cluster.apply(cluster.manifest("crash", approval={"policy": "auto"}, gates=OPEN_GATES))
    poll(
        lambda: any(
            j["metadata"]["labels"]["stagegate.io/stage"] == "full" for j in cluster.jobs("crash")
        ),
        timeout=120,
    )
    cluster.stop_operator(signal.SIGKILL)
    time.sleep(3)  # Jobs go on without the operator
    cluster.start_operator()
    status = cluster.wait_phase("crash", "Succeeded", "Failed")["status"]
    assert status["phase"] == "Succeeded", status["message"]
    folds = [
        j for j in cluster.jobs("crash") if j["metadata"]["labels"]["stagegate.io/step"] == "fold"
    ]
    assert len(folds) == 6 and all(j["status"].get("succeeded") == 1 for j in folds)
    fold_pods = [
        p for p in cluster.pods("crash") if p["metadata"]["labels"]["stagegate.io/step"] == "fold"
    ]
    assert len(fold_pods) == 6  # no fold trained twice


def test_a_killed_fold_pod_is_retried(cluster: Cluster) -> None:
    cluster.apply(
        cluster.manifest(
            "retry",
            mode="quick",
            model={"maxRounds": 400, "earlyStoppingRounds": 400, "learningRate": 0.01},
        )
    )

    kill_training_fold("retry-quick-fold-", timeout=90)
    status = cluster.wait_phase("retry", "Succeeded", "Failed")["status"]
    assert status["phase"] == "Succeeded", status["message"]
    jobs = [
        j for j in cluster.jobs("retry") if j["metadata"]["labels"]["stagegate.io/step"] == "fold"
    ]
    assert sum(j["status"].get("failed", 0) for j in jobs) == 1
    assert 'stagegate_folds_total{result="failed",stage="quick"} 1.0' in cluster.metrics()


def test_which_kubectl_commands_send_a_null(cluster: Cluster) -> None:
    """What the README tells a user who switches a gate off with null: a client-side apply
    drops it (the default, 100, applies); create and a server-side apply keep it."""
    kept = {}
    for name, how in (("by-create", ["create"]), ("by-apply", ["apply"]),
                      ("by-ssa", ["apply", "--server-side"])):  # fmt: skip
        manifest = cluster.manifest(name, suspend=True, gates={"minTrades": None})
        cluster.kube.kubectl(*how, "-f", "-", input=yaml.safe_dump(manifest))
        kept[name] = cluster.tj(name)["spec"]["gates"]["minTrades"]
        cluster.kube.kubectl("delete", "tj", name, "--wait=false")
    assert kept == {"by-create": None, "by-apply": 100, "by-ssa": None}


def test_schema_violations_are_refused_by_kubectl(cluster: Cluster) -> None:
    bad = cluster.manifest("bad", stages={"quick": {"testPeriodDays": 0}})
    out = cluster.kube.kubectl(
        "apply", "-f", "-", input=__import__("yaml").safe_dump(bad), check=False
    )
    assert out.returncode != 0
    assert "testPeriodDays" in out.stderr
    typo = cluster.manifest("typo")
    typo["spec"]["sybmol"] = "BTC/USDT"
    out = cluster.kube.kubectl(
        "apply", "-f", "-", input=__import__("yaml").safe_dump(typo), check=False
    )
    assert out.returncode != 0 and "sybmol" in out.stderr
    assert cluster.kube.request("GET", f"{cluster.tj_path}/bad")[0] == 404


def test_unreachable_s3_fails_with_the_reason(cluster: Cluster) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "dead-s3", "namespace": cluster.ns},
        "stringData": {
            "AWS_ACCESS_KEY_ID": "dead-key",
            "AWS_SECRET_ACCESS_KEY": "dead-secret-value",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        },
    }
    cluster.kube.kubectl("apply", "-f", "-", input=__import__("yaml").safe_dump(secret))
    manifest = cluster.manifest("nos3", maxRetries=1)
    manifest["spec"]["artifacts"] = {"uri": "s3://nowhere/runs", "secretRef": {"name": "dead-s3"}}
    cluster.apply(manifest)
    status = cluster.wait_phase("nos3", "Failed", "Succeeded")["status"]
    assert status["phase"] == "Failed"
    assert "prepare failed after 2 attempts" in status["message"]
    assert "127.0.0.1:9" in status["message"]
    assert "Failed" in reasons(cluster, "nos3")
    assert "dead-secret-value" not in status["message"]  # the secret never reaches the status


def test_a_spec_change_after_start_is_refused(cluster: Cluster) -> None:
    cluster.apply(cluster.manifest("frozen"))
    waiting = cluster.wait_phase("frozen", "AwaitingApproval")["status"]
    assert waiting["runSpec"]["model"]["seed"] == 42
    min_f1 = waiting["runSpec"]["gates"]["minF1"]
    # The seed changes results (the fingerprint); the gates only judge them, but the summary Job
    # judges by the frozen spec, so a change there is refused all the same.
    cluster.kube.patch(
        f"{cluster.tj_path}/frozen", {"spec": {"model": {"seed": 7}, "gates": {"minF1": 0.01}}}
    )
    poll(lambda: "SpecChangeRefused" in reasons(cluster, "frozen"), timeout=30)
    warning = next(e for e in cluster.events("frozen") if e["reason"] == "SpecChangeRefused")
    assert warning["type"] == "Warning"
    assert warning["message"].startswith("spec.gates, spec.model changed after the run started")
    cluster.kube.kubectl("annotate", "tj", "frozen", "stagegate.io/approval=approved")
    done = cluster.wait_phase("frozen", "Succeeded", "Failed")["status"]
    assert done["phase"] == "Succeeded", done["message"]
    assert done["runSpec"]["model"]["seed"] == 42
    assert done["runSpec"]["gates"]["minF1"] == min_f1 != 0.01
    assert done["specFingerprint"] == waiting["specFingerprint"]
    tj = cluster.tj("frozen")
    card = cluster.read_json(cluster.run_prefix(tj) + "model/model_card.json")
    assert card["spec"]["model"]["seed"] == 42  # the full stage ran the spec it started with


def test_example_manifest_without_a_shared_store_fails_at_once(cluster: Cluster) -> None:
    """The example as a new user applies it, to an operator with no default artifacts store:
    its relative folder could not be shared by the pods, so the run ends before any pod."""
    example = yaml.safe_load((REPO / "examples" / "btc-usdt-m15.yaml").read_text())
    example["metadata"]["namespace"] = cluster.ns
    cluster.apply(example)
    name = example["metadata"]["name"]
    status = cluster.wait_phase(name, "Failed", "Quick", timeout=60)["status"]
    assert status["phase"] == "Failed"
    assert "spec.artifacts.uri" in status["message"] and "artifacts.uri" in status["message"]
    assert not cluster.jobs(name)


def test_a_pod_no_node_can_hold_is_said_and_ends_the_run(cluster: Cluster) -> None:
    """The real scheduler cannot place a step pod asking for 100Ti: the TrainingJob says so
    while it waits (condition, message, Event naming the scheduler's reason), then ends Failed
    after spec.pendingTimeoutSeconds. `kubectl get tj -o wide -w` shows it as it happens."""
    kube = cluster.kube
    watch = kube.popen(str(kube.binaries.kubectl), "get", "tj", "-o", "wide", "-w",
                       "-n", cluster.ns, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        huge = {"requests": {"cpu": "1", "memory": "100Ti"}}
        cluster.apply(cluster.manifest("huge", resources={"quick": huge, "full": huge},
                                       pendingTimeoutSeconds=40))  # fmt: skip

        def said() -> dict[str, Any] | None:
            status = cluster.tj("huge").get("status") or {}
            kinds = {c["type"]: c for c in status.get("conditions", [])}
            return status if "PodsUnschedulable" in kinds else None

        waiting = poll(said, timeout=90)
        assert waiting["phase"] not in ("Failed", "Succeeded"), waiting
        assert "Insufficient memory" in waiting["message"], waiting["message"]
        assert "prepare: pod huge-prepare-" in waiting["message"], waiting["message"]
        warned = [e for e in cluster.events("huge") if e["reason"] == "Unschedulable"]
        assert len(warned) == 1 and "Insufficient memory" in warned[0]["message"], warned
        assert warned[0]["type"] == "Warning"

        status = cluster.wait_phase("huge", "Failed", "Succeeded", timeout=90)["status"]
        assert status["phase"] == "Failed"
        assert "pendingTimeoutSeconds=40" in status["message"], status["message"]
        assert "Insufficient memory" in status["message"], status["message"]
        poll(
            lambda: (
                not [p for p in cluster.pods("huge") if not p["metadata"].get("deletionTimestamp")]
            ),
            timeout=60,
        )
    finally:
        watch.terminate()
        shown = watch.communicate(timeout=10)[0]
    rows = [line.split() for line in shown.splitlines() if line.startswith("huge ")]
    header = shown.splitlines()[0].split()
    assert header[:3] == ["NAME", "SYMBOL", "TIMEFRAME"] and header[-1] == "MESSAGE", header
    assert rows and rows[-1][3] == "Failed", shown
    assert any("cannot be scheduled" in line for line in shown.splitlines()), shown


def test_the_example_runs_on_a_shared_volume_claim(cluster: Cluster) -> None:
    """The real way to share a folder between step pods: a ReadWriteMany PersistentVolumeClaim
    that the controller manager binds to a PersistentVolume, mounted by every step pod at the
    file:// URI's path. The example manifest as a user would amend it (its quick stage only,
    to keep the test short)."""
    ns = cluster.ns
    shared = Path(tempfile.mkdtemp(prefix="stagegate-pv-", dir="/var/tmp"))
    shared.chmod(0o777)
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"runs-{ns}"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": str(shared), "type": "Directory"},
            "claimRef": {"namespace": ns, "name": "runs-rwx"},
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "runs-rwx", "namespace": ns},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": f"runs-{ns}",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    try:
        for obj in (volume, claim):
            cluster.kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(obj))
        cluster.kube.kubectl(
            "wait",
            "--for=jsonpath={.status.phase}=Bound",
            "pvc/runs-rwx",
            "-n",
            ns,
            "--timeout=60s",
        )
        example = yaml.safe_load((REPO / "examples" / "btc-usdt-m15.yaml").read_text())
        example["metadata"]["namespace"] = ns
        example["spec"]["mode"] = "quick"
        example["spec"]["artifacts"] = {
            "uri": "file:///mnt/stagegate/runs",
            "volumeClaim": "runs-rwx",
        }
        cluster.apply(example)
        status = cluster.wait_phase("btc-usdt-m15", "Succeeded", "Failed", timeout=400)["status"]
        assert status["phase"] == "Succeeded", status.get("message")
        uid = cluster.tj("btc-usdt-m15")["metadata"]["uid"]
        run = shared / ns / "btc-usdt-m15" / uid  # the claim is mounted at the URI path
        folds = status["stages"]["quick"]["plan"]["foldCount"]
        assert sorted(p.parent.name for p in run.glob("quick/folds/*/metrics.json")) == [
            f"{n:02d}" for n in range(1, folds + 1)
        ]
        assert (run / "quick" / "summary.json").is_file() and (run / "plan.json").is_file()
        assert status["artifacts"]["run"] == f"file:///mnt/stagegate/runs/{ns}/btc-usdt-m15/{uid}"
    finally:
        cluster.kube.kubectl(
            "delete", "tj", "btc-usdt-m15", "-n", ns, "--ignore-not-found", "--wait=false"
        )
        cluster.kube.kubectl("delete", "pvc", "runs-rwx", "-n", ns, "--wait=false")
        cluster.kube.kubectl("delete", "pv", f"runs-{ns}", "--wait=false")
        shutil.rmtree(shared, ignore_errors=True)


def test_api_server_and_etcd_restarted_mid_run(
    tmp_path: Path, kube_binaries: KubeBinaries, moto_server: str, s3_bucket: str
) -> None:
    """Real faults on a cluster of the test's own: the API server and etcd restart while the
    full stage runs; the operator's watches recover and no fold is trained twice."""
    with private_cluster(tmp_path, kube_binaries) as (plane, kube):
        kube.namespace = "faults"
        kube.create_namespace("faults")
        install_crd(kube)
        kube.kubectl(
            "create",
            "secret",
            "generic",
            "s3-credentials",
            "-n",
            "faults",
            "--from-literal=AWS_ACCESS_KEY_ID=testing",
            "--from-literal=AWS_SECRET_ACCESS_KEY=testing",
            f"--from-literal=AWS_ENDPOINT_URL={moto_server}",
            "--from-literal=AWS_DEFAULT_REGION=us-east-1",
        )
        logs = tmp_path / "operator-logs"
        logs.mkdir()
        cluster = Cluster(kube, s3_bucket.removeprefix("s3://"), moto_server, logs)
        cluster.start_operator()
        try:
            cluster.apply(
                cluster.manifest("restart", approval={"policy": "auto"}, gates=OPEN_GATES)
            )
            poll(
                lambda: any(
                    j["metadata"]["labels"]["stagegate.io/stage"] == "full"
                    for j in cluster.jobs("restart")
                ),
                timeout=120,
            )
            plane.plane.restart("kube-apiserver")
            plane.plane.restart("etcd")
            status = cluster.wait_phase("restart", "Succeeded", "Failed")["status"]
            assert status["phase"] == "Succeeded", status["message"]
            fold_pods = [
                p
                for p in cluster.pods("restart")
                if p["metadata"]["labels"]["stagegate.io/step"] == "fold"
            ]
            assert len(fold_pods) == 6  # each fold trained once
        finally:
            cluster.stop_operator()
