"""One reconcile pass for one TrainingJob: gather, decide (the shared stage machine), act.

Level-based: everything is recomputed from the TrainingJob, its status (the operator's memory)
and the child Jobs and Pods that exist now, so an approval, a Job completion or a deletion that
happened while the operator was down is acted upon after it restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError
from stagegate_core import approval as approvals
from stagegate_core.formatting import now_iso, parse_iso, percent
from stagegate_core.keys import APPROVED_BY_ANNOTATION, REJECTION_REASON_ANNOTATION
from stagegate_core.spec import (
    API_GROUP,
    API_VERSION,
    PLURAL,
    TrainingJobSpec,
    format_validation_error,
    spec_fingerprint,
)
from stagegate_core.stagemachine import (
    TERMINAL,
    Decision,
    Prepare,
    StartFinal,
    StartFold,
    StopRunning,
    Summarise,
    decide,
)
from stagegate_core.status import Clock, build_status

from . import admission, children, pending
from . import failures as failing
from .cache import ObjectCache
from .defaults import TrainerDefaults
from .kubeapi import ApiError, KubeApi
from .metrics import OperatorMetrics
from .observe import (
    Memory,
    harvest,
    job_finished,
    needs_pods,
    observe,
    recall,
    spent_attempts,
)

log = logging.getLogger("stagegate.operator")
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"
# Fields a user may change while a run goes on: they steer it without changing its results.
STEERING = (
    "suspend",
    "parallelism",
    "approval",
    "max_retries",
    "resources",
    "image",
    "queue_name",
    "pending_timeout_seconds",
)
# Status fields that change every pass; a patch for them alone is sent at most this often.
VOLATILE = ("elapsedSeconds", "etaSeconds", "conditions", "phaseSeconds")
ELAPSED_REFRESH_SECONDS = 30.0


def _names(name: str) -> dict[str, Any]:
    return {
        "prepare": children.prepare_job_name(name),
        "fold": lambda stage, n: children.fold_job_name(name, stage, n),
        "final": children.final_job_name(name),
        "summary": lambda stage: children.summary_job_name(name, stage),
    }


def _stable(status: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k not in VOLATILE}


def pruned(value: Any) -> Any:
    """Without null members: a merge patch deletes them, so the stored status never has them."""
    if isinstance(value, dict):
        return {k: pruned(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [pruned(v) for v in value]
    return value


def merge_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch that turns `old` into `new` (lists are replaced whole)."""
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for key, value in new.items():
        before = old.get(key)
        if key not in old:
            patch[key] = value
        elif isinstance(before, dict) and isinstance(value, dict):
            inner = merge_diff(before, value)
            if inner:
                patch[key] = inner
        elif before != value:
            patch[key] = value
    return patch


