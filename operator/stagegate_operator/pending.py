"""Step pods the scheduler cannot place: said in the status and a Warning Event while they
wait, and the run ended `Failed` after `spec.pendingTimeoutSeconds`, so no run waits silently
or forever (a pod asking for more memory than any node has is never scheduled).

Pure: the reconciler hands in the Jobs, the pods and the time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from stagegate_core.formatting import parse_iso
from stagegate_core.stagemachine import TERMINAL, Decision, StopRunning

from .failures import step_label
from .observe import job_finished

# A step pod normally runs within seconds; pods are read for this only after a Job has had an
# unready pod for longer, and at most every CHECK_INTERVAL_SECONDS per TrainingJob, so runs at
# scale (where a busy node starts pods slowly) pay few extra API requests.
PENDING_GRACE_SECONDS = 20.0
CHECK_INTERVAL_SECONDS = 15.0
CONDITION = "PodsUnschedulable"


@dataclass(frozen=True)
class Unschedulable:
    job: str
    step: str  # "quick fold 2", "prepare" ...
    pod: str
    since: str  # when the pod was created (RFC 3339)
    reason: str  # the scheduler's own words

    def message(self) -> str:
        where = f"{self.step}: pod {self.pod}"
        return f"{where} cannot be scheduled (since {self.since}): {self.reason}"


def may_be_pending(job: Mapping[str, Any], now: float) -> bool:
    """Whether a running Job has had a pod that is not ready for longer than the grace."""
    status = job.get("status") or {}
    if job_finished(job) or int(status.get("active", 0)) <= int(status.get("ready", 0)):
        return False
    started = parse_iso(status.get("startTime"))
    return started is not None and now - started >= PENDING_GRACE_SECONDS


def unschedulable(
    jobs: Mapping[str, Mapping[str, Any]], pods: Sequence[Mapping[str, Any]]
) -> list[Unschedulable]:
    """The running Jobs' pods the scheduler has marked unschedulable, oldest first."""
    out: list[Unschedulable] = []
    for pod in pods:
        job = jobs.get(pod["metadata"].get("labels", {}).get("job-name", ""))
        status = pod.get("status") or {}
        if job is None or job_finished(job) or status.get("phase") != "Pending":
            continue
        for condition in status.get("conditions") or []:
            if (condition.get("type"), condition.get("status"), condition.get("reason")) == (
                "PodScheduled", "False", "Unschedulable",
            ):  # fmt: skip
                out.append(
                    Unschedulable(
                        job=job["metadata"]["name"],
                        step=step_label(job),
                        pod=pod["metadata"]["name"],
                        since=pod["metadata"].get("creationTimestamp", ""),
                        reason=str(condition.get("message") or "no reason given"),
                    )
                )
    return sorted(out, key=lambda u: (u.since, u.pod))


def apply(
    decision: Decision, stuck: Sequence[Unschedulable], timeout: float, now: float
) -> Decision:
    """The decision with the waiting said in its message, or Failed once a pod waited too long."""
    if not stuck or decision.phase in TERMINAL:
        return decision
    first = stuck[0]
    waited = now - (parse_iso(first.since) or now)
    if waited >= timeout:
        return replace(
            decision,
            phase="Failed",
            actions=(StopRunning(),),
            message=f"{first.message()}; gave up after spec.pendingTimeoutSeconds={timeout:g} "
            "(lower the step's resources.requests or add a node that can hold it)",
        )
    prefix = f"{decision.message}; " if decision.message else ""
    return replace(decision, message=f"{prefix}waiting: {first.message()}")


def condition(stuck: Sequence[Unschedulable], previous: Sequence[Mapping[str, Any]] | None,
              now: str) -> dict[str, str] | None:  # fmt: skip
    """The `PodsUnschedulable` condition while a pod waits (kept from `previous` if unchanged)."""
    if not stuck:
        return None
    message = "; ".join(u.message() for u in stuck)[:1000]
    before = next((c for c in previous or [] if c.get("type") == CONDITION), None)
    since = before.get("lastTransitionTime", now) if before else now
    return {"type": CONDITION, "status": "True", "reason": "Unschedulable", "message": message,
            "lastTransitionTime": since}  # fmt: skip


def newly_stuck(
    stuck: Sequence[Unschedulable], previous: Sequence[Mapping[str, Any]] | None
) -> list[Unschedulable]:
    """Pods not yet named in the previous status' condition: each gets one Warning Event."""
    before = next((c for c in previous or [] if c.get("type") == CONDITION), None)
    said = (before or {}).get("message", "")
    return [u for u in stuck if f"pod {u.pod} " not in said]


class Checks:
    """Per TrainingJob: when its pods were last read for waiting pods, and what was found, so a
    pass between two reads still reports (and does not flap) what the last read saw."""

    def __init__(self, interval: float = CHECK_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self._at: dict[tuple[str, str], float] = {}
        self._found: dict[tuple[str, str], list[Unschedulable]] = {}

    def due(self, key: tuple[str, str], now: float) -> bool:
        return now - self._at.get(key, -math.inf) >= self.interval

    def found(self, key: tuple[str, str], now: float, stuck: list[Unschedulable]) -> None:
        self._at[key], self._found[key] = now, stuck

    def last(
        self, key: tuple[str, str], jobs: Mapping[str, Mapping[str, Any]]
    ) -> list[Unschedulable]:
        """The last read's findings whose Jobs still run."""
        return [
            u for u in self._found.get(key, [])
            if u.job in jobs and not job_finished(jobs[u.job])
        ]  # fmt: skip

    def forget(self, key: tuple[str, str]) -> None:
        self._at.pop(key, None)
        self._found.pop(key, None)
