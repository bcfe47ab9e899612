"""The cluster commands (`stagegate submit|approve|reject|status|watch|logs|cancel`) run as the
real console script against the real control plane (tests/cluster) through a kubeconfig, each
test in a namespace of its own.

Most tests need no operator: they write TrainingJob statuses through the status subresource to
simulate a run. One test drives the real operator end to end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.controlplane import write_kubeconfig
from tests.support.kube import KubeApi, KubeBinaries, private_cluster
from tests.support.operator import Cluster, install_crd
from tests.support.procs import free_port
from tests.support.runs import BIN, stagegate

REPO = Path(__file__).resolve().parents[1]


def tj_path(kube: KubeApi) -> str:
    return f"/apis/stagegate.io/v1alpha1/namespaces/{kube.namespace}/trainingjobs"


def pods_path(kube: KubeApi) -> str:
    return f"/api/v1/namespaces/{kube.namespace}/pods"


# ------------------------------------------------------------------ helpers
def sg(kube: KubeApi | None, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`stagegate ARGS --kubeconfig <the test's namespace>` (no --kubeconfig when kube is None)."""
    extra = ("--kubeconfig", str(kube.kubeconfig)) if kube else ()
    env = {"HOME": str(kube.home)} if kube else None
    return stagegate(*args, *extra, cwd=REPO, timeout=timeout, env=env)


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def kube(kube_api: KubeApi) -> KubeApi:
    install_crd(kube_api)
    return kube_api


def create_tj(kube: KubeApi, name: str, **spec: Any) -> None:
    body = {
        "apiVersion": "stagegate.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {"symbol": "BTC/USDT", "timeframe": "M15", **spec},
    }
    kube.create(tj_path(kube), body)


def model(acc: float, recall: float = 0.45, auc: float = 0.652, f1: float = 0.47) -> dict:
    return {
        "accuracy": acc,
        "precision": 0.5,
        "recall": recall,
        "f1": f1,
        "rocAuc": auc,
        "brier": 0.24,
        "hitRateTp1": 0.51,
        "positiveRate": 0.3,
        "predictedPositiveRate": 0.35,
    }


def fold(n: int, done: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "fold": n,
        "state": "Succeeded" if done else "Running",
        "attempts": 1 if done else 0,
        "train": {"start": "2024-01-01T00:00:00", "end": "2024-06-29T00:00:00", "rows": 17000},
        "test": {"start": f"2024-0{6 + n}-01T00:00:00", "end": "2024-08-30T00:00:00", "rows": 5000},
    }
    if done:
        entry["metrics"] = model(0.6 + n / 40)
    return entry


def stats(mean: float) -> dict[str, Any]:
    return {"mean": mean, "std": 0.01}


def summary(passed: bool) -> dict[str, Any]:
    means = model(0.64)
    baseline = {m: stats(v / 2) for m, v in means.items()}
    return {
        "summary": {m: stats(v) for m, v in means.items()},
        "baselines": {b: baseline for b in ("majority", "alwaysPositive", "volatilityTime")},
        "gates": [
            {"gate": "minAccuracy", "metric": "accuracy", "value": 0.64, "threshold": 0.6,
             "passed": True},
            {"gate": "minRocAuc", "metric": "rocAuc", "value": 0.652, "threshold": 0.61,
             "passed": passed},
        ],
        "passed": passed,
    }  # fmt: skip


def quick_status(phase: str, done: int, *, total: int = 2, summarised: bool = False,
                 message: str = "") -> dict[str, Any]:  # fmt: skip
    stage: dict[str, Any] = {
        "plan": {"foldCount": total, "trainWindow": "fixed", "purgeBars": 49},
        "folds": [fold(n, n <= done) for n in range(1, total + 1)],
    }
    status: dict[str, Any] = {
        "phase": phase,
        "stage": "quick",
        "progress": f"{done}/{total}",
        "message": message or f"quick stage: {done}/{total} folds done",
        "stages": {"quick": stage},
        "elapsedSeconds": 95.0,
    }
    if summarised:
        stage.update(summary(passed=True))
        status["summary"] = {"stage": "quick", "accuracy": "63.8%", "recall": "45.0%",
                             "rocAuc": "65.2%", "expectedR": "+0.08R (≥-0.02)"}  # fmt: skip
    return status


