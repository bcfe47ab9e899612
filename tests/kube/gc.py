"""Garbage collector, plus the namespace and CRD cleanup that real clusters run as controllers.

Asynchronous like the real one: a sweep runs shortly after any change and once a second, so
tests must poll for cascaded deletions rather than expect them in the DELETE response.

Scale: a sweep looks only at the objects a change may concern (the changed object when it has
ownerReferences, the owners it names, the dependents of a removed owner, found through the
store's owner-uid index) plus every object that is being deleted; a full pass over everything
runs only every `full_interval` seconds, as a safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from .api import CRD_KEY, FOREGROUND, NS_KEY, ORPHAN, Api
from .errors import ApiError
from .resources import ResourceType
from .store import Event, TypeKey

Obj = dict[str, Any]
Where = tuple[TypeKey, str, str]  # (type key, namespace, name)
CRD_CLEANUP = "customresourcecleanup.apiextensions.k8s.io"


class GarbageCollector:
    def __init__(self, api: Api, interval: float = 1.0, full_interval: float | None = 30.0
                 ) -> None:
        self.api = api
        self.interval = interval
        self.full_interval = full_interval
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._changed: set[Where] = set()  # objects to look at in the next sweep
        self._terminating: set[Where] = set()  # objects with a deletionTimestamp
        self._last_full = float("-inf")

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
        where = (event.key, meta.get("namespace", ""), meta["name"])
        store = self.api.store
        if event.type == "DELETED":
            self._terminating.discard(where)
            self._changed.update(store.owned.get(meta["uid"], ()))  # orphans now
        elif meta.get("deletionTimestamp"):
            self._terminating.add(where)
        if event.type != "DELETED" and meta.get("ownerReferences"):
            self._changed.add(where)
        # Owners waiting for this dependent (foreground deletion, orphaning).
        for obj in (event.obj, event.old):
            for ref in (obj or {}).get("metadata", {}).get("ownerReferences") or []:
                owner = store.by_uid.get(ref.get("uid", ""))
                if owner is not None:
                    self._changed.add(owner)
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
                full = self.full_interval is not None and \
                    time.monotonic() - self._last_full >= self.full_interval
                if full:
                    self._last_full = time.monotonic()
                self.sweep(full=full)
            except Exception:  # keep collecting; a bug here must not stop the emulator
                import traceback

                traceback.print_exc()

    # --- one pass ------------------------------------------------------------------------

    def _all(self) -> list[tuple[ResourceType, Obj]]:
        """Every object a sweep can act on: those with owners and those being deleted."""
        return [(rt, o) for rt in list(self.api.types.values())
                for o in self.api.store.list(rt.key)
                if o["metadata"].get("ownerReferences") or o["metadata"].get("deletionTimestamp")]

    def _candidates(self) -> list[tuple[ResourceType, Obj]]:
        """The changed and the terminating objects, in the order a full pass visits them."""
        where, self._changed = self._changed | self._terminating, set()
        order = {key: i for i, key in enumerate(self.api.types)}
        found = []
        for key, ns, name in sorted(where, key=lambda w: (order.get(w[0], len(order)), w[1:])):
            rt = self.api.types.get(key)
            obj = self.api.store.get(key, ns, name)
            if rt is not None and obj is not None:
                found.append((rt, obj))
        return found

    def _dependents(self, uid: str) -> list[tuple[ResourceType, Obj]]:
        return [(self.api.types[key], obj) for key, obj in self.api.store.dependents(uid)
                if key in self.api.types]

    def _delete(self, rt: ResourceType, obj: Obj, policy: str = "Background") -> None:
        with contextlib.suppress(ApiError):
            self.api.delete(rt, rt.storage_version, obj["metadata"].get("namespace"),
                            obj["metadata"]["name"], {"propagationPolicy": policy})

    def _set_meta(self, rt: ResourceType, obj: Obj, key: str, value: Any) -> None:
        with contextlib.suppress(ApiError):
            self.api.patch(rt, rt.storage_version, obj["metadata"].get("namespace"),
                           obj["metadata"]["name"], "application/merge-patch+json",
                           {"metadata": {key: value}})

    def sweep(self, full: bool = True) -> None:
        if full:
            self._changed.clear()
            everything = self._all()
        else:
            everything = self._candidates()
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
            deps = self._dependents(meta["uid"])
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
