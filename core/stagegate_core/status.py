"""The TrainingJob status object, built the same way by the local runner and the operator.

Pure: it takes the stage machine's decision, the stage plans, the fold metrics and the step
states, and returns the JSON-able status that `kubectl get/describe` and `--output json` show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter

from .approval import UNKNOWN, condition_reason, status_fields
from .formatting import percent
from .metricnames import METRICS
from .stagemachine import TERMINAL, Decision, Observation
from .statusmodel import (
    Approval,
    FoldStatus,
    StagePlan,
    StageStatus,
    Stat,
    SummaryLine,
    TrainingJobStatus,
)

# The three columns `kubectl get tj` shows, read from the last finished stage's summary.
PRINTED = ("accuracy", "recall", "rocAuc")


@dataclass
class Clock:
    """Wall-clock facts the caller knows (ISO strings and seconds)."""

    now: str
    started: str | None = None
    elapsed_seconds: float = 0.0
    stage_started: Mapping[str, str] = field(default_factory=dict)
    stage_finished: Mapping[str, str] = field(default_factory=dict)
    fold_seconds: Mapping[str, list[float]] = field(default_factory=dict)  # per stage


def gates_failed(status: TrainingJobStatus) -> str | None:
    """The stage whose failed gates a Succeeded run ends with, else None.

    A run can complete with failed gates (mode quick; an explicit approval past a failed full
    stage); its exit code (5) and outcome line must say so, or a script reads it as a pass.
    """
    if status.phase != "Succeeded":
        return None
    stages = status.stages or {}
    summarised = [s for s in ("full", "quick") if s in stages and stages[s].summarised]
    return summarised[0] if summarised and not stages[summarised[0]].passed else None


def expected_r_text(decision: Mapping[str, Any]) -> str:
    """`-0.12R (≥-0.30)`: the mean net R per trade and its lower confidence bound."""
    mean, lower = decision.get("expectedR"), decision.get("expectedRLowerBound")
    if mean is None:
        return "-"
    return f"{mean:+.2f}R" + ("" if lower is None else f" (≥{lower:+.2f})")


def _eta(decision: Decision, clock: Clock, parallelism: int) -> float | None:
    if decision.stage is None or not decision.total or decision.phase in TERMINAL:
        return None
    durations = clock.fold_seconds.get(decision.stage) or []
    if not durations:
        return None
    remaining = decision.total - decision.done
    per_fold = sum(durations) / len(durations)
    return round(per_fold * -(-remaining // max(parallelism, 1)), 1)


def _condition(kind: str, ok: bool, reason: str, message: str, now: str) -> dict[str, str]:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
    }


# One validation for a whole block, not one per metric: the operator rebuilds every summarised
# stage's 40 statistics on each pass.
_STATS = TypeAdapter(dict[str, Stat])
_BASELINE_STATS = TypeAdapter(dict[str, dict[str, Stat]])


def build_status(
    *,
    decision: Decision,
    observation: Observation,
    plans: Mapping[str, Mapping[str, Any]],
    fold_metrics: Mapping[str, Mapping[int, Mapping[str, Any]]],
    summaries: Mapping[str, Mapping[str, Any]],
    clock: Clock,
    parallelism: int,
    artifacts: Mapping[str, str],
    approval: Mapping[str, Any] | None = None,
    previous_conditions: list[dict[str, str]] | None = None,
    warnings: Sequence[str] = (),
    recorded: Mapping[str, Mapping[int, FoldStatus]] | None = None,
) -> TrainingJobStatus:
    """`recorded`: succeeded folds as an earlier status showed them, reused as they are."""
    stages: dict[str, StageStatus] = {}
    for stage, plan in plans.items():
        seen = observation.stage(stage)
        metrics = fold_metrics.get(stage, {})
        known = (recorded or {}).get(stage, {})
        folds = []
        count = plan.get("foldCount", len(plan.get("folds", [])))
        planned = {f["fold"]: f for f in plan.get("folds", [])}
        for number in range(1, count + 1):
            if number in known:
                folds.append(known[number])
                continue
            step = seen.folds.get(number)
            entry: dict[str, Any] = {
                "fold": number,
                "state": "Succeeded" if number in metrics else _state(step),
                "attempts": (step.failures if step else 0) + (1 if number in metrics else 0),
                **_ranges(planned.get(number), metrics.get(number)),
            }
            if step is not None and step.error and number not in metrics:
                entry["error"] = step.error
            if number in metrics:
                entry["metrics"] = {m: metrics[number]["model"].get(m) for m in METRICS}
                # The trees early stopping chose on the inner split (spec.model.minRounds ...).
                if metrics[number].get("bestIteration") is not None:
                    entry["bestIteration"] = metrics[number]["bestIteration"]
            folds.append(FoldStatus.model_validate(entry))
        built = StageStatus(
            plan=StagePlan(
                foldCount=count,
                dataStart=plan.get("dataStart"),
                dataEnd=plan.get("dataEnd"),
                purgeBars=plan.get("purgeBars"),
                trainWindow=plan.get("trainWindow"),
            ),
            folds=folds,
            startedAt=clock.stage_started.get(stage),
            finishedAt=clock.stage_finished.get(stage),
        )
        if stage in summaries:
            summary = summaries[stage]
            built.summary = _STATS.validate_python(summary["model"])
            built.baselines = _BASELINE_STATS.validate_python(summary["baselines"])
            built.gates = list(summary["gates"])
            built.passed = bool(summary["passed"])
            if summary.get("decision"):
                # What a person approves on: net expected R with its bound, trades, verdicts.
                built.decision = dict(summary["decision"])
        stages[stage] = built

    latest = next((s for s in ("full", "quick") if s in summaries), None)
    printed = {m: percent(summaries[latest]["model"][m]["mean"]) for m in PRINTED} if latest else {}
    if latest and summaries[latest].get("decision"):
        printed["expectedR"] = expected_r_text(summaries[latest]["decision"])
    status = TrainingJobStatus(
        phase=decision.phase,
        stage=decision.stage,
        progress=decision.progress or _last_progress(stages),
        message=_message(decision, approval),
        summary=SummaryLine(stage=latest, **printed) if latest else SummaryLine(),
        stages=stages,
        startedAt=clock.started,
        elapsedSeconds=round(clock.elapsed_seconds, 1),
        etaSeconds=_eta(decision, clock, parallelism),
        artifacts=dict(artifacts),
        conditions=_conditions(decision, summaries, approval, clock.now, previous_conditions),
    )
    if approval:
        status.approval = Approval.model_validate(approval)
        for name, value in status_fields(approval).items():
            setattr(status, name, value)
    if warnings:
        status.warnings = list(warnings)
    return status


def _message(decision: Decision, approval: Mapping[str, Any] | None) -> str:
    """A person's rejection says who and why: `rejected at the quick gate by carol: …`."""
    if decision.phase != "Rejected" or not approval or approval.get("by") == "gates":
        return decision.message
    by = approval.get("by")
    reason = approval.get("reason")
    return (
        decision.message
        + (f" by {by}" if by and by != UNKNOWN else "")
        + (f": {reason}" if reason else "")
    )


