"""Pure parts of the operator: Job builders, observation of Jobs and Pods, memory in status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from stagegate_core.results import encode
from stagegate_core.spec import TrainingJobSpec
from stagegate_core.stagemachine import decide
from stagegate_core.status import Clock, build_status
from stagegate_core.statusmodel import TrainingJobStatus
from stagegate_operator import children, kubeapi, main, specs
from stagegate_operator.defaults import BUILTIN_IMAGE, TrainerDefaults
from stagegate_operator.observe import Memory, harvest, job_step, observe

from tests.support.fakekube import recall_status

CMD = ("stagegate",)


def spec(**fields: Any) -> TrainingJobSpec:
    return TrainingJobSpec.model_validate({"symbol": "BTC/USDT", **fields})


def test_fold_job_shape() -> None:
    s = spec(
        queueName="research",
        maxRetries=3,
        artifacts={"uri": "s3://b/p", "secretRef": {"name": "creds"}},
        resources={"full": {"requests": {"cpu": "2", "memory": "8Gi"}}},
    )
    job = children.fold_job(children.Owner("btc", "ns", "uid-1", s, CMD, "trainer"), "full", 7)
    meta = job["metadata"]
    assert meta["name"] == "btc-full-fold-07"
    assert meta["labels"] == {
        "stagegate.io/trainingjob": "btc",
        "stagegate.io/stage": "full",
        "stagegate.io/step": "fold",
        "stagegate.io/fold": "7",
        "kueue.x-k8s.io/queue-name": "research",
    }
    owner = meta["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("TrainingJob", "uid-1", True)
    assert job["spec"]["backoffLimit"] == 3 and job["spec"]["suspend"] is True
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "trainer"
    container = pod["containers"][0]
    assert container["command"] == [
        "stagegate",
        "fold",
        "env:STAGEGATE_MANIFEST",
        "--stage",
        "full",
        "--fold",
        "7",
        "--threads",
        "2",
    ]
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "8Gi"}}
    env = {e["name"]: e for e in container["env"]}
    assert env["STAGEGATE_MANIFEST"]["valueFrom"]["configMapKeyRef"]["name"] == "btc-spec"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "creds",
        "key": "AWS_SECRET_ACCESS_KEY",
        "optional": False,
    }
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_no_queue_no_suspend_and_no_secret_no_credentials() -> None:
    job = children.prepare_job(children.Owner("btc", "ns", "u", spec(), CMD))
    assert "suspend" not in job["spec"]
    names = [e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert not [n for n in names if n.startswith("AWS_")]


def test_threads_follow_the_cpu_request() -> None:
    s = spec(resources={"quick": {"requests": {"cpu": "500m"}}, "full": {"limits": {"cpu": "3"}}})
    owner = children.Owner("a", "n", "u", s, CMD)
    for stage, threads in (("quick", "1"), ("full", "3")):
        job = children.fold_job(owner, stage, 1)  # type: ignore[arg-type]
        assert job["spec"]["template"]["spec"]["containers"][0]["command"][-1] == threads


def _job(
    name: str, step: str, stage: str = "quick", fold: int | None = None, **status: Any
) -> dict[str, Any]:
    labels = {
        "stagegate.io/trainingjob": "btc",
        "stagegate.io/stage": stage,
        "stagegate.io/step": step,
    }
    if fold is not None:
        labels["stagegate.io/fold"] = str(fold)
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"backoffLimit": 2},
        "status": status,
    }


def _pod(job: str, phase: str, message: str, created: str = "2026-01-01T00:00:00Z") -> dict:
    return {
        "metadata": {"name": f"{job}-x", "labels": {"job-name": job}, "creationTimestamp": created},
        "status": {
            "phase": phase,
            "containerStatuses": [
                {
                    "state": {
                        "terminated": {
                            "message": message,
                            "exitCode": 0 if phase == "Succeeded" else 1,
                        }
                    }
                }
            ],
        },
    }


COMPLETE = [{"type": "Complete", "status": "True"}]
FAILED = [
    {
        "type": "Failed",
        "status": "True",
        "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit",
    }
]


def test_job_states() -> None:
    assert job_step(None, []).state == "absent"
    running = job_step(_job("j", "fold", active=1, failed=1), [_pod("j", "Failed", "boom\nOOM")])
    assert (running.state, running.failures, running.error) == ("running", 1, "OOM")
    failed = job_step(_job("j", "fold", failed=3, conditions=FAILED), [])
    assert (failed.state, failed.failures) == ("failed", 3)
    assert "backoff limit" in (failed.error or "")
    # Complete but its pods are gone: run again (the step reports its stored result).
    assert job_step(_job("j", "fold", succeeded=1, conditions=COMPLETE), []).state == "absent"


def fold_message(stage: str, fold: int, folds: int, auc: float) -> str:
    model = dict.fromkeys(
        (
            "accuracy",
            "precision",
            "recall",
            "f1",
            "brier",
            "hitRateTp1",
            "positiveRate",
            "predictedPositiveRate",
        ),
        0.5,
    )
    return encode(
        {
            "step": "fold",
            "stage": stage,
            "fold": fold,
            "folds": folds,
            "train": {"start": "a", "end": "b", "rows": 1},
            "test": {"start": "c", "end": "d", "rows": 1},
            "model": {**model, "rocAuc": auc},
            "baselines": {},
        }
    )


def test_harvest_observe_and_recall_round_trip() -> None:
    prepared = {
        "step": "prepare",
        "bars": 10,
        "labelledRows": 9,
        "stages": {
            "quick": {
                "foldCount": 2,
                "dataStart": "s",
                "dataEnd": "e",
                "purgeBars": 49,
                "trainWindow": "fixed",
            },
            "full": {"error": "stage full: data too short for one fold"},
        },
    }
    jobs = [
        _job("btc-prepare", "prepare", succeeded=1, conditions=COMPLETE),
        _job("btc-quick-fold-01", "fold", fold=1, succeeded=1, conditions=COMPLETE),
        _job("btc-quick-fold-02", "fold", fold=2, active=1),
    ]
    pods = [
        _pod("btc-prepare", "Succeeded", json.dumps(prepared)),
        _pod("btc-quick-fold-01", "Succeeded", fold_message("quick", 1, 2, 0.55)),
    ]
    memory = Memory()
    new = harvest(memory, jobs, pods)
    assert [step for step, _ in new] == ["prepare", "fold"]
    assert harvest(memory, jobs, pods) == []  # nothing twice
    names = {
        "prepare": "btc-prepare",
        "final": "btc-final",
        "fold": lambda stage, n: children.fold_job_name("btc", stage, n),
    }
    by_name = {j["metadata"]["name"]: j for j in jobs}
    obs = observe(memory, by_name, pods, names, {"stagegate.io/approval": "approved"}, 2)
    quick = obs.stage("quick")
    assert quick.fold_count == 2
    assert quick.folds[1].state == "succeeded" and quick.folds[2].state == "running"
    assert obs.approval == "approved"
    assert obs.stage("full").prepare.state == "failed"  # unplannable: no retry can mend it
    s = spec(mode="quick")
    decision = decide(s, obs)
    assert decision.phase == "Quick" and decision.progress == "1/2"

    status = build_status(
        decision=decision,
        observation=obs,
        plans={"quick": prepared["stages"]["quick"]},
        fold_metrics=memory.folds,
        summaries=memory.summaries,
        clock=Clock(now="2026-01-01T00:00:00Z"),
        parallelism=4,
        artifacts={"run": "s3://b/r"},
    ).to_dict()
    status["prepared"] = memory.prepared
    again = recall_status(status)
    assert again.prepared == memory.prepared
    assert again.folds["quick"][1]["model"]["rocAuc"] == 0.55
    assert set(again.folds["quick"]) == {1}


def test_a_recorded_fold_is_reused_whole_with_its_attempts() -> None:
    """A fold that succeeded on its second attempt still shows 2 attempts passes later: the
    next pass reuses the fold as the status recorded it (it used to rebuild it as 1)."""
    plan = {"foldCount": 2, "dataStart": "s", "dataEnd": "e", "purgeBars": 49}
    fold = {
        "fold": 1,
        "state": "Succeeded",
        "attempts": 2,
        "train": {"start": "a", "end": "b", "rows": 10},
        "test": {"start": "c", "end": "d", "rows": 5},
        "metrics": {"accuracy": 0.6, "rocAuc": None},
        "bestIteration": 7,
    }
    stored = {"stages": {"quick": {"plan": plan, "folds": [fold]}}}
    stored["prepared"] = {"step": "prepare", "stages": {"quick": plan}}
    memory = recall_status(stored)
    names = {
        "prepare": "btc-prepare",
        "final": "btc-final",
        "fold": lambda stage, n: children.fold_job_name("btc", stage, n),
    }
    obs = observe(memory, {}, [], names, {}, 2)
    assert obs.stage("quick").folds[1].state == "succeeded"
    status = build_status(
        decision=decide(spec(mode="quick"), obs),
        observation=obs,
        plans={"quick": plan},
        fold_metrics=memory.folds,
        summaries=memory.summaries,
        clock=Clock(now="2026-01-01T00:00:00Z"),
        parallelism=4,
        artifacts={"run": "s3://b/r"},
        recorded=memory.recorded,
    )
    quick = status.stage_status("quick")
    assert quick is not None
    assert quick.folds[0] is memory.recorded["quick"][1]
    assert quick.folds[0].to_dict() == fold
    assert quick.folds[1].fold == 2 and quick.folds[1].state == "Pending"


def test_sequential_with_an_unplannable_full_stage_fails_with_the_reason() -> None:
    prepared = {
        "step": "prepare",
        "stages": {"quick": {"foldCount": 1}, "full": {"error": "stage full: data too short"}},
    }
    memory = Memory(
        prepared=prepared,
        folds={"quick": {1: {"model": {}}}},
        summaries={"quick": {"passed": True}},
    )
    names = {"prepare": "p", "final": "f", "fold": lambda s, n: f"{s}{n}"}
    obs = observe(memory, {}, [], names, {"stagegate.io/approval": "approved"}, 2)
    decision = decide(spec(), obs)
    assert decision.phase == "Failed"
    assert "data too short" in decision.message


def test_the_operator_imports_no_numeric_stack() -> None:
    code = (
        "import sys, stagegate_operator.handlers, stagegate_operator.reconcile, "
        "stagegate_operator.main; "
        "print(sorted(m for m in ('pandas', 'lightgbm', 'numpy', 'pyarrow', 'sklearn') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def nullable_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every field of the spec, by manifest names, that may be null, nested ones included."""
    out = []
    for name, field in model.model_fields.items():
        path = (*prefix, field.alias or name)
        union = typing.get_origin(field.annotation) in (typing.Union, types.UnionType)
        kinds = typing.get_args(field.annotation) if union else (field.annotation,)
        if type(None) in kinds:
            out.append(path)
        for kind in kinds:
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                out.extend(nullable_paths(kind, path))
    return out


