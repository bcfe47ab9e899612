"""batch/v1 Job controller: creates pods from the template and keeps the Job's status.

Covers parallelism, completions (NonIndexed), backoffLimit (failed pods plus container restarts
under restartPolicy OnFailure), activeDeadlineSeconds, suspend, ttlSecondsAfterFinished and the
Complete/Failed conditions (with SuccessCriteriaMet/FailureTarget, as 1.31+ servers add them).
The delay before a failed pod is replaced is `backoff_seconds * 2**(failures-1)`, capped at
6 minutes; real clusters use 10 s, tests use a fraction of a second.

Scale: the controller reconciles only the Jobs that changed (a Job event, or an event of a Pod
it controls) plus those whose timer is due: activeDeadlineSeconds, ttlSecondsAfterFinished, the
replacement backoff, and a retry `interval` after a write that failed. Pods are found through the
store's owner-uid index, so one reconcile costs O(its own pods), not O(all pods).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import traceback
from typing import Any

from . import events
from .api import Api
from .errors import ApiError
from .selectors import labels_match, selector_from_label_selector
from .store import Event
from .util import now, parse_time, rfc3339

Obj = dict[str, Any]
JOBS = ("batch", "jobs")
PODS = ("", "pods")


class JobController:
    def __init__(self, api: Api, *, backoff_seconds: float = 10.0, interval: float = 0.5) -> None:
        self.api = api
        self.backoff_seconds = backoff_seconds
        self.interval = interval
        self._dirty: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        # Time-driven re-checks: a heap of (when, (namespace, name)) plus the earliest pending
        # time per job (later duplicates are dropped; each reconcile schedules what it needs).
        self._heap: list[tuple[float, tuple[str, str]]] = []
        self._timers: dict[tuple[str, str], float] = {}
        self._task: asyncio.Task[None] | None = None
        # Terminal pods already counted, per job uid: pods may be deleted after finishing.
        self._counted: dict[str, dict[str, str]] = {}
        self._last_failure: dict[str, float] = {}

    def start(self) -> None:
        self.api.store.listeners.append(self._on_event)
        for job in self.api.store.list(JOBS):  # every existing job once, then only changes
            self._dirty.add((job["metadata"]["namespace"], job["metadata"]["name"]))
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
        if event.key == JOBS:
            self._dirty.add((meta["namespace"], meta["name"]))
            self._wake.set()
            if event.type == "DELETED":
                self._counted.pop(meta["uid"], None)
                self._last_failure.pop(meta["uid"], None)
        elif event.key == PODS:
            # The pod's controlling Job, before and after (an orphaned pod leaves its Job).
            for obj in (event.obj, event.old):
                if obj is None:
                    continue
                for ref in obj["metadata"].get("ownerReferences") or []:
                    if ref.get("kind") == "Job" and ref.get("controller"):
                        self._dirty.add((meta["namespace"], ref["name"]))
                        self._wake.set()

    def _schedule(self, ident: tuple[str, str], when: float) -> None:
        """Reconcile `ident` again at `when` (epoch seconds), unless one is due earlier."""
        pending = self._timers.get(ident)
        if pending is not None and pending <= when:
            return
        self._timers[ident] = when
        heapq.heappush(self._heap, (when, ident))
        if self._heap[0] == (when, ident):
            self._wake.set()  # the loop may be sleeping towards a later timer

    def _retry(self, job: Obj) -> None:
        """What the old every-`interval` pass did for a reconcile that could not write."""
        meta = job["metadata"]
        self._schedule((meta["namespace"], meta["name"]), now().timestamp() + self.interval)

    async def _loop(self) -> None:
        while True:
            timeout = self.interval
            if self._heap:
                timeout = min(timeout, max(0.0, self._heap[0][0] - now().timestamp()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            stamp = now().timestamp()
            while self._heap and self._heap[0][0] <= stamp:
                when, ident = heapq.heappop(self._heap)
                if self._timers.get(ident) == when:
                    del self._timers[ident]
                dirty.add(ident)
            for ns, name in sorted(dirty):
                current = self.api.store.get(JOBS, ns, name)
                if current is None:
                    continue
                try:
                    self.reconcile(current)
                except ApiError:
                    self._retry(current)
                except Exception:
                    traceback.print_exc()
                    self._retry(current)

    # --- reconcile -----------------------------------------------------------------------

    def _pods(self, job: Obj) -> list[Obj]:
        uid, namespace = job["metadata"]["uid"], job["metadata"]["namespace"]
        reqs = selector_from_label_selector(job["spec"].get("selector"))
        return [
            p for _, p in self.api.store.dependents(uid, PODS)
            if p["metadata"].get("namespace") == namespace and labels_match(reqs, p) and any(
                r.get("uid") == uid and r.get("controller")
                for r in p["metadata"].get("ownerReferences") or [])
        ]

    def reconcile(self, job: Obj) -> None:
        meta, spec = job["metadata"], job["spec"]
        if meta.get("deletionTimestamp"):
            return
        status: Obj = dict(job.get("status") or {})
        conditions: list[Obj] = list(status.get("conditions") or [])
        uid = meta["uid"]
        pods = self._pods(job)
        counted = self._counted.setdefault(uid, {})
        for p in pods:
            phase = (p.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                if p["metadata"]["uid"] not in counted and phase == "Failed":
                    self._last_failure[uid] = now().timestamp()
                counted[p["metadata"]["uid"]] = phase
        succeeded = max(int(status.get("succeeded") or 0),
                        sum(1 for v in counted.values() if v == "Succeeded"))
        failed = max(int(status.get("failed") or 0),
                     sum(1 for v in counted.values() if v == "Failed"))
        live = [p for p in pods if (p.get("status") or {}).get("phase") not in
                ("Succeeded", "Failed")]
        active = [p for p in live if not p["metadata"].get("deletionTimestamp")]
        terminating = [p for p in live if p["metadata"].get("deletionTimestamp")]
        restarts = sum(int(cs.get("restartCount", 0)) for p in pods
                       for cs in (p.get("status") or {}).get("containerStatuses") or [])
        finished = _true(conditions, "Complete") or _true(conditions, "Failed")

        def write() -> None:
            status.update({
                "active": len(active) or None, "succeeded": succeeded or None,
                "failed": failed or None, "terminating": len(terminating),
                "ready": sum(1 for p in active if _ready(p)),
                "uncountedTerminatedPods": {},
            })
            clean = {k: v for k, v in status.items() if v is not None}
            if clean != job.get("status"):
                self.api.write_status(JOBS, {**job, "status": clean})

        if finished:
            for p in active:
                self._delete_pod(job, p)
            active = []
            write()
            self._maybe_ttl(job, conditions)
            return

        if spec.get("suspend"):
            for p in active:
                self._delete_pod(job, p)
            active = []
            if not _true(conditions, "Suspended"):
                _set_condition(conditions, "Suspended", "True", "JobSuspended", "Job suspended")
                status.pop("startTime", None)
                events.record(self.api, job, "Normal", "Suspended", "Job suspended",
                              "job-controller")
            status["conditions"] = conditions
            write()
            return
        if _true(conditions, "Suspended"):
            _set_condition(conditions, "Suspended", "False", "JobResumed", "Job resumed")
            status["startTime"] = rfc3339()
            events.record(self.api, job, "Normal", "Resumed", "Job resumed", "job-controller")
        status.setdefault("startTime", rfc3339())

        backoff_limit = int(spec.get("backoffLimit", 6))
        deadline = spec.get("activeDeadlineSeconds")
        completions = spec.get("completions")
        if failed + restarts > backoff_limit:
            self._finish(job, status, conditions, active, False, "BackoffLimitExceeded",
                         "Job has reached the specified backoff limit")
            active = []
        elif deadline is not None and (now() - parse_time(status["startTime"])).total_seconds() \
                >= deadline:
            self._finish(job, status, conditions, active, False, "DeadlineExceeded",
                         "Job was active longer than specified deadline")
            active = []
        elif (completions is not None and succeeded >= completions) or \
                (completions is None and succeeded > 0 and not active):
            self._finish(job, status, conditions, active, True, "CompletionsReached",
                         "Reached expected number of succeeded pods")
            active = []
        else:
            parallelism = int(spec.get("parallelism", 1))
            if completions is None:
                want = 0 if succeeded else parallelism
            else:
                want = min(parallelism, completions - succeeded)
            missing = want - len(active) - len(terminating)
            ident = (meta["namespace"], meta["name"])
            if missing > 0:
                over = self._backoff_over(uid, failed + restarts)
                if over is True:
                    for _ in range(missing):
                        pod = self._create_pod(job)
                        if pod is not None:
                            active.append(pod)
                        else:
                            self._retry(job)
                else:
                    self._schedule(ident, over)
            if deadline is not None:
                self._schedule(ident, parse_time(status["startTime"]).timestamp() + deadline)
        status["conditions"] = conditions
        write()

    def _backoff_over(self, uid: str, failures: int) -> bool | float:
        """True when a failed pod may be replaced now, else the time when it may."""
        if not failures or uid not in self._last_failure:
            return True
        delay = min(self.backoff_seconds * 2 ** (failures - 1), 360.0)
        if now().timestamp() - self._last_failure[uid] >= delay:
            return True
        return self._last_failure[uid] + delay

    def _finish(self, job: Obj, status: Obj, conditions: list[Obj], active: list[Obj], ok: bool,
                reason: str, message: str) -> None:
        for p in active:
            self._delete_pod(job, p)
        if ok:
            _set_condition(conditions, "SuccessCriteriaMet", "True", reason, message)
            _set_condition(conditions, "Complete", "True", reason, message)
            status["completionTime"] = rfc3339()
            events.record(self.api, job, "Normal", "Completed", "Job completed",
                          "job-controller")
        else:
            _set_condition(conditions, "FailureTarget", "True", reason, message)
            _set_condition(conditions, "Failed", "True", reason, message)
            events.record(self.api, job, "Warning", reason, message, "job-controller")
        status["conditions"] = conditions

    def _maybe_ttl(self, job: Obj, conditions: list[Obj]) -> None:
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        finished_at = max(parse_time(c["lastTransitionTime"]) for c in conditions
                          if c["type"] in ("Complete", "Failed") and c["status"] == "True")
        if (now() - finished_at).total_seconds() >= ttl:
            rt = self.api.type(JOBS)
            try:
                self.api.delete(rt, "v1", job["metadata"]["namespace"], job["metadata"]["name"],
                                {"propagationPolicy": "Foreground"})
            except ApiError as exc:
                if exc.code != 404:
                    self._retry(job)
        else:
            meta = job["metadata"]
            self._schedule((meta["namespace"], meta["name"]), finished_at.timestamp() + ttl)

    def _delete_pod(self, job: Obj, pod: Obj) -> None:
        try:
            self.api.delete(self.api.type(PODS), "v1", pod["metadata"]["namespace"],
                            pod["metadata"]["name"], {"propagationPolicy": "Background"})
        except ApiError as exc:
            if exc.code != 404:
                self._retry(job)

    def _create_pod(self, job: Obj) -> Obj | None:
        meta = job["metadata"]
        template = job["spec"]["template"]
        tmeta = template.get("metadata") or {}
        body = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "generateName": f"{meta['name']}-",
                "labels": dict(tmeta.get("labels") or {}),
                "annotations": dict(tmeta.get("annotations") or {}),
                "ownerReferences": [{
                    "apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                    "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True,
                }],
            },
            "spec": template.get("spec") or {},
        }
        try:
            pod = self.api.create(self.api.type(PODS), "v1", meta["namespace"], body)
        except ApiError as exc:
            events.record(self.api, job, "Warning", "FailedCreate",
                          f"Error creating: {exc.message}", "job-controller")
            return None
        events.record(self.api, job, "Normal", "SuccessfulCreate",
                      f"Created pod: {pod['metadata']['name']}", "job-controller")
        return pod


def _true(conditions: list[Obj], kind: str) -> bool:
    return any(c["type"] == kind and c["status"] == "True" for c in conditions)


def _ready(pod: Obj) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _set_condition(conditions: list[Obj], kind: str, status: str, reason: str,
                   message: str) -> None:
    stamp = rfc3339()
    for c in conditions:
        if c["type"] == kind:
            if c["status"] != status:
                c["lastTransitionTime"] = stamp
            c.update({"status": status, "reason": reason, "message": message,
                      "lastProbeTime": stamp})
            return
    conditions.append({"type": kind, "status": status, "reason": reason, "message": message,
                       "lastProbeTime": stamp, "lastTransitionTime": stamp})
