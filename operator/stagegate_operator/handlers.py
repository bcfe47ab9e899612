"""kopf's part: logging in, starting the operator's parts and stopping them (and, in main.py,
the liveness endpoint). kopf watches nothing here.

The operator's own watches ask for the reconciles: every change to a TrainingJob
(trainingjobwatch.py) and every change to a Job it owns (jobwatch.py); a resync loop reconciles
every TrainingJob periodically as well, so nothing depends on seeing one particular event
(level-based).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import kopf

from . import gcpolicy
from .cache import ObjectCache
from .config import OperatorConfig
from .jobwatch import WatchedJobs
from .kubeapi import KubeApi, load_connection
from .leader import LeaderElector
from .metrics import OperatorMetrics
from .podwatch import EndedPods
from .reconcile import Reconciler
from .scheduler import Scheduler, resync
from .trainingjobwatch import WatchedTrainingJobs


@dataclass(frozen=True)
class Running:
    """The operator's parts, kept in kopf's memo by the startup handler."""

    api: KubeApi
    scheduler: Scheduler


def _running(memo: kopf.Memo) -> Running | None:
    found = memo.get("running")
    return found if isinstance(found, Running) else None


def register(registry: kopf.OperatorRegistry, config: OperatorConfig,
             metrics: OperatorMetrics) -> None:  # fmt: skip
    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        # One source of credentials for kopf's start-up discovery and for our own API calls.
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
        settings.posting.enabled = False
        # kopf serves no resource here: its watches of CRDs and namespaces would cost requests
        # and a cluster-wide RBAC grant for nothing.
        settings.scanning.disabled = True
        api = KubeApi(load_connection(config.kubeconfig))
        cache = ObjectCache()
        ended = EndedPods(api, config.namespaces)
        jobs = WatchedJobs(api, config.namespaces, cache)
        trainingjobs = WatchedTrainingJobs(api, config.namespaces, cache)
        reconciler = Reconciler(
            api,
            metrics,
            cache=cache,
            ended_pods=ended,
            watched_jobs=jobs,
            watched_trainingjobs=trainingjobs,
            trainer_command=config.trainer_command,
            defaults=config.defaults,
        )
        scheduler = Scheduler(reconciler.reconcile_safely, cache.trainingjob_keys)
        jobs.on_change = scheduler.trigger
        trainingjobs.on_change = lambda namespace, name: scheduler.trigger(
            namespace, name, urgent=True
        )
        memo["running"] = Running(api, scheduler)
        loop = asyncio.get_running_loop()
        memo["tasks"] = [
            loop.create_task(resync(scheduler, api, config.namespaces, config.resync_seconds)),
            loop.create_task(ended.run()),
            loop.create_task(jobs.run()),
            loop.create_task(trainingjobs.run()),
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
        gcpolicy.settle()

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
