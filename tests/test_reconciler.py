"""A whole run's reconcile passes against the in-memory API (tests/support/fakekube.py).

The test plays the cluster (a Job completes with its pod's result, a pod fails, a person
annotates) and a fake clock; each pass is checked by the writes it made, in order, and by the
status it wrote.
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from stagegate_core.keys import (
    APPROVAL_ANNOTATION,
    APPROVED_BY_ANNOTATION,
    REJECTION_REASON_ANNOTATION,
)
from stagegate_core.metricnames import BASELINES, METRICS
from stagegate_core.spec import TrainingJobSpec, spec_fingerprint
from stagegate_operator import children, specs
from stagegate_operator.kubeapi import ApiError
from stagegate_operator.metrics import OperatorMetrics
from stagegate_operator.reconcile import Reconciler

from tests.support.fakekube import NOW, FakeApi, reconciler, run_pass, trainingjob

QUICK_FOLDS, FULL_FOLDS = 3, 2


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def prepared() -> dict[str, Any]:
    def plan(folds: int) -> dict[str, Any]:
        return {"foldCount": folds, "dataStart": "2023-01-01T00:00:00Z",
                "dataEnd": "2023-10-01T00:00:00Z", "purgeBars": 49,
                "trainWindow": "fixed"}  # fmt: skip

    return {"step": "prepare", "bars": 1000, "labelledRows": 990, "dataHash": "h",
            "dataSummary": "1000 bars", "stages": {"quick": plan(QUICK_FOLDS),
                                                   "full": plan(FULL_FOLDS)}}  # fmt: skip


def fold(stage: str, number: int, folds: int) -> dict[str, Any]:
    period = {"start": "2023-01-01T00:00:00Z", "end": "2023-02-01T00:00:00Z", "rows": 100}
    return {"step": "fold", "stage": stage, "fold": number, "folds": folds, "train": period,
            "test": period, "model": dict.fromkeys(METRICS, 0.5), "baselines": {}}  # fmt: skip


def summary(stage: str, folds: int, passed: bool = True) -> dict[str, Any]:
    stats = {m: {"mean": 0.5, "std": 0.1} for m in METRICS}
    return {"step": "summary", "stage": stage, "folds": folds, "passed": passed,
            "model": stats, "baselines": dict.fromkeys(BASELINES, stats),
            "gates": [{"gate": "minRocAuc", "passed": passed, "threshold": 0.5,
                       "value": 0.5}]}  # fmt: skip


class Run:
    """One TrainingJob, its operator and the cluster it runs in."""

    def __init__(self, **spec: Any) -> None:
        self.api = FakeApi(trainingjob(**spec))
        self.clock = Clock()
        self.operator: Reconciler = reconciler(self.api, clock=self.clock)

    def step(self) -> list[tuple[str, str, str]]:
        """One pass; the writes it made."""
        self.api.forget_calls()
        run_pass(self.operator, self.api)
        return list(self.api.calls)

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.api.tj.get("status") or {})

    def jobs(self) -> list[str]:
        return sorted(name for plural, name in self.api.objects if plural == "jobs")

    def annotate(self, **annotations: str) -> None:
        self.api.tj["metadata"].setdefault("annotations", {}).update(annotations)

    def change_spec(self, **fields: Any) -> None:
        self.api.tj["spec"].update(fields)
        self.api.tj["metadata"]["generation"] += 1

    def through_quick_stage(self) -> None:
        """From the first pass to the quick stage's summary result."""
        self.step()
        self.api.finish("btc-prepare", prepared())
        self.step()
        for n in range(1, QUICK_FOLDS + 1):
            self.api.finish(f"btc-quick-fold-{n:02d}", fold("quick", n, QUICK_FOLDS))
            self.step()
        self.api.finish("btc-quick-summary", summary("quick", QUICK_FOLDS))
        self.step()


def create(plural: str, *names: str) -> list[tuple[str, str, str]]:
    return [("create", plural, n) for n in names]


PATCH = ("patch", "trainingjobs/status", "btc")


def event(reason: str) -> tuple[str, str, str]:
    return ("create", "events", reason)


