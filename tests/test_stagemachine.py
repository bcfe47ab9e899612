"""The stage machine: table-driven cases over modes, policies and progress, plus properties.

`decide` is pure, so every case builds an `Observation` by hand and checks the whole `Decision`
(phase, actions, message, progress, gate) or the parts that matter for the case.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stagegate_core.spec import TrainingJobSpec
from stagegate_core.specparts import ApprovalSpec, StageName
from stagegate_core.stagemachine import (
    Action,
    Decision,
    GateVerdict,
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

Mode = Literal["sequential", "quick", "full"]
Policy = Literal["manual", "auto"]
Approval = Literal["approved", "rejected"] | None

OK = Step("succeeded")
RUN = Step("running")
ABSENT = Step()


def make_spec(
    mode: Mode = "sequential",
    policy: Policy = "manual",
    parallelism: int = 2,
    max_retries: int = 2,
    suspend: bool = False,
) -> TrainingJobSpec:
    return TrainingJobSpec(
        symbol="BTC/USDT",
        mode=mode,
        approval=ApprovalSpec(policy=policy),
        parallelism=parallelism,
        max_retries=max_retries,
        suspend=suspend,
    )


def done_stage(count: int = 3, passed: bool = True) -> StageObservation:
    return StageObservation(
        prepare=OK,
        fold_count=count,
        folds={n: OK for n in range(1, count + 1)},
        summary_passed=passed,
    )


def planned(count: int, folds: Mapping[int, Step] | None = None) -> StageObservation:
    return StageObservation(prepare=OK, fold_count=count, folds=dict(folds or {}))


def first_stage(mode: Mode) -> StageName:
    return "full" if mode == "full" else "quick"


def starts(decision: Decision) -> list[Action]:
    return [a for a in decision.actions if isinstance(a, Prepare | StartFold | StartFinal)]


# --------------------------------------------------------------------------- one stage's progress

# (id, stage observation, expected phase or None for the stage's own phase, actions, message part)
PROGRESS: list[tuple[str, StageObservation, str | None, tuple[Action, ...], str]] = [
    ("nothing started", StageObservation(), None, (Prepare("quick", 1),), "preparing the quick"),
    ("preparing", StageObservation(prepare=RUN), None, (), "preparing the quick stage"),
    (
        "prepare failed once",
        StageObservation(prepare=Step("failed", 1, "no data")),
        None,
        (Prepare("quick", 2),),
        "preparing",
    ),
    (
        "prepare failed at the retry limit",
        StageObservation(prepare=Step("failed", 2, "no data")),
        None,
        (Prepare("quick", 3),),
        "preparing",
    ),
    (
        "prepare failed beyond retries",
        StageObservation(prepare=Step("failed", 3, "no data")),
        "Failed",
        (StopRunning(),),
        "quick stage: prepare failed after 3 attempts: no data",
    ),
    (
        "prepare succeeded without a fold count",
        StageObservation(prepare=OK),
        None,
        (Prepare("quick", 1),),
        "preparing",
    ),
    (
        "planned, no fold started",
        planned(5),
        None,
        (StartFold("quick", 1, 1), StartFold("quick", 2, 1)),
        "quick stage: 0/5 folds done",
    ),
    (
        "folds partly done, one running",
        planned(5, {1: OK, 2: OK, 3: RUN}),
        None,
        (StartFold("quick", 4, 1),),
        "quick stage: 2/5 folds done",
    ),
    (
        "folds running up to parallelism",
        planned(5, {1: RUN, 2: RUN}),
        None,
        (),
        "quick stage: 0/5 folds done",
    ),
    (
        "out-of-order completion fills the lowest free folds",
        planned(5, {2: OK, 4: OK, 5: RUN}),
        None,
        (StartFold("quick", 1, 1),),
        "quick stage: 2/5 folds done",
    ),
    (
        "fold failed and retried",
        planned(4, {1: Step("failed", 1, "oom"), 2: OK}),
        None,
        (StartFold("quick", 1, 2), StartFold("quick", 3, 1)),
        "quick stage: 1/4 folds done",
    ),
    (
        "fold failed at the retry limit is retried",
        planned(3, {1: OK, 2: OK, 3: Step("failed", 2, "oom")}),
        None,
        (StartFold("quick", 3, 3),),
        "quick stage: 2/3 folds done",
    ),
    (
        "fold failed past retries",
        planned(4, {1: OK, 2: RUN, 3: Step("failed", 3, "killed: OOM")}),
        "Failed",
        (StopRunning(),),
        "quick stage: fold 3 failed after 3 attempts: killed: OOM",
    ),
    (
        "fold failed past retries without an error text",
        planned(2, {2: Step("failed", 3)}),
        "Failed",
        (StopRunning(),),
        "quick stage: fold 2 failed after 3 attempts",
    ),
    (
        "all folds done",
        planned(3, {1: OK, 2: OK, 3: OK}),
        None,
        (Summarise("quick"),),
        "summarising the quick stage",
    ),
]


def _rename(action: Action, stage: StageName) -> Action:
    if isinstance(action, Prepare):
        return Prepare(stage, action.attempt)
    if isinstance(action, StartFold):
        return StartFold(stage, action.fold, action.attempt)
    if isinstance(action, Summarise):
        return Summarise(stage)
    return action


@pytest.mark.parametrize("mode", ["sequential", "quick", "full"])
@pytest.mark.parametrize("policy", ["manual", "auto"])
@pytest.mark.parametrize("approval", [None, "approved", "rejected"])
@pytest.mark.parametrize(
    ("seen", "phase", "actions", "message"), [p[1:] for p in PROGRESS], ids=[p[0] for p in PROGRESS]
)
def test_first_stage_progress(
    mode: Mode,
    policy: Policy,
    approval: Approval,
    seen: StageObservation,
    phase: str | None,
    actions: tuple[Action, ...],
    message: str,
) -> None:
    stage = first_stage(mode)
    spec = make_spec(mode, policy, parallelism=2, max_retries=2)
    decision = decide(spec, Observation({stage: seen}, approval=approval))
    expected_phase = phase or {"quick": "Quick", "full": "Full"}[stage]
    assert decision.phase == expected_phase
    assert decision.actions == tuple(_rename(a, stage) for a in actions)
    assert message.replace("quick", stage) in decision.message
    assert decision.stage == stage
    assert decision.gate is None  # no gate is consulted while the first stage runs
    if seen.fold_count is not None and seen.prepare.state == "succeeded":
        done = sum(1 for s in seen.folds.values() if s.state == "succeeded")
        assert (decision.done, decision.total) == (done, seen.fold_count)
        assert decision.progress == f"{done}/{seen.fold_count}"
    else:
        assert (decision.done, decision.total, decision.progress) == (0, 0, "")


@pytest.mark.parametrize("passed", [True, False])
@pytest.mark.parametrize("policy", ["manual", "auto"])
@pytest.mark.parametrize("approval", [None, "approved", "rejected"])
def test_quick_mode_ends_after_the_quick_summary(
    passed: bool, policy: Policy, approval: Approval
) -> None:
    # `mode: quick` has no gate: its summary ends the run whatever the gates say.
    spec = make_spec("quick", policy)
    obs = Observation({"quick": done_stage(3, passed)}, approval=approval)
    assert decide(spec, obs) == Decision("Succeeded", (), "quick stage complete")


def test_fold_beyond_fold_count_is_ignored() -> None:
    seen = planned(2, {1: OK, 2: OK, 3: Step("failed", 9, "stale")})
    decision = decide(make_spec("quick"), Observation({"quick": seen}))
    assert decision.actions == (Summarise("quick"),)


def test_failed_check_comes_before_starting_others() -> None:
    # Fold 1 is retryable, fold 2 is not: the stage fails; nothing new is started.
    seen = planned(3, {1: Step("failed", 1), 2: Step("failed", 1, "x")})
    spec = make_spec("quick", max_retries=0)
    decision = decide(spec, Observation({"quick": seen}))
    assert decision.phase == "Failed"
    assert decision.actions == (StopRunning(),)
    assert decision.message == "quick stage: fold 1 failed after 1 attempts"


def test_max_retries_zero_allows_exactly_one_attempt() -> None:
    spec = make_spec("quick", max_retries=0)
    assert decide(spec, Observation({"quick": planned(1)})).actions == (StartFold("quick", 1, 1),)
    failed = decide(spec, Observation({"quick": planned(1, {1: Step("failed", 1, "e")})}))
    assert failed.phase == "Failed"
    assert "fold 1 failed after 1 attempts: e" in failed.message


# --------------------------------------------------------------------------- the full-stage gate

# (quick passed, policy, approval) -> (phase, actions, message part, gate verdict or None)
FULL_GATE: list[tuple[bool, Policy, Approval, str, tuple[Action, ...], str, GateVerdict | None]] = [
    (
        True,
        "manual",
        None,
        "AwaitingApproval",
        (),
        "quick stage done; waiting for approval",
        GateVerdict("full", "waiting", ""),
    ),
    (
        False,
        "manual",
        None,
        "AwaitingApproval",
        (),
        "waiting for approval",
        GateVerdict("full", "waiting", ""),
    ),
    (True, "manual", "approved", "Full", (Prepare("full", 1),), "preparing the full", None),
    (False, "manual", "approved", "Full", (Prepare("full", 1),), "preparing the full", None),
    (
        True,
        "manual",
        "rejected",
        "Rejected",
        (StopRunning(),),
        "rejected at the quick gate",
        GateVerdict("full", "rejected", "annotation"),
    ),
    (
        False,
        "manual",
        "rejected",
        "Rejected",
        (StopRunning(),),
        "rejected at the quick gate",
        GateVerdict("full", "rejected", "annotation"),
    ),
    (True, "auto", None, "Full", (Prepare("full", 1),), "preparing the full", None),
    (
        False,
        "auto",
        None,
        "Rejected",
        (StopRunning(),),
        "quick stage failed its gates (approval policy auto)",
        GateVerdict("full", "rejected", "policy:auto"),
    ),
    (True, "auto", "approved", "Full", (Prepare("full", 1),), "preparing the full", None),
    (False, "auto", "approved", "Full", (Prepare("full", 1),), "preparing the full", None),
    (
        True,
        "auto",
        "rejected",
        "Rejected",
        (StopRunning(),),
        "rejected at the quick gate",
        GateVerdict("full", "rejected", "annotation"),
    ),
    (
        False,
        "auto",
        "rejected",
        "Rejected",
        (StopRunning(),),
        "rejected at the quick gate",
        GateVerdict("full", "rejected", "annotation"),
    ),
]


@pytest.mark.parametrize(
    ("passed", "policy", "approval", "phase", "actions", "message", "gate"), FULL_GATE
)
def test_full_gate(
    passed: bool,
    policy: Policy,
    approval: Approval,
    phase: str,
    actions: tuple[Action, ...],
    message: str,
    gate: GateVerdict | None,
) -> None:
    spec = make_spec("sequential", policy)
    decision = decide(spec, Observation({"quick": done_stage(3, passed)}, approval=approval))
    assert decision.phase == phase
    assert decision.actions == actions
    assert message in decision.message
    if gate is not None:
        assert decision.gate == gate
    if phase == "AwaitingApproval":
        assert decision.stage == "quick"


@pytest.mark.parametrize("policy", ["manual", "auto"])
@pytest.mark.parametrize("passed", [True, False])
def test_full_stage_progress_after_approval(policy: Policy, passed: bool) -> None:
    spec = make_spec("sequential", policy, parallelism=3)
    quick = done_stage(3, passed)
    full = planned(6, {1: OK, 2: RUN, 3: Step("failed", 1, "x")})
    decision = decide(spec, Observation({"quick": quick, "full": full}, approval="approved"))
    assert decision.phase == "Full"
    assert decision.stage == "full"
    assert decision.actions == (StartFold("full", 3, 2), StartFold("full", 4, 1))
    assert decision.progress == "1/6"
    assert decision.message == "full stage: 1/6 folds done"


def test_full_fold_failed_past_retries_in_sequential_mode() -> None:
    spec = make_spec("sequential", "auto", max_retries=1)
    full = planned(4, {1: OK, 4: Step("failed", 2, "disk full")})
    decision = decide(spec, Observation({"quick": done_stage(3, True), "full": full}))
    assert decision.phase == "Failed"
    assert decision.actions == (StopRunning(),)
    assert decision.message == "full stage: fold 4 failed after 2 attempts: disk full"
    assert (decision.stage, decision.done, decision.total) == ("full", 1, 4)


# --------------------------------------------------------------------------- the final gate

FINAL_GATE: list[tuple[bool, Policy, Approval, str, tuple[Action, ...], GateVerdict]] = [
    (True, "manual", None, "Full", (StartFinal(1),), GateVerdict("final", "approved", "gates")),
    (False, "manual", None, "AwaitingApproval", (), GateVerdict("final", "waiting", "")),
    (
        True,
        "manual",
        "approved",
        "Full",
        (StartFinal(1),),
        GateVerdict("final", "approved", "annotation"),
    ),
    (
        False,
        "manual",
        "approved",
        "Full",
        (StartFinal(1),),
        GateVerdict("final", "approved", "annotation"),
    ),
    (
        True,
        "manual",
        "rejected",
        "Rejected",
        (StopRunning(),),
        GateVerdict("final", "rejected", "annotation"),
    ),
    (
        False,
        "manual",
        "rejected",
        "Rejected",
        (StopRunning(),),
        GateVerdict("final", "rejected", "annotation"),
    ),
    (True, "auto", None, "Full", (StartFinal(1),), GateVerdict("final", "approved", "policy:auto")),
    (
        False,
        "auto",
        None,
        "Rejected",
        (StopRunning(),),
        GateVerdict("final", "rejected", "policy:auto"),
    ),
    (
        False,
        "auto",
        "approved",
        "Full",
        (StartFinal(1),),
        GateVerdict("final", "approved", "annotation"),
    ),
    (
        True,
        "auto",
        "rejected",
        "Rejected",
        (StopRunning(),),
        GateVerdict("final", "rejected", "annotation"),
    ),
]


@pytest.mark.parametrize(("passed", "policy", "approval", "phase", "actions", "gate"), FINAL_GATE)
def test_final_gate_in_full_mode(
    passed: bool,
    policy: Policy,
    approval: Approval,
    phase: str,
    actions: tuple[Action, ...],
    gate: GateVerdict,
) -> None:
    spec = make_spec("full", policy)
    decision = decide(spec, Observation({"full": done_stage(4, passed)}, approval=approval))
    assert decision.phase == phase
    assert decision.actions == actions
    assert decision.gate == gate
    if phase == "AwaitingApproval":
        assert decision.stage == "full"
        assert "approve to train the final model anyway" in decision.message
    if phase == "Rejected":
        expected = (
            "rejected at the full gate"
            if gate.by == "annotation"
            else "full stage failed its gates (approval policy auto)"
        )
        assert decision.message == expected


def test_sequential_auto_rejects_when_full_fails_its_gates() -> None:
    spec = make_spec("sequential", "auto")
    obs = Observation({"quick": done_stage(3, True), "full": done_stage(5, False)})
    decision = decide(spec, obs)
    assert decision.phase == "Rejected"
    assert decision.gate == GateVerdict("final", "rejected", "policy:auto")


def test_sequential_manual_approval_also_opens_the_final_gate() -> None:
    # Documented: one approval of the run overrides failed gates at the final gate too.
    spec = make_spec("sequential", "manual")
    obs = Observation(
        {"quick": done_stage(3, True), "full": done_stage(5, False)}, approval="approved"
    )
    decision = decide(spec, obs)
    assert decision.actions == (StartFinal(1),)
    assert decision.gate == GateVerdict("final", "approved", "annotation")


# (final step, expected phase, actions, message part)
FINAL_PROGRESS: list[tuple[Step, str, tuple[Action, ...], str]] = [
    (ABSENT, "Full", (StartFinal(1),), "training the final model"),
    (RUN, "Full", (), "training the final model"),
    (Step("failed", 1, "boom"), "Full", (StartFinal(2),), "training the final model"),
    (Step("failed", 2, "boom"), "Full", (StartFinal(3),), "training the final model"),
    (
        Step("failed", 3, "boom"),
        "Failed",
        (StopRunning(),),
        "final model failed after 3 attempts: boom",
    ),
    (Step("failed", 3), "Failed", (StopRunning(),), "final model failed after 3 attempts"),
    (OK, "Succeeded", (), "final model trained"),
]


@pytest.mark.parametrize("mode", ["sequential", "full"])
@pytest.mark.parametrize(("final", "phase", "actions", "message"), FINAL_PROGRESS)
def test_final_model_progress(
    mode: Mode, final: Step, phase: str, actions: tuple[Action, ...], message: str
) -> None:
    spec = make_spec(mode, "auto", max_retries=2)
    stages = {"full": done_stage(4, True)}
    if mode == "sequential":
        stages["quick"] = done_stage(3, True)
    decision = decide(spec, Observation(stages, final=final))
    assert decision.phase == phase
    assert decision.actions == actions
    assert message in decision.message
    if phase == "Failed":
        assert decision.message == message


# ------------------------------------------------------------------ cancel, terminal, suspend


def _sample_observations() -> list[Observation]:
    return [
        Observation(),
        Observation({"quick": planned(5, {1: RUN, 2: OK})}),
        Observation({"quick": done_stage(3, True)}),
        Observation(
            {"quick": done_stage(3, True), "full": planned(4, {1: RUN})}, approval="approved"
        ),
        Observation(
            {"quick": done_stage(3), "full": done_stage(4)}, final=RUN, approval="approved"
        ),
        Observation({"quick": planned(2, {1: Step("failed", 9, "x")})}),
    ]


@pytest.mark.parametrize("policy", ["manual", "auto"])
@pytest.mark.parametrize("suspend", [False, True])
@pytest.mark.parametrize("index", range(len(_sample_observations())))
def test_cancelled(policy: Policy, suspend: bool, index: int) -> None:
    obs = _sample_observations()[index]
    spec = make_spec("sequential", policy, suspend=suspend)
    decision = decide(spec, Observation(obs.stages, obs.final, obs.approval, cancelled=True))
    assert decision.phase == "Cancelled"
    assert decision.actions == (StopRunning(),)
    assert "cancelled" in decision.message


@pytest.mark.parametrize("mode", ["sequential", "quick", "full"])
def test_suspended_before_start_is_pending(mode: Mode) -> None:
    decision = decide(make_spec(mode, suspend=True), Observation())
    assert decision == Decision("Pending", (), "suspended before start")


SUSPENDED: list[tuple[str, Mode, Observation, str]] = [
    ("preparing", "quick", Observation({"quick": StageObservation(prepare=RUN)}), "Quick"),
    ("folds running", "quick", Observation({"quick": planned(5, {1: RUN, 2: OK})}), "Quick"),
    ("folds running, full mode", "full", Observation({"full": planned(5, {1: RUN})}), "Full"),
    (
        "folds to retry",
        "quick",
        Observation({"quick": planned(3, {1: Step("failed", 1)})}),
        "Quick",
    ),
    (
        "full stage not started",
        "sequential",
        Observation({"quick": done_stage(3)}, approval="approved"),
        "Full",
    ),
    (
        "final not started",
        "sequential",
        Observation({"quick": done_stage(3), "full": done_stage(4)}, approval="approved"),
        "Full",
    ),
]


@pytest.mark.parametrize(
    ("mode", "obs", "phase"), [s[1:] for s in SUSPENDED], ids=[s[0] for s in SUSPENDED]
)
def test_suspend_stops_running_and_starts_nothing(mode: Mode, obs: Observation, phase: str) -> None:
    decision = decide(make_spec(mode, "auto", suspend=True), obs)
    assert decision.phase == phase
    assert decision.actions == (StopRunning(),)
    assert "suspended" in decision.message


def test_suspend_while_awaiting_approval_keeps_waiting() -> None:
    obs = Observation({"quick": done_stage(3)})
    decision = decide(make_spec("sequential", "manual", suspend=True), obs)
    assert decision.phase == "AwaitingApproval"
    assert decision.actions == ()


@pytest.mark.parametrize(
    "seen",
    [
        planned(3, {1: OK, 2: Step("failed", 3, "oom")}),
        StageObservation(prepare=Step("failed", 3, "no data")),
    ],
    ids=["fold", "prepare"],
)
def test_suspend_does_not_mask_a_permanent_failure(seen: StageObservation) -> None:
    decision = decide(make_spec("quick", max_retries=2, suspend=True), Observation({"quick": seen}))
    assert decision.phase == "Failed"


# --------------------------------------------------------------------------- properties

FAST = settings(max_examples=200, deadline=None)


@st.composite
def steps(draw: st.DrawFn, max_failures: int = 5) -> Step:
    states = ["absent", "running", "succeeded"] + (["failed"] if max_failures >= 1 else [])
    state = draw(st.sampled_from(states))
    if state == "absent":
        return Step()
    low = 1 if state == "failed" else 0
    failures = draw(st.integers(low, max_failures))
    error = draw(st.sampled_from([None, "oom", "timeout"])) if state != "succeeded" else None
    return Step(state, failures, error)


@st.composite
def stage_observations(draw: st.DrawFn, summary: bool | None = None) -> StageObservation:
    """Any stage observation, consistent enough to be reachable (summary only when all done)."""
    prepare = draw(steps())
    if prepare.state != "succeeded":
        return StageObservation(prepare=prepare)
    count = draw(st.integers(1, 8))
    folds = {n: draw(steps()) for n in range(1, count + 1) if draw(st.booleans())}
    all_done = len(folds) == count and all(s.state == "succeeded" for s in folds.values())
    passed: bool | None = None
    if all_done and summary is not False:
        passed = draw(st.none() | st.booleans()) if summary is None else draw(st.booleans())
    return StageObservation(prepare, count, folds, passed)


@st.composite
def observations(draw: st.DrawFn, approvals: list[Approval] | None = None) -> Observation:
    stages = {s: draw(stage_observations()) for s in ("quick", "full") if draw(st.booleans())}
    choices = approvals if approvals is not None else [None, "approved", "rejected"]
    return Observation(
        stages,
        final=draw(steps()),
        approval=draw(st.sampled_from(choices)),
        cancelled=draw(st.booleans()),
    )


specs = st.builds(
    make_spec,
    mode=st.sampled_from(["sequential", "quick", "full"]),
    policy=st.sampled_from(["manual", "auto"]),
    parallelism=st.integers(1, 5),
    max_retries=st.integers(0, 3),
    suspend=st.booleans(),
)


@FAST
@given(
    spec=st.builds(
        make_spec,
        mode=st.just("sequential"),
        policy=st.just("manual"),
        parallelism=st.integers(1, 5),
        max_retries=st.integers(0, 3),
        suspend=st.booleans(),
    ),
    obs=observations(approvals=[None, "rejected"]),
)
def test_no_path_skips_the_manual_gate(spec: TrainingJobSpec, obs: Observation) -> None:
    decision = decide(spec, obs)
    for action in decision.actions:
        assert not isinstance(action, StartFinal)
        if isinstance(action, Prepare | StartFold | Summarise):
            assert action.stage == "quick"
    assert decision.phase not in ("Full", "Succeeded")


@FAST
@given(spec=specs, data=st.data())
def test_fold_failed_past_retries_always_fails(spec: TrainingJobSpec, data: st.DataObject) -> None:
    stage = first_stage(spec.mode)
    count = data.draw(st.integers(1, 8))
    bad = data.draw(st.integers(1, count))
    folds = {n: data.draw(steps(max_failures=spec.max_retries)) for n in range(1, count + 1)}
    failures = data.draw(st.integers(spec.max_retries + 1, spec.max_retries + 5))
    folds[bad] = Step("failed", failures, "boom")
    obs = Observation(
        {stage: planned(count, folds)},
        approval=data.draw(st.sampled_from([None, "approved", "rejected"])),
    )
    spec = spec.model_copy(update={"suspend": False})
    decision = decide(spec, obs)
    assert decision.phase == "Failed"
    assert decision.actions == (StopRunning(),)
    first_bad = min(
        n for n, s in folds.items() if s.state == "failed" and s.failures > spec.max_retries
    )
    assert f"fold {first_bad} failed after {folds[first_bad].failures} attempts" in decision.message
    assert decision.stage == stage


def _permuted(seen: StageObservation, order: list[int]) -> StageObservation:
    keys = sorted(seen.folds)
    reordered = {keys[i]: seen.folds[keys[i]] for i in order}
    assert list(reordered) == [keys[i] for i in order]
    return StageObservation(seen.prepare, seen.fold_count, reordered, seen.summary_passed)


@FAST
@given(spec=specs, obs=observations(), data=st.data())
def test_decision_ignores_fold_insertion_order(
    spec: TrainingJobSpec, obs: Observation, data: st.DataObject
) -> None:
    shuffled = {
        name: _permuted(seen, data.draw(st.permutations(range(len(seen.folds)))))
        for name, seen in obs.stages.items()
    }
    stage_order = data.draw(st.permutations(list(obs.stages)))
    other = Observation(
        {n: shuffled[n] for n in stage_order}, obs.final, obs.approval, obs.cancelled
    )
    assert decide(spec, other) == decide(spec, obs)


@FAST
@given(spec=specs, data=st.data())
def test_never_more_running_than_parallelism(spec: TrainingJobSpec, data: st.DataObject) -> None:
    stage = first_stage(spec.mode)
    count = data.draw(st.integers(1, 12))
    folds = {n: data.draw(steps(max_failures=spec.max_retries)) for n in range(1, count + 1)}
    obs = Observation({stage: planned(count, folds)})
    decision = decide(spec, obs)
    running = sum(1 for s in folds.values() if s.state == "running")
    started = [a for a in decision.actions if isinstance(a, StartFold)]
    waiting = sorted(
        n for n in range(1, count + 1) if folds.get(n, ABSENT).state in ("absent", "failed")
    )
    if spec.suspend:
        assert started == []
    else:
        assert len(started) == max(0, min(spec.parallelism - running, len(waiting)))
        assert [a.fold for a in started] == waiting[: len(started)]
        for action in started:
            assert action.attempt == folds.get(action.fold, ABSENT).failures + 1
    assert running + len(started) <= max(spec.parallelism, running)
    assert len({a.fold for a in started}) == len(started)


@FAST
@given(
    spec=specs.map(lambda s: s.model_copy(update={"mode": "sequential"})),
    quick=stage_observations(summary=False),
    full=st.none() | stage_observations(),
    approval=st.sampled_from(["approved", "rejected"]),
)
def test_early_approval_does_not_change_the_quick_stage(
    spec: TrainingJobSpec,
    quick: StageObservation,
    full: StageObservation | None,
    approval: Approval,
) -> None:
    stages = {"quick": quick} if full is None else {"quick": quick, "full": full}
    without = decide(spec, Observation(stages))
    early = decide(spec, Observation(stages, approval=approval))
    assert early == without
    assert all(getattr(a, "stage", "quick") == "quick" for a in early.actions)
    assert not any(isinstance(a, StartFinal) for a in early.actions)


@pytest.mark.parametrize("policy", ["manual", "auto"])
@pytest.mark.parametrize("passed", [True, False])
def test_approval_applies_once_the_quick_summary_exists(policy: Policy, passed: bool) -> None:
    spec = make_spec("sequential", policy)
    quick_running = planned(3, {1: OK, 2: OK, 3: RUN})
    before = decide(spec, Observation({"quick": quick_running}, approval="approved"))
    assert before.phase == "Quick" and before.actions == ()
    after = decide(spec, Observation({"quick": done_stage(3, passed)}, approval="approved"))
    assert after.phase == "Full"
    assert after.actions == (Prepare("full", 1),)
    rejected = decide(spec, Observation({"quick": done_stage(3, passed)}, approval="rejected"))
    assert rejected.phase == "Rejected"


# --------------------------------------------------------------------------- simulation


@dataclass
class World:
    """A fake cluster: applies actions and completes running steps when told to."""

    spec: TrainingJobSpec
    fold_counts: dict[str, int]
    gates: dict[str, bool]
    prepares: dict[str, Step] = field(default_factory=dict)
    folds: dict[str, dict[int, Step]] = field(default_factory=dict)
    summaries: dict[str, bool] = field(default_factory=dict)
    final: Step = ABSENT
    approval: Approval = None
    started: dict[tuple[str, str, int], int] = field(default_factory=dict)

    def observe(self) -> Observation:
        stages: dict[str, StageObservation] = {}
        for stage in self.spec.stages_to_run():
            prepare = self.prepares.get(stage, ABSENT)
            count = self.fold_counts[stage] if prepare.state == "succeeded" else None
            stages[stage] = StageObservation(
                prepare, count, dict(self.folds.get(stage, {})), self.summaries.get(stage)
            )
        return Observation(stages, self.final, self.approval)

    def running(self) -> list[tuple[str, str, int]]:
        out = [("prepare", s, 0) for s, p in self.prepares.items() if p.state == "running"]
        for stage, folds in self.folds.items():
            out += [("fold", stage, n) for n, s in sorted(folds.items()) if s.state == "running"]
        if self.final.state == "running":
            out.append(("final", "", 0))
        return out

    def apply(self, action: Action) -> None:
        if isinstance(action, Prepare):
            old = self.prepares.get(action.stage, ABSENT)
            assert old.state in ("absent", "failed"), action
            assert action.attempt == old.failures + 1
            self.prepares[action.stage] = Step("running", old.failures)
            self._count(("prepare", action.stage, 0))
        elif isinstance(action, StartFold):
            folds = self.folds.setdefault(action.stage, {})
            old = folds.get(action.fold, ABSENT)
            assert old.state in ("absent", "failed"), action
            assert action.attempt == old.failures + 1
            assert 1 <= action.fold <= self.fold_counts[action.stage]
            folds[action.fold] = Step("running", old.failures)
            self._count(("fold", action.stage, action.fold))
        elif isinstance(action, Summarise):
            folds = self.folds.get(action.stage, {})
            assert len(folds) == self.fold_counts[action.stage]
            assert all(s.state == "succeeded" for s in folds.values())
            self.summaries[action.stage] = self.gates[action.stage]
        elif isinstance(action, StartFinal):
            assert self.final.state in ("absent", "failed")
            self.final = Step("running", self.final.failures)
            self._count(("final", "", 0))
        else:
            assert isinstance(action, StopRunning)

    def _count(self, key: tuple[str, str, int]) -> None:
        self.started[key] = self.started.get(key, 0) + 1

    def finish(self, key: tuple[str, str, int], fail: bool) -> None:
        kind, stage, number = key
        if kind == "prepare":
            old = self.prepares[stage]
            self.prepares[stage] = (
                Step("failed", old.failures + 1, "e") if fail else Step("succeeded", old.failures)
            )
        elif kind == "fold":
            old = self.folds[stage][number]
            self.folds[stage][number] = (
                Step("failed", old.failures + 1, "e") if fail else Step("succeeded", old.failures)
            )
        else:
            self.final = Step("succeeded", self.final.failures)


@settings(max_examples=150, deadline=None)
@given(
    mode=st.sampled_from(["sequential", "quick", "full"]),
    parallelism=st.integers(1, 4),
    max_retries=st.integers(0, 3),
    counts=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    scenario=st.sampled_from(["auto-pass", "manual-approved-early", "manual-approved-late"]),
    gates_failed=st.tuples(st.booleans(), st.booleans()),
    data=st.data(),
)
def test_simulation_runs_to_success(
    mode: Mode,
    parallelism: int,
    max_retries: int,
    counts: tuple[int, int],
    scenario: str,
    gates_failed: tuple[bool, bool],
    data: st.DataObject,
) -> None:
    policy: Policy = "auto" if scenario == "auto-pass" else "manual"
    spec = make_spec(mode, policy, parallelism=parallelism, max_retries=max_retries)
    # auto only succeeds when the gates pass; a manual approval overrides failed gates.
    gates = (
        {"quick": True, "full": True}
        if policy == "auto"
        else {"quick": not gates_failed[0], "full": not gates_failed[1]}
    )
    world = World(spec, {"quick": counts[0], "full": counts[1]}, gates)
    if scenario == "manual-approved-early":
        world.approval = "approved"
    failure_budget: dict[tuple[str, str, int], int] = {}
    seen_phases: list[str] = []

    for _ in range(500):
        decision = decide(spec, world.observe())
        seen_phases.append(decision.phase)
        if decision.phase in ("Succeeded", "Failed", "Rejected", "Cancelled"):
            break
        for action in decision.actions:
            world.apply(action)
        running_folds = [k for k in world.running() if k[0] == "fold"]
        assert len(running_folds) <= parallelism
        if decision.actions:
            continue
        if decision.phase == "AwaitingApproval":
            assert scenario == "manual-approved-late"
            world.approval = "approved"
            continue
        running = world.running()
        assert running, f"stuck in {decision}"
        key = data.draw(st.sampled_from(running))
        # A transient failure, never past the retry limit; the final model never fails here.
        used = failure_budget.get(key, 0)
        fail = key[0] != "final" and used < max_retries and data.draw(st.booleans())
        if fail:
            failure_budget[key] = used + 1
        world.finish(key, fail)
    else:
        pytest.fail("no terminal phase after 500 decisions")

    assert seen_phases[-1] == "Succeeded", seen_phases[-3:]
    for stage in spec.stages_to_run():
        assert world.summaries.get(stage) is not None
        folds = world.folds[stage]
        assert sorted(folds) == list(range(1, world.fold_counts[stage] + 1))
        assert all(s.state == "succeeded" for s in folds.values())
        for n in folds:
            assert (
                world.started[("fold", stage, n)] == failure_budget.get(("fold", stage, n), 0) + 1
            )
    if "full" in spec.stages_to_run():
        assert world.started[("final", "", 0)] == 1
        assert world.final.state == "succeeded"
    else:
        assert ("final", "", 0) not in world.started
    # The full stage never starts before its gate opens.
    if mode == "sequential" and scenario == "manual-approved-late":
        assert "AwaitingApproval" in seen_phases
        waited = seen_phases.index("AwaitingApproval")
        assert "Full" not in seen_phases[:waited]
