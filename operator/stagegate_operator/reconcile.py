"""One reconcile pass for one TrainingJob: observe, decide (the shared stage machine), act.

Level-based: everything is recomputed from the TrainingJob, its status (the operator's memory)
and the child Jobs and Pods that exist now, so an approval, a Job completion or a deletion that
happened while the operator was down is acted upon after it restarts.

This module only orchestrates a pass. When passes run is scheduler.py's business; the spec is
validated in specs.py, the cluster read into the machine's terms in observe.py, actions carried
out by act.py, the status built by statusbuild.py and written as a merge patch (mergepatch.py),
Events posted by events.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from stagegate_core.formatting import now_iso, parse_iso
from stagegate_core.spec import PLURAL, TrainingJobSpec, format_validation_error
from stagegate_core.stagemachine import TERMINAL, Action, Decision, StopRunning, decide
from stagegate_core.statusmodel import Condition, TrainingJobStatus

from . import admission, children, pending, specs, statusbuild
from . import failures as failing
from .act import Actor
from .cache import ObjectCache
from .defaults import TrainerDefaults
from .events import Events
from .jobwatch import WatchedJobs
from .kubeapi import ApiError, KubeApi
from .mergepatch import pruned, status_patch
from .metrics import OperatorMetrics
from .observe import Memory, harvest, needs_pods, observe, recall, recorded
from .podwatch import EndedPods
from .trainingjobwatch import WatchedTrainingJobs

log = logging.getLogger("stagegate.operator")
Jobs = dict[str, dict[str, Any]]  # a TrainingJob's Jobs by name


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
        ended_pods: EndedPods | None = None,
        watched_jobs: WatchedJobs | None = None,
        watched_trainingjobs: WatchedTrainingJobs | None = None,
    ) -> None:
        self.api = api
        self.metrics = metrics
        self.clock = clock
        self.defaults = defaults or TrainerDefaults()
        # Kept current by the watches, `watched_trainingjobs` and `watched_jobs` (without them,
        # whoever made the cache fills it). While a watch is down, passes ask the server.
        self.cache = cache or ObjectCache()
        self.watched_jobs = watched_jobs
        self.watched_trainingjobs = watched_trainingjobs
        # Kept by the operator's own watch of ended pods; without it, pods are listed.
        self.ended_pods = ended_pods
        self.specs = specs.Specs(api)
        self.pending = pending.Checks()
        self.events = Events(api, clock)
        self.actor = Actor(api, self.cache, trainer_command, self.defaults.service_account)

    async def reconcile_safely(self, namespace: str, name: str) -> None:
        """One pass; what goes wrong is counted and logged, and the next pass retries."""
        started = time.perf_counter()
        self.metrics.reconciles.inc()
        try:
            await self.reconcile(namespace, name)
        except ApiError as exc:  # e.g. reading the spec's ConfigMap: shown on the TrainingJob
            self.metrics.reconcile_errors.labels(type(exc).__name__).inc()
            log.warning("reconcile of %s/%s: API error %s", namespace, name, exc)
            body = self.cache.trainingjob(namespace, name)
            if body is not None:
                await self.events.warn(body, "ApiError", f"reconcile: {exc}"[:600])
        except Exception as exc:
            self.metrics.reconcile_errors.labels(type(exc).__name__).inc()
            log.exception("reconcile of %s/%s failed: %s", namespace, name, exc)
        finally:
            self.metrics.reconcile_duration.observe(time.perf_counter() - started)

    async def reconcile(self, namespace: str, name: str) -> None:
        body = await self._trainingjob(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        raw: dict[str, Any] = body.get("status") or {}  # what a write is diffed against
        status = TrainingJobStatus.parse(raw)
        now = self.clock()
        if status.phase in TERMINAL:
            # Finished runs stay as they ended; to run again, create a new TrainingJob.
            self._record(body, status, now)
            return
        try:
            given = self.specs.validated(body)
        except ValidationError as exc:
            await self._fail_invalid(body, format_validation_error(exc, "spec"))
            return
        effective, departed = await self._effective_spec(body, given, status)
        spec = self.defaults.apply(effective)
        if not status.specFingerprint:
            # First pass: refuse what cannot work in this cluster before any pod starts.
            refused = admission.refusal(name, spec)
            if refused is None:
                refused = await self.actor.freeze_spec(body, spec)
            if refused is not None:
                await self._fail_invalid(body, refused)
                return

        # Observe.
        memory = recall(status)
        jobs, pods, stuck = await self._look(namespace, name, memory, now)
        new_results = harvest(memory, jobs.values(), pods)
        annotations = body["metadata"].get("annotations") or {}
        observation = observe(
            memory, jobs, pods, children.step_names(name), annotations, spec.max_retries
        )
        for attempts in failing.new_failed_attempts(
            jobs, pods, memory.carried, memory.reported, spec.max_retries
        ):
            await self.events.warn(body, "StepFailed", attempts.message())
        # Decide.
        decision = pending.apply(
            decide(spec, observation), stuck, spec.pending_timeout_seconds, now
        )
        approval = statusbuild.approval_record(status, decision, annotations, now)
        # Act: the Jobs first, then the status (which says how acting went) and its Events.
        cached = {j["metadata"]["name"] for j in self.cache.jobs(namespace, name)}
        decision = await self._act(body, spec, decision, jobs, approval, memory)
        started = {
            j["metadata"]["name"]: j
            for j in self.cache.jobs(namespace, name)
            if j["metadata"]["name"] not in cached and j["metadata"]["name"] not in jobs
        }
        if started:
            # The status shows the Jobs started just now as running; else the next pass (on
            # their first pod's event) would write that, a status write per Job more.
            jobs = {**jobs, **started}
            observation = observe(
                memory, jobs, pods, children.step_names(name), annotations, spec.max_retries
            )
        new_status = statusbuild.operator_status(
            meta=body["metadata"], spec=spec, fingerprint=given.fingerprint, refused=departed,
            old=status,
            memory=memory, decision=decision, observation=observation, jobs=jobs,
            approval=approval, now=now,
        )  # fmt: skip
        old_conditions = [c.to_dict() for c in status.conditions or []]
        waiting_condition = pending.condition(stuck, old_conditions, now_iso(now))
        if waiting_condition is not None:
            new_status.conditions = [
                *(new_status.conditions or []),
                Condition.model_validate(waiting_condition),
            ]
        for pod in pending.newly_stuck(stuck, old_conditions):
            await self.events.warn(body, "Unschedulable", pod.message())
        await self._publish(body, raw, status, new_status, new_results, jobs, now)
        self._record(body, new_status, now, spec)

    async def _trainingjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The TrainingJob, from the cache or else asked for; None (and forgotten) once gone."""
        watch = self.watched_trainingjobs
        body = self.cache.trainingjob(namespace, name)
        if body is not None and (watch is None or watch.watching(namespace)):
            return body
        try:  # not seen by the watch yet, deleted (the watch dropped it), or the watch is down
            found: dict[str, Any] = await self.api.request(
                "GET", KubeApi.path(children.GROUP_VERSION, namespace, PLURAL, name)
            )
            self.cache.put_trainingjob(found)
            return self.cache.trainingjob(namespace, name) or found
        except ApiError as exc:
            if exc.status != 404:
                raise
        self.cache.drop_trainingjob(namespace, name)
        self.specs.forget(namespace, name)
        self.metrics.forget(namespace, name)
        self.events.forget(namespace, name)
        self.pending.forget((namespace, name))
        if self.ended_pods is not None:
            self.ended_pods.forget(namespace, name)
        return None

    async def _effective_spec(
        self, body: Mapping[str, Any], given: specs.Validated, status: TrainingJobStatus
    ) -> tuple[TrainingJobSpec, bool]:
        """The spec the run started with, steered by the fields that may change mid-run; and
        whether the spec as given now departs from it elsewhere (a change refused)."""
        started = status.specFingerprint
        if not started:
            return given.spec, False

        def effective() -> TrainingJobSpec:
            return self.defaults.apply(given.spec)

        if status.runSpec is not None:
            changed = self.specs.departures(body, status.runSpec, effective)
        else:  # a status written before runSpec was recorded
            changed = () if started == given.fingerprint else ("spec",)
        if not changed:
            return given.spec, False
        started_with = await self.specs.started(body)
        # runSpec has no nulls (a merge patch cannot write one) and lacks the fields an older
        # operator did not know: the ConfigMap read with this operator's model says for sure.
        changed = self.specs.confirmed(body, started_with, effective)
        if not changed:
            return given.spec, False
        meta = body["metadata"]
        if status.refusedGeneration != meta.get("generation"):
            steering = ", ".join(sorted(specs.STEERING_KEYS))
            await self.events.post(body, "Warning", "SpecChangeRefused",
                                   f"{', '.join(f'spec.{f}' for f in changed)} changed after the "
                                   f"run started; the run keeps the spec it started with (only "
                                   f"{steering} may change)")  # fmt: skip
        return specs.steered(started_with, given.spec), True

    async def _look(
        self, namespace: str, name: str, memory: Memory, now: float
    ) -> tuple[Jobs, list[dict[str, Any]], list[pending.Unschedulable]]:
        """The TrainingJob's Jobs, the pods worth reading, and the pods that wait for a node.

        Pods are read only for what only they tell: a result not harvested yet, why a step
        failed, or (at most every pending.CHECK_INTERVAL_SECONDS) which of them wait for the
        scheduler.
        """
        selector = f"{children.LABEL_TJ}={name}"
        if self.watched_jobs is None or self.watched_jobs.watching(namespace):
            found = self.cache.jobs(namespace, name)
        else:
            found = await self.api.list("batch/v1", namespace, "jobs", selector)
        jobs = {j["metadata"]["name"]: j for j in found}
        key = (namespace, name)
        unready = any(pending.may_be_pending(j, now) for j in jobs.values())
        if unready and self.pending.due(key, now):  # every pod: which wait for the scheduler
            pods = await self.api.list("v1", namespace, "pods", selector)
            stuck = pending.unschedulable(jobs, pods)
            self.pending.found(key, now, stuck)
            return jobs, pods, stuck
        wanted = {n: j for n, j in jobs.items() if needs_pods(memory, j)}
        if self.ended_pods is not None:
            self.ended_pods.release(
                namespace, name, {n for n, j in jobs.items() if recorded(memory, j)}
            )
        pods, missing = self._ended(namespace, name, wanted)
        if missing:  # the watch is behind or down: only those Jobs' pods, never all of them
            pods += await self.api.list(
                "v1", namespace, "pods", f"{selector},job-name in ({','.join(missing)})"
            )
        return jobs, pods, self.pending.last(key, jobs) if unready else []

    def _ended(
        self, namespace: str, name: str, wanted: Mapping[str, Mapping[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """The wanted Jobs' ended pods from the watch, and the Jobs it has not shown all of
        (fewer ended pods than the Job counts as succeeded or failed)."""
        if not wanted:
            return [], []
        if self.ended_pods is None or not self.ended_pods.watching(namespace):
            return [], sorted(wanted)
        pods: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        for pod in self.ended_pods.pods(namespace, name):
            job = pod["metadata"]["labels"].get("job-name")
            if job in wanted:
                pods.append(pod)
                seen[job] = seen.get(job, 0) + 1
        missing = []
        for job_name, job in wanted.items():
            counts = job.get("status") or {}
            if seen.get(job_name, 0) < int(counts.get("succeeded", 0)) + int(
                counts.get("failed", 0)
            ):
                missing.append(job_name)
        return pods, sorted(missing)

    async def _act(
        self,
        body: Mapping[str, Any],
        spec: TrainingJobSpec,
        decision: Decision,
        jobs: Jobs,
        approval: Mapping[str, Any] | None,
        memory: Memory,
    ) -> Decision:
        """Carry out the decision's actions: the first alone, then the others at once (a pass
        that starts four fold Jobs waits for two round trips, not four). The decision to
        publish comes back (an API error changes it: the failed actions wait for the next pass,
        or the run ends Failed).

        The first goes alone so that in a burst (a person approves twenty TrainingJobs) every
        one's stage starts before any one's second Job queues at the API server."""
        meta = body["metadata"]

        async def carry_out(actions: Sequence[Action]) -> list[BaseException | None]:
            return await asyncio.gather(
                *(self.actor.carry_out(action, body, spec, jobs, approval, memory.carried)
                  for action in actions),
                return_exceptions=True,
            )  # fmt: skip

        actions = decision.actions
        outcomes = await carry_out(actions[:1])
        if outcomes == [None]:
            outcomes += await carry_out(actions[1:])
        for action, outcome in zip(actions, outcomes, strict=False):
            if outcome is None:
                continue
            if not isinstance(outcome, ApiError):
                raise outcome
            problem = failing.describe_api_error(failing.doing(meta["name"], action), outcome)
            log.warning("%s/%s: %s", meta["namespace"], meta["name"], problem)
            await self.events.warn(body, "ApiError", problem)
            decision = failing.after_api_error(decision, problem, outcome)
            if decision.phase == "Failed":  # stop what still runs, started now too; best effort
                cached = self.cache.jobs(meta["namespace"], meta["name"])
                started = {j["metadata"]["name"]: j for j in cached}
                with contextlib.suppress(ApiError):
                    await self.actor.carry_out(
                        StopRunning(), body, spec, {**started, **jobs}, approval, memory.carried
                    )
            break
        return decision

    async def _publish(
        self,
        body: Mapping[str, Any],
        raw: Mapping[str, Any],
        old: TrainingJobStatus,
        status: TrainingJobStatus,
        results: Sequence[tuple[str, dict[str, Any]]],
        jobs: Jobs,
        now: float,
    ) -> None:
        """Write what changed in the status (`raw`: as stored); count and announce it once it
        is written."""
        meta = body["metadata"]
        new = pruned(status.to_dict())
        patch = status_patch(raw, new)
        if patch is None:
            return
        written = await self.api.patch_status(
            children.GROUP_VERSION, meta["namespace"], PLURAL, meta["name"], patch
        )
        self.cache.put_status_write(body, written, new)
        folds = []
        for step, result in results:
            if step == "fold":
                job_name = children.fold_job_name(
                    meta["name"], result["stage"], int(result["fold"])
                )
                job = jobs.get(job_name)
                folds.append((result["stage"], statusbuild.job_seconds(job) if job else None))
        self.metrics.count_changes(old, status, folds, now)
        await self.events.announce(body, old, status, results)

    async def _fail_invalid(self, body: Mapping[str, Any], message: str) -> None:
        meta = body["metadata"]
        failed = statusbuild.invalid_spec(message, meta.get("generation"), self.clock())
        await self.api.patch_status(
            children.GROUP_VERSION, meta["namespace"], PLURAL, meta["name"], failed.to_dict()
        )
        await self.events.post(body, "Warning", "InvalidSpec", message)

    def _record(
        self,
        body: Mapping[str, Any],
        status: TrainingJobStatus,
        now: float,
        spec: TrainingJobSpec | None = None,
    ) -> None:
        """Export the status as metrics; `spec`: the one the run executes, when known."""
        meta = body["metadata"]
        if spec is None:
            try:
                spec = self.specs.validated(body).spec
            except ValidationError:
                return
        since = parse_iso(status.phaseSince) or now
        self.metrics.record(meta["namespace"], meta["name"], spec, status, max(0.0, now - since))
