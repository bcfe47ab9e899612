"""Step pods that have ended, from one watch per scope: how results and errors reach the
reconciler without listing pods.

A step's result is its pod's termination message, so every finished Job used to cost a LIST of
pods (0.7 requests per child Job at 20 TrainingJobs x 45 folds, and decoding those lists was
the largest part of the operator's CPU). The API server filters this watch by phase, so each
pod arrives about once: when it has ended. A reconcile that finds a finished Job's pod missing
here (the watch is behind, or broken) still lists that Job's pods itself.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from typing import Any

from stagegate_core.keys import LABEL_TJ

from .informer import Followed, kept, owner
from .kubeapi import KubeApi

ENDED = "status.phase!=Pending,status.phase!=Running"
Key = tuple[str, str]  # namespace, TrainingJob


def slim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """What observe/failures read of a pod: its Job, creation time, phase and terminations."""
    meta = pod["metadata"]
    status = pod.get("status") or {}
    return {
        "metadata": {
            "name": meta["name"],
            "namespace": sys.intern(meta["namespace"]),
            "labels": kept(meta.get("labels"), ("job-name", LABEL_TJ)),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "status": {
            **kept(status, ("phase", "reason", "message")),
            "containerStatuses": [
                {"name": sys.intern(c.get("name") or ""), "state": {"terminated": kept(
                    c["state"]["terminated"], ("exitCode", "reason", "message"))}}
                for c in status.get("containerStatuses") or []
                if (c.get("state") or {}).get("terminated")
            ],
        },
    }  # fmt: skip


class EndedPods(Followed):
    """The ended step pods of every TrainingJob in scope, kept by the watch."""

    def __init__(self, api: KubeApi, namespaces: list[str]) -> None:
        params = {"labelSelector": LABEL_TJ, "fieldSelector": ENDED}
        super().__init__(api, "v1", "pods", namespaces, params)
        self._pods: dict[Key, dict[str, dict[str, Any]]] = defaultdict(dict)

    def pods(self, namespace: str, trainingjob: str) -> list[dict[str, Any]]:
        return list(self._pods.get((namespace, trainingjob), {}).values())

    def forget(self, namespace: str, trainingjob: str) -> None:
        self._pods.pop((namespace, trainingjob), None)

    def release(self, namespace: str, trainingjob: str, jobs: set[str]) -> None:
        """Drop the pods of `jobs`, whose results the status holds: nothing reads them again,
        and a hundred TrainingJobs' finished folds kept thousands of termination messages."""
        pods = self._pods.get((namespace, trainingjob))
        if pods:
            for name in [
                n for n, p in pods.items() if p["metadata"]["labels"].get("job-name") in jobs
            ]:
                del pods[name]

    def replace(self, scope: str | None, items: list[dict[str, Any]]) -> None:
        for key in [k for k in self._pods if scope is None or k[0] == scope]:
            del self._pods[key]
        for pod in items:
            self.apply("ADDED", pod)

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        # No pass is asked for here: the Job's own event, which follows, asks for it.
        key = owner(obj)
        if key is None:
            return
        if kind == "DELETED":
            self._pods.get(key, {}).pop(obj["metadata"]["name"], None)
        else:
            self._pods[key][obj["metadata"]["name"]] = slim_pod(obj)
