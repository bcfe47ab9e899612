"""Every failure ends or shows: refusals on the first pass, failed attempts as Warning Events,
API errors as status messages, the summary step bounded, child names that fit, shared storage.

One reconcile pass runs against a small in-memory API (no cluster, tests/support/fakekube.py):
it records what the operator creates, deletes, patches and announces, and can answer chosen
errors.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from stagegate_core.naming import DNS_LABEL_MAX, MAX_NAME_LENGTH
from stagegate_core.spec import TrainingJobSpec, spec_fingerprint
from stagegate_core.stagemachine import Decision, decide
from stagegate_operator import admission, children
from stagegate_operator.defaults import TrainerDefaults
from stagegate_operator.failures import (
    EventLimiter,
    FailedAttempts,
    after_api_error,
    new_failed_attempts,
)
from stagegate_operator.kubeapi import ApiError
from stagegate_operator.mergepatch import merge_diff
from stagegate_operator.metrics import OperatorMetrics
from stagegate_operator.observe import Memory, observe, spent_attempts
from stagegate_operator.reconcile import Reconciler

from tests.support.fakekube import (
    S3,
    FakeApi,
    recall_status,
    reconciler,
    run_pass,
    trainingjob,
)


def spec(**fields: Any) -> TrainingJobSpec:
    return TrainingJobSpec.model_validate({"symbol": "BTC/USDT", **fields})


def reconcile(api: FakeApi, defaults: TrainerDefaults | None = None) -> Reconciler:
    """A new operator's first pass."""
    made = reconciler(api, defaults)
    run_pass(made, api)
    return made


def failed_job(name: str, step: str, stage: str, failed: int, limit: int) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {
                children.LABEL_TJ: "btc",
                children.LABEL_STAGE: stage,
                children.LABEL_STEP: step,
            },
        },
        "spec": {"backoffLimit": limit},
        "status": {
            "failed": failed,
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
            ],
        },
    }


# --------------------------------------------------------------------- refusals (points 3, 4)
def test_a_63_character_name_is_refused_naming_the_limit() -> None:
    name = "a" * 63
    api = FakeApi(trainingjob(name))
    reconcile(api)
    status = api.tj["status"]
    assert status["phase"] == "Failed"
    assert f"at most {MAX_NAME_LENGTH} characters" in status["message"]
    assert "(got 63)" in status["message"] and "63 characters in a Job name" in status["message"]
    assert [c["type"] for c in status["conditions"]] == ["Failed"]
    assert api.warnings("InvalidSpec") == [status["message"]]
    assert api.objects == {}, "nothing is created for a refused TrainingJob"


def test_every_child_name_of_the_longest_allowed_name_fits() -> None:
    name = "b" * MAX_NAME_LENGTH
    names = [children.prepare_job_name(name), children.final_job_name(name),
             children.spec_configmap_name(name)]  # fmt: skip
    for stage in ("quick", "full"):
        names += [children.summary_job_name(name, stage), children.fold_job_name(name, stage, 9999)]
    assert max(len(n) for n in names) == DNS_LABEL_MAX
    assert admission.refusal(name, spec(artifacts=S3)) is None
    assert admission.refusal(name + "b", spec(artifacts=S3)) is not None


def test_a_relative_artifacts_folder_is_refused_before_any_pod() -> None:
    api = FakeApi(trainingjob(artifacts={"uri": "stagegate-runs"}))
    reconcile(api)
    message = api.tj["status"]["message"]
    assert api.tj["status"]["phase"] == "Failed"
    assert "spec.artifacts.uri 'stagegate-runs' is a relative folder" in message
    assert "Helm chart value artifacts.uri" in message and "volumeClaim" in message
    assert api.objects == {}


def test_a_relative_folder_is_fine_when_the_operator_has_a_default_store() -> None:
    defaults = TrainerDefaults(artifacts_uri="s3://models/x", artifacts_secret="creds")
    api = FakeApi(trainingjob(artifacts={"uri": "stagegate-runs"}))
    reconcile(api, defaults)
    assert api.tj["status"]["phase"] == "Quick"
    assert ("jobs", "btc-prepare") in api.objects