class Reconciler:
    def __init__(
        self,
        api: KubeApi,
        metrics: OperatorMetrics,
        *,
        clock: Callable[[], float] = time.time,
        trainer_command: tuple[str, ...] = ("stagegate",),
        defaults: TrainerDefaults | None = None,
        cache: ObjectCache | None = None,
        settle_seconds: float = 0.25,
    ) -> None:
        self.trainer_command = trainer_command
        self.settle_seconds = settle_seconds
        self.defaults = defaults or TrainerDefaults()
        self.cache = cache or ObjectCache()
        # With a cache fed by watches (the kopf handlers), Jobs are read from it, not listed.
        self.watched = cache is not None
        self.api = api
        self.metrics = metrics
        self.clock = clock
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.limiter = failing.EventLimiter()
        self.pending = pending.Checks()
        self._dirty: set[tuple[str, str]] = set()
        self._urgent: set[tuple[str, str]] = set()
        self._specs: dict[tuple[str, str], tuple[tuple[Any, Any], TrainingJobSpec, str]] = {}
        # False while another replica holds the leader Lease: the cache stays warm, nothing acts.
        self.active = True

    # ------------------------------------------------------------------ scheduling
    def activate(self, active: bool) -> None:
        """Start or stop acting; on start, every TrainingJob in the cache gets a pass."""
        self.active = active
        self.metrics.leader.set(1 if active else 0)
        if active:
            for namespace, name in self.cache.trainingjob_keys():
                self.trigger(namespace, name)

    def trigger(self, namespace: str, name: str, *, urgent: bool = False) -> None:
        """Reconcile soon; passes for one TrainingJob never overlap, and bursts of Job events
        coalesce. `urgent` (a change to the TrainingJob itself, such as an approval: a person
        waits) skips the pause that lets a burst finish."""
        if not self.active:
            return
        key = (namespace, name)
        if key in self._running:
            self._dirty.add(key)
            if urgent:
                self._urgent.add(key)
            return
        self._running[key] = asyncio.get_running_loop().create_task(self._loop(key))

    async def _loop(self, key: tuple[str, str]) -> None:
        try:
            while self.active:
                self._dirty.discard(key)
                await self.reconcile_safely(*key)
                if key not in self._dirty:
                    break
                if key in self._urgent:
                    self._urgent.discard(key)
                    continue
                # More happened meanwhile (a Job's events come in bursts): let the burst
                # finish, so one pass sees it all instead of one pass per event.
                await asyncio.sleep(self.settle_seconds)
        finally:
            self._running.pop(key, None)
            self._urgent.discard(key)

    async def idle(self) -> None:
        while self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)

    async def reconcile_safely(self, namespace: str, name: str) -> None:
        started = time.perf_counter()
        self.metrics.reconciles.inc()
        try:
            await self.reconcile(namespace, name)
        except ApiError as exc:  # e.g. listing Jobs: shown on the TrainingJob; next pass retries
            self.metrics.reconcile_errors.labels(type(exc).__name__).inc()
            log.warning("reconcile of %s/%s: API error %s", namespace, name, exc)
            body = self.cache.trainingjob(namespace, name)
            if body is not None:
                await self.warn(body, "ApiError", f"reconcile: {exc}"[:600])
        except Exception as exc:  # counted and logged; the next pass retries
            self.metrics.reconcile_errors.labels(type(exc).__name__).inc()
            log.exception("reconcile of %s/%s failed: %s", namespace, name, exc)
        finally:
            self.metrics.reconcile_duration.observe(time.perf_counter() - started)

    # ------------------------------------------------------------------ one pass
    async def reconcile(self, namespace: str, name: str) -> None:
        body = self.cache.trainingjob(namespace, name)
        if body is None:  # not seen by a watch yet (or no cache): ask
            try:
                body = await self.api.request(
                    "GET", KubeApi.path(GROUP_VERSION, namespace, PLURAL, name)
                )
            except ApiError as exc:
                if exc.status == 404:
                    self._specs.pop((namespace, name), None)
                    self.metrics.forget(namespace, name)
                    self.limiter.forget(namespace, name)
                    self.pending.forget((namespace, name))
                    return
                raise
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            return
        status: dict[str, Any] = body.get("status") or {}
        now = self.clock()
        if status.get("phase") in TERMINAL:
            # Finished runs stay as they ended; to run again, create a new TrainingJob.
            self._record(namespace, name, body, status, now)
            return

        try:
            spec, given = self._validated(body)
        except ValidationError as exc:
            await self._fail_invalid(body, format_validation_error(exc, "spec"))
            return
        spec = self.defaults.apply(await self._effective_spec(body, spec, given, status))

        if not status.get("specFingerprint"):
            # First pass: refuse what cannot work in this cluster before any pod starts.
            refused = admission.refusal(name, spec)
            if refused is None:
                refused = await self._start(body, spec)
            if refused is not None:
                await self._fail_invalid(body, refused)
                return

        selector = f"{children.LABEL_TJ}={name}"
        if self.watched:
            jobs_list = self.cache.jobs(namespace, name)
        else:
            jobs_list = await self.api.list("batch/v1", namespace, "jobs", selector)
        jobs = {j["metadata"]["name"]: j for j in jobs_list}
        memory = recall(status)
        # Pods are read only for what only they tell: a result not harvested yet, or why a
        # step failed.
        pods: list[dict[str, Any]] = []
        key = (namespace, name)
        unready = any(pending.may_be_pending(j, now) for j in jobs_list)
        look = unready and self.pending.due(key, now)
        wanted = sorted(j["metadata"]["name"] for j in jobs_list if needs_pods(memory, j))
        if look:  # every pod: which of them wait for the scheduler
            pods = await self.api.list("v1", namespace, "pods", selector)
            stuck = pending.unschedulable(jobs, pods)
            self.pending.found(key, now, stuck)
        else:
            if wanted:  # only the finished Jobs' pods: decoding all of them was most of our CPU
                pods = await self.api.list(
                    "v1", namespace, "pods", f"{selector},job-name in ({','.join(wanted)})"
                )
            stuck = self.pending.last(key, jobs) if unready else []

        new_results = harvest(memory, jobs_list, pods)
        annotations = meta.get("annotations") or {}
        observation = observe(memory, jobs, pods, _names(name), annotations, spec.max_retries)
        decision = pending.apply(
            decide(spec, observation), stuck, spec.pending_timeout_seconds, now
        )
        for attempts in failing.new_failed_attempts(
            jobs, pods, memory.carried, memory.reported, spec.max_retries
        ):
            await self.warn(body, "StepFailed", attempts.message())

        approval = self._approval(status, decision, annotations, spec, now)
        for action in decision.actions:
            try:
                await self._act(action, body, spec, jobs, approval, memory)
            except ApiError as exc:
                problem = failing.describe_api_error(failing.doing(name, action), exc)
                log.warning("%s/%s: %s", namespace, name, problem)
                await self.warn(body, "ApiError", problem)
                decision = failing.after_api_error(decision, problem, exc)
                if decision.phase == "Failed":  # stop what still runs; best effort
                    with contextlib.suppress(ApiError):
                        await self._act(StopRunning(), body, spec, jobs, approval, memory)
                break

        new_status = self._status(body, spec, given, status, memory, decision, observation,
                                  jobs, approval, now)  # fmt: skip
        waiting_condition = pending.condition(stuck, status.get("conditions"), now_iso(now))
        if waiting_condition is not None:
            new_status["conditions"].append(waiting_condition)
        for pod in pending.newly_stuck(stuck, status.get("conditions")):
            await self.warn(body, "Unschedulable", pod.message())
        await self._publish(body, status, new_status, new_results, jobs, now)
        self._record(namespace, name, body, new_status, now, spec)

    # ------------------------------------------------------------------ pieces
    def _validated(self, body: Mapping[str, Any]) -> tuple[TrainingJobSpec, str]:
        """The TrainingJob's spec and its fingerprint, validated once per generation (the API
        server bumps it on every spec change), not on every pass. The uid tells a TrainingJob
        deleted and created again under the same name, whose generation starts over."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        version = (meta.get("uid"), meta.get("generation"))
        known = self._specs.get(key)
        if known is not None and None not in version and known[0] == version:
            return known[1], known[2]
        spec = TrainingJobSpec.model_validate(body.get("spec") or {})
        self._specs[key] = (version, spec, spec_fingerprint(spec))
        return spec, self._specs[key][2]

    async def _effective_spec(
        self, body: dict[str, Any], spec: TrainingJobSpec, given: str, status: Mapping[str, Any]
    ) -> TrainingJobSpec:
        """The spec the run started with, steered by the fields that may change mid-run."""
        started = status.get("specFingerprint")
        if not started or started == given:
            return spec
        meta = body["metadata"]
        generation = meta.get("generation")
        if status.get("refusedGeneration") != generation:
            await self.event(body, "Warning", "SpecChangeRefused",
                             "the spec changed after the run started; the run keeps the spec it "
                             "started with (suspend, parallelism, approval, resources, image and "
                             "queueName may change)")  # fmt: skip
        cm = await self.api.request(
            "GET",
            KubeApi.path("v1", meta["namespace"], "configmaps",
                         children.spec_configmap_name(meta["name"])),
        )  # fmt: skip
        import yaml

        frozen = TrainingJobSpec.model_validate(
            yaml.safe_load(cm["data"][children.MANIFEST_KEY])["spec"]
        )
        return frozen.model_copy(update={f: getattr(spec, f) for f in STEERING})

    async def _start(self, body: dict[str, Any], spec: TrainingJobSpec) -> str | None:
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

    async def _fail_invalid(self, body: dict[str, Any], message: str) -> None:
        status = body.get("status") or {}
        if status.get("phase") == "Failed" and status.get("message") == message:
            return
        meta = body["metadata"]
        now = now_iso(self.clock())
        failed = {"type": "Failed", "status": "True", "reason": "InvalidSpec",
                  "message": message, "lastTransitionTime": now}  # fmt: skip
        await self.api.patch_status(
            GROUP_VERSION, meta["namespace"], PLURAL, meta["name"],
            {"phase": "Failed", "message": message, "conditions": [failed], "finishedAt": now,
             "observedGeneration": meta.get("generation")},
        )  # fmt: skip
        await self.event(body, "Warning", "InvalidSpec", message)

    def _approval(
        self,
        status: Mapping[str, Any],
        decision: Decision,
        annotations: Mapping[str, str],
        spec: TrainingJobSpec,
        now: float,
    ) -> dict[str, Any] | None:
        """Who decided the gate and when: recorded once, when the decision is first applied."""
        recorded = status.get("approval")
        if recorded and recorded.get("decision") in ("approved", "rejected"):
            return dict(recorded)
        verdict = decision.gate
        if verdict is None or verdict.decision == "waiting":
            return None
        if verdict.by != "annotation":
            via: approvals.Via = "policy-auto" if verdict.by == "policy:auto" else "gates"
            return approvals.record(verdict.decision, "gates", via, now_iso(now), verdict.gate)
        # Where the chart's admission policy is on, the API server checked that this names the
        # user who set the annotation.
        who = annotations.get(APPROVED_BY_ANNOTATION) or approvals.UNKNOWN
        reason = (
            annotations.get(REJECTION_REASON_ANNOTATION) if verdict.decision == "rejected" else None
        )
        return approvals.record(verdict.decision, who, "annotation", now_iso(now), verdict.gate,
                               reason)  # fmt: skip

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

    async def _act(
        self,
        action: Any,
        body: dict[str, Any],
        spec: TrainingJobSpec,
        jobs: Mapping[str, Mapping[str, Any]],
        approval: Mapping[str, Any] | None,
        memory: Memory,
    ) -> None:
        meta = body["metadata"]
        name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
        if isinstance(action, StopRunning):
            for job_name, job in jobs.items():
                if not job_finished(job):
                    await self._delete_job(namespace, name, job_name)
            return
        owner = children.Owner(
            name, namespace, uid, spec, self.trainer_command, self.defaults.service_account
        )
        if isinstance(action, Prepare):
            job = children.prepare_job(owner)
        elif isinstance(action, StartFold):
            job = children.fold_job(owner, action.stage, action.fold)
        elif isinstance(action, Summarise):
            job = children.summary_job(owner, action.stage)
        elif isinstance(action, StartFinal):
            job = children.final_job(
                owner, approval or approvals.record("approved", "gates", "gates", "", "final")
            )
        else:  # pragma: no cover - the machine has no other actions
            raise TypeError(action)
        job_name = job["metadata"]["name"]
        existing = jobs.get(job_name)
        if existing is not None and job_finished(existing):
            # A finished Job the machine wants again (a retry, or a result that was lost):
            # remove it; the next pass creates it afresh under the same name. Its attempts
            # stay counted (in the status), so the step's retries stay bounded.
            spent = spent_attempts(existing)
            await self._delete_job(namespace, name, job_name)
            memory.carried[job_name] = memory.carried.get(job_name, 0) + spent
            return
        if existing is None:
            created = await self._ensure("batch/v1", namespace, "jobs", job)
            if created is not None:
                self.cache.put_job(created)

    def _status(
        self,
        body: dict[str, Any],
        spec: TrainingJobSpec,
        given: str,
        old: Mapping[str, Any],
        memory: Memory,
        decision: Decision,
        observation: Any,
        jobs: Mapping[str, Mapping[str, Any]],
        approval: Mapping[str, Any] | None,
        now: float,
    ) -> dict[str, Any]:
        meta = body["metadata"]
        started = old.get("startedAt") or now_iso(now)
        finished = old.get("finishedAt")
        if decision.phase in TERMINAL and not finished:
            finished = now_iso(now)
        end = parse_iso(finished) or now
        plans: dict[str, Any] = {}
        for run_stage in spec.stages_to_run():
            stage = str(run_stage)
            entry = ((memory.prepared or {}).get("stages") or {}).get(stage)
            if entry and "error" not in entry:
                plans[stage] = entry
        old_stages = old.get("stages") or {}
        stage_started = {s: v["startedAt"] for s, v in old_stages.items() if v.get("startedAt")}
        stage_finished = {s: v["finishedAt"] for s, v in old_stages.items() if v.get("finishedAt")}
        for stage in list(plans):
            if stage not in stage_started and (
                memory.folds.get(stage)
                or any(
                    j["metadata"]["labels"].get(children.LABEL_STAGE) == stage
                    and j["metadata"]["labels"].get(children.LABEL_STEP) == "fold"
                    for j in jobs.values()
                )
            ):
                stage_started[stage] = now_iso(now)
            if stage in memory.summaries and stage not in stage_finished:
                stage_finished[stage] = now_iso(now)
        status = build_status(
            decision=decision,
            observation=observation,
            plans=plans,
            fold_metrics=memory.folds,
            summaries=memory.summaries,
            clock=Clock(
                now=now_iso(now),
                started=started,
                elapsed_seconds=end - (parse_iso(started) or now),
                stage_started=stage_started,
                stage_finished=stage_finished,
                fold_seconds=_fold_seconds(jobs),
            ),
            parallelism=spec.parallelism,
            artifacts=self._artifacts(spec, meta, memory),
            approval=approval,
            previous_conditions=old.get("conditions"),
            warnings=spec.leaky_purge_warnings(),
        ).to_dict()
        status["observedGeneration"] = meta.get("generation")
        status["specFingerprint"] = old.get("specFingerprint") or spec_fingerprint(spec)
        # The spec this run executes, as it was when it started (later edits are refused).
        status["runSpec"] = old.get("runSpec") or spec.model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
        if old.get("specFingerprint") and old["specFingerprint"] != given:
            status["refusedGeneration"] = meta.get("generation")
        if memory.prepared is not None:
            status["prepared"] = memory.prepared
            status["data"] = {
                "summary": memory.prepared.get("dataSummary"),
                "hash": memory.prepared.get("dataHash"),
                "labelledRows": memory.prepared.get("labelledRows"),
            }
        if finished:
            status["finishedAt"] = finished
        if memory.carried:
            status["carriedFailures"] = dict(memory.carried)
        if memory.reported:
            status["reportedFailures"] = dict(memory.reported)
        phase_since = old.get("phaseSince") if old.get("phase") == decision.phase else None
        status["phaseSince"] = phase_since or now_iso(now)
        return status

    @staticmethod
    def _artifacts(
        spec: TrainingJobSpec, meta: Mapping[str, Any], memory: Memory
    ) -> dict[str, str]:
        from stagegate_core import layout

        root = spec.artifacts.uri.rstrip("/")
        run = f"{root}/{layout.run_prefix(meta['namespace'], meta['name'], meta['uid'])}"
        artifacts = {"run": run}
        if memory.final:
            artifacts["model"] = memory.final["model"]
            if memory.final.get("modelCard"):
                artifacts["modelCard"] = memory.final["modelCard"]
        return artifacts

    async def _publish(
        self,
        body: dict[str, Any],
        old: Mapping[str, Any],
        new: dict[str, Any],
        results: list[tuple[str, dict[str, Any]]],
        jobs: Mapping[str, Mapping[str, Any]],
        now: float,
    ) -> None:
        meta = body["metadata"]
        new = pruned(new)
        elapsed_stale = abs(new.get("elapsedSeconds", 0) - old.get("elapsedSeconds", 0)) >= (
            ELAPSED_REFRESH_SECONDS
        )
        if _stable(new) == _stable(old) and not elapsed_stale:
            return
        # Only what changed goes over the wire; a patch with nothing stable in it (but the
        # elapsed time) is sent at most every ELAPSED_REFRESH_SECONDS.
        written = await self.api.patch_status(
            GROUP_VERSION, meta["namespace"], PLURAL, meta["name"], merge_diff(old, new)
        )
        self._remember_written(body, written, new)
        for stage, failures in _new_failures(old, new).items():
            self.metrics.folds.labels(stage, "failed").inc(failures)
        for step, result in results:
            if step == "fold":
                self.metrics.folds.labels(result["stage"], "succeeded").inc()
                job = jobs.get(
                    children.fold_job_name(meta["name"], result["stage"], int(result["fold"]))
                )
                seconds = _duration(job) if job else None
                if seconds is not None:
                    self.metrics.fold_duration.labels(result["stage"]).observe(seconds)

            elif step == "summary":
                # One Event per stage, not per fold: at a hundred TrainingJobs of 45 folds,
                # per-fold Events were a quarter of the operator's API requests.
                m = result["model"]
                verdict = "passed" if result["passed"] else "failed"
                await self.event(
                    body, "Normal", "StageSummarised",
                    f"{result['stage']} stage, {result['folds']} folds: "
                    f"accuracy={percent(m['accuracy']['mean'])} "
                    f"recall={percent(m['recall']['mean'])} "
                    f"roc_auc={percent(m['rocAuc']['mean'])} f1={_two(m['f1']['mean'])}; "
                    f"gates {verdict}",
                )  # fmt: skip
        if new.get("phase") != old.get("phase"):
            kind = "Warning" if new["phase"] in ("Failed", "Rejected") else "Normal"
            await self.event(body, kind, new["phase"], new.get("message") or new["phase"])
            if old.get("phase") == "AwaitingApproval":
                since = parse_iso(old.get("phaseSince"))
                if since is not None:
                    self.metrics.awaiting_approval.observe(max(0.0, now - since))
        approval = new.get("approval")
        if approval and approval != old.get("approval"):
            await self.event(
                body,
                "Normal",
                "Approval",
                approvals.describe(approval),
            )

    def _record(
        self, namespace: str, name: str, body: Mapping[str, Any], status: Mapping[str, Any],
        now: float, spec: TrainingJobSpec | None = None,
    ) -> None:  # fmt: skip
        if spec is None:
            try:
                spec = TrainingJobSpec.model_validate(body.get("spec") or {})
            except ValidationError:
                return
        since = parse_iso(status.get("phaseSince")) or now
        self.metrics.record(namespace, name, spec, status, max(0.0, now - since))

    def _remember_written(
        self, body: Mapping[str, Any], written: Mapping[str, Any], status: dict[str, Any]
    ) -> None:
        """Cache the object as the status write left it, so the next pass sees its own write.

        A status write changes the status and the metadata only, and only this operator writes
        the status (the chart grants it to no one else). The spec is another matter: one
        changed while this pass ran (a new generation) is not in `body`, and caching `body`'s
        spec under the newer resourceVersion would make the cache drop the watch event that
        brings it. Then the cache is left for that event to update.
        """
        meta = body["metadata"]
        current = self.cache.trainingjob(meta["namespace"], meta["name"]) or body
        if current["metadata"].get("generation") == written.get("generation"):
            self.cache.put_trainingjob({**current, "metadata": dict(written), "status": status})

    async def warn(self, body: Mapping[str, Any], reason: str, message: str) -> None:
        """A Warning Event, rate-limited per TrainingJob and reason (see failing.EventLimiter)."""
        meta = body["metadata"]
        post, held = self.limiter.allow((meta["namespace"], meta["name"], reason))
        if post:
            more = f" ({held} similar Events held back by the rate limit)" if held else ""
            await self.event(body, "Warning", reason, message + more)

    async def event(self, body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        meta = body["metadata"]
        stamp = now_iso(self.clock())
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": GROUP_VERSION,
                "kind": "TrainingJob",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "stagegate-operator"},
            "reportingComponent": "stagegate-operator",
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self.api.create("v1", meta["namespace"], "events", event)
        except ApiError as exc:  # an event lost is not worth failing the reconcile
            log.warning("event %s for %s not posted: %s", reason, meta["name"], exc)


def _duration(job: Mapping[str, Any]) -> float | None:
    status = job.get("status") or {}
    start, end = parse_iso(status.get("startTime")), parse_iso(status.get("completionTime"))
    return end - start if start is not None and end is not None else None


def _fold_seconds(jobs: Mapping[str, Mapping[str, Any]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for job in jobs.values():
        labels = job["metadata"].get("labels", {})
        seconds = _duration(job)
        if labels.get(children.LABEL_STEP) == "fold" and seconds is not None:
            out.setdefault(labels[children.LABEL_STAGE], []).append(seconds)
    return out


def _failures(status: Mapping[str, Any]) -> dict[tuple[str, int], int]:
    out = {}
    for stage, entry in (status.get("stages") or {}).items():
        for fold in entry.get("folds", []):
            done = 1 if fold.get("state") == "Succeeded" else 0
            out[(stage, fold["fold"])] = fold.get("attempts", 0) - done
    return out


def _new_failures(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, int]:
    before = _failures(old)
    counts: dict[str, int] = {}
    for (stage, fold), failures in _failures(new).items():
        extra = failures - before.get((stage, fold), 0)
        if extra > 0:
            counts[stage] = counts.get(stage, 0) + extra
    return counts


def _two(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