def set_status(kube: KubeApi, name: str, status: dict[str, Any]) -> None:
    kube.patch(f"{tj_path(kube)}/{name}/status", {"status": status})


def annotations_of(kube: KubeApi, name: str) -> dict[str, str]:
    return kube.get(f"{tj_path(kube)}/{name}")["metadata"].get("annotations", {})


# ------------------------------------------------------------------ no cluster needed
def test_submit_dry_run_builds_and_validates_offline(tmp_path: Path) -> None:
    out = sg(None, "submit", "btc/usdt", "M15", "--mode", "quick", "--test-period-days", "30",
             "--min-train-days", "90", "--fixed", "--approval", "auto", "--parallelism", "3",
             "--artifacts", "s3://bucket/runs", "--artifacts-secret", "s3", "--queue", "q",
             "--dry-run")  # fmt: skip
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load(out.stdout)
    assert doc["metadata"]["name"] == "btc-usdt-m15"
    spec = doc["spec"]
    assert spec["symbol"] == "BTC/USDT" and spec["mode"] == "quick"
    # Window options apply only to the stages the mode runs.
    assert spec["stages"] == {
        "quick": {"testPeriodDays": 30, "minTrainDays": 90, "trainWindow": "fixed"}
    }
    assert spec["approval"] == {"policy": "auto"} and spec["queueName"] == "q"
    assert spec["artifacts"] == {"uri": "s3://bucket/runs", "secretRef": {"name": "s3"}}

    seq = yaml.safe_load(sg(None, "submit", "ETH/USDT", "H1", "--expanding", "--test-period-days",
                            "21", "--unique", "--dry-run").stdout)  # fmt: skip
    assert set(seq["spec"]["stages"]) == {"quick", "full"}
    assert seq["metadata"]["name"].startswith("eth-usdt-h1-20")

    one_line_error(
        sg(None, "submit", "BTC/USDT", "M15", "--test-period-days", "0", "--dry-run"),
        "spec.stages.quick.testPeriodDays: must be greater than 0",
    )
    one_line_error(sg(None, "submit", "BTC/USDT", "M7", "--dry-run"), "spec.timeframe")
    manifest = tmp_path / "other.yaml"
    manifest.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                                        "metadata": {"name": "x"}, "spec": {}}))  # fmt: skip
    one_line_error(
        sg(None, "submit", "-f", str(manifest), "--dry-run"), "kind: must be TrainingJob"
    )


def test_connection_errors_are_one_line(tmp_path: Path) -> None:
    one_line_error(sg(None, "status", "--kubeconfig", str(tmp_path / "nope")), "does not exist")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    one_line_error(sg(None, "status", "--kubeconfig", str(empty)), "cannot load kubeconfig")


# ------------------------------------------------------------------ against the real cluster
def test_dead_server_fails_fast(kube_api: KubeApi, tmp_path: Path) -> None:
    # A kubeconfig that is right in every way (the shared cluster's CA, a real user) but whose
    # server is a free port: nothing listens there.
    dead = write_kubeconfig(
        tmp_path / "dead.yaml",
        f"https://127.0.0.1:{free_port()}",
        kube_api.ca,
        "admin",
        kube_api.namespace,
    )
    start = time.monotonic()
    one_line_error(sg(None, "status", "x", "--kubeconfig", str(dead)), "cannot reach")
    assert time.monotonic() - start < 20  # fails fast, no long retry loop


def test_status_says_when_the_crd_is_missing(tmp_path: Path, kube_binaries: KubeBinaries) -> None:
    # The shared cluster has the CRD: ask a cluster of this test's own.
    with private_cluster(tmp_path, kube_binaries) as (_, kube):
        one_line_error(sg(kube, "status", "x"), "CRD", "not installed")