@pytest.mark.parametrize(
    ("artifacts", "refused"),
    [
        ({"uri": "s3://mine/runs"}, "has no credentials: set spec.artifacts.secretRef"),
        ({"uri": "s3://mine/runs", "secretRef": {"name": "c"}}, None),
        ({"uri": "file:///mnt/shared/runs"}, None),
        ({"uri": "file:///mnt/runs", "volumeClaim": "runs"}, None),
        ({"uri": "runs"}, "is a relative folder"),
    ],
)
def test_refusal_decision(artifacts: dict[str, Any], refused: str | None) -> None:
    # The chart's secret is never handed to a bucket the TrainingJob names itself.
    defaults = TrainerDefaults(artifacts_secret="chart-creds")
    message = admission.refusal("btc", defaults.apply(spec(artifacts=artifacts)))
    if refused is None:
        assert message is None
    else:
        assert message is not None and refused in message
        assert "spec.artifacts.uri" in message and "artifacts.uri" in message


def test_volume_claim_is_mounted_at_the_uri_path_in_every_step_pod() -> None:
    s = spec(artifacts={"uri": "file:///mnt/stagegate/", "volumeClaim": "runs-rwx"})
    owner = children.Owner("btc", "ns", "u", s)
    jobs = [
        children.prepare_job(owner),
        children.fold_job(owner, "quick", 1),
        children.summary_job(owner, "quick"),
        children.final_job(owner, {"by": "gates"}),
    ]
    for job in jobs:
        pod = job["spec"]["template"]["spec"]
        assert {"name": "artifacts", "persistentVolumeClaim": {"claimName": "runs-rwx"}} in pod[
            "volumes"
        ]
        mounts = pod["containers"][0]["volumeMounts"]
        assert {"name": "artifacts", "mountPath": "/mnt/stagegate"} in mounts
        assert pod["securityContext"]["fsGroup"] == children.TRAINER_GID
    plain = children.prepare_job(children.Owner("btc", "ns", "u", spec(artifacts=S3)))
    pod = plain["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp"] and "fsGroup" not in pod[
        "securityContext"
    ]


# --------------------------------------------------------------------- bounded summary (point 1)
def test_a_summary_job_past_its_retries_ends_the_run_failed() -> None:
    api = FakeApi(trainingjob(maxRetries=1))
    api.tj["status"] = {
        "phase": "Quick",
        "specFingerprint": spec_fingerprint(TrainingJobSpec.model_validate(api.tj["spec"])),
        "prepared": {"stages": {"quick": {"foldCount": 1}}},
        "stages": {
            "quick": {
                "plan": {"foldCount": 1},
                "folds": [
                    {
                        "fold": 1,
                        "metrics": {},
                        "state": "Succeeded",
                        "attempts": 1,
                        "train": {},
                        "test": {},
                    }
                ],
            }
        },
    }
    job = failed_job("btc-quick-summary", "summary", "quick", failed=2, limit=1)
    api.objects[("jobs", "btc-quick-summary")] = job
    pod = {
        "metadata": {"name": "p", "labels": {"job-name": "btc-quick-summary"},
                     "creationTimestamp": "2024-01-01T00:00:00Z"},
        "status": {"phase": "Failed", "containerStatuses": [{"state": {"terminated": {
            "exitCode": 1, "message": "Traceback ...\nFileNotFoundError: plan.json"}}}]},
    }  # fmt: skip
    api.objects[("pods", "p")] = pod
    reconcile(api)
    status = api.tj["status"]
    assert status["phase"] == "Failed"
    assert status["message"] == (
        "quick stage: summary failed after 2 attempts: FileNotFoundError: plan.json"
    )
    assert any(c["type"] == "Failed" and c["status"] == "True" for c in status["conditions"])
    assert api.warnings("Failed") == [status["message"]]
    assert api.warnings("StepFailed") == [
        "quick summary: attempts 1-2 of 2 failed: FileNotFoundError: plan.json"
    ]
    assert ("jobs", "btc-quick-summary") in api.objects, "no endless delete and recreate"


