"""`stagegate run`: the stage machine driven on one machine, with worker processes for steps.

The loop is the operator's loop in miniature: observe (the artifacts store says which steps are
done; the pool says which run or died), decide (the shared stage machine), act (submit steps,
summarise, ask for approval), wait for a step to end, repeat.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, assert_never

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from stagegate_cli.render import fold_line, print_summary
from stagegate_core import approval as approvals
from stagegate_core import exitcodes, layout
from stagegate_core.formatting import now_iso
from stagegate_core.spec import TrainingJobManifest
from stagegate_core.specparts import StageName
from stagegate_core.stagemachine import (
    TERMINAL,
    Action,
    Decision,
    Observation,
    Prepare,
    StageObservation,
    StartFinal,
    StartFold,
    Step,
    StopRunning,
    Summarise,
    decide,
)
from stagegate_core.status import Clock, build_status, gates_failed
from stagegate_core.statusmodel import DataStatus, TrainingJobStatus

from . import steps, tasks
from .workers import WorkerPool

ApproveMode = Literal["ask", "auto", "yes", "no"]


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class RunResult:
    status: TrainingJobStatus
    exit_code: int
    wall_seconds: float
    fit_seconds: dict[str, float] = field(default_factory=dict)  # per stage, bare fits
    stage_seconds: dict[str, float] = field(default_factory=dict)


class LocalRunner:
    def __init__(
        self,
        manifest: TrainingJobManifest,
        *,
        approve: ApproveMode,
        workers: int | None = None,
        console: Console | None = None,
        ask: Callable[[str], bool] | None = None,
        show_progress: bool = True,
    ) -> None:
        if approve == "auto":
            spec = manifest.spec
            manifest = manifest.model_copy(
                update={
                    "spec": spec.model_copy(
                        update={"approval": spec.approval.model_copy(update={"policy": "auto"})}
                    )
                }
            )
        self.cores = available_cores()
        self.workers = max(1, workers or self.cores)
        # Locally, the worker count is the parallelism the stage machine plans with.
        manifest = manifest.model_copy(
            update={"spec": manifest.spec.model_copy(update={"parallelism": self.workers})}
        )
        self.manifest = manifest
        self.spec = manifest.spec
        self.run = steps.open_run(manifest)
        self.approve = approve
        self.console = console or Console(stderr=True)
        self.ask = ask
        self.show_progress = show_progress
        self.approval: Literal["approved", "rejected"] | None = (
            "approved" if approve == "yes" else None
        )
        self.approval_record: dict[str, Any] | None = None
        self.failures: dict[tuple[str, Any], int] = {}
        self.errors: dict[tuple[str, Any], str] = {}
        self.fold_seconds: dict[str, list[float]] = {}
        self.fit_seconds: dict[str, float] = {}
        self.stage_started: dict[str, str] = {}
        self.stage_finished: dict[str, str] = {}
        self.stage_wall: dict[str, float] = {}
        self._stage_t0: dict[str, float] = {}
        self._reported: set[tuple[str, int]] = set()
        self._summarised: dict[str, bool] = {}
        self._metrics: dict[str, dict[int, dict[str, Any]]] = {}
        self._conditions: list[dict[str, str]] | None = None
        self._status = TrainingJobStatus()

    # ------------------------------------------------------------------ observe
    def observe(self, pool: WorkerPool, cancelled: bool = False) -> Observation:
        store = self.run.store
        running = set(pool.running)
        plan = store.read_json(layout.PLAN) if store.exists(layout.PLAN) else None
        stages: dict[str, StageObservation] = {}
        for stage in self.spec.stages_to_run():
            done = self._finished(stage) if plan else {}
            count = len(steps.stage_plan_json(plan, stage)["folds"]) if plan else None
            folds = {
                n: self._step(("fold", (stage, n)), running, n in done)
                for n in range(1, (count or 0) + 1)
            }
            # Summarised again in every run (it is cheap), so a resumed run shows the table.
            passed = self._summarised.get(stage)
            stages[stage] = StageObservation(
                prepare=self._step(("prepare", None), running, plan is not None),
                fold_count=count,
                folds=folds,
                summary_passed=passed,
            )
        final = self._step(("final", None), running, store.exists(layout.MODEL_CARD))
        return Observation(stages, final, self.approval, cancelled)

    def _finished(self, stage: str) -> dict[int, dict[str, Any]]:
        return steps.finished_folds(self.run, stage, self._metrics.setdefault(stage, {}))

    def _step(self, key: tuple[str, Any], running: set[Any], done: bool) -> Step:
        # A step counts as running until its worker has been collected, even when its result
        # is already in the store: the worker is busy until then.
        if key in running:
            return Step("running", self.failures.get(key, 0), self.errors.get(key))
        if done:
            return Step("succeeded", self.failures.get(key, 0))
        failures = self.failures.get(key, 0)
        return Step("failed" if failures else "absent", failures, self.errors.get(key))

    # ------------------------------------------------------------------ act
    def _act(
        self, action: Action, pool: WorkerPool, progress: Progress, bars: dict[str, TaskID]
    ) -> None:
        match action:
            case Prepare():
                pool.submit(("prepare", None), tasks.prepare, self.manifest)
            case StartFold(stage=stage, fold=fold):
                self._stage_clock(stage)
                # Every core is the ceiling: the fold takes its share of them as other workers
                # go idle (threadshare.py).
                pool.submit(
                    ("fold", (stage, fold)), tasks.fold, self.manifest, stage, fold, self.cores
                )
            case Summarise(stage=stage):
                progress.stop()  # the stage's bar is printed, finished, once
                if stage in bars:
                    progress.update(bars[stage], visible=False)
                self._summarise(stage)
                progress.start()
            case StartFinal():
                record = self.approval_record or approvals.record(
                    "approved", "gates", "gates", now_iso(), "final"
                )
                pool.submit(("final", None), tasks.final, self.manifest, self.cores, record)
            case StopRunning():
                pool.stop()
            case _:
                assert_never(action)

    def _stage_clock(self, stage: str) -> None:
        if stage not in self.stage_started:
            self.stage_started[stage] = now_iso()
            self._stage_t0[stage] = time.perf_counter()

    def _summarise(self, stage: StageName) -> None:
        summary = steps.summarise(self.run, stage)
        self.stage_finished[stage] = now_iso()
        if stage in self._stage_t0:
            self.stage_wall[stage] = time.perf_counter() - self._stage_t0[stage]
        self._summarised[stage] = bool(summary["passed"])
        print_summary(self.console, summary)

    def _gate(self, decision: Decision) -> bool:
        """Answer a gate that waits for a person. True when the run may go on now."""
        if self.approve in ("no", "yes", "auto") or self.ask is None:
            return False
        question = (
            "Proceed to the full stage?"
            if decision.stage == "quick"
            else "The full stage failed its gates. Train the final model anyway?"
        )
        approved = self.ask(question)
        self.approval = "approved" if approved else "rejected"
        gate = "full" if decision.stage == "quick" else "final"
        self.approval_record = approvals.record(
            self.approval, approvals.os_user(), "prompt", now_iso(), gate
        )
        return True

    # ------------------------------------------------------------------ loop
    def execute(self) -> RunResult:
        started = now_iso()
        t0 = time.perf_counter()
        steps.claim(self.run)
        # Everything a fold imports, pandas' parquet reader included: imported in a worker, it
        # would delay every worker's first fold.
        pool = WorkerPool(
            self.workers,
            preload=("stagegate_trainer.tasks", "stagegate_trainer.fold", "pyarrow.dataset"),
        )
        pool.start()  # workers import LightGBM while this process prepares
        # Prepare here, not in a worker: its failures are bad input (data, plan, storage) that
        # no retry mends, and they should reach the user as one clear error.
        try:
            steps.prepare(self.run)
        except BaseException:
            pool.stop()
            raise
        for warning in self.spec.leaky_purge_warnings():
            self.console.print(f"[yellow]Warning: {warning}[/yellow]")
        if self.approval == "approved":
            self.approval_record = approvals.record(
                "approved", approvals.os_user(), "flag", started, "full"
            )
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
            disable=not self.show_progress,
        )
        bars: dict[str, TaskID] = {}
        decision = Decision("Pending")
        try:
            with progress:
                while True:
                    obs = self.observe(pool)
                    decision = decide(self.spec, obs)
                    self._report_new_folds(progress, bars, obs, decision.stage)
                    self._status = self._build_status(decision, obs, started, t0)
                    if decision.phase in TERMINAL:
                        break
                    if decision.phase == "AwaitingApproval":
                        if not pool.running and not self._gate_with(progress, decision):
                            break
                        continue
                    for action in decision.actions:
                        self._act(action, pool, progress, bars)
                    if not any(isinstance(a, Summarise) for a in decision.actions):
                        self._collect(pool.wait(timeout=1.0))
        except KeyboardInterrupt:
            pool.stop()
            obs = self.observe(pool, cancelled=True)
            decision = decide(self.spec, obs)
            self._status = self._build_status(decision, obs, started, t0)
        finally:
            pool.close()
            self._write_status()
        return RunResult(
            status=self._status,
            exit_code=(
                exitcodes.GATES_FAILED
                if gates_failed(self._status)
                else exitcodes.RUN.get(decision.phase, exitcodes.FAILED)
            ),
            wall_seconds=time.perf_counter() - t0,
            fit_seconds=dict(self.fit_seconds),
            stage_seconds=dict(self.stage_wall),
        )

    def _gate_with(self, progress: Progress, decision: Decision) -> bool:
        progress.stop()
        try:
            return self._gate(decision)
        finally:
            progress.start()

    def _collect(self, finished: list[Any]) -> None:
        for done in finished:
            kind, detail = done.key
            if done.ok:
                if kind == "fold":
                    outcome: steps.FoldOutcome = done.value
                    stage = detail[0]
                    if not outcome.skipped:
                        self.fold_seconds.setdefault(stage, []).append(outcome.seconds)
                        self.fit_seconds[stage] = self.fit_seconds.get(stage, 0.0) + (
                            outcome.fit_seconds
                        )
                continue
            self.failures[done.key] = self.failures.get(done.key, 0) + 1
            self.errors[done.key] = done.error
            what = f"fold {detail[1]} of the {detail[0]} stage" if kind == "fold" else kind
            self.console.print(f"[yellow]{what} failed: {done.error}[/yellow]")

    def _report_new_folds(
        self, progress: Progress, bars: dict[str, TaskID], obs: Observation, current: str | None
    ) -> None:
        for stage, seen in obs.stages.items():
            if seen.fold_count is None:
                continue
            done = sorted(n for n, s in seen.folds.items() if s.state == "succeeded")
            if stage not in bars and (stage == current or done):
                bars[stage] = progress.add_task(f"{stage} stage", total=seen.fold_count)
            for number in done:
                if (stage, number) not in self._reported:
                    self._reported.add((stage, number))
                    metrics = self._finished(stage)[number]
                    progress.console.print(fold_line(metrics))
            if stage in bars:
                progress.update(bars[stage], completed=len(done))

    def _build_status(
        self, decision: Decision, obs: Observation, started: str, t0: float
    ) -> TrainingJobStatus:
        store = self.run.store
        plan = store.read_json(layout.PLAN) if store.exists(layout.PLAN) else None
        plans: dict[str, Any] = (
            {s: steps.stage_plan_json(plan, s) for s in self.spec.stages_to_run()} if plan else {}
        )
        metrics: dict[str, Any] = {s: self._finished(s) for s in plans}
        summaries: dict[str, Any] = {
            s: store.read_json(layout.stage_summary(s))
            for s in plans
            if obs.stage(s).summary_passed is not None
        }
        artifacts = {"run": store.root_uri}
        if store.exists(layout.MODEL_CARD):
            artifacts["model"] = store.uri(layout.FINAL_MODEL)
            artifacts["modelCard"] = store.uri(layout.MODEL_CARD)
        status = build_status(
            decision=decision,
            observation=obs,
            plans=plans,
            fold_metrics=metrics,
            summaries=summaries,
            clock=Clock(
                now=now_iso(),
                started=started,
                elapsed_seconds=time.perf_counter() - t0,
                stage_started=self.stage_started,
                stage_finished=self.stage_finished,
                fold_seconds=self.fold_seconds,
            ),
            parallelism=self.workers,
            artifacts=artifacts,
            approval=self.approval_record,
            previous_conditions=self._conditions,
            warnings=self.spec.leaky_purge_warnings(),
        )
        if plan:
            status.data = DataStatus.of(plan)
        self._conditions = [c.to_dict() for c in status.conditions or []]
        return status

    def _write_status(self) -> None:
        try:
            self.run.store.write_json("status.json", self._status.to_dict())
        except Exception as exc:  # the status file is a convenience; the run's result stands
            self.console.print(f"[yellow]could not write status.json: {exc}[/yellow]")
