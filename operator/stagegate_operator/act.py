"""Carrying out the stage machine's actions on the cluster: the spec's ConfigMap, the step Jobs.

Every write is idempotent, so a pass that repeats an action (the machine asks for what it
wants, level-based) changes nothing: a child that exists already is adopted (its name is
deterministic), a Job being deleted is gone from the cache at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, assert_never

from stagegate_core import approval as approvals
from stagegate_core.spec import TrainingJobSpec
from stagegate_core.stagemachine import (
    Action,
    Prepare,
    StartFinal,
    StartFold,
    StopRunning,
    Summarise,
)

from . import children
from . import failures as failing
from .cache import ObjectCache
from .kubeapi import ApiError, KubeApi
from .observe import job_finished, spent_attempts


class Actor:
    def __init__(
        self,
        api: KubeApi,
        cache: ObjectCache,
        trainer_command: tuple[str, ...],
        service_account: str | None,
    ) -> None:
        self.api = api
        self.cache = cache
        self.trainer_command = trainer_command
        self.service_account = service_account

    async def freeze_spec(self, body: Mapping[str, Any], spec: TrainingJobSpec) -> str | None:
        """Freeze the spec in its ConfigMap; why the run cannot start, if the API says so."""
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        configmap = children.spec_configmap(name, namespace, meta["uid"], spec, {})
        try:
            await self._ensure("v1", namespace, "configmaps", configmap)
        except ApiError as exc:
            what = f"creating ConfigMap {children.spec_configmap_name(name)}"
            if exc.status in failing.PERMANENT:
                return failing.describe_api_error(what, exc)
            raise
        return None

    async def carry_out(
        self,
        action: Action,
        body: Mapping[str, Any],
        spec: TrainingJobSpec,
        jobs: Mapping[str, Mapping[str, Any]],
        approval: Mapping[str, Any] | None,
        carried: dict[str, int],
    ) -> None:
        """`jobs`: the TrainingJob's Jobs by name. `carried` (the memory's) gains the attempts
        of a finished Job deleted to run its step again."""
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        owner = children.Owner(
            name, namespace, meta["uid"], spec, self.trainer_command, self.service_account
        )
        match action:
            case StopRunning():
                for job_name, job in jobs.items():
                    if not job_finished(job):
                        await self._delete_job(namespace, name, job_name)
                return
            case Prepare():
                wanted = children.prepare_job(owner)
            case StartFold(stage=stage, fold=fold):
                wanted = children.fold_job(owner, stage, fold)
            case Summarise(stage=stage):
                wanted = children.summary_job(owner, stage)
            case StartFinal():
                # The machine starts it only past an approved gate, so `approval` is that
                # gate's record; the fallback only keeps the pod's contract (it always gets one).
                wanted = children.final_job(
                    owner, approval or approvals.record("approved", "gates", "gates", "", "final")
                )
            case _:
                assert_never(action)
        await self._start(name, wanted, jobs, carried)

    async def _start(
        self,
        trainingjob: str,
        job: dict[str, Any],
        jobs: Mapping[str, Mapping[str, Any]],
        carried: dict[str, int],
    ) -> None:
        namespace, job_name = job["metadata"]["namespace"], job["metadata"]["name"]
        existing = jobs.get(job_name)
        if existing is None:
            created = await self._ensure("batch/v1", namespace, "jobs", job)
            if created is not None:
                self.cache.put_job(created)
        elif job_finished(existing):
            # A finished Job the machine wants again (a retry, or a result that was lost):
            # remove it; the next pass creates it afresh under the same name. Its attempts
            # stay counted (in the status), so the step's retries stay bounded.
            spent = spent_attempts(existing)
            await self._delete_job(namespace, trainingjob, job_name)
            carried[job_name] = carried.get(job_name, 0) + spent

    async def _ensure(
        self, group_version: str, namespace: str, plural: str, body: Any
    ) -> dict[str, Any] | None:
        """Create a child; the created object, or None when it already existed (adopted)."""
        try:
            created: dict[str, Any] = await self.api.create(group_version, namespace, plural, body)
            return created
        except ApiError as exc:
            if exc.status == 409:
                return None
            raise

    async def _delete_job(self, namespace: str, trainingjob: str, job_name: str) -> None:
        await self.api.delete("batch/v1", namespace, "jobs", job_name, propagation="Background")
        self.cache.drop_job(namespace, trainingjob, job_name)
