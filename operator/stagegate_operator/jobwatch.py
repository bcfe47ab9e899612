"""The TrainingJobs' Jobs, from the operator's own watch into the cache.

A change the reconciler can see (counts, times, conditions) asks for a pass of the TrainingJob
that owns the Job; the rest of a Job's updates (ready counts of terminating pods, managed
fields) are dropped here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stagegate_core.keys import LABEL_TJ

from .cache import ObjectCache
from .informer import Followed, owner
from .kubeapi import KubeApi


class WatchedJobs(Followed):
    def __init__(self, api: KubeApi, namespaces: list[str], cache: ObjectCache) -> None:
        super().__init__(api, "batch/v1", "jobs", namespaces, {"labelSelector": LABEL_TJ})
        self.cache = cache
        # Set once the scheduler exists: asks for a pass of (namespace, trainingjob).
        self.on_change: Callable[[str, str], None] = lambda namespace, name: None

    def replace(self, scope: str | None, items: list[dict[str, Any]]) -> None:
        for namespace, name in self.cache.replace_jobs(scope, items):
            self.on_change(namespace, name)

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        key = owner(obj)
        if key is None:
            return
        if kind == "DELETED":
            self.cache.drop_job(*key, obj["metadata"]["name"])
        elif not self.cache.put_job(obj):
            return
        self.on_change(*key)