def test_submit_creates_and_reports_conflicts(kube: KubeApi, tmp_path: Path) -> None:
    out = sg(kube, "submit", "BTC/USDT", "M15", "--mode", "full", "--test-period-days", "30")
    assert out.returncode == 0, out.stderr
    assert "trainingjobs.stagegate.io/btc-usdt-m15 created" in out.stdout
    stored = kube.get(f"{tj_path(kube)}/btc-usdt-m15")
    assert stored["spec"]["mode"] == "full"
    assert stored["spec"]["stages"]["full"]["testPeriodDays"] == 30
    one_line_error(sg(kube, "submit", "BTC/USDT", "M15"), "btc-usdt-m15 already exists")
    # A null switches a gate off; submit sends it (the README's advice where kubectl would not).
    nulls = tmp_path / "nulls.yaml"
    nulls.write_text(yaml.safe_dump({
        "apiVersion": "stagegate.io/v1alpha1", "kind": "TrainingJob",
        "metadata": {"name": "no-trade-gate"},
        "spec": {"symbol": "BTC/USDT", "gates": {"minTrades": None}},
    }))  # fmt: skip
    assert sg(kube, "submit", "-f", str(nulls)).returncode == 0
    assert kube.get(f"{tj_path(kube)}/no-trade-gate")["spec"]["gates"]["minTrades"] is None
    one_line_error(
        sg(kube, "status", "nope"), f"trainingjob nope not found in namespace {kube.namespace}"
    )
    doc = yaml.safe_load((REPO / "examples" / "btc-usdt-m15.yaml").read_text())
    doc["metadata"]["namespace"] = "ml"
    placed = tmp_path / "placed.yaml"
    placed.write_text(yaml.safe_dump(doc))
    one_line_error(sg(kube, "submit", "-f", str(placed), "-n", "team-a"),
                   "namespace 'ml' does not match --namespace 'team-a'")  # fmt: skip


def test_status_list_detail_and_raw(kube: KubeApi) -> None:
    create_tj(kube, "btc")
    create_tj(kube, "eth", symbol="ETH/USDT", mode="quick")
    set_status(kube, "btc", quick_status("AwaitingApproval", 2, summarised=True))
    listing = sg(kube, "status")
    assert listing.returncode == 0, listing.stderr
    header, *rows = listing.stdout.splitlines()
    assert header.split() == ["NAME", "SYMBOL", "TIMEFRAME", "MODE", "PHASE", "PROGRESS",
                              "ACCURACY", "RECALL", "AUC", "EXP", "R", "AGE"]  # fmt: skip
    btc = next(r for r in rows if r.startswith("btc")).split()
    assert btc[:11] == ["btc", "BTC/USDT", "M15", "sequential", "AwaitingApproval", "2/2",
                        "63.8%", "45.0%", "65.2%", "+0.08R", "(≥-0.02)"]  # fmt: skip
    assert next(r for r in rows if r.startswith("eth")).split()[4] == "Pending"

    detail = sg(kube, "status", "btc")
    assert detail.returncode == 0, detail.stderr
    text = detail.stdout
    assert "AwaitingApproval" in text and "stagegate approve btc" in text
    assert "quick stage folds" in text and "2024-07-01 → 2024-08-30" in text
    assert "62.5%" in text and "65.0%" in text  # fold 1 and 2 accuracy
    assert "Average: accuracy=64.0%" in text
    assert "model (mean ± std)" in text and "always +" in text  # summary with baselines
    assert "quick stage gates" in text and "minRocAuc" in text and "all gates pass" in text

    raw = sg(kube, "status", "btc", "-o", "json")
    assert json.loads(raw.stdout)["stages"]["quick"]["passed"] is True
    assert yaml.safe_load(sg(kube, "status", "-o", "yaml").stdout)[0]["name"] == "btc"


def test_approve_reject_cancel(kube: KubeApi) -> None:
    for name in ("a", "r", "c", "done"):
        create_tj(kube, name)
    set_status(kube, "a", quick_status("AwaitingApproval", 2, summarised=True))
    # The approver is who the API server says the caller is (SelfSubjectReview).
    kube.kubectl("create", "role", "decide", "--verb=get,patch", "--resource=trainingjobs")
    kube.kubectl("create", "rolebinding", "alice-decides", "--role=decide", "--user=alice")
    alice = str(kube.kubeconfig_for("alice"))
    out = stagegate("approve", "a", "--kubeconfig", alice, cwd=REPO, env={"HOME": str(kube.home)})
    assert out.returncode == 0 and "approved by alice" in out.stdout, out.stderr
    assert annotations_of(kube, "a")["stagegate.io/approval"] == "approved"
    assert annotations_of(kube, "a")["stagegate.io/approved-by"] == "alice"

    out = sg(kube, "reject", "r", "--reason", "AUC too close to the baseline")
    assert out.returncode == 0, out.stderr
    assert "decision applies at its gate" in out.stdout  # still Pending: applied later
    ann = annotations_of(kube, "r")
    assert ann["stagegate.io/approval"] == "rejected"
    assert ann["stagegate.io/rejection-reason"] == "AUC too close to the baseline"
    assert ann["stagegate.io/approved-by"] == "admin"  # the test kubeconfig's user

    assert sg(kube, "cancel", "c").returncode == 0
    assert annotations_of(kube, "c")["stagegate.io/cancel"] == "true"

    set_status(kube, "done", {"phase": "Succeeded", "message": "final model trained"})
    one_line_error(sg(kube, "approve", "done"), "already ended (Succeeded)")
    one_line_error(sg(kube, "cancel", "done"), "already ended")
    set_status(kube, "a", {"approval": {"decision": "approved", "by": "alice"}})
    one_line_error(sg(kube, "reject", "a"), "already approved by alice")
    one_line_error(sg(kube, "approve", "ghost"), "trainingjob ghost not found")