NULLABLE = nullable_paths(TrainingJobSpec)


def test_the_walk_finds_the_nulls_that_mean_off() -> None:
    assert {("gates", "minTrades"), ("stages", "quick", "maxFolds")} <= set(NULLABLE)


@pytest.mark.parametrize("path", NULLABLE, ids=".".join)
def test_a_null_survives_the_frozen_spec(path: tuple[str, ...]) -> None:
    """The pods read the spec from the ConfigMap: a null there must not turn into the field's
    default (minTrades: null is no gate; its default is 100)."""
    doc: dict[str, Any] = {}
    inner = doc
    for key in path[:-1]:
        inner = inner.setdefault(key, {})
    inner[path[-1]] = None
    given = spec(**doc)
    configmap = children.spec_configmap("btc", "ns", "uid-1", given, {})
    assert specs.frozen(configmap) == given


def test_cluster_defaults_apply_only_where_the_spec_leaves_a_gap() -> None:
    defaults = TrainerDefaults.from_env(
        {
            "STAGEGATE_TRAINER_IMAGE": "registry.local/trainer:1",
            "STAGEGATE_ARTIFACTS_URI": "s3://models/runs",
            "STAGEGATE_ARTIFACTS_SECRET": "minio",
            "STAGEGATE_QUEUE_NAME": "research",
            "STAGEGATE_TRAINER_RESOURCES": json.dumps(
                {"quick": {"requests": {"memory": "2Gi"}}, "full": {"requests": {"memory": "6Gi"}}}
            ),
        }
    )
    bare = defaults.apply(spec())
    assert bare.image == "registry.local/trainer:1" and bare.queue_name == "research"
    assert bare.artifacts.uri == "s3://models/runs" and bare.artifacts.secret_ref.name == "minio"
    assert bare.resources.full.requests.memory == "6Gi"
    own = defaults.apply(
        spec(
            image="mine:2",
            queueName="q",
            artifacts={"uri": "s3://mine/x"},
            resources={"full": {"requests": {"memory": "1Gi"}}},
        )
    )
    assert (own.image, own.queue_name, own.artifacts.uri) == ("mine:2", "q", "s3://mine/x")
    assert own.artifacts.secret_ref is None and own.resources.full.requests.memory == "1Gi"
    assert TrainerDefaults.from_env({}).apply(spec()).image == BUILTIN_IMAGE


