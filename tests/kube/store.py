"""Object storage with one global resourceVersion, an event history and watchers.

Everything runs on the emulator's event loop, so the store needs no locks. Every write bumps the
resourceVersion and produces exactly one event; that is what kopf relies on when it waits for the
watch event that carries the resourceVersion of its own patch.
"""

from __future__ import annotations

import asyncio
import bisect
import builtins
import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .selectors import FieldRequirement, Requirement, fields_match, labels_match
from .util import deep

Obj = dict[str, Any]
TypeKey = tuple[str, str]  # (group, plural)


@dataclass
class Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    key: TypeKey
    obj: Obj
    old: Obj | None = None


@dataclass(eq=False)
class Watcher:
    """One watch stream's filter and queue (events are put unfiltered by type, filtered here)."""

    key: TypeKey
    namespace: str | None
    labels: list[Requirement]
    fields: list[FieldRequirement]
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and obj["metadata"].get("namespace") != self.namespace:
            return False
        return labels_match(self.labels, obj) and fields_match(self.fields, obj)

    def translate(self, event: Event) -> tuple[str, Obj] | None:
        """Map an event through this watcher's selectors, as the real watch cache does."""
        if event.key != self.key:
            return None
        now_matches = self.matches(event.obj)
        if event.type == "MODIFIED":
            was = self.matches(event.old)
            if was and now_matches:
                return ("MODIFIED", event.obj)
            if was:
                return ("DELETED", event.obj)
            if now_matches:
                return ("ADDED", event.obj)
            return None
        return (event.type, event.obj) if now_matches else None


class TooOld(Exception):
    """The requested resourceVersion is older than the retained history (410 Expired)."""


