"""The operator's watch of ended step pods, on the real API server: a pod arrives once it has
ended (the server filters by phase), with what the reconciler reads of it, and only then."""

from __future__ import annotations

import asyncio
from typing import Any

from stagegate_core.keys import LABEL_TJ
from stagegate_operator.kubeapi import KubeApi as OperatorApi
from stagegate_operator.kubeapi import load_connection
from stagegate_operator.podwatch import EndedPods, slim_pod

from tests.support.kube import KubeApi
from tests.support.operator import until

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
    assert slim["status"]["containerStatuses"] == [
        {"name": "trainer", "state": {"terminated": TERMINATED}}
    ]


def test_ended_pods_arrive_from_the_real_api_server(kube_api: KubeApi) -> None:
    asyncio.run(_ended(kube_api))


async def _ended(kube: KubeApi) -> None:
    api = OperatorApi(load_connection(str(kube.kubeconfig)))
    ended = EndedPods(api, [kube.namespace])
    pods = f"/api/v1/namespaces/{kube.namespace}/pods"
    kube.create(pods, pod("before", "btc-prepare"))  # ended before the watch starts: listed
    kube.patch(f"{pods}/before/status", {"status": {"phase": "Failed"}})
    task = asyncio.create_task(ended.run())
    try:
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

        kube.request("DELETE", f"{pods}/before")
        await until(lambda: len(ended.pods(kube.namespace, "btc")) == 1, 30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await api.close()


def test_a_watch_the_server_refuses_is_never_taken_as_running(kube_api: KubeApi) -> None:
    """bob may not list pods: the reconciler must go on listing them itself, not wait for
    pods this watch will never show."""

    async def scenario() -> bool:
        api = OperatorApi(load_connection(str(kube_api.kubeconfig_for("bob"))))
        ended = EndedPods(api, [kube_api.namespace])
        task = asyncio.create_task(ended.run())
        try:
            await asyncio.sleep(2.5)  # the first try and a retry, both refused
            return ended.watching(kube_api.namespace)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await api.close()

    assert asyncio.run(scenario()) is False
