"""What the operator's watches have shown: TrainingJobs and their Jobs.

A reconcile reads from here instead of asking the API server each time (at a hundred
TrainingJobs that was a third of the operator's requests). The operator's own writes go in at
once, so the next pass does not act on the state from before them; a watch event older than
what is cached is ignored.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from stagegate_core.keys import LABEL_FOLD, LABEL_STAGE, LABEL_STEP, LABEL_TJ

from .informer import kept, owner

Key = tuple[str, str]  # namespace, name


def _version(obj: dict[str, Any]) -> int | None:
    try:
        return int(obj["metadata"].get("resourceVersion", ""))
    except (TypeError, ValueError):
        return None  # opaque: take whatever comes


def _newer(incoming: dict[str, Any], cached: dict[str, Any] | None) -> bool:
    if cached is None:
        return True
    new, old = _version(incoming), _version(cached)
    return new is None or old is None or new >= old


# The parts of a Job the operator reads: its labels, counts, times and conditions (the reason
# and message of a Failed one only).
_JOB_LABELS = (LABEL_TJ, LABEL_STEP, LABEL_STAGE, LABEL_FOLD)
_JOB_STATUS = ("active", "ready", "succeeded", "failed", "startTime", "completionTime")


def slim_job(obj: dict[str, Any]) -> dict[str, Any]:
    """What the operator reads of a Job, and no more: thousands of Jobs are cached at once."""
    meta = obj["metadata"]
    status = obj.get("status") or {}
    slim_status = kept(status, _JOB_STATUS)
    if status.get("conditions"):
        slim_status["conditions"] = [
            kept(c, ("type", "status", "reason", "message") if c.get("type") == "Failed"
                 else ("type", "status"))
            for c in status["conditions"]
        ]  # fmt: skip
    return {
        "metadata": {
            "name": meta["name"],
            "namespace": sys.intern(meta["namespace"]),
            "labels": kept(meta.get("labels"), _JOB_LABELS),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "spec": {"backoffLimit": (obj.get("spec") or {}).get("backoffLimit", 0)},
        "status": slim_status,
    }


class ObjectCache:
    def __init__(self) -> None:
        self._trainingjobs: dict[Key, dict[str, Any]] = {}
        self._jobs: dict[Key, dict[str, dict[str, Any]]] = defaultdict(dict)

    # -- TrainingJobs
    def trainingjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._trainingjobs.get((namespace, name))

    def trainingjob_keys(self) -> list[Key]:
        return list(self._trainingjobs)

    def put_trainingjob(self, obj: dict[str, Any]) -> bool:
        """Cache `obj`; False when it holds nothing new (e.g. the echo of our own patch)."""
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        cached = self._trainingjobs.get(key)
        if cached is not None and _version(obj) is not None and _version(obj) == _version(cached):
            return False
        if _newer(obj, cached):
            # Without managedFields, which nothing reads: they name every field of the spec
            # and the status, as much again as the object.
            meta = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
            self._trainingjobs[key] = {**obj, "metadata": meta}
            return True
        return False

    def put_status_write(
        self, body: Mapping[str, Any], written: Mapping[str, Any], status: dict[str, Any]
    ) -> None:
        """Cache a TrainingJob as our status write left it (`written`: the metadata the write
        answered), so the next pass sees its own write.

        A status write changes the status and the metadata only, and only this operator writes
        the status (the chart grants it to no one else). The spec is another matter: one
        changed while the pass ran (a new generation) is not in `body`, and caching `body`'s
        spec under the newer resourceVersion would make the cache drop the watch event that
        brings it. Then the cache is left for that event to update.
        """
        meta = body["metadata"]
        current = self.trainingjob(meta["namespace"], meta["name"]) or body
        if current["metadata"].get("generation") == written.get("generation"):
            self.put_trainingjob({**current, "metadata": dict(written), "status": status})

    def drop_trainingjob(self, namespace: str, name: str) -> None:
        self._trainingjobs.pop((namespace, name), None)
        self._jobs.pop((namespace, name), None)

    def replace_trainingjobs(self, scope: str | None, items: list[dict[str, Any]]) -> set[Key]:
        """The TrainingJobs of `scope` (None: every namespace) are now `items`, as a LIST
        answered; those that are new, changed or gone."""
        listed = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in items}
        gone = {
            key
            for key in self._trainingjobs
            if (scope is None or key[0] == scope) and key not in listed
        }
        for key in gone:
            self.drop_trainingjob(*key)
        return gone | {key for key, obj in listed.items() if self.put_trainingjob(obj)}

    # -- Jobs, grouped by the TrainingJob that owns them
    def jobs(self, namespace: str, trainingjob: str) -> list[dict[str, Any]]:
        return list(self._jobs.get((namespace, trainingjob), {}).values())

    def put_job(self, obj: dict[str, Any]) -> bool:
        """Cache `obj`; False when nothing the operator reads of it changed."""
        key = owner(obj)
        if key is None:
            return False
        group = self._jobs[key]
        name = obj["metadata"]["name"]
        cached = group.get(name)
        if not _newer(obj, cached):
            return False
        slim = slim_job(obj)
        group[name] = slim
        return cached is None or (slim["status"], slim["spec"]) != (
            cached["status"], cached["spec"],
        )  # fmt: skip

    def replace_jobs(self, scope: str | None, items: list[dict[str, Any]]) -> set[Key]:
        """The Jobs of `scope` (None: every namespace) are now `items`, as a LIST answered;
        the TrainingJobs whose Jobs were or are there."""
        touched = {key for key in self._jobs if scope is None or key[0] == scope}
        for key in touched:
            del self._jobs[key]
        for obj in items:
            self.put_job(obj)
        return touched | {key for key in self._jobs if scope is None or key[0] == scope}

    def drop_job(self, namespace: str, trainingjob: str, name: str) -> None:
        self._jobs.get((namespace, trainingjob), {}).pop(name, None)