def test_attempts_of_a_recreated_job_stay_counted() -> None:
    """A Complete Job whose result was lost is rerun, and that attempt counts."""
    complete = {
        "metadata": {"name": "btc-prepare", "labels": {children.LABEL_STEP: "prepare",
                                                       children.LABEL_STAGE: "quick"}},
        "spec": {"backoffLimit": 2},
        "status": {"failed": 1, "conditions": [{"type": "Complete", "status": "True"}]},
    }  # fmt: skip
    assert spent_attempts(complete) == 2
    memory = recall_status({"carriedFailures": {"btc-prepare": 2}})
    names = {"prepare": "btc-prepare", "fold": lambda s, n: f"btc-{s}-fold-{n:02d}",
             "final": "btc-final", "summary": lambda s: f"btc-{s}-summary"}  # fmt: skip
    obs = observe(memory, {}, [], names, {}, max_retries=1)
    assert obs.stage("quick").prepare.failures == 2
    decision = decide(spec(mode="quick", maxRetries=1), obs)
    assert decision.phase == "Failed" and "prepare failed after 2 attempts" in decision.message


# --------------------------------------------------------------------- failed attempts (point 2)
def test_each_failed_attempt_is_reported_once() -> None:
    reported: dict[str, int] = {}
    jobs = {"btc-quick-fold-03": failed_job("btc-quick-fold-03", "fold", "quick", 1, 2)}
    jobs["btc-quick-fold-03"]["metadata"]["labels"][children.LABEL_FOLD] = "3"
    del jobs["btc-quick-fold-03"]["status"]["conditions"]  # still running: 1 pod failed
    first = new_failed_attempts(jobs, [], {}, reported, max_retries=2)
    assert first == [FailedAttempts("btc-quick-fold-03", "quick fold 3", 1, 1, 3, None)]
    assert first[0].message() == (
        "quick fold 3: attempt 1 of 3 failed: no error message (the pod's result was lost)"
    )
    assert new_failed_attempts(jobs, [], {}, reported, max_retries=2) == []
    jobs["btc-quick-fold-03"]["status"]["failed"] = 3
    again = new_failed_attempts(jobs, [], {}, reported, max_retries=2)
    assert [(a.first, a.last) for a in again] == [(2, 3)] and reported == {"btc-quick-fold-03": 3}
    # Counted in the status, so a restarted operator does not announce them again.
    assert recall_status({"reportedFailures": reported}).reported == reported


def test_events_are_rate_limited_and_the_held_back_ones_counted() -> None:
    now = [0.0]
    limiter = EventLimiter(burst=2, window=60, clock=lambda: now[0])
    key = ("ns", "btc", "StepFailed")
    assert [limiter.allow(key) for _ in range(4)] == [(True, 0), (True, 0), (False, 0), (False, 0)]
    assert limiter.allow(("ns", "other", "StepFailed")) == (True, 0)
    now[0] = 61.0
    assert limiter.allow(key) == (True, 2)
    assert limiter.allow(key) == (True, 0)


# --------------------------------------------------------------------- API errors (point 2)
def test_a_permanent_api_error_ends_the_run_failed_with_the_cause() -> None:
    api = FakeApi(trainingjob())
    api.errors[("create", "jobs")] = ApiError(
        422, "Invalid", 'Job.batch "btc-prepare" is invalid: metadata.name: Invalid value'
    )
    reconcile(api)
    status = api.tj["status"]
    assert status["phase"] == "Failed"
    assert status["message"].startswith(
        "creating Job btc-prepare: the API server answered 422 Invalid: "
    )
    assert any(c["type"] == "Failed" and c["status"] == "True" for c in status["conditions"])
    assert len(api.warnings("ApiError")) == 1 and api.warnings("Failed") == [status["message"]]