def start_watch(kube: KubeApi, name: str, *args: str) -> subprocess.Popen[str]:
    argv = [str(BIN / "stagegate"), "watch", name, "--interval", "0.1",
            "--kubeconfig", str(kube.kubeconfig), *args]  # fmt: skip
    return kube.popen(*argv)


def test_watch_prints_folds_until_the_gate_and_maps_phases(kube: KubeApi) -> None:
    create_tj(kube, "w")
    set_status(kube, "w", quick_status("Quick", 0))
    proc = start_watch(kube, "w")
    # The watch has started once it prints the phase (a fixed sleep is too short under load).
    first = proc.stdout.readline()  # type: ignore[union-attr]
    set_status(kube, "w", quick_status("Quick", 1))
    time.sleep(0.5)
    set_status(kube, "w", quick_status("AwaitingApproval", 2, summarised=True))
    rest, err = proc.communicate(timeout=30)
    out = first + rest
    assert proc.returncode == 0, err
    lines = out.splitlines()
    fold_lines = [ln for ln in lines if ln.startswith("Fold ")]
    assert fold_lines[0].startswith("Fold 1/2: accuracy=62.5% recall=45.0% roc_auc=65.2% f1=0.47")
    assert fold_lines[1].startswith("Fold 2/2: accuracy=65.0%")
    assert len(fold_lines) == 2  # each fold once
    assert any("Quick:" in ln for ln in lines) and any("AwaitingApproval:" in ln for ln in lines)
    assert "Average: accuracy=64.0%" in out and "quick stage gates" in out
    assert "stagegate approve w" in out

    # Approved but the operator has not acted yet: the watch goes on past the old gate.
    approved = {"metadata": {"annotations": {"stagegate.io/approval": "approved"}}}
    kube.patch(f"{tj_path(kube)}/w", approved)
    proc = start_watch(kube, "w")
    first = proc.stdout.readline()  # type: ignore[union-attr]
    time.sleep(0.5)
    assert proc.poll() is None
    set_status(kube, "w", {"phase": "Failed", "message": "final model failed"})
    rest, _ = proc.communicate(timeout=30)
    out = first + rest
    assert proc.returncode == 1 and "Failed: final model failed" in out

    for phase, code in (("Rejected", 4), ("Cancelled", 130), ("Succeeded", 0)):
        set_status(kube, "w", {"phase": phase})
        assert sg(kube, "watch", "w").returncode == code, phase
    create_tj(kube, "slow")
    timed = sg(kube, "watch", "slow", "--timeout", "0.5", "--interval", "0.1")
    assert timed.returncode == 124 and "still Pending after 0.5s" in timed.stderr


def make_pod(kube: KubeApi, name: str, labels: dict[str, str], script: str) -> None:
    kube.create(pods_path(kube), {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"restartPolicy": "Never", "containers": [
            {"name": "trainer", "image": "trainer", "command": [sys.executable, "-c", script],
             "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                 "capabilities": {"drop": ["ALL"]},
                                 "seccompProfile": {"type": "RuntimeDefault"}}}
        ]},
    })  # fmt: skip