def _ranges(planned: Mapping[str, Any] | None, result: Mapping[str, Any] | None) -> dict[str, Any]:
    """A fold's train and test periods, from the plan (local) or its result (operator)."""
    if result and "train" in result:
        return {"train": dict(result["train"]), "test": dict(result["test"])}
    if planned:
        return {
            "train": {
                "start": planned["trainStart"],
                "end": planned["trainEnd"],
                "rows": planned["trainRows"],
            },
            "test": {
                "start": planned["testStart"],
                "end": planned["testEnd"],
                "rows": planned["testRows"],
            },
        }
    return {}


def _last_progress(stages: Mapping[str, StageStatus]) -> str:
    """Between and after stages the machine names no stage: show the last one that ran."""
    for name in ("full", "quick"):
        folds = stages[name].folds if name in stages else []
        done = sum(1 for f in folds if f.state == "Succeeded")
        if done:
            return f"{done}/{len(folds)}"
    return ""


def _state(step: Any) -> str:
    if step is None:
        return "Pending"
    return {
        "absent": "Pending",
        "running": "Running",
        "succeeded": "Succeeded",
        "failed": "Retrying",
    }[step.state]


def _conditions(
    decision: Decision,
    summaries: Mapping[str, Mapping[str, Any]],
    approval: Mapping[str, Any] | None,
    now: str,
    previous: list[dict[str, str]] | None,
) -> list[dict[str, str]]:
    wanted: list[dict[str, str]] = []
    for stage in ("quick", "full"):
        if stage in summaries:
            passed = bool(summaries[stage]["passed"])
            reason = "GatesPassed" if passed else "GatesFailed"
            wanted.append(
                _condition(f"{stage.title()}Passed", passed, reason, f"{stage} stage gates", now)
            )
    if approval and approval.get("decision") in ("approved", "rejected"):
        ok = approval["decision"] == "approved"
        wanted.append(
            _condition(
                "Approved",
                ok,
                condition_reason(approval),
                approval["decision"],
                now,
            )
        )
    done = decision.phase in TERMINAL
    wanted.append(
        _condition(
            "Complete",
            decision.phase == "Succeeded",
            decision.phase if done else "InProgress",
            decision.message,
            now,
        )
    )
    wanted.append(
        _condition(
            "Failed",
            decision.phase == "Failed",
            "Failed" if decision.phase == "Failed" else "NoFailure",
            decision.message if decision.phase == "Failed" else "",
            now,
        )
    )
    # Keep lastTransitionTime when a condition's status did not change, as Kubernetes does.
    old = {c["type"]: c for c in previous or []}
    for condition in wanted:
        before = old.get(condition["type"])
        if before and before.get("status") == condition["status"]:
            condition["lastTransitionTime"] = before.get("lastTransitionTime", now)
    return wanted