def test_a_sequential_run_pass_by_pass_to_the_final_model() -> None:
    run = Run(mode="sequential", parallelism=2, approval={"policy": "manual"})
    # First pass: the spec frozen in its ConfigMap, then the prepare Job.
    assert run.step() == [
        *create("configmaps", "btc-spec"), *create("jobs", "btc-prepare"), PATCH, event("Quick"),
    ]  # fmt: skip
    status = run.status
    assert (status["phase"], status["message"]) == ("Quick", "preparing the quick stage")
    given = TrainingJobSpec.model_validate(run.api.tj["spec"])
    assert status["specFingerprint"] == spec_fingerprint(given)
    assert status["runSpec"]["symbol"] == "BTC/USDT" and status["observedGeneration"] == 1
    # Nothing new: nothing written.
    assert run.step() == []

    # The prepare result: the quick folds start, as many as the parallelism allows, and the
    # status says at once that they run: the next pass has nothing to write.
    run.api.finish("btc-prepare", prepared())
    assert run.step() == [*create("jobs", "btc-quick-fold-01", "btc-quick-fold-02"), PATCH]
    quick = run.status["stages"]["quick"]
    assert [f["state"] for f in quick["folds"]] == ["Running", "Running", "Pending"]
    assert run.step() == []
    assert quick["plan"]["foldCount"] == QUICK_FOLDS and run.status["progress"] == "0/3"
    assert run.status["prepared"]["labelledRows"] == 990

    # One fold ends: the third starts in its place.
    run.api.finish("btc-quick-fold-01", fold("quick", 1, QUICK_FOLDS))
    assert run.step() == [*create("jobs", "btc-quick-fold-03"), PATCH]
    assert run.status["progress"] == "1/3"

    # All folds done: the summary.
    run.api.finish("btc-quick-fold-02", fold("quick", 2, QUICK_FOLDS))
    run.api.finish("btc-quick-fold-03", fold("quick", 3, QUICK_FOLDS))
    assert run.step() == [*create("jobs", "btc-quick-summary"), PATCH]
    assert run.status["message"] == "summarising the quick stage"
    assert run.status["stages"]["quick"]["startedAt"]

    # The summary passed its gates; the manual gate waits for a person.
    run.api.finish("btc-quick-summary", summary("quick", QUICK_FOLDS))
    assert run.step() == [PATCH, event("StageSummarised"), event("AwaitingApproval")]
    status = run.status
    assert status["phase"] == "AwaitingApproval" and status["stages"]["quick"]["passed"]
    assert status["summary"] == {"stage": "quick", "accuracy": "50.0%", "recall": "50.0%",
                                 "rocAuc": "50.0%"}  # fmt: skip
    assert run.api.events[-2]["message"].startswith("quick stage, 3 folds: accuracy=50.0%")
    assert run.step() == [], "waiting writes nothing"

    # Approved: the full stage's folds start (the prepare result covers both stages).
    run.clock.now += 60
    run.annotate(**{APPROVAL_ANNOTATION: "approved", APPROVED_BY_ANNOTATION: "alice"})
    assert run.step() == [
        *create("jobs", "btc-full-fold-01", "btc-full-fold-02"), PATCH, event("Full"),
        event("Approval"),
    ]  # fmt: skip
    status = run.status
    assert status["approval"]["by"] == "alice" and status["approval"]["via"] == "annotation"
    assert (status["approvedBy"], status["phase"]) == ("alice", "Full")
    assert "stagegate_approval_wait_seconds_sum 60.0" in metrics(run)

    for n in range(1, FULL_FOLDS + 1):
        run.api.finish(f"btc-full-fold-{n:02d}", fold("full", n, FULL_FOLDS))
    assert run.step() == [*create("jobs", "btc-full-summary"), PATCH]
    run.api.finish("btc-full-summary", summary("full", FULL_FOLDS))
    assert run.step() == [*create("jobs", "btc-final"), PATCH, event("StageSummarised")]
    pod = run.api.objects[("jobs", "btc-final")]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert json.loads(env["STAGEGATE_APPROVAL"])["by"] == "alice", "the model card names her"

    model = {"step": "final", "model": "s3://models/runs/m.txt", "modelCard": "s3://c.json"}
    run.api.finish("btc-final", model)
    assert run.step() == [PATCH, event("Succeeded")]
    status = run.status
    assert status["phase"] == "Succeeded" and status["finishedAt"]
    assert status["artifacts"]["model"] == "s3://models/runs/m.txt"
    # Finished runs stay as they ended.
    run.clock.now += 3600
    assert run.step() == []


