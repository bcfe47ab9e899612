"""The operator's own watches, on the real API server.

Ended step pods: a pod arrives once it has ended (the server filters by phase), with what the
reconciler reads of it, and only then. Jobs: listed, then followed into the cache, each change
asking for a pass of the TrainingJob that owns the Job. TrainingJobs: the same, except that the
echo of the operator's own status write asks for nothing. A watch the server refuses never
counts as running (passes then ask the server themselves).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from stagegate_core.keys import LABEL_TJ
from stagegate_operator.cache import ObjectCache
from stagegate_operator.informer import Followed
from stagegate_operator.jobwatch import WatchedJobs
from stagegate_operator.kubeapi import KubeApi as OperatorApi
from stagegate_operator.kubeapi import load_connection
from stagegate_operator.podwatch import EndedPods, slim_pod
from stagegate_operator.trainingjobwatch import WatchedTrainingJobs

from tests.support.kube import KubeApi
from tests.support.operator import install_crd, until

TERMINATED = {
    "exitCode": 0,
    "reason": "Completed",
    "message": '{"step":"fold"}',
    "startedAt": "2026-01-01T00:00:00Z",
    "finishedAt": "2026-01-01T00:01:00Z",
}


def pod(name: str, job: str, trainingjob: str = "btc") -> dict[str, Any]:
    # Bound to a node that does not exist: no kubelet runs it; the test writes its status.
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {LABEL_TJ: trainingjob, "job-name": job}},
            "spec": {"nodeName": "nowhere", "restartPolicy": "Never", "securityContext": {
                         "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                     "containers": [{"name": "trainer", "image": "trainer", "securityContext": {
                         "allowPrivilegeEscalation": False,
                         "capabilities": {"drop": ["ALL"]}}}]}}  # fmt: skip


def asks(watched: WatchedJobs | WatchedTrainingJobs) -> list[tuple[str, str]]:
    """The passes `watched` asks for, in order, as they come."""
    asked: list[tuple[str, str]] = []
    watched.on_change = lambda namespace, name: asked.append((namespace, name))
    return asked


@contextlib.asynccontextmanager
async def running(api: OperatorApi, *followed: Followed) -> AsyncIterator[None]:
    """The watches run for the block; then they stop and the client is closed."""
    tasks = [asyncio.create_task(f.run()) for f in followed]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await api.close()


def test_slim_pod_keeps_what_the_reconciler_reads() -> None:
    full = {**pod("p", "btc-quick-fold-01"), "status": {
        "phase": "Succeeded", "hostIP": "10.0.0.1",
        "containerStatuses": [{"name": "trainer", "image": "x", "imageID": "y",
                               "state": {"terminated": TERMINATED}}]}}  # fmt: skip
    full["metadata"].update(namespace="ns", creationTimestamp="t", managedFields=[{"a": 1}])
    slim = slim_pod(full)
    assert slim["metadata"] == {"name": "p", "namespace": "ns", "creationTimestamp": "t",
                                "labels": full["metadata"]["labels"]}  # fmt: skip
    assert slim["status"]["phase"] == "Succeeded"
    read = {k: TERMINATED[k] for k in ("exitCode", "reason", "message")}
    assert slim["status"]["containerStatuses"] == [
        {"name": "trainer", "state": {"terminated": read}}
    ]


def test_ended_pods_arrive_from_the_real_api_server(kube_api: KubeApi) -> None:
    asyncio.run(_ended(kube_api))


async def _ended(kube: KubeApi) -> None:
    api = OperatorApi(load_connection(str(kube.kubeconfig)))
    ended = EndedPods(api, [kube.namespace])
    pods = f"/api/v1/namespaces/{kube.namespace}/pods"
    kube.create(pods, pod("before", "btc-prepare"))  # ended before the watch starts: listed
    kube.patch(f"{pods}/before/status", {"status": {"phase": "Failed"}})
    async with running(api, ended):
        await until(lambda: ended.watching(kube.namespace), 10)
        assert [p["metadata"]["name"] for p in ended.pods(kube.namespace, "btc")] == ["before"]

        kube.create(pods, pod("fold", "btc-quick-fold-01"))
        await asyncio.sleep(1.0)  # Pending: the server does not send it
        assert "fold" not in {p["metadata"]["name"] for p in ended.pods(kube.namespace, "btc")}
        status = {"phase": "Succeeded", "containerStatuses": [{
            "name": "trainer", "image": "trainer", "imageID": "", "ready": False,
            "restartCount": 0, "state": {"terminated": TERMINATED}}]}  # fmt: skip
        kube.patch(f"{pods}/fold/status", {"status": status})
        await until(lambda: len(ended.pods(kube.namespace, "btc")) == 2, 10)
        found = {p["metadata"]["name"]: p for p in ended.pods(kube.namespace, "btc")}
        terminated = found["fold"]["status"]["containerStatuses"][0]["state"]["terminated"]
        assert terminated["message"] == TERMINATED["message"]

        # A Job whose result the status holds: its pods are let go, the others stay.
        ended.release(kube.namespace, "btc", {"btc-quick-fold-01"})
        assert [p["metadata"]["name"] for p in ended.pods(kube.namespace, "btc")] == ["before"]

        kube.request("DELETE", f"{pods}/before")
        await until(lambda: len(ended.pods(kube.namespace, "btc")) == 0, 30)


def job(name: str, trainingjob: str = "btc") -> dict[str, Any]:
    # Suspended: the Job controller starts no pod for it.
    template = {key: value for key, value in pod(name, name)["spec"].items() if key != "nodeName"}
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "labels": {LABEL_TJ: trainingjob}},
            "spec": {"suspend": True, "template": {"spec": template}}}  # fmt: skip


def test_jobs_are_followed_into_the_cache_from_the_real_api_server(kube_api: KubeApi) -> None:
    asyncio.run(_jobs(kube_api))


async def _jobs(kube: KubeApi) -> None:
    api = OperatorApi(load_connection(str(kube.kubeconfig)))
    cache = ObjectCache()
    watched = WatchedJobs(api, [kube.namespace], cache)
    asked = asks(watched)
    jobs = f"/apis/batch/v1/namespaces/{kube.namespace}/jobs"
    kube.create(jobs, job("btc-prepare"))  # there before the watch starts: listed

    def names() -> set[str]:
        return {j["metadata"]["name"] for j in cache.jobs(kube.namespace, "btc")}

    async with running(api, watched):
        await until(lambda: watched.watching(kube.namespace), 10)
        assert names() == {"btc-prepare"} and (kube.namespace, "btc") in asked
        (cached,) = cache.jobs(kube.namespace, "btc")
        assert "managedFields" not in cached["metadata"] and cached["spec"] == {"backoffLimit": 6}

        asked.clear()
        kube.create(jobs, job("eth-prepare", trainingjob="eth"))
        await until(lambda: (kube.namespace, "eth") in asked, 10)
        assert [j["metadata"]["name"] for j in cache.jobs(kube.namespace, "eth")] == ["eth-prepare"]

        kube.request("DELETE", f"{jobs}/btc-prepare")
        await until(lambda: not names(), 30)


def test_trainingjobs_are_followed_into_the_cache_from_the_real_api_server(
    kube_api: KubeApi,
) -> None:
    install_crd(kube_api)
    asyncio.run(_trainingjobs(kube_api))


def trainingjob(name: str) -> dict[str, Any]:
    return {"apiVersion": "stagegate.io/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": name}, "spec": {"symbol": "BTC/USDT"}}  # fmt: skip


async def _trainingjobs(kube: KubeApi) -> None:
    api = OperatorApi(load_connection(str(kube.kubeconfig)))
    cache = ObjectCache()
    watched = WatchedTrainingJobs(api, [kube.namespace], cache)
    asked = asks(watched)
    path = f"/apis/stagegate.io/v1alpha1/namespaces/{kube.namespace}/trainingjobs"
    kube.create(path, trainingjob("btc"))  # there before the watch starts: listed
    btc, eth = (kube.namespace, "btc"), (kube.namespace, "eth")
    async with running(api, watched):
        await until(lambda: watched.watching(kube.namespace), 10)
        assert asked == [btc] and cache.trainingjob(*btc) is not None

        kube.create(path, trainingjob("eth"))
        await until(lambda: eth in asked, 10)
        approved = kube.patch(f"{path}/eth", {"metadata": {"annotations": {"a": "approved"}}})
        await until(lambda: asked.count(eth) == 2, 10)
        cached = cache.trainingjob(*eth)
        assert cached is not None and cached["metadata"]["annotations"] == {"a": "approved"}
        assert cached["metadata"]["resourceVersion"] == approved["metadata"]["resourceVersion"]

        # The operator's own status write: cached as it answered (the test client blocks the
        # loop, so before the watch can deliver it); its echo then asks for no pass.
        written = kube.patch(f"{path}/eth/status", {"status": {"phase": "Quick"}})
        cache.put_status_write(cached, written["metadata"], written["status"])
        kube.request("DELETE", f"{path}/btc")
        await until(lambda: cache.trainingjob(*btc) is None, 30)
        assert asked == [btc, eth, eth, btc], "the echo asked for a pass"
        assert (cache.trainingjob(*eth) or {}).get("status") == {"phase": "Quick"}


def test_a_relisting_asks_for_a_pass_of_what_is_new_changed_or_gone() -> None:
    cache = ObjectCache()
    watched = WatchedTrainingJobs(None, ["ns"], cache)  # type: ignore[arg-type]  # no run()
    asked = asks(watched)

    def tj(name: str, version: int, namespace: str = "ns") -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": namespace,
                             "resourceVersion": str(version)}}  # fmt: skip

    watched.replace("ns", [tj("a", 1), tj("b", 1), tj("c", 1)])
    cache.put_trainingjob(tj("x", 1, namespace="other"))  # another scope's: kept
    asked.clear()
    watched.replace("ns", [tj("a", 1), tj("b", 2), tj("d", 1)])  # c is gone
    assert sorted(n for _, n in asked) == ["b", "c", "d"]
    assert sorted(cache.trainingjob_keys()) == [("ns", "a"), ("ns", "b"), ("ns", "d"),
                                                ("other", "x")]  # fmt: skip


def test_a_watch_the_server_refuses_is_never_taken_as_running(kube_api: KubeApi) -> None:
    """bob may list neither pods, Jobs nor TrainingJobs: passes must go on asking the server
    themselves, not wait for what these watches will never show."""

    async def scenario() -> tuple[bool, bool, bool]:
        api = OperatorApi(load_connection(str(kube_api.kubeconfig_for("bob"))))
        ended = EndedPods(api, [kube_api.namespace])
        watched = WatchedJobs(api, [kube_api.namespace], ObjectCache())
        trainingjobs = WatchedTrainingJobs(api, [kube_api.namespace], ObjectCache())
        async with running(api, ended, watched, trainingjobs):
            await asyncio.sleep(2.5)  # the first try and a retry, both refused
            return (ended.watching(kube_api.namespace), watched.watching(kube_api.namespace),
                    trainingjobs.watching(kube_api.namespace))  # fmt: skip

    assert asyncio.run(scenario()) == (False, False, False)


def test_only_a_change_the_reconciler_reads_asks_for_a_pass() -> None:
    cache = ObjectCache()
    watched = WatchedJobs(None, ["ns"], cache)  # type: ignore[arg-type]  # no API: no run()
    asked = asks(watched)

    def event(version: int, kind: str = "MODIFIED", **status: Any) -> None:
        watched.apply(kind, {"metadata": {
            "name": "btc-prepare", "namespace": "ns", "labels": {LABEL_TJ: "btc"},
            "resourceVersion": str(version), "managedFields": [{"manager": "x"}]},
            "spec": {"backoffLimit": 2}, "status": status})  # fmt: skip

    event(1, "ADDED")
    event(2, active=1, uncountedTerminatedPods={})
    event(3, active=1, uncountedTerminatedPods={"succeeded": ["uid"]})  # not read: no pass
    event(2, active=0)  # older than the cached version: ignored
    assert asked == [("ns", "btc")] * 2
    conditions = [{"type": "Complete", "status": "True", "lastProbeTime": "t"}]
    event(4, succeeded=1, conditions=conditions)
    (cached,) = cache.jobs("ns", "btc")
    assert cached["status"] == {
        "succeeded": 1,
        "conditions": [{"type": "Complete", "status": "True"}],
    }
    watched.apply("DELETED", {"metadata": {"name": "btc-prepare", "namespace": "ns",
                                           "labels": {LABEL_TJ: "btc"}}})  # fmt: skip
    assert cache.jobs("ns", "btc") == [] and len(asked) == 4

    watched.replace("ns", [{"metadata": {"name": "eth-prepare", "namespace": "ns",
                                         "labels": {LABEL_TJ: "eth"}}}])  # fmt: skip
    # A LIST replaces all: a pass for each TrainingJob whose Jobs were or are there.
    assert set(asked[4:]) == {("ns", "btc"), ("ns", "eth")} and cache.jobs("ns", "eth")


def test_a_cached_trainingjob_keeps_all_but_its_managed_fields() -> None:
    cache = ObjectCache()
    meta = {"name": "btc", "namespace": "ns", "resourceVersion": "7", "generation": 2,
            "annotations": {"a": "b"}, "managedFields": [{"manager": "kubectl"}]}  # fmt: skip
    body = {"metadata": meta, "spec": {"symbol": "BTC/USDT"}, "status": {"phase": "Quick"}}
    assert cache.put_trainingjob(body)
    cached = cache.trainingjob("ns", "btc")
    assert cached is not None and "managedFields" not in cached["metadata"]
    assert cached == {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    assert not cache.put_trainingjob(body)  # the same version again: nothing new