def test_logs_by_label_and_follow(kube: KubeApi) -> None:
    create_tj(kube, "lg")
    set_status(kube, "lg", quick_status("Quick", 0))
    for n in (1, 2):
        labels = {"stagegate.io/trainingjob": "lg", "stagegate.io/stage": "quick",
                  "stagegate.io/step": "fold", "stagegate.io/fold": str(n)}  # fmt: skip
        make_pod(kube, f"lg-quick-fold-0{n}", labels, f"print('Fold {n}/2: accuracy=6{n}.0%')")
    kube.wait_for(lambda: all(p["status"].get("phase") == "Succeeded"
                              for p in kube.get(pods_path(kube))["items"]), timeout=20)  # fmt: skip
    out = sg(kube, "logs", "lg")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "[lg-quick-fold-01] Fold 1/2: accuracy=61.0%",
        "[lg-quick-fold-02] Fold 2/2: accuracy=62.0%",
    ]
    assert sg(kube, "logs", "lg", "--fold", "2").stdout.splitlines() == [
        "[lg-quick-fold-02] Fold 2/2: accuracy=62.0%"
    ]
    assert "no trainer pods" in sg(kube, "logs", "lg", "--stage", "full").stderr

    # --follow streams a pod that is still running and ends when the run reaches its gate.
    labels = {"stagegate.io/trainingjob": "lg", "stagegate.io/stage": "quick",
              "stagegate.io/step": "summary"}  # fmt: skip
    make_pod(
        kube,
        "lg-quick-summary",
        labels,
        "import time\nfor i in range(3):\n    print('line', i, flush=True); time.sleep(0.3)",
    )
    follow = kube.popen(str(BIN / "stagegate"), "logs", "lg", "--step", "summary", "-f",
                        "--kubeconfig", str(kube.kubeconfig))  # fmt: skip
    time.sleep(1.0)
    set_status(kube, "lg", quick_status("AwaitingApproval", 2, summarised=True))
    out_text, err = follow.communicate(timeout=30)
    assert follow.returncode == 0, err
    assert [ln for ln in out_text.splitlines() if "line" in ln] == [
        f"[lg-quick-summary] line {i}" for i in range(3)
    ]


def test_kubectl_plugin(kube: KubeApi) -> None:
    create_tj(kube, "plug")
    set_status(kube, "plug", quick_status("Quick", 1))
    # kubectl finds `kubectl-stagegate` on PATH (kube.env puts the venv's bin first) and
    # passes KUBECONFIG through the environment.
    listing = kube.kubectl("stagegate", "status")
    assert "plug" in listing.stdout and "1/2" in listing.stdout
    detail = kube.kubectl("stagegate", "status", "plug")
    assert "Fold" not in detail.stderr and "quick stage folds" in detail.stdout
    assert "stagegate" in kube.kubectl("plugin", "list", check=False).stdout


# ------------------------------------------------------------------ the real operator
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_submit_watch_approve_end_to_end(cluster: Cluster, tmp_path: Path) -> None:
    manifest = tmp_path / "e2e.yaml"
    manifest.write_text(yaml.safe_dump(cluster.manifest("placeholder")))
    kube = cluster.kube
    out = sg(kube, "submit", "-f", str(manifest), "--name", "e2e", "--mode", "sequential")
    assert out.returncode == 0, out.stderr
    first = sg(kube, "watch", "e2e", "--interval", "0.3", "--timeout", "150", timeout=170)
    assert first.returncode == 0, (first.stdout, first.stderr)
    assert "Fold 1/2: accuracy=" in first.stdout and "Fold 2/2: accuracy=" in first.stdout
    assert "AwaitingApproval" in first.stdout and "quick stage gates" in first.stdout

    assert sg(kube, "approve", "e2e").returncode == 0
    second = sg(kube, "watch", "e2e", "--interval", "0.3", "--timeout", "150", timeout=170)
    # Succeeded, but the full stage failed the default gates: "completed, gates failed".
    assert second.returncode == 5, (second.stdout, second.stderr, cluster.operator_log()[-2000:])
    assert "full stage: gates failed" in second.stdout
    assert "Succeeded" in second.stdout and "Fold 4/4: accuracy=" in second.stdout
    detail = sg(kube, "status", "e2e").stdout
    assert "full gate approved by admin (annotation) at " in detail, detail
    assert "full stage gates" in detail
    assert "model:" in detail
    assert "Fold 1/2: accuracy=" in sg(kube, "logs", "e2e", "--stage", "quick").stdout