def test_rejected_at_the_gate_ends_the_run_rejected() -> None:
    run = Run(mode="sequential", parallelism=2, approval={"policy": "manual"})
    run.through_quick_stage()
    assert run.status["phase"] == "AwaitingApproval"
    run.annotate(**{APPROVAL_ANNOTATION: "rejected", APPROVED_BY_ANNOTATION: "bob",
                    REJECTION_REASON_ANNOTATION: "too few trades"})  # fmt: skip
    assert run.step() == [PATCH, event("Rejected"), event("Approval")]
    status = run.status
    assert status["phase"] == "Rejected"
    assert status["message"] == "rejected at the quick gate by bob: too few trades"
    assert (status["rejectedBy"], status["rejectionReason"]) == ("bob", "too few trades")
    assert not [j for j in run.jobs() if "full" in j], "no full stage Job"
    assert run.api.warnings("Rejected") == [status["message"]]


def test_a_failing_fold_is_retried_within_its_budget_then_the_run_fails() -> None:
    run = Run(mode="quick", parallelism=2, maxRetries=1)
    run.step()
    run.api.finish("btc-prepare", prepared())
    run.step()
    job = run.api.objects[("jobs", "btc-quick-fold-01")]
    assert job["spec"]["backoffLimit"] == 1, "Kubernetes retries the pod within the budget"

    # A pod failed; the Job retries it: said once, the run goes on.
    job["status"] = {"active": 1, "failed": 1}
    run.api.pod("btc-quick-fold-01", "Failed", "Traceback ...\nValueError: boom")
    assert run.step() == [event("StepFailed"), PATCH]
    assert run.api.warnings("StepFailed") == [
        "quick fold 1: attempt 1 of 2 failed: ValueError: boom"
    ]
    fold1 = run.status["stages"]["quick"]["folds"][0]
    assert (fold1["state"], fold1["attempts"], fold1["error"]) == ("Running", 1, "ValueError: boom")
    assert run.status["phase"] == "Quick"

    # The retry failed too: the budget is spent, the run fails and stops what still runs.
    job["status"] = {"failed": 2, "conditions": [{"type": "Failed", "status": "True",
                                                  "reason": "BackoffLimitExceeded"}]}  # fmt: skip
    run.api.pod("btc-quick-fold-01", "Failed", "ValueError: boom again", attempt=2)
    assert run.step() == [
        event("StepFailed"), ("delete", "jobs", "btc-quick-fold-02"), PATCH, event("Failed"),
    ]  # fmt: skip
    status = run.status
    assert status["phase"] == "Failed"
    assert (
        status["message"] == "quick stage: fold 1 failed after 2 attempts: ValueError: boom again"
    )
    assert status["reportedFailures"] == {"btc-quick-fold-01": 2}
    assert 'stagegate_folds_total{result="failed",stage="quick"} 2.0' in metrics(run)


