"""kopf handlers: thin. They only notice that something happened and ask for a reconcile.

Every event on a TrainingJob triggers a reconcile of it, as does every change to a Job it owns
(the operator's own watch, jobwatch.py); a resync loop reconciles every TrainingJob
periodically as well, so nothing depends on seeing one particular event (level-based).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from stagegate_core.spec import API_GROUP, API_VERSION, PLURAL

from .cache import ObjectCache
from .config import OperatorConfig
from .jobwatch import WatchedJobs
from .kubeapi import KubeApi, load_connection
from .leader import LeaderElector
from .metrics import OperatorMetrics
from .podwatch import EndedPods
from .reconcile import Reconciler
from .scheduler import Scheduler, resync


class NoEssence(kopf.AnnotationsDiffBaseStorage):
    """kopf deep-copies every object of every event into an "essence" to diff it with the last
    handled one; only change handlers use that diff, and there are none here (12 % of the
    operator's CPU at 20 TrainingJobs x 45 folds went to those copies)."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()


@dataclass(frozen=True)
class Running:
    """The operator's parts, kept in kopf's memo by the startup handler."""

    api: KubeApi
    cache: ObjectCache
    scheduler: Scheduler


def _running(memo: kopf.Memo) -> Running | None:
    found = memo.get("running")
    return found if isinstance(found, Running) else None


def register(registry: kopf.OperatorRegistry, config: OperatorConfig,
             metrics: OperatorMetrics) -> None:  # fmt: skip
    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        # One source of credentials for kopf's watches and for our own API calls.
        c = load_connection(config.kubeconfig)
        return kopf.ConnectionInfo(
            server=c.server,
            token=c.token,
            ca_path=c.ca_file,
            certificate_path=c.cert_file,
            private_key_path=c.key_file,
            insecure=c.insecure,
            default_namespace=config.namespaces[0] if config.namespaces else None,
        )

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        # No kopf handler has a progress to store or a delete step to block: no finalizers.
        settings.persistence.finalizer = "stagegate.io/unused-finalizer"
        settings.persistence.diffbase_storage = NoEssence(prefix="stagegate.io")
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix="stagegate.io"
        )
        settings.posting.enabled = False
        settings.watching.server_timeout = config.watch_timeout
        settings.watching.client_timeout = config.watch_timeout + 10
        api = KubeApi(load_connection(config.kubeconfig))
        cache = ObjectCache()
        ended = EndedPods(api, config.namespaces)
        jobs = WatchedJobs(api, config.namespaces, cache)
        reconciler = Reconciler(
            api,
            metrics,
            cache=cache,
            ended_pods=ended,
            watched_jobs=jobs,
            trainer_command=config.trainer_command,
            defaults=config.defaults,
        )
        scheduler = Scheduler(reconciler.reconcile_safely, cache.trainingjob_keys)
        jobs.on_change = scheduler.trigger
        memo["running"] = Running(api, cache, scheduler)
        loop = asyncio.get_running_loop()
        memo["tasks"] = [
            loop.create_task(resync(scheduler, api, config.namespaces, config.resync_seconds)),
            loop.create_task(ended.run()),
            loop.create_task(jobs.run()),
        ]

        def lead(active: bool) -> None:
            metrics.leader.set(1 if active else 0)
            scheduler.activate(active)

        if config.lease is not None:
            lead(False)  # stand by until the Lease is ours
            namespace, lease = config.lease
            elector = LeaderElector(
                api, namespace, lease, config.identity,
                on_start=lambda: lead(True), on_stop=lambda: lead(False),
            )  # fmt: skip
            memo["elector"] = elector
            memo["tasks"].append(loop.create_task(elector.run()))

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        for task in memo.get("tasks") or []:
            task.cancel()
        running = _running(memo)
        if running is not None:
            await running.scheduler.idle()
            elector = memo.get("elector")
            if isinstance(elector, LeaderElector):
                # After the last pass: hand the Lease over only when nothing of ours still acts.
                await elector.release()
            await running.api.close()

    @kopf.on.event(API_GROUP, API_VERSION, PLURAL, registry=registry)
    async def trainingjob_event(
        event: Mapping[str, Any], name: str, namespace: str | None, memo: kopf.Memo, **_: Any
    ) -> None:
        running = _running(memo)
        if running is None or not namespace:
            return
        if event.get("type") == "DELETED":
            running.cache.drop_trainingjob(namespace, name)
        elif not running.cache.put_trainingjob(dict(event["object"])):
            return  # the echo of our own status patch: nothing new to act on
        running.scheduler.trigger(namespace, name, urgent=True)