def test_bad_default_resources_are_refused_at_start() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "stagegate_operator.main", "-n", "default"],
        capture_output=True,
        text=True,
        env={**os.environ, "STAGEGATE_TRAINER_RESOURCES": "{nope"},
    )
    assert out.returncode == 2
    assert out.stderr.startswith("stagegate-operator: STAGEGATE_TRAINER_RESOURCES:")


def test_status_patches_carry_only_changes_and_never_nulls() -> None:
    from stagegate_operator.mergepatch import merge_diff, pruned

    old = {"phase": "Quick", "etaSeconds": 12.0, "stages": {"quick": {"folds": [1], "x": 1}}}
    new = pruned(
        {
            "phase": "Quick",
            "etaSeconds": None,
            "stage": None,
            "stages": {"quick": {"folds": [1, 2], "x": 1}},
        }
    )
    assert new == {"phase": "Quick", "stages": {"quick": {"folds": [1, 2], "x": 1}}}
    assert merge_diff(old, new) == {"etaSeconds": None, "stages": {"quick": {"folds": [1, 2]}}}
    assert merge_diff(new, new) == {}


def test_recall_keeps_the_stage_decision_across_an_operator_restart() -> None:
    """What a person approves on (net expected R and its bound) must survive a restart: the
    status is the operator's only memory."""
    from stagegate_core.status import PRINTED

    summary = {
        "model": {m: {"mean": 0.5} for m in PRINTED},
        "baselines": {},
        "gates": [],
        "passed": False,
        "decision": {"expectedR": -0.12, "expectedRLowerBound": -0.3, "trades": 40},
    }
    obs = observe(Memory(), {}, [], {"prepare": "p", "final": "f", "fold": lambda s, n: "x"},
                  {}, 2)  # fmt: skip

    def built(summaries: dict[str, Any]) -> dict[str, Any]:
        return build_status(
            decision=decide(spec(mode="quick"), obs),
            observation=obs,
            plans={"quick": {"foldCount": 1}},
            fold_metrics={},
            summaries=summaries,
            clock=Clock(now="2026-01-01T00:00:00Z"),
            parallelism=1,
            artifacts={},
        ).to_dict()

    first = built({"quick": summary})
    assert first["stages"]["quick"]["decision"] == summary["decision"]
    again = built(recall_status(first).summaries)
    assert again["stages"]["quick"] == first["stages"]["quick"]
    assert again["summary"]["expectedR"] == "-0.12R (≥-0.30)"