def test_a_fold_whose_result_is_lost_is_run_again_within_its_budget() -> None:
    run = Run(mode="quick", parallelism=1, maxRetries=1)
    run.step()
    run.api.finish("btc-prepare", prepared())
    run.step()
    run.api.finish("btc-quick-fold-01", None)  # complete, but its pod is gone
    # Run again: the finished Job is deleted with its attempt counted, then created afresh.
    assert run.step() == [("delete", "jobs", "btc-quick-fold-01"), PATCH]
    assert run.status["carriedFailures"] == {"btc-quick-fold-01": 1}
    assert run.step() == [*create("jobs", "btc-quick-fold-01"), PATCH]
    assert run.status["stages"]["quick"]["folds"][0]["attempts"] == 1
    # Lost again: the second attempt spends the budget (maxRetries 1).
    run.api.finish("btc-quick-fold-01", None)
    assert run.step() == [event("StepFailed"), ("delete", "jobs", "btc-quick-fold-01"), PATCH]
    assert run.api.warnings("StepFailed") == [
        "quick fold 1: attempt 1 of 2 failed: no error message (the pod's result was lost)"
    ]
    assert run.step() == [PATCH, event("Failed")]
    assert run.status["message"] == "quick stage: fold 1 failed after 2 attempts"
    assert run.status["carriedFailures"] == {"btc-quick-fold-01": 2}
    assert run.jobs() == ["btc-prepare"]


def test_suspend_stops_the_running_jobs_and_starts_none_until_resumed() -> None:
    run = Run(mode="quick", parallelism=2)
    run.step()
    run.api.finish("btc-prepare", prepared())
    run.step()
    assert run.jobs() == ["btc-prepare", "btc-quick-fold-01", "btc-quick-fold-02"]

    run.change_spec(suspend=True)  # a steering field: no refusal
    assert run.step() == [
        ("delete", "jobs", "btc-quick-fold-01"), ("delete", "jobs", "btc-quick-fold-02"), PATCH,
    ]  # fmt: skip
    assert (run.status["phase"], run.status["message"]) == ("Quick", "quick stage suspended")
    assert run.step() == [PATCH], "the stopped folds are shown waiting; nothing starts"
    assert [f["state"] for f in run.status["stages"]["quick"]["folds"]] == ["Pending"] * 3
    assert run.step() == []
    assert run.jobs() == ["btc-prepare"]

    run.change_spec(suspend=False)
    assert run.step() == [*create("jobs", "btc-quick-fold-01", "btc-quick-fold-02"), PATCH]
    assert not run.api.warnings("SpecChangeRefused")


def test_suspended_before_start_creates_no_job() -> None:
    run = Run(mode="quick", suspend=True)
    assert run.step() == [*create("configmaps", "btc-spec"), PATCH, event("Pending")]
    assert run.status["message"] == "suspended before start"


def test_a_spec_change_mid_run_keeps_the_frozen_spec_and_takes_the_steering_fields() -> None:
    run = Run(mode="quick", parallelism=1)
    run.step()
    run.api.finish("btc-prepare", prepared())
    run.step()
    started = run.status["specFingerprint"]
    run.change_spec(model={"seed": 7}, parallelism=3)
    assert run.step() == [
        event("SpecChangeRefused"), *create("jobs", "btc-quick-fold-02", "btc-quick-fold-03"),
        PATCH,
    ]  # fmt: skip
    assert run.status["specFingerprint"] == started and run.status["refusedGeneration"] == 2
    run.api.finish("btc-quick-fold-01", fold("quick", 1, QUICK_FOLDS))
    assert event("SpecChangeRefused") not in run.step(), "refused once per generation"
    assert run.api.reads.count(("configmaps", "btc-spec")) == 1, "read once, not every pass"
    frozen = specs.frozen(run.api.objects[("configmaps", "btc-spec")])
    assert frozen.model.seed != 7


def test_a_change_that_leaves_the_fingerprint_alone_is_refused_too() -> None:
    """Gates and mode do not change what a fold computes, but the run's Jobs judge and plan by
    the frozen spec: taking them in the operator alone would split the run in two."""
    run = Run(mode="quick", parallelism=1)
    run.step()
    run.api.finish("btc-prepare", prepared())
    run.step()
    started = run.status["specFingerprint"]
    run.change_spec(mode="sequential", gates={"minRocAuc": 0.9}, parallelism=3)
    assert run.step() == [
        event("SpecChangeRefused"), *create("jobs", "btc-quick-fold-02", "btc-quick-fold-03"),
        PATCH,
    ]  # fmt: skip
    (warning,) = run.api.warnings("SpecChangeRefused")
    assert warning.startswith("spec.gates, spec.mode changed after the run started")
    assert "parallelism" in warning.split("only ")[1]  # what may change is said too
    assert run.status["refusedGeneration"] == 2 and run.status["specFingerprint"] == started
    for n in range(1, QUICK_FOLDS + 1):
        run.api.finish(f"btc-quick-fold-{n:02d}", fold("quick", n, QUICK_FOLDS))
        run.step()
    run.api.finish("btc-quick-summary", summary("quick", QUICK_FOLDS))
    run.step()
    assert run.status["phase"] == "Succeeded", "the run kept mode quick: no full stage"
    assert len(run.api.warnings("SpecChangeRefused")) == 1


