"""Step pods that have ended, from one watch per scope: how results and errors reach the
reconciler without listing pods.

A step's result is its pod's termination message, so every finished Job used to cost a LIST of
pods (0.7 requests per child Job at 20 TrainingJobs x 45 folds, and decoding those lists was
the largest part of the operator's CPU). The API server filters this watch by phase, so each
pod arrives about once: when it has ended. A reconcile that finds a finished Job's pod missing
here (the watch is behind, or broken) still lists that Job's pods itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

from stagegate_core.keys import LABEL_TJ

from .kubeapi import ApiError, KubeApi

log = logging.getLogger("stagegate.operator")
ENDED = "status.phase!=Pending,status.phase!=Running"
Key = tuple[str, str]  # namespace, TrainingJob


def slim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """What observe/failures read of a pod: its Job, creation time, phase and terminations."""
    meta = pod["metadata"]
    status = pod.get("status") or {}
    return {
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": dict(meta.get("labels") or {}),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "status": {
            "phase": status.get("phase"),
            "reason": status.get("reason"),
            "message": status.get("message"),
            "containerStatuses": [
                {"name": c.get("name"), "state": {"terminated": c["state"]["terminated"]}}
                for c in status.get("containerStatuses") or []
                if (c.get("state") or {}).get("terminated")
            ],
        },
    }


class EndedPods:
    """The ended step pods of every TrainingJob in scope, kept by the watch; `synced` holds the
    scopes whose watch is running (None: all namespaces)."""

    def __init__(self, api: KubeApi, namespaces: list[str]) -> None:
        self.api = api
        self.scopes: list[str | None] = list(namespaces) or [None]
        self._pods: dict[Key, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.synced: set[str | None] = set()

    def pods(self, namespace: str, trainingjob: str) -> list[dict[str, Any]]:
        return list(self._pods.get((namespace, trainingjob), {}).values())

    def watching(self, namespace: str) -> bool:
        return None in self.synced or namespace in self.synced

    def forget(self, namespace: str, trainingjob: str) -> None:
        self._pods.pop((namespace, trainingjob), None)

    async def run(self) -> None:
        await asyncio.gather(*(self._follow(scope) for scope in self.scopes))

    async def _follow(self, scope: str | None) -> None:
        path = "/api/v1/pods" if scope is None else KubeApi.path("v1", scope, "pods")
        params = {"labelSelector": LABEL_TJ, "fieldSelector": ENDED}
        while True:
            try:
                listing = await self.api.request("GET", path, params=params)
                self._replace(scope, listing.get("items", []))
                version = listing["metadata"]["resourceVersion"]
                while version:  # until the server says the version is too old (410)
                    version = await self._watch(path, params, version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broken watch: reconciles list pods meanwhile
                self.synced.discard(scope)
                log.warning("watching ended pods: %s", exc)
                await asyncio.sleep(1.0)

    def _replace(self, scope: str | None, items: list[dict[str, Any]]) -> None:
        for key in [k for k in self._pods if scope is None or k[0] == scope]:
            del self._pods[key]
        for pod in items:
            self._put(pod)
        self.synced.add(scope)

    def _put(self, pod: dict[str, Any]) -> Key | None:
        meta = pod["metadata"]
        owner = (meta.get("labels") or {}).get(LABEL_TJ)
        if owner is None:
            return None
        key = (meta["namespace"], owner)
        self._pods[key][meta["name"]] = slim_pod(pod)
        return key

    async def _watch(self, path: str, params: dict[str, str], version: str) -> str | None:
        """Follow one watch request; the version to go on from, None to list again."""
        async for kind, obj in self.api.watch(path, {**params, "resourceVersion": version}):
            if kind == "ERROR":
                if obj.get("code") == 410:
                    return None
                raise ApiError(int(obj.get("code") or 500), obj.get("reason", ""),
                               obj.get("message", ""))  # fmt: skip
            version = obj["metadata"].get("resourceVersion") or version
            if kind == "BOOKMARK":
                continue
            meta = obj["metadata"]
            owner = (meta.get("labels") or {}).get(LABEL_TJ)
            if owner is None:
                continue
            if kind == "DELETED":
                self._pods.get((meta["namespace"], owner), {}).pop(meta["name"], None)
                continue
            # No pass is asked for here: the Job's own event, which follows, asks for it.
            self._put(obj)
        return version