def test_a_deleted_trainingjob_leaves_no_series_and_others_stay() -> None:
    from prometheus_client import generate_latest
    from stagegate_operator.metrics import OperatorMetrics

    metrics = OperatorMetrics()
    folds = [{"fold": n, "state": "Running", "attempts": 1} for n in (1, 2)]
    stages = {"quick": {"plan": {"foldCount": 2}, "folds": folds}}
    status = TrainingJobStatus.parse({"phase": "Quick", "stages": stages})
    for namespace, name in (("a", "gone"), ("a", "kept"), ("b", "gone")):
        metrics.record(namespace, name, spec(), status, 3.0)
    metrics.forget("a", "gone")
    text = generate_latest(metrics.registry).decode()
    series = [line for line in text.splitlines() if 'trainingjob="' in line]

    def of(namespace: str, name: str) -> list[str]:
        wanted = (f'namespace="{namespace}"', f'trainingjob="{name}"')
        return [s for s in series if all(w in s for w in wanted)]

    assert not of("a", "gone")
    for namespace, name in (("a", "kept"), ("b", "gone")):
        kinds = {s.split("{")[0] for s in of(namespace, name)}
        assert kinds == {"stagegate_trainingjob_phase", "stagegate_trainingjob_phase_seconds",
                         "stagegate_stage_progress_ratio"}, kinds  # fmt: skip
    assert 'stagegate_trainingjobs{phase="Quick"} 2.0' in text


def test_leader_election_without_a_lease_namespace_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.setattr(main, "SERVICE_ACCOUNT", Path("/nonexistent"))
    with pytest.raises(SystemExit) as exited:
        main.parse_args(["--leader-election"])
    assert exited.value.code == 2
    assert "--leader-election needs --lease-namespace" in capsys.readouterr().err
    config = main.parse_args(["--leader-election", "--lease-namespace", "ops", "--lease", "l"])
    assert config.lease == ("ops", "l") and config.identity.count("_") >= 1
    # A restarted container is a new candidate: no two starts share an identity.
    assert config.identity != main.parse_args([]).identity


def test_api_bodies_round_trip_and_a_non_json_answer_is_kept_as_text() -> None:
    body = {"status": {"carried": {1: 2}, "metrics": {"auc": 0.5, "f1": None}}}
    assert kubeapi.decode(kubeapi.encode(body)) == {
        "status": {"carried": {"1": 2}, "metrics": body["status"]["metrics"]}
    }
    assert kubeapi.decode(b"") is None and kubeapi.decode(b"  \n") is None
    assert (
        kubeapi.decode(b"502 Bad Gateway\n") == "502 Bad Gateway\n"
    )  # a proxy's page, for the error