def test_a_field_the_run_started_without_is_no_change() -> None:
    """After an upgrade, the operator knows fields that its predecessor left out of runSpec and
    the frozen ConfigMap: they read as their defaults, which is what the run executes."""
    run = Run(mode="quick", parallelism=1)
    run.step()
    run.api.finish("btc-prepare", prepared())
    run.step()
    run.api.tj["status"]["runSpec"].pop("costs")
    configmap = run.api.objects[("configmaps", "btc-spec")]
    manifest = yaml.safe_load(configmap["data"][children.MANIFEST_KEY])
    manifest["spec"].pop("costs")
    configmap["data"][children.MANIFEST_KEY] = yaml.safe_dump(manifest)
    run.change_spec(parallelism=2)  # a new generation: its departures are worked out anew
    assert run.step() == [*create("jobs", "btc-quick-fold-02"), PATCH]
    assert run.api.warnings("SpecChangeRefused") == []
    assert "refusedGeneration" not in run.status
    run.change_spec(costs={"feeBps": 1})  # a real change is still refused
    assert event("SpecChangeRefused") in run.step()


def test_departures_name_the_fields_beyond_the_steering_ones() -> None:
    run_spec = TrainingJobSpec.model_validate(trainingjob()["spec"])
    dumped = run_spec.model_dump(mode="json", by_alias=True, exclude_none=True)

    def changed(**update: Any) -> tuple[str, ...]:
        return specs.departures(dumped, run_spec.model_copy(update=update))

    assert changed() == ()
    assert changed(parallelism=9, suspend=True, max_retries=0, queue_name="q", image="i:1") == ()
    assert changed(mode="full") == ("mode",)
    gates = run_spec.gates.model_copy(update={"min_f1": 0.1})
    assert changed(gates=gates, symbol="ETH/USDT") == ("gates", "symbol")
    # A field the run's spec had and the new one lacks (or the reverse) is a change as well.
    assert specs.departures({**dumped, "extra": 1}, run_spec) == ("extra",)
    assert {"maxRetries", "queueName", "pendingTimeoutSeconds"} <= specs.STEERING_KEYS


def test_one_validation_and_one_fingerprint_per_generation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counted = {"validate": 0, "fingerprint": 0}

    class Counting:
        @staticmethod
        def model_validate(document: Any) -> TrainingJobSpec:
            counted["validate"] += 1
            return TrainingJobSpec.model_validate(document)

    def fingerprint(spec: TrainingJobSpec) -> str:
        counted["fingerprint"] += 1
        return spec_fingerprint(spec)

    monkeypatch.setattr(specs, "TrainingJobSpec", Counting)
    monkeypatch.setattr(specs, "spec_fingerprint", fingerprint)
    run = Run(mode="quick", parallelism=2)
    run.through_quick_stage()  # seven passes
    assert run.status["phase"] == "Succeeded"
    assert counted == {"validate": 1, "fingerprint": 1}
    run.change_spec(parallelism=3)  # a new generation; finished runs read it for their metrics
    run.step()
    run.step()
    assert counted == {"validate": 2, "fingerprint": 2}


def test_a_deleted_trainingjob_is_forgotten() -> None:
    run = Run(mode="quick")
    run.step()
    assert 'trainingjob="btc"' in metrics(run)
    run.api.gone = True
    assert run.step() == []
    assert 'trainingjob="btc"' not in metrics(run)