class Store:
    def __init__(self, history: int = 20000) -> None:
        self.objects: dict[TypeKey, dict[tuple[str, str], Obj]] = collections.defaultdict(dict)
        self.rv = 100
        self.history: collections.deque[Event] = collections.deque(maxlen=history)
        self.compacted_rv = self.rv
        self.watchers: set[Watcher] = set()
        self.listeners: list[Callable[[Event], None]] = []
        self.by_uid: dict[str, tuple[TypeKey, str, str]] = {}
        # Indexes kept up to date by put/remove, so that controllers and list requests need
        # not scan (and sort) a whole type on every call:
        # - the (namespace, name) keys of each type in list order;
        # - owner uid -> the objects whose ownerReferences name it (any kind, controller or not).
        self._order: dict[TypeKey, builtins.list[tuple[str, str]]] = \
            collections.defaultdict(builtins.list)
        self.owned: dict[str, set[tuple[TypeKey, str, str]]] = {}
        # - (label key, value) -> the (namespace, name) keys of each type carrying that label.
        self._labels: dict[TypeKey, dict[tuple[str, str], set[tuple[str, str]]]] = \
            collections.defaultdict(dict)

    # --- reads ---------------------------------------------------------------------------

    def get(self, key: TypeKey, namespace: str, name: str) -> Obj | None:
        return self.objects[key].get((namespace, name))

    def list(self, key: TypeKey, namespace: str | None = None) -> list[Obj]:
        """The type's objects (of one namespace) sorted by (namespace, name)."""
        objects = self.objects[key]
        order = self._order[key]
        if namespace is None:
            return [objects[ident] for ident in order]
        lo = bisect.bisect_left(order, namespace, key=_namespace_of)
        hi = bisect.bisect_right(order, namespace, lo=lo, key=_namespace_of)
        return [objects[ident] for ident in order[lo:hi]]

    def select(self, key: TypeKey, namespace: str | None, labels: builtins.list[Requirement]
               ) -> builtins.list[Obj]:
        """list() filtered by a label selector, using the label index for `=` and `in`."""
        index = self._labels[key]
        best: set[tuple[str, str]] | None = None
        for req in labels:
            if req.op not in ("=", "in"):
                continue
            found: set[tuple[str, str]] = set()
            for value in req.values:
                found |= index.get((req.key, value), set())
            if best is None or len(found) < len(best):
                best = found
        if best is None:
            items = self.list(key, namespace)
        else:
            objects = self.objects[key]
            items = [objects[ident] for ident in sorted(best)
                     if namespace is None or ident[0] == namespace]
        return [o for o in items if labels_match(labels, o)] if labels else items

    def count(self, key: TypeKey) -> int:
        return len(self.objects[key])

    def dependents(self, owner_uid: str, key: TypeKey | None = None
                   ) -> builtins.list[tuple[TypeKey, Obj]]:
        """Objects (of one type) whose ownerReferences name `owner_uid`, in list order."""
        found = []
        for k, ns, name in sorted(self.owned.get(owner_uid, ())):
            if key is not None and k != key:
                continue
            obj = self.objects[k].get((ns, name))
            if obj is not None:
                found.append((k, obj))
        return found

    def has_dependents(self, owner_uid: str) -> bool:
        return bool(self.owned.get(owner_uid))

    def find_uid(self, uid: str) -> tuple[TypeKey, Obj] | None:
        where = self.by_uid.get(uid)
        if where is None:
            return None
        key, ns, name = where
        found = self.get(key, ns, name)
        return (key, found) if found is not None else None

    # --- writes --------------------------------------------------------------------------

    def _bump(self) -> str:
        self.rv += 1
        return str(self.rv)

    def put(self, key: TypeKey, obj: Obj) -> Obj:
        """Create or replace; stamps the new resourceVersion and emits ADDED or MODIFIED."""
        meta = obj["metadata"]
        ident = (meta.get("namespace", ""), meta["name"])
        old = self.objects[key].get(ident)
        meta["resourceVersion"] = self._bump()
        stored = deep(obj)
        self.objects[key][ident] = stored
        if old is None:
            bisect.insort(self._order[key], ident)
        self.by_uid[meta["uid"]] = (key, ident[0], ident[1])
        self._index_owners(key, ident, old, stored)
        self._index_labels(key, ident, old, stored)
        self._emit(Event(self.rv, "MODIFIED" if old else "ADDED", key, stored, old))
        return deep(stored)

    def remove(self, key: TypeKey, namespace: str, name: str, final: Obj | None = None
               ) -> Obj | None:
        """Remove an object; `final` is its last state (a write that emptied its finalizers)."""
        old = self.objects[key].pop((namespace, name), None)
        if old is None:
            return None
        order = self._order[key]
        at = bisect.bisect_left(order, (namespace, name))
        if at < len(order) and order[at] == (namespace, name):
            del order[at]
        self.by_uid.pop(old["metadata"]["uid"], None)
        self._index_owners(key, (namespace, name), old, None)
        self._index_labels(key, (namespace, name), old, None)
        final = deep(final if final is not None else old)
        final["metadata"]["resourceVersion"] = self._bump()
        self._emit(Event(self.rv, "DELETED", key, final, old))
        return deep(final)

    def drop_type(self, key: TypeKey) -> None:
        for obj in self.list(key):
            self.remove(key, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        self.objects.pop(key, None)
        self._order.pop(key, None)
        self._labels.pop(key, None)

    def _index_labels(self, key: TypeKey, ident: tuple[str, str], old: Obj | None,
                      new: Obj | None) -> None:
        before = _label_pairs(old)
        after = _label_pairs(new)
        if before == after:
            return
        index = self._labels[key]
        for pair in before - after:
            idents = index.get(pair)
            if idents is not None:
                idents.discard(ident)
                if not idents:
                    del index[pair]
        for pair in after - before:
            index.setdefault(pair, set()).add(ident)

    def _index_owners(self, key: TypeKey, ident: tuple[str, str], old: Obj | None,
                      new: Obj | None) -> None:
        before = _owner_uids(old)
        after = _owner_uids(new)
        if before == after:
            return
        entry = (key, ident[0], ident[1])
        for uid in before - after:
            deps = self.owned.get(uid)
            if deps is not None:
                deps.discard(entry)
                if not deps:
                    del self.owned[uid]
        for uid in after - before:
            self.owned.setdefault(uid, set()).add(entry)

    def _emit(self, event: Event) -> None:
        self.history.append(event)
        if len(self.history) == self.history.maxlen:
            self.compacted_rv = self.history[0].rv - 1
        for w in list(self.watchers):
            w.queue.put_nowait(event)
        for listener in list(self.listeners):
            listener(event)

    # --- watch support -------------------------------------------------------------------

    def compact(self) -> None:
        """Forget the event history, as etcd compaction does (tests use it to provoke 410s)."""
        self.history.clear()
        self.compacted_rv = self.rv

    def events_since(self, rv: int) -> builtins.list[Event]:
        if rv < self.compacted_rv:
            raise TooOld()
        return [e for e in self.history if e.rv > rv]

    def subscribe(self, watcher: Watcher) -> None:
        self.watchers.add(watcher)

    def unsubscribe(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)

    def close_watchers(self) -> None:
        for w in list(self.watchers):
            w.queue.put_nowait(None)


def _namespace_of(ident: tuple[str, str]) -> str:
    return ident[0]


def _owner_uids(obj: Obj | None) -> set[str]:
    if obj is None:
        return set()
    return {r["uid"] for r in obj["metadata"].get("ownerReferences") or [] if r.get("uid")}


def _label_pairs(obj: Obj | None) -> set[tuple[str, str]]:
    if obj is None:
        return set()
    labels = obj["metadata"].get("labels")
    if not isinstance(labels, dict):
        return set()
    return {(k, v) for k, v in labels.items() if isinstance(v, str)}
