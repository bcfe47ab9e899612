"""The TrainingJobs, from the operator's own watch into the cache.

kopf watched them before; it built a body, a logging context and a handler call for every
event, and decoded each with the standard library, including the echo of every status write
this operator makes (about a tenth of its CPU at 20 TrainingJobs x 45 folds). kopf delivered
an approval to the handler up to 0.27 s after the API server had it; this watch hands it to
the scheduler as it is decoded. Any change made by someone else (an approval, a new spec, a
deletion) asks for a pass at once: a person may be waiting for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stagegate_core.spec import PLURAL

from .cache import ObjectCache
from .children import GROUP_VERSION
from .informer import Followed
from .kubeapi import KubeApi


class WatchedTrainingJobs(Followed):
    def __init__(self, api: KubeApi, namespaces: list[str], cache: ObjectCache) -> None:
        super().__init__(api, GROUP_VERSION, PLURAL, namespaces, {})
        self.cache = cache
        # Set once the scheduler exists: asks for an urgent pass of (namespace, name).
        self.on_change: Callable[[str, str], None] = lambda namespace, name: None

    def replace(self, scope: str | None, items: list[dict[str, Any]]) -> None:
        for namespace, name in self.cache.replace_trainingjobs(scope, items):
            self.on_change(namespace, name)

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if kind == "DELETED":
            self.cache.drop_trainingjob(meta["namespace"], meta["name"])
        elif not self.cache.put_trainingjob(obj):
            return  # the echo of our own status write: nothing new to act on
        self.on_change(meta["namespace"], meta["name"])
