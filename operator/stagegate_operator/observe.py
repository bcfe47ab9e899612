"""From what the cluster shows to what the stage machine needs. No I/O: the reconciler hands in
the status, the Jobs (from its watch-fed cache) and the pods it read; `harvest` records new
results into the `Memory` it is given.

The operator's memory is the TrainingJob status: results harvested from finished pods'
termination messages are written there, so they survive the Jobs' TTL and operator restarts.
Each reconcile recalls the memory from the status, harvests what newly finished, and observes
which steps run, succeeded or failed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from stagegate_core.keys import (
    APPROVAL_ANNOTATION,
    CANCEL_ANNOTATION,
    LABEL_FOLD,
    LABEL_STAGE,
    LABEL_STEP,
)
from stagegate_core.results import decode
from stagegate_core.specparts import STAGES
from stagegate_core.stagemachine import Observation, StageObservation, Step
from stagegate_core.statusmodel import FoldStatus, Stat, TrainingJobStatus

SUCCEEDED = Step("succeeded")  # shared: a pass observes dozens of finished folds


@dataclass
class Memory:
    prepared: dict[str, Any] | None = None  # the prepare step's result
    folds: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    final: dict[str, Any] | None = None
    # Attempts of Jobs the operator deleted to run a step again, by Job name: a recreated Job
    # starts counting at zero, so without them a step could be retried forever.
    carried: dict[str, int] = field(default_factory=dict)
    # Failed attempts already announced by a Warning Event, by Job name.
    reported: dict[str, int] = field(default_factory=dict)
    # Succeeded folds as the status already shows them: final, so a pass reuses them whole
    # (rebuilding each from its parts was most of a pass, and lost its attempt count).
    recorded: dict[str, dict[int, FoldStatus]] = field(default_factory=dict)

    def fold_count(self, stage: str) -> int | None:
        if self.prepared is None:
            return None
        entry = self.prepared["stages"].get(stage) or {}
        count = entry.get("foldCount")
        return int(count) if count is not None else None


def recall(status: TrainingJobStatus) -> Memory:
    """The results an earlier reconcile recorded in the status."""
    memory = Memory(
        prepared=status.prepared,
        carried=dict(status.carriedFailures or {}),
        reported=dict(status.reportedFailures or {}),
    )
    for stage, entry in (status.stages or {}).items():
        recorded = {f.fold: f for f in entry.folds if f.metrics is not None}
        memory.recorded[stage] = recorded
        memory.folds[stage] = {
            n: {"model": f.metrics, "bestIteration": f.bestIteration} for n, f in recorded.items()
        }
        if entry.summarised:
            memory.summaries[stage] = {
                "model": _stats(entry.summary),
                "baselines": {b: _stats(block) for b, block in (entry.baselines or {}).items()},
                "gates": entry.gates,
                "passed": entry.passed,
                "decision": entry.decision,
            }
    artifacts = status.artifacts or {}
    if "model" in artifacts:
        memory.final = {"model": artifacts["model"], "modelCard": artifacts.get("modelCard")}
    return memory


def _stats(block: Mapping[str, Stat] | None) -> dict[str, Any] | None:
    # Read field by field: a model dump per metric was a tenth of a pass.
    if block is None:
        return None
    return {
        metric: {k: v for k, v in (("mean", s.mean), ("std", s.std)) if v is not None}
        for metric, s in block.items()
    }


def _conditions(job: Mapping[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in (job.get("status") or {}).get("conditions", [])}


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    for container in (pod.get("status") or {}).get("containerStatuses", []):
        terminated = (container.get("state") or {}).get("terminated")
        if terminated:
            return terminated
    return {}


def pods_of(job_name: str, pods: Iterable[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
    owned = [p for p in pods if p["metadata"].get("labels", {}).get("job-name") == job_name]
    return sorted(owned, key=lambda p: p["metadata"].get("creationTimestamp", ""))


def result_of(job_name: str, pods: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    for pod in reversed(pods_of(job_name, pods)):
        if (pod.get("status") or {}).get("phase") == "Succeeded":
            result = decode(_terminated(pod).get("message"))
            if result is not None:
                return result
    return None


def error_of(job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> str | None:
    """The last failed pod's last message line, else the Job's own failure message."""
    for pod in reversed(pods_of(job["metadata"]["name"], pods)):
        terminated = _terminated(pod)
        if (pod.get("status") or {}).get("phase") == "Failed" and terminated:
            lines = [ln for ln in (terminated.get("message") or "").splitlines() if ln.strip()]
            if lines:
                return lines[-1][:300]
            return f"exit code {terminated.get('exitCode')} ({terminated.get('reason', '')})"
    for condition in (job.get("status") or {}).get("conditions", []):
        if condition["type"] == "Failed" and condition["status"] == "True":
            return f"{condition.get('reason', '')}: {condition.get('message', '')}".strip(": ")
    return None


def job_finished(job: Mapping[str, Any]) -> bool:
    conditions = _conditions(job)
    return conditions.get("Complete") == "True" or conditions.get("Failed") == "True"


def recorded(memory: Memory, job: Mapping[str, Any]) -> bool:
    """Whether the status already holds this step's result."""
    labels = job["metadata"].get("labels", {})
    step, stage = labels.get(LABEL_STEP), labels.get(LABEL_STAGE, "")
    if step == "prepare":
        return memory.prepared is not None
    if step == "fold":
        return int(labels.get(LABEL_FOLD, 0)) in memory.folds.get(stage, {})
    if step == "summary":
        return stage in memory.summaries
    if step == "final":
        return memory.final is not None
    return True


