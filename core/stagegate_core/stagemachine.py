"""The stage machine: from what is observed, what phase a run is in and what to do next.

Pure and level-based: the decision depends only on the spec and the current observation (which
steps exist, run, succeeded or failed, the approval, whether the run was cancelled), never on
the order in which things happened. The local runner and the Kubernetes operator both gather an
`Observation`, call `decide`, and carry out the returned actions, so both follow one machine.

Gates sit at two places. Before the full stage (sequential mode): `manual` waits for a human
decision even when every gate passes; `auto` proceeds when every gate passes and rejects
otherwise. Before the final model: it is trained when the full stage passes its gates or a human
approved the run (an explicit approval overrides failed gates, with the verdicts kept in the
model card); otherwise `auto` rejects and `manual` waits. An approval given early is only ever
read at a gate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

from .spec import TrainingJobSpec
from .specparts import StageName

Phase = Literal[
    "Pending", "Quick", "AwaitingApproval", "Full", "Succeeded", "Failed", "Rejected", "Cancelled"
]
PHASES: tuple[str, ...] = get_args(Phase)
TERMINAL: frozenset[str] = frozenset({"Succeeded", "Failed", "Rejected", "Cancelled"})
STAGE_PHASE: dict[str, Phase] = {"quick": "Quick", "full": "Full"}
StepState = Literal["absent", "running", "succeeded", "failed"]
ApprovalDecision = Literal["approved", "rejected"]


@dataclass(frozen=True)
class Step:
    """One unit of work (a prepare, a fold, the final model) as observed now."""

    state: StepState = "absent"
    failures: int = 0  # attempts that failed so far
    error: str | None = None


@dataclass(frozen=True)
class StageObservation:
    prepare: Step = Step()
    fold_count: int | None = None  # known once prepare has succeeded
    folds: Mapping[int, Step] = field(default_factory=dict)
    summary_passed: bool | None = None  # None: no summary yet
    summary: Step = Step()  # the summary step's attempts (the operator runs it as a Job)


@dataclass(frozen=True)
class Observation:
    stages: Mapping[str, StageObservation] = field(default_factory=dict)
    final: Step = Step()
    approval: ApprovalDecision | None = None
    cancelled: bool = False

    def stage(self, name: str) -> StageObservation:
        return self.stages.get(name, StageObservation())


@dataclass(frozen=True)
class Prepare:
    stage: StageName
    attempt: int


@dataclass(frozen=True)
class StartFold:
    stage: StageName
    fold: int
    attempt: int


@dataclass(frozen=True)
class Summarise:
    stage: StageName


@dataclass(frozen=True)
class StartFinal:
    attempt: int


@dataclass(frozen=True)
class StopRunning:
    """Stop every running step (cancel, suspend); finished results are kept."""


Action = Prepare | StartFold | Summarise | StartFinal | StopRunning


@dataclass(frozen=True)
class GateVerdict:
    gate: Literal["full", "final"]
    decision: Literal["approved", "rejected", "waiting"]
    by: str  # "annotation", "policy:auto" or "gates"


@dataclass(frozen=True)
class Decision:
    phase: Phase
    actions: tuple[Action, ...] = ()
    message: str = ""
    stage: StageName | None = None
    done: int = 0  # finished folds of `stage`
    total: int = 0  # folds of `stage` (0 until planned)
    gate: GateVerdict | None = None

    @property
    def progress(self) -> str:
        return f"{self.done}/{self.total}" if self.total else ""


def _retry(step: Step, max_retries: int) -> tuple[bool, int]:
    """(may start again, attempt number) for an absent or failed step."""
    return step.failures <= max_retries, step.failures + 1


def _exhausted(step: Step, max_retries: int) -> bool:
    """A step that is not running and has failed more than `maxRetries` times ends the run.

    An absent step counts too: an attempt whose result was lost is a failed attempt, so a step
    that keeps losing its result cannot be started again forever.
    """
    return step.state in ("absent", "failed") and not _retry(step, max_retries)[0]


def _gate(
    spec: TrainingJobSpec, where: Literal["full", "final"], passed: bool, obs: Observation
) -> GateVerdict:
    if obs.approval == "rejected":
        return GateVerdict(where, "rejected", "annotation")
    if obs.approval == "approved":
        return GateVerdict(where, "approved", "annotation")
    if spec.approval.policy == "auto":
        return GateVerdict(where, "approved" if passed else "rejected", "policy:auto")
    if where == "final" and passed:
        return GateVerdict(where, "approved", "gates")
    return GateVerdict(where, "waiting", "")


def _run_stage(spec: TrainingJobSpec, stage: StageName, obs: Observation) -> Decision | None:
    """The decision while `stage` is unfinished; None once its summary exists."""
    phase = STAGE_PHASE[stage]
    seen = obs.stage(stage)
    if seen.summary_passed is not None:
        return None
    if seen.prepare.state != "succeeded" or seen.fold_count is None:
        # A failure past its retries outranks suspension: suspending must not hide it.
        if _exhausted(seen.prepare, spec.max_retries):
            reason = f"{stage} stage: prepare failed after {seen.prepare.failures} attempts"
            return Decision("Failed", (StopRunning(),), _with(reason, seen.prepare.error), stage)
        if spec.suspend:
            return Decision(phase, (StopRunning(),), f"{stage} stage suspended", stage)
        if seen.prepare.state == "running":
            return Decision(phase, (), f"preparing the {stage} stage", stage)
        attempt = seen.prepare.failures + 1
        return Decision(phase, (Prepare(stage, attempt),), f"preparing the {stage} stage", stage)

    total = seen.fold_count
    steps = {n: seen.folds.get(n, Step()) for n in range(1, total + 1)}
    done = sum(1 for s in steps.values() if s.state == "succeeded")
    for number, step in sorted(steps.items()):
        if _exhausted(step, spec.max_retries):
            reason = f"{stage} stage: fold {number} failed after {step.failures} attempts"
            return Decision(
                "Failed", (StopRunning(),), _with(reason, step.error), stage, done, total
            )
    if spec.suspend:
        return Decision(phase, (StopRunning(),), f"{stage} stage suspended", stage, done, total)
    if done == total:
        summary = seen.summary
        if _exhausted(summary, spec.max_retries):
            reason = f"{stage} stage: summary failed after {summary.failures} attempts"
            return Decision(
                "Failed", (StopRunning(),), _with(reason, summary.error), stage, done, total
            )
        # While the summary runs, Summarise is still the wanted action: carrying it out is
        # idempotent (the step exists), and the local runner summarises in-process.
        return Decision(
            phase, (Summarise(stage),), f"summarising the {stage} stage", stage, done, total
        )
    running = sum(1 for s in steps.values() if s.state == "running")
    free = max(spec.parallelism - running, 0)
    waiting = [n for n, s in sorted(steps.items()) if s.state in ("absent", "failed")]
    actions = tuple(StartFold(stage, n, steps[n].failures + 1) for n in waiting[:free])
    return Decision(phase, actions, f"{stage} stage: {done}/{total} folds done", stage, done, total)


def _with(reason: str, error: str | None) -> str:
    return f"{reason}: {error}" if error else reason


def decide(spec: TrainingJobSpec, obs: Observation) -> Decision:
    if obs.cancelled:
        return Decision("Cancelled", (StopRunning(),), "cancelled; finished folds are kept")

    stages = spec.stages_to_run()
    passed_gate: GateVerdict | None = None
    for stage in stages:
        if stage == "full" and "quick" in stages:
            verdict = _gate(spec, "full", bool(obs.stage("quick").summary_passed), obs)
            if verdict.decision == "rejected":
                return Decision(
                    "Rejected", (StopRunning(),), _rejection("quick", verdict), gate=verdict
                )
            if verdict.decision == "waiting":
                return Decision(
                    "AwaitingApproval",
                    (),
                    "quick stage done; waiting for approval",
                    "quick",
                    gate=verdict,
                )
            passed_gate = verdict
        unfinished = _run_stage(spec, stage, obs)
        if unfinished is not None and passed_gate is not None:
            # Carry the verdict that let the full stage start, so it is recorded at once.
            unfinished = replace(unfinished, gate=passed_gate)
        if unfinished is not None:
            if not any(s.state != "absent" for s in _all_steps(obs)) and spec.suspend:
                return Decision("Pending", (), "suspended before start")
            return unfinished

    if "full" not in stages:
        return Decision("Succeeded", (), "quick stage complete")

    verdict = _gate(spec, "final", bool(obs.stage("full").summary_passed), obs)
    if verdict.decision == "rejected":
        return Decision("Rejected", (StopRunning(),), _rejection("full", verdict), gate=verdict)
    if verdict.decision == "waiting":
        return Decision(
            "AwaitingApproval",
            (),
            "full stage failed its gates; approve to train the final model anyway",
            "full",
            gate=verdict,
        )
    if spec.suspend:
        return Decision("Full", (StopRunning(),), "suspended before the final model", "full")
    final = obs.final
    if final.state == "succeeded":
        return Decision("Succeeded", (), "final model trained", gate=verdict)
    if final.state == "running":
        return Decision("Full", (), "training the final model", "full", gate=verdict)
    may, attempt = _retry(final, spec.max_retries)
    if not may:
        reason = f"final model failed after {final.failures} attempts"
        return Decision("Failed", (StopRunning(),), _with(reason, final.error))
    return Decision(
        "Full", (StartFinal(attempt),), "training the final model", "full", gate=verdict
    )


def _rejection(stage: str, verdict: GateVerdict) -> str:
    if verdict.by == "annotation":
        return f"rejected at the {stage} gate"
    return f"{stage} stage failed its gates (approval policy auto)"


def _all_steps(obs: Observation) -> list[Step]:
    steps = [obs.final]
    for seen in obs.stages.values():
        steps.append(seen.prepare)
        steps.extend(seen.folds.values())
    return steps
