"""Kubernetes Events on a TrainingJob: what `kubectl describe tj` tells of its run.

Warnings are rate-limited per TrainingJob and reason (failures.EventLimiter), so a step that
fails fast cannot flood the namespace. An Event that cannot be posted is logged: it is never
worth failing a pass for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from stagegate_core import approval as approvals
from stagegate_core.formatting import now_iso, percent
from stagegate_core.statusmodel import TrainingJobStatus

from .children import GROUP_VERSION
from .failures import EventLimiter
from .kubeapi import ApiError, KubeApi

log = logging.getLogger("stagegate.operator")
COMPONENT = "stagegate-operator"


class Events:
    def __init__(
        self, api: KubeApi, clock: Callable[[], float], limiter: EventLimiter | None = None
    ) -> None:
        self.api = api
        self.clock = clock
        self.limiter = limiter or EventLimiter()

    async def post(self, body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        meta = body["metadata"]
        stamp = now_iso(self.clock())
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": GROUP_VERSION,
                "kind": "TrainingJob",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self.api.create("v1", meta["namespace"], "events", event)
        except ApiError as exc:
            log.warning("event %s for %s not posted: %s", reason, meta["name"], exc)

    async def warn(self, body: Mapping[str, Any], reason: str, message: str) -> None:
        """A Warning, unless the rate limit holds it back (it is counted in the next one)."""
        meta = body["metadata"]
        post, held = self.limiter.allow((meta["namespace"], meta["name"], reason))
        if post:
            more = f" ({held} similar Events held back by the rate limit)" if held else ""
            await self.post(body, "Warning", reason, message + more)

    async def announce(
        self,
        body: Mapping[str, Any],
        old: TrainingJobStatus,
        new: TrainingJobStatus,
        results: Sequence[tuple[str, Mapping[str, Any]]],
    ) -> None:
        """What a written status changed: stages summarised, the phase, the gate's decision."""
        for step, result in results:
            if step == "summary":
                # One Event per stage, not per fold: at a hundred TrainingJobs of 45 folds,
                # per-fold Events were a quarter of the operator's API requests.
                await self.post(body, "Normal", "StageSummarised", stage_summarised(result))
        if new.phase != old.phase:
            phase = new.shown_phase
            kind = "Warning" if phase in ("Failed", "Rejected") else "Normal"
            await self.post(body, kind, phase, new.message or phase)
        if new.approval is not None and new.approval != old.approval:
            await self.post(body, "Normal", "Approval", approvals.describe(new.approval.to_dict()))

    def forget(self, namespace: str, name: str) -> None:
        self.limiter.forget(namespace, name)


def stage_summarised(result: Mapping[str, Any]) -> str:
    """`quick stage, 5 folds: accuracy=… recall=… roc_auc=… f1=0.41; gates passed`."""
    m = result["model"]
    verdict = "passed" if result["passed"] else "failed"
    return (
        f"{result['stage']} stage, {result['folds']} folds: "
        f"accuracy={percent(m['accuracy']['mean'])} recall={percent(m['recall']['mean'])} "
        f"roc_auc={percent(m['rocAuc']['mean'])} f1={_two(m['f1']['mean'])}; gates {verdict}"
    )


def _two(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
