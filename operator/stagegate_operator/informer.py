"""List, then watch, one kind of object per scope for as long as the operator runs.

The operator's own watches (ended pods, the TrainingJobs' Jobs) go through here rather than
through kopf: kopf builds a body, a logging context and a handler call for every event, which at
20 TrainingJobs x 45 folds was most of the operator's CPU, for objects the operator only caches.
What is kept of each object is the sink's business (slim copies).

`synced` names the scopes whose watch is running; a reconcile that finds its scope not synced
asks the API server itself, so a broken or refused watch costs requests, never correctness.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from stagegate_core.keys import LABEL_TJ

from .kubeapi import ApiError, KubeApi

log = logging.getLogger("stagegate.operator")
MAX_RETRY_SECONDS = 30.0  # a refused watch (RBAC) is tried again this often, not every second


def kept(found: Mapping[str, Any] | None, keys: Iterable[str]) -> dict[str, Any]:
    """The members `keys` of `found` that are set, names and short strings interned: thousands
    of cached objects share one copy of each label name, phase and reason instead of each
    holding its own from its JSON decode."""
    out: dict[str, Any] = {}
    for key in keys:
        value = (found or {}).get(key)
        if value is not None:
            short = isinstance(value, str) and len(value) <= 40
            out[sys.intern(key)] = sys.intern(value) if short else value
    return out


def owner(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, TrainingJob) of an object labelled with the TrainingJob it belongs to."""
    meta = obj["metadata"]
    name = (meta.get("labels") or {}).get(LABEL_TJ)
    return None if name is None else (meta["namespace"], name)


class Sink(Protocol):
    def replace(self, scope: str | None, items: list[dict[str, Any]]) -> None:
        """Everything in `scope` (None: all namespaces) is now `items` (after a LIST)."""

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        """One watch event: ADDED, MODIFIED or DELETED."""


class Informer:
    def __init__(
        self,
        api: KubeApi,
        group_version: str,
        plural: str,
        namespaces: list[str],
        params: dict[str, str],
        sink: Sink,
        *,
        retry_seconds: float = 1.0,
    ) -> None:
        self.api = api
        self.group_version = group_version
        self.plural = plural
        self.scopes: list[str | None] = list(namespaces) or [None]
        self.params = params
        self.sink = sink
        self.retry_seconds = retry_seconds
        self.synced: set[str | None] = set()

    def watching(self, namespace: str) -> bool:
        return None in self.synced or namespace in self.synced

    async def run(self) -> None:
        await asyncio.gather(*(self._follow(scope) for scope in self.scopes))

    def _path(self, scope: str | None) -> str:
        if scope is not None:
            return KubeApi.path(self.group_version, scope, self.plural)
        base = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        return f"{base}/{self.plural}"

    async def _follow(self, scope: str | None) -> None:
        path = self._path(scope)
        delay = self.retry_seconds
        while True:
            try:
                listing = await self.api.request("GET", path, params=self.params)
                self.sink.replace(scope, listing.get("items", []))
                self.synced.add(scope)
                delay = self.retry_seconds
                version = listing["metadata"]["resourceVersion"]
                while version:  # until the server says the version is too old (410)
                    version = await self._watch(path, version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broken watch: reconciles ask the server meanwhile
                self.synced.discard(scope)
                log.warning("watching %s: %s (again in %.0f s)", self.plural, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)

    async def _watch(self, path: str, version: str) -> str | None:
        """Follow one watch request; the version to go on from, None to list again."""
        async for kind, obj in self.api.watch(path, {**self.params, "resourceVersion": version}):
            if kind == "ERROR":
                if obj.get("code") == 410:
                    return None
                raise ApiError(int(obj.get("code") or 500), obj.get("reason", ""),
                               obj.get("message", ""))  # fmt: skip
            version = obj["metadata"].get("resourceVersion") or version
            if kind != "BOOKMARK":
                self.sink.apply(kind, obj)
        return version


class Followed(ABC):
    """One kind of object followed by its own Informer; a subclass says what it keeps of each
    (`replace`, `apply`: it is the informer's sink)."""

    def __init__(
        self,
        api: KubeApi,
        group_version: str,
        plural: str,
        namespaces: list[str],
        params: dict[str, str],
    ) -> None:
        self.informer = Informer(api, group_version, plural, namespaces, params, self)

    def watching(self, namespace: str) -> bool:
        return self.informer.watching(namespace)

    async def run(self) -> None:
        await self.informer.run()

    @abstractmethod
    def replace(self, scope: str | None, items: list[dict[str, Any]]) -> None: ...

    @abstractmethod
    def apply(self, kind: str, obj: dict[str, Any]) -> None: ...
