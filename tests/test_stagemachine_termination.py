"""Every run ends: whatever the steps do, the stage machine reaches a terminal phase.

A simulated cluster runs every step kind (prepare, fold, summary, final) as a Job-like attempt
whose outcome hypothesis picks: success, failure, or a success whose result is lost (the
operator then sees the step absent with one more spent attempt). One step may fail on every
attempt. The properties: the run reaches a terminal phase within a bound computed from the
number of steps and `maxRetries`; no step is started twice with the same attempt number (the
decision never repeats without progress); and a step that keeps failing ends the run `Failed`
with that step named in the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stagegate_core.spec import TrainingJobSpec
from stagegate_core.specparts import ApprovalSpec
from stagegate_core.stagemachine import (
    TERMINAL,
    Action,
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

Outcome = Literal["ok", "fail", "lost"]
Key = tuple[str, str, int]  # (kind, stage, fold)


@dataclass
class Cluster:
    """Steps as the operator observes them; attempts are counted as the operator counts them."""

    spec: TrainingJobSpec
    fold_counts: dict[str, int]
    gates: dict[str, bool]
    steps: dict[Key, Step] = field(default_factory=dict)
    summaries: dict[str, bool] = field(default_factory=dict)
    started: dict[Key, list[int]] = field(default_factory=dict)  # attempt numbers, in order

    def step(self, key: Key) -> Step:
        return self.steps.get(key, Step())

    def observe(self) -> Observation:
        stages: dict[str, StageObservation] = {}
        for stage in self.spec.stages_to_run():
            prepare = self.step(("prepare", stage, 0))
            planned = prepare.state == "succeeded"
            count = self.fold_counts[stage] if planned else None
            folds = {n: self.step(("fold", stage, n)) for n in range(1, (count or 0) + 1)}
            stages[stage] = StageObservation(
                prepare,
                count,
                folds,
                self.summaries.get(stage),
                summary=self.step(("summary", stage, 0)),
            )
        return Observation(stages, self.step(("final", "", 0)), approval="approved")

    def key(self, action: Action) -> Key | None:
        if isinstance(action, Prepare):
            return ("prepare", action.stage, 0)
        if isinstance(action, StartFold):
            return ("fold", action.stage, action.fold)
        if isinstance(action, Summarise):
            return ("summary", action.stage, 0)
        if isinstance(action, StartFinal):
            return ("final", "", 0)
        return None

    def apply(self, action: Action) -> None:
        key = self.key(action)
        if key is None:
            assert isinstance(action, StopRunning)
            for k, s in self.steps.items():
                if s.state == "running":
                    self.steps[k] = Step("failed", s.failures + 1, "stopped")
            return
        old = self.step(key)
        if old.state == "running":
            # Only the summary is asked for again while it runs; starting it is idempotent.
            assert key[0] == "summary", action
            return
        assert old.state in ("absent", "failed"), (action, old)
        attempt = old.failures + 1
        if not isinstance(action, Summarise):
            assert action.attempt == attempt  # type: ignore[union-attr]
        assert attempt not in self.started.get(key, []), f"{key} attempt {attempt} twice"
        assert attempt <= self.spec.max_retries + 1, f"{key}: attempt {attempt} is past maxRetries"
        self.started.setdefault(key, []).append(attempt)
        self.steps[key] = Step("running", old.failures)

    def finish(self, key: Key, outcome: Outcome) -> None:
        old = self.steps[key]
        if outcome == "fail":
            self.steps[key] = Step("failed", old.failures + 1, f"{key[0]} broke")
        elif outcome == "lost":
            self.steps[key] = Step("absent", old.failures + 1)
        else:
            self.steps[key] = Step("succeeded", old.failures)
            if key[0] == "summary":
                self.summaries[key[1]] = self.gates[key[1]]

    def running(self) -> list[Key]:
        return sorted(k for k, s in self.steps.items() if s.state == "running")


def make_spec(mode: str, max_retries: int, parallelism: int, policy: str) -> TrainingJobSpec:
    return TrainingJobSpec(
        symbol="BTC/USDT",
        mode=mode,  # type: ignore[arg-type]
        max_retries=max_retries,
        parallelism=parallelism,
        approval=ApprovalSpec(policy=policy),  # type: ignore[arg-type]
    )


def pass_bound(spec: TrainingJobSpec, counts: dict[str, int]) -> int:
    """Each pass starts an attempt or finishes one, and no step has more than maxRetries + 1."""
    steps = 1  # final
    for stage in spec.stages_to_run():
        steps += 2 + counts[stage]  # prepare, folds, summary
    return 2 * steps * (spec.max_retries + 1) + 4


def run(
    cluster: Cluster, outcome_of: st.DataObject, broken: Key | None, noisy: bool = True
) -> tuple[str, str, int]:
    """Drive the machine to its end; (phase, message, passes). Not noisy: only `broken` fails."""
    bound = pass_bound(cluster.spec, cluster.fold_counts)
    for passes in range(1, bound + 1):
        decision = decide(cluster.spec, cluster.observe())
        if decision.phase in TERMINAL:
            for action in decision.actions:
                cluster.apply(action)
            return decision.phase, decision.message, passes
        before = dict(cluster.steps)
        for action in decision.actions:
            cluster.apply(action)
        running = cluster.running()
        progressed = cluster.steps != before
        if running and (not progressed or outcome_of.draw(st.booleans())):
            key = outcome_of.draw(st.sampled_from(running))
            outcome: Outcome = (
                "fail"
                if key == broken
                else outcome_of.draw(st.sampled_from(["ok", "ok", "ok", "fail", "lost"]))
                if noisy
                else "ok"
            )
            cluster.finish(key, outcome)
            progressed = True
        # No pass may leave everything as it was: that decision would repeat forever.
        assert progressed, f"no progress in {decision.phase}: {decision.message}"
    pytest.fail(f"no terminal phase within {bound} passes")


modes = st.sampled_from(["sequential", "quick", "full"])
counts = st.fixed_dictionaries({"quick": st.integers(1, 4), "full": st.integers(1, 4)})


@settings(max_examples=300, deadline=None)
@given(
    mode=modes,
    max_retries=st.integers(0, 3),
    parallelism=st.integers(1, 3),
    fold_counts=counts,
    kind=st.sampled_from(["prepare", "fold", "summary", "final"]),
    data=st.data(),
)
def test_a_step_that_keeps_failing_ends_the_run_failed(
    mode: str,
    max_retries: int,
    parallelism: int,
    fold_counts: dict[str, int],
    kind: str,
    data: st.DataObject,
) -> None:
    spec = make_spec(mode, max_retries, parallelism, "manual")
    stage = data.draw(st.sampled_from(spec.stages_to_run()))
    if kind == "final" and "full" not in spec.stages_to_run():
        kind = "summary"
    number = data.draw(st.integers(1, fold_counts[stage])) if kind == "fold" else 0
    broken: Key = (kind, "" if kind == "final" else stage, number)
    cluster = Cluster(spec, fold_counts, {"quick": True, "full": True})
    noisy = data.draw(st.booleans())

    phase, message, _ = run(cluster, data, broken, noisy)

    # The run may also end Failed through another step's unlucky attempts; whichever step
    # ended it used exactly maxRetries + 1 attempts, and the broken one never more.
    assert phase == "Failed", (phase, message)
    assert f"failed after {max_retries + 1} attempts" in message
    assert len(cluster.started.get(broken, [])) <= max_retries + 1
    if not noisy:  # every other step succeeds: the broken one ends the run, named with its error
        assert message.endswith(f"failed after {max_retries + 1} attempts: {kind} broke")
        assert len(cluster.started[broken]) == max_retries + 1
    assert cluster.running() == [], "a failed run leaves nothing running"


@settings(max_examples=300, deadline=None)
@given(
    mode=modes,
    max_retries=st.integers(0, 3),
    parallelism=st.integers(1, 3),
    fold_counts=counts,
    policy=st.sampled_from(["manual", "auto"]),
    gates=st.fixed_dictionaries({"quick": st.booleans(), "full": st.booleans()}),
    data=st.data(),
)
def test_any_run_ends_within_a_bounded_number_of_passes(
    mode: str,
    max_retries: int,
    parallelism: int,
    fold_counts: dict[str, int],
    policy: str,
    gates: dict[str, bool],
    data: st.DataObject,
) -> None:
    spec = make_spec(mode, max_retries, parallelism, policy)
    cluster = Cluster(spec, fold_counts, gates)
    phase, message, passes = run(cluster, data, broken=None)
    assert phase in ("Succeeded", "Failed", "Rejected"), (phase, message)
    assert passes <= pass_bound(spec, fold_counts)
    assert cluster.running() == []
    for key, attempts in cluster.started.items():
        assert attempts == list(range(1, len(attempts) + 1)), (key, attempts)


def test_summary_failing_past_its_retries_fails_the_run_with_its_error() -> None:
    spec = make_spec("quick", 1, 2, "manual")
    done = {n: Step("succeeded") for n in (1, 2)}
    seen = StageObservation(
        Step("succeeded"), 2, done, summary=Step("failed", 2, "plan.json not found")
    )
    decision = decide(spec, Observation({"quick": seen}))
    assert decision.phase == "Failed"
    assert decision.actions == (StopRunning(),)
    assert decision.message == ("quick stage: summary failed after 2 attempts: plan.json not found")


def test_summary_within_its_retries_is_asked_for_again() -> None:
    spec = make_spec("quick", 1, 2, "manual")
    done = {n: Step("succeeded") for n in (1, 2)}
    for summary in (Step("failed", 1, "boom"), Step("running", 1), Step()):
        seen = StageObservation(Step("succeeded"), 2, done, summary=summary)
        decision = decide(spec, Observation({"quick": seen}))
        assert (decision.phase, decision.actions) == ("Quick", (Summarise("quick"),))


@pytest.mark.parametrize("kind", ["prepare", "fold", "final"])
def test_a_step_whose_result_keeps_getting_lost_is_not_started_forever(kind: str) -> None:
    """An absent step that already spent every attempt (results lost) ends the run."""
    spec = make_spec("full", 1, 2, "auto")
    lost = Step("absent", 2)
    ok = Step("succeeded")
    if kind == "prepare":
        obs = Observation({"full": StageObservation(lost)})
    elif kind == "fold":
        obs = Observation({"full": StageObservation(ok, 2, {1: ok, 2: lost})})
    else:
        obs = Observation({"full": StageObservation(ok, 1, {1: ok}, True, ok)}, final=lost)
    decision = decide(spec, obs)
    assert decision.phase == "Failed", decision
    assert "failed after 2 attempts" in decision.message
