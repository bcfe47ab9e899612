"""The Kubernetes API in memory, for reconcile passes without a cluster.

`FakeApi` answers the calls the Reconciler makes and records the writes (creates, deletes,
status patches, Events) in order; `errors[(verb, plural)]` answers a chosen error. The test
plays the cluster: it edits `tj` and `objects` (a Job completes, a pod fails), and `deliver`
hands the reconciler's cache what the watches would have brought by then.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from stagegate_core.keys import LABEL_TJ
from stagegate_core.results import encode
from stagegate_core.statusmodel import TrainingJobStatus
from stagegate_operator.cache import ObjectCache
from stagegate_operator.defaults import TrainerDefaults
from stagegate_operator.kubeapi import ApiError
from stagegate_operator.metrics import OperatorMetrics
from stagegate_operator.observe import Memory, recall
from stagegate_operator.reconcile import Reconciler

S3 = {"uri": "s3://models/runs", "secretRef": {"name": "creds"}}
NOW = 1_700_000_000.0


class FakeApi:
    def __init__(self, tj: dict[str, Any]) -> None:
        self.tj = tj
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}  # (plural, name)
        self.events: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.errors: dict[tuple[str, str], ApiError] = {}
        # Writes in order: (verb, plural, name); an Event's name here is its reason.
        self.calls: list[tuple[str, str, str]] = []
        self.reads: list[tuple[str, str]] = []  # (plural, name) of every GET
        self.patches: list[dict[str, Any]] = []  # the status patches, in order
        self.gone = False  # the TrainingJob was deleted

    async def request(self, method: str, path: str, **_: Any) -> Any:
        assert method == "GET", (method, path)
        plural, name = path.rstrip("/").split("/")[-2:]
        self.reads.append((plural, name))
        if plural == "trainingjobs":
            found = None if self.gone else self.tj
        else:
            found = self.objects.get((plural, name))
        if found is None:
            raise ApiError(404, "NotFound", f'{plural} "{name}" not found')
        return copy.deepcopy(found)

    async def list(self, gv: str, ns: str, plural: str, selector: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (p, _), o in self.objects.items() if p == plural]

    async def create(self, gv: str, ns: str, plural: str, body: Any) -> Any:
        name = body["reason"] if plural == "events" else body["metadata"]["name"]
        self.calls.append(("create", plural, name))
        if (error := self.errors.get(("create", plural))) is not None:
            raise error
        if plural == "events":
            self.events.append(body)
            return body
        self.objects[(plural, body["metadata"]["name"])] = copy.deepcopy(body)
        return body

    async def delete(self, gv: str, ns: str, plural: str, name: str, *, propagation: str) -> None:
        self.calls.append(("delete", plural, name))
        self.deleted.append(name)
        self.objects.pop((plural, name), None)

    async def patch_status(self, gv: str, ns: str, plural: str, name: str, patch: Any) -> Any:
        self.calls.append(("patch", f"{plural}/status", name))
        self.patches.append(copy.deepcopy(patch))
        status = self.tj.setdefault("status", {})
        _merge(status, patch)
        return copy.deepcopy(self.tj["metadata"])  # the real client asks for metadata only

    # -- what a test looks at
    def warnings(self, reason: str | None = None) -> list[str]:
        return [
            e["message"]
            for e in self.events
            if e["type"] == "Warning" and (reason is None or e["reason"] == reason)
        ]

    def writes(self, verb: str, plural: str) -> list[str]:
        """Names written with `verb` to `plural` since the last `forget_calls`, in order."""
        return [n for v, p, n in self.calls if (v, p) == (verb, plural)]

    def forget_calls(self) -> None:
        self.calls.clear()

    # -- the cluster's side
    def deliver(self, cache: ObjectCache) -> None:
        """Bring `cache` up to date with the TrainingJob and its Jobs, as the watches would."""
        namespace, name = self.tj["metadata"]["namespace"], self.tj["metadata"]["name"]
        if self.gone:
            cache.drop_trainingjob(namespace, name)
            return
        cache.put_trainingjob(copy.deepcopy(self.tj))
        for (plural, _), job in self.objects.items():
            if plural == "jobs":
                seen = copy.deepcopy(job)
                seen["metadata"].setdefault("namespace", namespace)
                seen["metadata"].setdefault("labels", {}).setdefault(LABEL_TJ, name)
                cache.put_job(seen)
        for job in cache.jobs(namespace, name):
            if ("jobs", job["metadata"]["name"]) not in self.objects:
                cache.drop_job(namespace, name, job["metadata"]["name"])

    def finish(self, job_name: str, result: dict[str, Any] | None = None) -> None:
        """The Job completes; its pod's termination message holds `result` (None: lost)."""
        self.objects[("jobs", job_name)]["status"] = {
            "succeeded": 1,
            "startTime": "2023-11-14T22:00:00Z",
            "completionTime": "2023-11-14T22:01:00Z",
            "conditions": [{"type": "Complete", "status": "True"}],
        }
        if result is not None:
            self.pod(job_name, "Succeeded", encode(result), exit_code=0)

    def pod(
        self, job_name: str, phase: str, message: str, *, exit_code: int = 1, attempt: int = 1
    ) -> None:
        """A finished pod of the Job with this termination message."""
        name = f"{job_name}-{attempt}"
        self.objects[("pods", name)] = {
            "metadata": {"name": name, "labels": {"job-name": job_name},
                         "creationTimestamp": f"2023-11-14T22:00:{attempt:02d}Z"},
            "status": {"phase": phase, "containerStatuses": [{"state": {"terminated": {
                "exitCode": exit_code, "message": message}}}]},
        }  # fmt: skip


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def trainingjob(name: str = "btc", **spec_fields: Any) -> dict[str, Any]:
    fields = {"artifacts": S3, **spec_fields}
    return {
        "apiVersion": "stagegate.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": "ns", "uid": "uid-1", "generation": 1},
        "spec": {"symbol": "BTC/USDT", "mode": "quick", **fields},
    }


def reconciler(
    api: FakeApi, defaults: TrainerDefaults | None = None, clock: Any = lambda: NOW
) -> Reconciler:
    return Reconciler(api, OperatorMetrics(), clock=clock, defaults=defaults)  # type: ignore[arg-type]


def run_pass(reconciler: Reconciler, api: FakeApi) -> None:
    """One pass over what the cluster holds now."""
    api.deliver(reconciler.cache)
    meta = api.tj["metadata"]
    asyncio.run(reconciler.reconcile(meta["namespace"], meta["name"]))


def recall_status(status: dict[str, Any]) -> Memory:
    """The operator's memory of a status as stored (a plain mapping, as the API answers it)."""
    return recall(TrainingJobStatus.parse(status))
