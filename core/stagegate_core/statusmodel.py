"""The TrainingJob status as a type: what the operator and the local runner write, and what
the operator's memory, its metrics, the CLI's tables and `watch` read back.

The CRD's status schema is generated from these models (`crd.py`), so a field not declared here
is pruned by the API server: a new field starts here. Field names are the status's own
(camelCase), so no aliases stand between the model and what `kubectl get -o yaml` shows.

Written with `to_dict`, which keeps exactly the fields a driver set (a None it set stays None,
as status.json has always shown it); read with `parse`, which accepts any status this or an
earlier version wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .stagemachine import Phase

FoldState = Literal["Pending", "Running", "Succeeded", "Retrying"]


class _Part(BaseModel):
    # Reading never fails on a field a newer writer added; writing only sets declared ones.
    model_config = ConfigDict(extra="ignore")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)


class Condition(_Part):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str
    lastTransitionTime: str


class Period(_Part):
    """A fold's train or test period, from the plan or (with `positiveRate`) the fold's result,
    whose extract may leave parts out."""

    start: str | None = None
    end: str | None = None
    rows: int | None = None
    positiveRate: float | None = None


class FoldStatus(_Part):
    fold: int
    state: FoldState
    attempts: int
    train: Period | None = None
    test: Period | None = None
    error: str | None = None
    metrics: dict[str, float | None] | None = None
    # The trees early stopping chose on the inner split.
    bestIteration: int | None = None


class StagePlan(_Part):
    foldCount: int
    dataStart: str | None = None
    dataEnd: str | None = None
    purgeBars: int | None = None
    trainWindow: str | None = None


class Stat(_Part):
    """A metric over the folds: None where no fold had a value (e.g. one class only)."""

    mean: float | None = None
    std: float | None = None


class StageStatus(_Part):
    plan: StagePlan
    folds: list[FoldStatus]
    startedAt: str | None = None
    finishedAt: str | None = None
    # Set together once the stage is summarised: the model's metrics over the folds, each
    # baseline's, the gate verdicts, and what a person approves on (net expected R ...).
    summary: dict[str, Stat] | None = None
    baselines: dict[str, dict[str, Stat]] | None = None
    gates: list[dict[str, Any]] | None = None
    passed: bool | None = None
    decision: dict[str, Any] | None = None

    @property
    def summarised(self) -> bool:
        return self.passed is not None


class SummaryLine(_Part):
    """The latest summarised stage's headline, as `kubectl get trainingjobs` prints it."""

    stage: str | None = None
    accuracy: str | None = None
    recall: str | None = None
    rocAuc: str | None = None
    expectedR: str | None = None


class Approval(_Part):
    """Who decided the gate (see approval.py); readers show `?` for a part a record lacks."""

    decision: str
    by: str | None = None
    via: str | None = None
    at: str | None = None
    gate: str | None = None
    reason: str | None = None


class DataStatus(_Part):
    summary: str | None = None
    hash: str | None = None
    labelledRows: int | None = None

    @classmethod
    def of(cls, prepared: Mapping[str, Any]) -> DataStatus:
        """From what the prepare step wrote (plan.json, or its result in the operator)."""
        return cls(
            summary=prepared.get("dataSummary"),
            hash=prepared.get("dataHash"),
            labelledRows=prepared.get("labelledRows"),
        )


class TrainingJobStatus(_Part):
    phase: Phase | None = None  # None: not reconciled yet (shown as Pending)
    stage: str | None = None
    progress: str | None = None
    message: str | None = None
    summary: SummaryLine | None = None
    stages: dict[str, StageStatus] | None = None
    startedAt: str | None = None
    finishedAt: str | None = None
    phaseSince: str | None = None
    elapsedSeconds: float | None = None
    etaSeconds: float | None = None
    artifacts: dict[str, str] | None = None
    conditions: list[Condition] | None = None
    warnings: list[str] | None = None
    data: DataStatus | None = None
    # Who decided the gate, also at the top level where `kubectl get -o wide` finds it.
    approval: Approval | None = None
    approvedBy: str | None = None
    approvedAt: str | None = None
    rejectedBy: str | None = None
    rejectedAt: str | None = None
    rejectionReason: str | None = None
    # The operator's bookkeeping: the spec it runs (frozen at the start) and what it has seen.
    observedGeneration: int | None = None
    refusedGeneration: int | None = None
    specFingerprint: str | None = None
    runSpec: dict[str, Any] | None = None
    prepared: dict[str, Any] | None = None
    carriedFailures: dict[str, int] | None = None
    reportedFailures: dict[str, int] | None = None

    @property
    def shown_phase(self) -> str:
        """The phase as people and metrics see it: Pending until the first pass."""
        return self.phase or "Pending"

    @classmethod
    def parse(cls, status: Any) -> TrainingJobStatus:
        """A status as stored (a mapping, or None for an object never reconciled)."""
        return cls.model_validate(status or {})

    def stage_status(self, stage: str) -> StageStatus | None:
        return (self.stages or {}).get(stage)