def needs_pods(memory: Memory, job: Mapping[str, Any]) -> bool:
    status = job.get("status") or {}
    if recorded(memory, job):
        return False
    return _conditions(job).get("Complete") == "True" or bool(status.get("failed"))


def harvest(
    memory: Memory, jobs: Iterable[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]]
) -> list[tuple[str, dict[str, Any]]]:
    """Record results of newly completed Jobs into `memory`; return what was new."""
    new: list[tuple[str, dict[str, Any]]] = []
    for job in jobs:
        if _conditions(job).get("Complete") != "True":
            continue
        labels = job["metadata"].get("labels", {})
        step, stage = labels.get(LABEL_STEP), labels.get(LABEL_STAGE, "")
        if recorded(memory, job):
            continue
        result = result_of(job["metadata"]["name"], pods)
        if result is None:
            continue
        if step == "prepare":
            memory.prepared = result
        elif step == "fold":
            memory.folds.setdefault(stage, {})[int(result["fold"])] = result
        elif step == "summary":
            memory.summaries[stage] = result
        elif step == "final":
            memory.final = result
        new.append((str(step), result))
    return new


def spent_attempts(job: Mapping[str, Any]) -> int:
    """Attempts a finished Job used up; a Complete one whose result was lost counts as failed."""
    failed = int((job.get("status") or {}).get("failed", 0))
    conditions = _conditions(job)
    if conditions.get("Failed") == "True":
        return max(failed, int(job["spec"].get("backoffLimit", 0)) + 1)
    return failed + (1 if conditions.get("Complete") == "True" else 0)


def job_step(job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> Step:
    if job is None:
        return Step()
    status = job.get("status") or {}
    failed = int(status.get("failed", 0))
    conditions = _conditions(job)
    if conditions.get("Failed") == "True":
        limit = int(job["spec"].get("backoffLimit", 0))
        return Step("failed", max(failed, limit + 1), error_of(job, pods))
    if conditions.get("Complete") == "True":
        # Complete but no readable result (its pods are gone): run it again; the step finds
        # its stored result and reports it without recomputing.
        return Step("absent", failed)
    return Step("running", failed, error_of(job, pods) if failed else None)


def observe(
    memory: Memory,
    jobs: Mapping[str, Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    names: Mapping[str, Any],
    annotations: Mapping[str, str],
    max_retries: int,
) -> Observation:
    """`jobs` by name; `names` gives the child names (see children.*_job_name)."""

    def step(name: str) -> Step:
        seen = job_step(jobs.get(name), pods)
        carried = memory.carried.get(name, 0)
        return replace(seen, failures=seen.failures + carried) if carried else seen

    prepare = SUCCEEDED if memory.prepared is not None else step(names["prepare"])
    stages: dict[str, StageObservation] = {}
    for stage in STAGES:
        count = memory.fold_count(stage)
        done = memory.folds.get(stage, {})
        stage_prepare = prepare
        unplannable = ((memory.prepared or {}).get("stages", {}).get(stage) or {}).get("error")
        if unplannable:
            # Bad input (e.g. too little data): no retry can mend it.
            stage_prepare = Step("failed", max_retries + 1, unplannable)
        folds: dict[int, Step] = {}
        for number in range(1, (count or 0) + 1):
            if number in done:
                folds[number] = SUCCEEDED
            else:
                folds[number] = step(names["fold"](stage, number))
        summary = memory.summaries.get(stage)
        summary_step = SUCCEEDED if summary is not None else Step()
        if summary is None and "summary" in names:
            summary_step = step(names["summary"](stage))
        stages[stage] = StageObservation(
            prepare=stage_prepare,
            fold_count=count,
            folds=folds,
            summary_passed=None if summary is None else bool(summary["passed"]),
            summary=summary_step,
        )
    final = SUCCEEDED if memory.final else step(names["final"])
    approval = annotations.get(APPROVAL_ANNOTATION, "").strip().lower()
    return Observation(
        stages=stages,
        final=final,
        approval=approval if approval in ("approved", "rejected") else None,  # type: ignore[arg-type]
        cancelled=annotations.get(CANCEL_ANNOTATION, "").lower() in ("true", "yes", "1"),
    )
