"""Garbage collector, plus the namespace and CRD cleanup that real clusters run as controllers.

Asynchronous like the real one: a sweep runs shortly after any change and once a second, so
tests must poll for cascaded deletions rather than expect them in the DELETE response.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from .api import CRD_KEY, FOREGROUND, NS_KEY, ORPHAN, Api
from .errors import ApiError
from .resources import ResourceType
from .store import Event

Obj = dict[str, Any]
CRD_CLEANUP = "customresourcecleanup.apiextensions.k8s.io"


class GarbageCollector:
    def __init__(self, api: Api, interval: float = 1.0) -> None:
        self.api = api
        self.interval = interval
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.api.store.listeners.append(self._on_event)
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._on_event in self.api.store.listeners:
            self.api.store.listeners.remove(self._on_event)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_event(self, event: Event) -> None:
        meta = event.obj["metadata"]
        if event.type == "DELETED" or meta.get("deletionTimestamp") \
                or meta.get("ownerReferences"):
            self._dirty.set()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self.interval)
            self._dirty.clear()
            await asyncio.sleep(0.05)  # let a burst of writes settle into one sweep
            try:
                self.sweep()
            except Exception:  # keep collecting; a bug here must not stop the emulator
                import traceback

                traceback.print_exc()

    # --- one pass ------------------------------------------------------------------------

    def _all(self) -> list[tuple[ResourceType, Obj]]:
        return [(rt, o) for rt in list(self.api.types.values())
                for o in self.api.store.list(rt.key)]

    def _delete(self, rt: ResourceType, obj: Obj, policy: str = "Background") -> None:
        with contextlib.suppress(ApiError):
            self.api.delete(rt, rt.storage_version, obj["metadata"].get("namespace"),
                            obj["metadata"]["name"], {"propagationPolicy": policy})

    def _set_meta(self, rt: ResourceType, obj: Obj, key: str, value: Any) -> None:
        with contextlib.suppress(ApiError):
            self.api.patch(rt, rt.storage_version, obj["metadata"].get("namespace"),
                           obj["metadata"]["name"], "application/merge-patch+json",
                           {"metadata": {key: value}})

    def sweep(self) -> None:
        everything = self._all()
        dependents: dict[str, list[tuple[ResourceType, Obj]]] = {}
        for rt, obj in everything:
            for ref in obj["metadata"].get("ownerReferences") or []:
                dependents.setdefault(ref["uid"], []).append((rt, obj))
        store = self.api.store
        for rt, obj in everything:
            meta = obj["metadata"]
            refs = meta.get("ownerReferences") or []
            if refs and not meta.get("deletionTimestamp"):
                alive = [r for r in refs if store.find_uid(r["uid"]) is not None]
                if not alive:
                    self._delete(rt, obj)
                    continue
                if len(alive) < len(refs):
                    self._set_meta(rt, obj, "ownerReferences", alive)
            if not meta.get("deletionTimestamp"):
                continue
            finalizers = meta.get("finalizers") or []
            deps = dependents.get(meta["uid"], [])
            if ORPHAN in finalizers:
                for drt, dep in deps:
                    rest = [r for r in dep["metadata"].get("ownerReferences") or []
                            if r["uid"] != meta["uid"]]
                    self._set_meta(drt, dep, "ownerReferences", rest or None)
                self._set_meta(rt, obj, "finalizers", [f for f in finalizers if f != ORPHAN])
            elif FOREGROUND in finalizers:
                for drt, dep in deps:
                    if not dep["metadata"].get("deletionTimestamp"):
                        self._delete(drt, dep, "Foreground")
                blocking = [d for _, d in deps if any(
                    r["uid"] == meta["uid"] and r.get("blockOwnerDeletion")
                    for r in d["metadata"].get("ownerReferences") or [])]
                if not blocking:
                    self._set_meta(rt, obj, "finalizers",
                                   [f for f in finalizers if f != FOREGROUND])
            elif rt.key == CRD_KEY and CRD_CLEANUP in finalizers:
                self._cleanup_crd(rt, obj, finalizers)
            if rt.key == NS_KEY:
                self._cleanup_namespace(obj)

    def _cleanup_crd(self, rt: ResourceType, crd: Obj, finalizers: list[str]) -> None:
        spec = crd["spec"]
        key = (spec["group"], spec["names"]["plural"])
        instances = self.api.store.list(key)
        crt = self.api.types.get(key)
        if instances and crt is not None:
            for inst in instances:
                if not inst["metadata"].get("deletionTimestamp"):
                    self._delete(crt, inst)
            return
        self._set_meta(rt, crd, "finalizers", [f for f in finalizers if f != CRD_CLEANUP])

    def _cleanup_namespace(self, ns: Obj) -> None:
        name = ns["metadata"]["name"]
        remaining = 0
        for rt in list(self.api.types.values()):
            if not rt.namespaced:
                continue
            for obj in self.api.store.list(rt.key, name):
                remaining += 1
                if not obj["metadata"].get("deletionTimestamp"):
                    self._delete(rt, obj)
        if remaining == 0 and not ns["metadata"].get("finalizers"):
            self.api.store.remove(NS_KEY, "", name)