def test_only_the_elapsed_time_is_rewritten_and_at_most_every_30_seconds() -> None:
    run = Run(mode="quick")
    run.step()
    run.clock.now += 29
    assert run.step() == []
    run.clock.now += 1
    assert run.step() == [PATCH]
    assert set(run.api.patches[-1]) == {"elapsedSeconds"}


def metrics(run: Run) -> str:
    return generate_latest(run.operator.metrics.registry).decode()


class WatchedPods:
    """The ended-pod watch as a pass reads it: running, showing the pods a test hands it."""

    def __init__(self, api: FakeApi) -> None:
        self.api = api
        self.shown: set[str] = set()

    def watching(self, namespace: str) -> bool:
        return True

    def pods(self, namespace: str, trainingjob: str) -> list[dict[str, Any]]:
        return [o for (p, n), o in self.api.objects.items() if p == "pods" and n in self.shown]

    def forget(self, namespace: str, trainingjob: str) -> None:
        self.shown.clear()

    def release(self, namespace: str, trainingjob: str, jobs: set[str]) -> None:
        self.shown -= {n for n in self.shown if n.rsplit("-", 1)[0] in jobs}


class CountingApi(FakeApi):
    def __init__(self, tj: dict[str, Any]) -> None:
        super().__init__(tj)
        self.lists: list[tuple[str, str]] = []  # (plural, label selector)

    @property
    def pod_lists(self) -> list[str]:
        return [selector for plural, selector in self.lists if plural == "pods"]

    async def list(self, gv: str, ns: str, plural: str, selector: str) -> list[dict[str, Any]]:
        self.lists.append((plural, selector))
        return await super().list(gv, ns, plural, selector)


def test_results_come_from_the_pod_watch_and_a_pod_it_has_not_shown_yet_is_listed() -> None:
    api = CountingApi(trainingjob(parallelism=1))
    watched = WatchedPods(api)
    operator = Reconciler(api, OperatorMetrics(), clock=lambda: NOW, ended_pods=watched)  # type: ignore[arg-type]
    run_pass(operator, api)
    api.finish("btc-prepare", prepared())  # its pod ended, but the watch has not shown it
    run_pass(operator, api)
    assert api.pod_lists == ["stagegate.io/trainingjob=btc,job-name in (btc-prepare)"]
    assert api.tj["status"]["prepared"]["labelledRows"] == 990
    api.finish("btc-quick-fold-01", fold("quick", 1, QUICK_FOLDS))
    watched.shown.add("btc-quick-fold-01-1")  # shown by the watch: no list
    run_pass(operator, api)
    assert len(api.pod_lists) == 1
    assert api.tj["status"]["stages"]["quick"]["folds"][0]["state"] == "Succeeded"
    run_pass(operator, api)  # the result is in the status: its pod is let go
    assert "btc-quick-fold-01-1" not in watched.shown


class WatchDown:
    def watching(self, namespace: str) -> bool:
        return False


def test_while_the_job_watch_is_down_a_pass_lists_the_jobs_itself() -> None:
    """The cache holds no Jobs (the watch broke before they came): the pass must not act as if
    there were none, which would create Jobs again and never see results."""
    api = CountingApi(trainingjob(parallelism=1))
    operator = Reconciler(api, OperatorMetrics(), clock=lambda: NOW, watched_jobs=WatchDown())  # type: ignore[arg-type]
    operator.cache.put_trainingjob(copy.deepcopy(api.tj))
    asyncio.run(operator.reconcile("ns", "btc"))
    assert api.writes("create", "jobs") == ["btc-prepare"]
    api.finish("btc-prepare", prepared())
    operator.cache.drop_job("ns", "btc", "btc-prepare")
    operator.cache.put_trainingjob(copy.deepcopy(api.tj))
    api.forget_calls()
    asyncio.run(operator.reconcile("ns", "btc"))
    assert ("jobs", "stagegate.io/trainingjob=btc") in api.lists
    assert api.tj["status"]["prepared"]["labelledRows"] == 990
    assert "btc-prepare" not in api.writes("create", "jobs") + api.writes("delete", "jobs")


