"""The TrainingJob status a pass writes, from the operator's memory and the machine's decision.

Pure: the reconciler hands in what it read and decided. The shared `build_status` makes the
part the local runner shows too; this adds what only the operator keeps there (its memory of
results and failed attempts, the frozen spec's fingerprint, the times stages started).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stagegate_core import approval as approvals
from stagegate_core import layout
from stagegate_core.formatting import now_iso, parse_iso
from stagegate_core.keys import APPROVED_BY_ANNOTATION, REJECTION_REASON_ANNOTATION
from stagegate_core.spec import TrainingJobSpec
from stagegate_core.stagemachine import TERMINAL, Decision, Observation
from stagegate_core.status import Clock, build_status
from stagegate_core.statusmodel import Condition, DataStatus, TrainingJobStatus

from . import children
from .observe import Memory


def approval_record(
    old: TrainingJobStatus, decision: Decision, annotations: Mapping[str, str], now: float
) -> dict[str, Any] | None:
    """Who decided the gate and when: recorded once, when the decision is first applied."""
    recorded = old.approval
    if recorded is not None and recorded.decision in ("approved", "rejected"):
        return recorded.to_dict()
    verdict = decision.gate
    if verdict is None or verdict.decision == "waiting":
        return None
    if verdict.by != "annotation":
        via: approvals.Via = "policy-auto" if verdict.by == "policy:auto" else "gates"
        return approvals.record(verdict.decision, "gates", via, now_iso(now), verdict.gate)
    # Where the chart's admission policy is on, the API server checked that this names the
    # user who set the annotation.
    who = annotations.get(APPROVED_BY_ANNOTATION) or approvals.UNKNOWN
    reason = (
        annotations.get(REJECTION_REASON_ANNOTATION) if verdict.decision == "rejected" else None
    )
    return approvals.record(verdict.decision, who, "annotation", now_iso(now), verdict.gate,
                            reason)  # fmt: skip


def operator_status(
    *,
    meta: Mapping[str, Any],
    spec: TrainingJobSpec,
    fingerprint: str,
    refused: bool,
    old: TrainingJobStatus,
    memory: Memory,
    decision: Decision,
    observation: Observation,
    jobs: Mapping[str, Mapping[str, Any]],
    approval: Mapping[str, Any] | None,
    now: float,
) -> TrainingJobStatus:
    """`fingerprint` is the TrainingJob's spec as given now, `spec` the one the run executes;
    `refused`: the spec as given departs from the run's beyond the steering fields."""
    started = old.startedAt or now_iso(now)
    finished = old.finishedAt
    if decision.phase in TERMINAL and not finished:
        finished = now_iso(now)
    end = parse_iso(finished) or now
    plans: dict[str, Any] = {}
    for run_stage in spec.stages_to_run():
        stage = str(run_stage)
        entry = ((memory.prepared or {}).get("stages") or {}).get(stage)
        if entry and "error" not in entry:
            plans[stage] = entry
    stage_started, stage_finished = _stage_times(old, plans, memory, jobs, now)
    status = build_status(
        decision=decision,
        observation=observation,
        plans=plans,
        fold_metrics=memory.folds,
        summaries=memory.summaries,
        clock=Clock(
            now=now_iso(now),
            started=started,
            elapsed_seconds=end - (parse_iso(started) or now),
            stage_started=stage_started,
            stage_finished=stage_finished,
            fold_seconds=fold_seconds(jobs),
        ),
        parallelism=spec.parallelism,
        artifacts=artifacts(spec, meta, memory),
        approval=approval,
        previous_conditions=[c.to_dict() for c in old.conditions or []],
        warnings=spec.leaky_purge_warnings(),
        recorded=memory.recorded,
    )
    status.observedGeneration = meta.get("generation")
    # On the first pass the spec as given is the spec the run starts with.
    status.specFingerprint = old.specFingerprint or fingerprint
    # The spec this run executes, as it was when it started (later edits are refused).
    status.runSpec = old.runSpec or spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    if refused:
        status.refusedGeneration = meta.get("generation")
    if memory.prepared is not None:
        status.prepared = memory.prepared
        status.data = DataStatus.of(memory.prepared)
    if finished:
        status.finishedAt = finished
    if memory.carried:
        status.carriedFailures = dict(memory.carried)
    if memory.reported:
        status.reportedFailures = dict(memory.reported)
    phase_since = old.phaseSince if old.phase == decision.phase else None
    status.phaseSince = phase_since or now_iso(now)
    return status


def _stage_times(
    old: TrainingJobStatus,
    plans: Mapping[str, Any],
    memory: Memory,
    jobs: Mapping[str, Mapping[str, Any]],
    now: float,
) -> tuple[dict[str, str], dict[str, str]]:
    """When each stage started (its first fold Job) and finished (its summary), kept once set."""
    old_stages = old.stages or {}
    started = {s: v.startedAt for s, v in old_stages.items() if v.startedAt}
    finished = {s: v.finishedAt for s, v in old_stages.items() if v.finishedAt}
    for stage in plans:
        if stage not in started and (
            memory.folds.get(stage)
            or any(
                j["metadata"]["labels"].get(children.LABEL_STAGE) == stage
                and j["metadata"]["labels"].get(children.LABEL_STEP) == "fold"
                for j in jobs.values()
            )
        ):
            started[stage] = now_iso(now)
        if stage in memory.summaries and stage not in finished:
            finished[stage] = now_iso(now)
    return started, finished


def invalid_spec(message: str, generation: Any, now: float) -> TrainingJobStatus:
    """The status of a TrainingJob refused before it started (the whole of it)."""
    at = now_iso(now)
    failed = Condition(type="Failed", status="True", reason="InvalidSpec", message=message,
                       lastTransitionTime=at)  # fmt: skip
    return TrainingJobStatus(phase="Failed", message=message, conditions=[failed],
                             finishedAt=at, observedGeneration=generation)  # fmt: skip


def artifacts(spec: TrainingJobSpec, meta: Mapping[str, Any], memory: Memory) -> dict[str, str]:
    root = spec.artifacts.uri.rstrip("/")
    run = f"{root}/{layout.run_prefix(meta['namespace'], meta['name'], meta['uid'])}"
    found = {"run": run}
    if memory.final:
        found["model"] = memory.final["model"]
        if memory.final.get("modelCard"):
            found["modelCard"] = memory.final["modelCard"]
    return found


def job_seconds(job: Mapping[str, Any]) -> float | None:
    """A finished Job's wall time, from its own status."""
    status = job.get("status") or {}
    start, end = parse_iso(status.get("startTime")), parse_iso(status.get("completionTime"))
    return end - start if start is not None and end is not None else None


def fold_seconds(jobs: Mapping[str, Mapping[str, Any]]) -> dict[str, list[float]]:
    """Wall times of the completed fold Jobs, by stage (for the ETA)."""
    out: dict[str, list[float]] = {}
    for job in jobs.values():
        labels = job["metadata"].get("labels", {})
        seconds = job_seconds(job)
        if labels.get(children.LABEL_STEP) == "fold" and seconds is not None:
            out.setdefault(labels[children.LABEL_STAGE], []).append(seconds)
    return out
