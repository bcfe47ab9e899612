"""Failures made visible: failed step attempts and API errors become Warning Events and status
messages, never only a traceback in the operator's log.

Pure helpers plus a small in-memory rate limiter. Failed attempts are counted per child Job
name, persisted in the status (`reportedFailures`), so an operator restart does not repeat
their Events; the limiter keeps a step that fails fast from flooding the namespace with Events.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, assert_never

from stagegate_core.stagemachine import (
    Action,
    Decision,
    Prepare,
    StartFinal,
    StartFold,
    StopRunning,
    Summarise,
)

from . import children
from .kubeapi import ApiError
from .observe import job_step

# Errors no retry can mend: the object is invalid (422, 400) or the operator may not act (403).
PERMANENT = frozenset({400, 403, 422})
EVENT_BURST = 5  # Events of one reason per TrainingJob ...
EVENT_WINDOW_SECONDS = 60.0  # ... within this many seconds; the rest are counted, not posted.


def child_job_name(tj: str, action: Action) -> str | None:
    """The Job an action creates (None for StopRunning)."""
    match action:
        case Prepare():
            return children.prepare_job_name(tj)
        case StartFold(stage=stage, fold=fold):
            return children.fold_job_name(tj, stage, fold)
        case Summarise(stage=stage):
            return children.summary_job_name(tj, stage)
        case StartFinal():
            return children.final_job_name(tj)
        case StopRunning():
            return None
        case _:
            assert_never(action)


def doing(tj: str, action: Action) -> str:
    """What carrying out `action` asks of the API server, for messages."""
    job = child_job_name(tj, action)
    return f"creating Job {job}" if job else "stopping the running Jobs"


def describe_api_error(what: str, exc: ApiError) -> str:
    return f"{what}: the API server answered {exc.status} {exc.reason}: {exc.message}"[:600]


def after_api_error(decision: Decision, problem: str, exc: ApiError) -> Decision:
    """The decision to publish when carrying out `decision` hit an API error.

    A permanent error ends the run Failed with the cause in the message (retrying would repeat
    it on every pass, forever); any other is shown in the message and retried next pass.
    """
    if exc.status in PERMANENT:
        return replace(
            decision,
            phase="Failed",
            actions=(),
            message=f"{problem} (a {exc.status} does not heal by retrying; fix the spec or the "
            "operator's permissions and create the TrainingJob again)",
        )
    prefix = f"{decision.message}; " if decision.message else ""
    return replace(decision, message=f"{prefix}retrying after an API error: {problem}")


@dataclass(frozen=True)
class FailedAttempts:
    job: str
    step: str  # "prepare", "quick fold 3", "full summary", "final"
    first: int  # attempt numbers, 1-based
    last: int
    allowed: int  # maxRetries + 1
    error: str | None

    def message(self) -> str:
        which = f"attempts {self.first}-{self.last}"
        if self.first == self.last:
            which = f"attempt {self.last}"
        error = self.error or "no error message (the pod's result was lost)"
        return f"{self.step}: {which} of {self.allowed} failed: {error}"


def step_label(job: Mapping[str, Any]) -> str:
    labels = job["metadata"].get("labels", {})
    step, stage = labels.get(children.LABEL_STEP, "step"), labels.get(children.LABEL_STAGE, "")
    if step == "fold":
        return f"{stage} fold {labels.get(children.LABEL_FOLD, '?')}"
    if step == "summary":
        return f"{stage} summary"
    return str(step)


def new_failed_attempts(
    jobs: Mapping[str, Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    carried: Mapping[str, int],
    reported: dict[str, int],
    max_retries: int,
) -> list[FailedAttempts]:
    """Failed attempts not reported yet; `reported` is updated to include them."""
    out: list[FailedAttempts] = []
    for name, job in sorted(jobs.items()):
        step = job_step(job, pods)
        failures = step.failures + carried.get(name, 0)
        before = reported.get(name, 0)
        if failures > before:
            label = step_label(job)
            out.append(
                FailedAttempts(name, label, before + 1, failures, max_retries + 1, step.error)
            )
            reported[name] = failures
    return out


class EventLimiter:
    """At most `burst` Events per key within `window` seconds; the rest are counted."""

    def __init__(
        self,
        burst: int = EVENT_BURST,
        window: float = EVENT_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst, self.window, self.clock = burst, window, clock
        self._sent: dict[tuple[str, ...], deque[float]] = {}
        self._held: dict[tuple[str, ...], int] = {}

    def allow(self, key: tuple[str, ...]) -> tuple[bool, int]:
        """(post it, how many Events of this key were held back since the last one posted)."""
        now = self.clock()
        sent = self._sent.setdefault(key, deque())
        while sent and now - sent[0] >= self.window:
            sent.popleft()
        if len(sent) >= self.burst:
            self._held[key] = self._held.get(key, 0) + 1
            return False, 0
        sent.append(now)
        return True, self._held.pop(key, 0)

    def forget(self, namespace: str, name: str) -> None:
        for key in [k for k in self._sent if k[:2] == (namespace, name)]:
            self._sent.pop(key, None)
            self._held.pop(key, None)
