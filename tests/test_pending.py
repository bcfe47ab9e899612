"""Pure rules for step pods the scheduler cannot place (operator/pending.py)."""

from __future__ import annotations

from typing import Any

from stagegate_core.formatting import now_iso, parse_iso
from stagegate_core.stagemachine import Decision, StartFold, StopRunning
from stagegate_operator import pending

T0 = parse_iso("2026-01-01T00:00:00Z") or 0.0


def job(name: str = "tj-quick-fold-01", *, active: int = 1, ready: int = 0,
        started: float | None = T0, finished: bool = False) -> dict[str, Any]:  # fmt: skip
    status: dict[str, Any] = {"active": active, "ready": ready}
    if started is not None:
        status["startTime"] = now_iso(started)
    if finished:
        status["conditions"] = [{"type": "Complete", "status": "True"}]
    labels = {"stagegate.io/step": "fold", "stagegate.io/stage": "quick", "stagegate.io/fold": "1"}
    return {"metadata": {"name": name, "labels": labels}, "spec": {}, "status": status}


def pod(name: str, job_name: str = "tj-quick-fold-01", *, phase: str = "Pending",
        reason: str = "Unschedulable", created: float = T0) -> dict[str, Any]:  # fmt: skip
    condition = {"type": "PodScheduled", "status": "False", "reason": reason,
                 "message": "0/1 nodes are available: 1 Insufficient memory."}  # fmt: skip
    return {"metadata": {"name": name, "labels": {"job-name": job_name},
                         "creationTimestamp": now_iso(created)},
            "status": {"phase": phase, "conditions": [condition]}}  # fmt: skip


def test_pods_are_read_only_after_the_grace_and_only_for_unready_running_jobs() -> None:
    grace = pending.PENDING_GRACE_SECONDS
    assert not pending.may_be_pending(job(), T0 + grace - 1)
    assert pending.may_be_pending(job(), T0 + grace)
    assert not pending.may_be_pending(job(ready=1), T0 + 100)
    assert not pending.may_be_pending(job(active=0), T0 + 100)
    assert not pending.may_be_pending(job(finished=True), T0 + 100)
    assert not pending.may_be_pending(job(started=None), T0 + 100)


def test_only_unschedulable_pending_pods_of_running_jobs_count() -> None:
    jobs = {"tj-quick-fold-01": job(), "tj-prepare": job("tj-prepare", finished=True)}
    pods = [
        pod("b", created=T0 + 5),
        pod("a", created=T0),
        pod("running", phase="Running"),
        pod("gated", reason="SchedulingGated"),
        pod("old", "tj-prepare"),
        pod("orphan", "gone"),
    ]
    stuck = pending.unschedulable(jobs, pods)
    assert [u.pod for u in stuck] == ["a", "b"]
    assert stuck[0].step == "quick fold 1"
    assert "Insufficient memory" in stuck[0].message() and "pod a " in stuck[0].message()


def test_waiting_is_said_then_ends_the_run_at_the_timeout() -> None:
    running = Decision("Quick", actions=(StartFold("quick", 2, 1),), message="quick 0/2")
    stuck = pending.unschedulable({"tj-quick-fold-01": job()}, [pod("a")])
    said = pending.apply(running, stuck, 60, T0 + 59)
    assert said.phase == "Quick" and said.actions == running.actions
    assert said.message.startswith("quick 0/2; waiting: quick fold 1: pod a cannot be scheduled")
    ended = pending.apply(running, stuck, 60, T0 + 60)
    assert ended.phase == "Failed" and ended.actions == (StopRunning(),)
    assert "spec.pendingTimeoutSeconds=60" in ended.message
    assert pending.apply(running, [], 60, T0 + 1e6) is running
    done = Decision("Succeeded")
    assert pending.apply(done, stuck, 60, T0 + 1e6) is done


def test_the_condition_keeps_its_time_and_each_pod_is_warned_once() -> None:
    stuck = pending.unschedulable({"tj-quick-fold-01": job()}, [pod("a")])
    assert pending.condition([], None, "now") is None
    first = pending.condition(stuck, None, "t1")
    assert first is not None and first["lastTransitionTime"] == "t1"
    again = pending.condition(stuck, [first], "t2")
    assert again is not None and again["lastTransitionTime"] == "t1"
    assert pending.newly_stuck(stuck, None) == stuck
    assert pending.newly_stuck(stuck, [first]) == []
    more = pending.unschedulable({"tj-quick-fold-01": job()}, [pod("a"), pod("ab")])
    assert [u.pod for u in pending.newly_stuck(more, [first])] == ["ab"]


def test_checks_are_throttled_and_remember_what_they_found() -> None:
    checks = pending.Checks(interval=15)
    key = ("ns", "tj")
    jobs = {"tj-quick-fold-01": job()}
    assert checks.due(key, T0)
    stuck = pending.unschedulable(jobs, [pod("a")])
    checks.found(key, T0, stuck)
    assert not checks.due(key, T0 + 14) and checks.due(key, T0 + 15)
    assert checks.last(key, jobs) == stuck
    assert checks.last(key, {"tj-quick-fold-01": job(finished=True)}) == []
    assert checks.last(key, {}) == []
    checks.forget(key)
    assert checks.due(key, T0 + 1) and checks.last(key, jobs) == []