def test_while_the_trainingjob_watch_is_down_a_pass_reads_the_trainingjob_itself() -> None:
    """The cache holds the TrainingJob as it was when its watch broke: a pass must act on the
    server's (suspended since), not start a Job for that stale copy."""
    api = FakeApi(trainingjob())
    down = WatchDown()
    operator = Reconciler(api, OperatorMetrics(), clock=lambda: NOW, watched_trainingjobs=down)  # type: ignore[arg-type]
    operator.cache.put_trainingjob(copy.deepcopy(api.tj))
    api.tj["spec"]["suspend"] = True
    asyncio.run(operator.reconcile("ns", "btc"))
    assert api.writes("create", "jobs") == []
    assert api.tj["status"]["message"] == "suspended before start"
    cached = operator.cache.trainingjob("ns", "btc")
    assert cached is not None and cached["spec"]["suspend"] is True


class RefusesOne(FakeApi):
    """Creates every Job but one, which the API server refuses as invalid."""

    def __init__(self, tj: dict[str, Any], refused: str) -> None:
        super().__init__(tj)
        self.refused = refused

    async def create(self, gv: str, ns: str, plural: str, body: Any) -> Any:
        if plural == "jobs" and body["metadata"]["name"] == self.refused:
            self.calls.append(("create", plural, self.refused))
            raise ApiError(422, "Invalid", f'Job.batch "{self.refused}" is invalid')
        return await super().create(gv, ns, plural, body)


def test_jobs_of_one_pass_start_together_and_a_refusal_stops_those_that_started() -> None:
    api = RefusesOne(trainingjob(parallelism=3), "btc-quick-fold-02")
    operator = reconciler(api)
    run_pass(operator, api)
    api.finish("btc-prepare", prepared())
    api.forget_calls()
    run_pass(operator, api)
    started = ["btc-quick-fold-01", "btc-quick-fold-02", "btc-quick-fold-03"]
    assert sorted(api.writes("create", "jobs")) == started  # all tried, not stopped at one
    assert api.tj["status"]["phase"] == "Failed"
    assert "btc-quick-fold-02" in api.tj["status"]["message"]
    assert sorted(api.writes("delete", "jobs")) == ["btc-quick-fold-01", "btc-quick-fold-03"]


class CountsInFlight(FakeApi):
    """Records, for each Job created, how many other creates were in flight when it began."""

    def __init__(self, tj: dict[str, Any]) -> None:
        super().__init__(tj)
        self.in_flight = 0
        self.began: list[tuple[str, int]] = []

    async def create(self, gv: str, ns: str, plural: str, body: Any) -> Any:
        if plural != "jobs":
            return await super().create(gv, ns, plural, body)
        self.began.append((body["metadata"]["name"], self.in_flight))
        self.in_flight += 1
        try:
            await asyncio.sleep(0.01)  # a round trip, during which others may begin
            return await super().create(gv, ns, plural, body)
        finally:
            self.in_flight -= 1


def test_the_first_job_of_a_pass_starts_alone_then_the_others_together() -> None:
    api = CountsInFlight(trainingjob(parallelism=3))
    operator = reconciler(api)
    run_pass(operator, api)
    api.finish("btc-prepare", prepared())
    api.began.clear()
    run_pass(operator, api)
    assert api.began == [
        ("btc-quick-fold-01", 0),  # alone: in a burst, each TrainingJob's first Job goes first
        ("btc-quick-fold-02", 0),
        ("btc-quick-fold-03", 1),  # the others together
    ]


def test_fold_metrics_are_one_series_per_stage_and_metric_not_one_per_fold() -> None:
    run = Run(mode="sequential", parallelism=2, approval={"policy": "manual"})
    run.through_quick_stage()
    text = metrics(run)
    series = [
        line for line in text.splitlines() if line.startswith("stagegate_latest_fold_metric{")
    ]
    assert len(series) == len(METRICS)  # the quick stage's, whatever the fold count
    assert all('stage="quick"' in line and "fold=" not in line for line in series)
    (latest,) = [line for line in text.splitlines() if line.startswith("stagegate_latest_fold{")]
    assert 'stage="quick"' in latest and latest.endswith(f" {float(QUICK_FOLDS)}")
