"""kopf handlers: thin. They only notice that something happened and ask for a reconcile.

Every event on a TrainingJob, and on any Job it owns, triggers a reconcile of that
TrainingJob; a resync loop reconciles every TrainingJob periodically as well, so nothing
depends on seeing one particular event (level-based, not edge-based).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import kopf
from stagegate_core.spec import API_GROUP, API_VERSION, PLURAL

from .cache import ObjectCache
from .children import LABEL_TJ
from .config import OperatorConfig
from .kubeapi import KubeApi, load_connection
from .leader import LeaderElector
from .metrics import OperatorMetrics
from .reconcile import GROUP_VERSION, Reconciler

log = logging.getLogger("stagegate.operator")


class NoEssence(kopf.AnnotationsDiffBaseStorage):
    """kopf deep-copies every object of every event into an "essence" to diff it with the last
    handled one; only change handlers use that diff, and there are none here (12 % of the
    operator's CPU at 20 TrainingJobs x 45 folds went to those copies)."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()


def _reconciler(memo: kopf.Memo) -> Reconciler | None:
    """The operator's one Reconciler, kept in kopf's memo by the startup handler."""
    found = memo.get("reconciler")
    return found if isinstance(found, Reconciler) else None


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
        reconciler = Reconciler(
            api,
            metrics,
            cache=ObjectCache(),
            trainer_command=config.trainer_command,
            defaults=config.defaults,
        )
        memo["reconciler"] = reconciler
        loop = asyncio.get_running_loop()
        memo["resync"] = loop.create_task(_resync(config, reconciler))
        if config.lease is not None:
            reconciler.activate(False)  # stand by until the Lease is ours
            namespace, lease = config.lease
            elector = LeaderElector(
                api, namespace, lease, config.identity,
                on_start=lambda: reconciler.activate(True),
                on_stop=lambda: reconciler.activate(False),
            )  # fmt: skip
            memo["elector"] = elector
            memo["election"] = loop.create_task(elector.run())

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        for task in (memo.get("resync"), memo.get("election")):
            if isinstance(task, asyncio.Task):
                task.cancel()
        reconciler = _reconciler(memo)
        if reconciler is not None:
            await reconciler.idle()
            elector = memo.get("elector")
            if isinstance(elector, LeaderElector):
                # After the last pass: hand the Lease over only when nothing of ours still acts.
                await elector.release()
            await reconciler.api.close()

    @kopf.on.event(API_GROUP, API_VERSION, PLURAL, registry=registry)
    async def trainingjob_event(
        event: Mapping[str, Any], name: str, namespace: str | None, memo: kopf.Memo, **_: Any
    ) -> None:
        reconciler = _reconciler(memo)
        if reconciler is None or not namespace:
            return
        if event.get("type") == "DELETED":
            reconciler.cache.drop_trainingjob(namespace, name)
        elif not reconciler.cache.put_trainingjob(dict(event["object"])):
            return  # the echo of our own status patch: nothing new to act on
        reconciler.trigger(namespace, name, urgent=True)

    @kopf.on.event("batch", "v1", "jobs", labels={LABEL_TJ: kopf.PRESENT}, registry=registry)
    async def job_event(
        event: Mapping[str, Any], name: str, labels: Mapping[str, str], namespace: str | None,
        memo: kopf.Memo, **_: Any,
    ) -> None:  # fmt: skip
        reconciler = _reconciler(memo)
        if reconciler is None or not namespace:
            return
        if event.get("type") == "DELETED":
            reconciler.cache.drop_job(namespace, labels[LABEL_TJ], name)
        else:
            reconciler.cache.put_job(dict(event["object"]))
        reconciler.trigger(namespace, labels[LABEL_TJ])


async def _resync(config: OperatorConfig, reconciler: Reconciler) -> None:
    """Reconcile every TrainingJob every `resync_seconds` (approvals, timeouts, restarts)."""
    while True:
        await asyncio.sleep(config.resync_seconds)
        if not reconciler.active:
            continue
        try:
            scopes: list[str | None] = list(config.namespaces) or [None]
            for namespace in scopes:
                path = (
                    f"/apis/{GROUP_VERSION}/{PLURAL}"
                    if namespace is None
                    else KubeApi.path(GROUP_VERSION, namespace, PLURAL)
                )
                listing = await reconciler.api.request("GET", path)
                for item in listing.get("items", []):
                    meta = item["metadata"]
                    reconciler.trigger(meta["namespace"], meta["name"])
        except Exception as exc:  # the next round tries again
            log.warning("resync failed: %s", exc)