@pytest.mark.parametrize("code", [403])
def test_forbidden_configmap_is_a_refusal(code: int) -> None:
    api = FakeApi(trainingjob())
    api.errors[("create", "configmaps")] = ApiError(code, "Forbidden", "cannot create configmaps")
    reconcile(api)
    assert api.tj["status"]["phase"] == "Failed"
    assert (
        "creating ConfigMap btc-spec: the API server answered 403 Forbidden"
        in (api.tj["status"]["message"])
    )


def test_a_transient_api_error_is_shown_and_retried() -> None:
    api = FakeApi(trainingjob())
    api.errors[("create", "jobs")] = ApiError(404, "NotFound", "namespaces ns not found")
    reconciler = reconcile(api)
    status = api.tj["status"]
    assert status["phase"] == "Quick"
    assert "retrying after an API error: creating Job btc-prepare" in status["message"]
    assert api.warnings("ApiError") == [
        "creating Job btc-prepare: the API server answered 404 NotFound: namespaces ns not found"
    ]
    del api.errors[("create", "jobs")]
    asyncio.run(reconciler.reconcile("ns", "btc"))
    assert ("jobs", "btc-prepare") in api.objects
    assert "retrying" not in api.tj["status"]["message"]


def test_after_api_error_keeps_progress_for_transient_errors() -> None:
    decision = Decision("Quick", (), "quick stage: 1/3 folds done", "quick", 1, 3)
    error = ApiError(500, "InternalError", "etcd timeout")
    out = after_api_error(decision, "creating Job x", error)
    assert (out.phase, out.done, out.total) == ("Quick", 1, 3)
    failed = after_api_error(decision, "creating Job x", ApiError(403, "Forbidden", "no"))
    assert failed.phase == "Failed" and failed.actions == ()


def test_memory_fields_survive_a_status_round_trip() -> None:
    memory = Memory(carried={"a": 1}, reported={"a": 2})
    status = {"carriedFailures": memory.carried, "reportedFailures": memory.reported}
    assert merge_diff(status, status) == {}
    again = recall_status(status)
    assert (again.carried, again.reported) == (memory.carried, memory.reported)


class SpecChangedMeanwhile(FakeApi):
    """A user suspends the run while a pass is writing its status (the server orders the two).

    With `event_first`, the watch event of the user's change reaches the cache before the
    status write returns; otherwise after it.
    """

    def __init__(self, tj: dict[str, Any], event_first: bool) -> None:
        super().__init__(tj)
        self.event_first = event_first
        self.reconciler: Reconciler | None = None
        self.user_change: dict[str, Any] | None = None

    async def patch_status(self, gv: str, ns: str, plural: str, name: str, patch: Any) -> Any:
        if self.user_change is None:
            self.tj["spec"]["suspend"] = True
            self.tj["metadata"].update(generation=2, resourceVersion="11")
            self.user_change = copy.deepcopy(self.tj)
            if self.event_first:
                assert self.reconciler is not None
                self.reconciler.cache.put_trainingjob(copy.deepcopy(self.user_change))
        meta = self.tj["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        return await super().patch_status(gv, ns, plural, name, patch)


@pytest.mark.parametrize("event_first", [False, True])
def test_a_spec_changed_while_the_status_is_written_is_not_lost(event_first: bool) -> None:
    tj = trainingjob()
    tj["metadata"]["resourceVersion"] = "10"
    api = SpecChangedMeanwhile(tj, event_first)
    reconciler = Reconciler(api, OperatorMetrics(), clock=lambda: 1_700_000_000.0)  # type: ignore[arg-type]
    api.reconciler = reconciler
    reconciler.cache.put_trainingjob(copy.deepcopy(tj))
    asyncio.run(reconciler.reconcile("ns", "btc"))
    assert api.user_change is not None
    if not event_first:  # the user's change arrives after the pass: it must be taken
        reconciler.cache.put_trainingjob(copy.deepcopy(api.user_change))
    cached = reconciler.cache.trainingjob("ns", "btc")
    assert cached is not None
    assert cached["spec"].get("suspend") is True
    assert cached["metadata"]["generation"] == 2
