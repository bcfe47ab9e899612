"""The emulator's API semantics over plain HTTP: CRUD, CRDs, watch, patches, GC."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest

from tests.kube.samples import widget, widget_crd
from tests.support.kube import KubeApi

pytestmark = pytest.mark.timeout(60)

WIDGETS = "/apis/example.stagegate.io/v1/namespaces/default/widgets"
CMS = "/api/v1/namespaces/default/configmaps"


def watch_lines(api: KubeApi, path: str, query: str, *, count: int, timeout: float = 10,
                headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Open a raw watch and read `count` events (line-delimited JSON over chunked HTTP)."""
    host, port = api.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    sock.sendall(f"GET {path}?{query} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
    buf = b""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(events) < count and time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            buf += data
            body = buf.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in buf else b""
            # Undo chunked framing: every chunk is "<hex>\r\n<data>\r\n".
            payload, rest = b"", body
            while b"\r\n" in rest:
                size_line, tail = rest.split(b"\r\n", 1)
                size = int(size_line, 16)
                if len(tail) < size + 2:
                    break
                payload += tail[:size]
                rest = tail[size + 2:]
            events = [json.loads(line) for line in payload.splitlines() if line.strip()]
    finally:
        sock.close()
    return events


@pytest.fixture
def widgets(kube_api: KubeApi) -> KubeApi:
    kube_api.create_crd(widget_crd())
    return kube_api


def test_discovery(kube_api: KubeApi) -> None:
    core = kube_api.get("/api/v1")
    names = {r["name"]: r for r in core["resources"]}
    assert {"namespaces", "events", "configmaps", "secrets", "pods", "pods/log",
            "pods/status"} <= set(names)
    assert names["pods"]["singularName"] == "pod"
    groups = {g["name"] for g in kube_api.get("/apis")["groups"]}
    assert {"batch", "apiextensions.k8s.io"} <= groups
    assert kube_api.get("/version")["minor"] == "35"
    assert "apis/batch/v1" in kube_api.get("/openapi/v3")["paths"]


def test_crud_conflicts_and_already_exists(kube_api: KubeApi) -> None:
    cm = kube_api.create(CMS, {"metadata": {"name": "a"}, "data": {"k": "v"}})
    assert cm["metadata"]["uid"] and cm["metadata"]["resourceVersion"]
    status, body = kube_api.request("POST", CMS, {"metadata": {"name": "a"}})
    assert (status, body["reason"]) == (409, "AlreadyExists")
    assert body["message"] == 'configmaps "a" already exists'
    stale = dict(cm, data={"k": "w"})
    kube_api.request("PUT", f"{CMS}/a", stale)  # succeeds, moves the resourceVersion on
    status, body = kube_api.request("PUT", f"{CMS}/a", dict(cm, data={"k": "x"}))
    assert (status, body["reason"]) == (409, "Conflict")
    status, body = kube_api.request("GET", f"{CMS}/nope")
    assert (status, body["message"]) == (404, 'configmaps "nope" not found')
    status, body = kube_api.request("POST", CMS, {"metadata": {"name": "Bad_Name"}})
    assert status == 422 and "RFC 1123" in body["message"]
    status, body = kube_api.request("POST", "/api/v1/namespaces/nowhere/configmaps",
                                    {"metadata": {"name": "x"}})
    assert (status, body["message"]) == (404, 'namespaces "nowhere" not found')


def test_crd_schema_defaulting_pruning_and_strict(widgets: KubeApi) -> None:
    created = widgets.create(WIDGETS, widget("w1", junk=1) | {"status": {"phase": "X"}})
    assert created["spec"] == {"size": 3, "color": "red"}  # pruned + defaulted
    assert "status" not in created  # the status subresource owns status
    assert created["metadata"]["generation"] == 1
    status, body = widgets.request("POST", WIDGETS, widget("w2", size=0, color="pink"))
    assert status == 422 and body["reason"] == "Invalid"
    assert body["message"].startswith('Widget.example.stagegate.io "w2" is invalid: [')
    fields = {c["field"] for c in body["details"]["causes"]}
    assert fields == {"spec.size", "spec.color"}
    assert "spec.size in body should be greater than or equal to 1" in body["message"]
    assert 'spec.color: Unsupported value: "pink"' in body["message"]
    status, body = widgets.request("POST", WIDGETS, {**widget("w3"), "spec": {}})
    assert status == 422 and "spec.size: Required value" in body["message"]
    status, body = widgets.request("POST", WIDGETS, widget("w4", bogus=True),
                                   query={"fieldValidation": "Strict"})
    assert status == 400 and 'unknown field "spec.bogus"' in body["message"]
    spec = {"size": 1, "name": "ABC", "tags": [1]}
    status, body = widgets.request("POST", WIDGETS, {**widget("w5"), "spec": spec})
    assert status == 422
    assert "spec.name in body should match '^[a-z]+$'" in body["message"]
    assert "spec.tags[0]" in body["message"]


def test_status_subresource_generation_and_noop(widgets: KubeApi) -> None:
    w = widgets.create(WIDGETS, widget("w"))
    st = widgets.patch(f"{WIDGETS}/w/status", {"status": {"phase": "Ready"}, "spec": {"size": 9}})
    assert st["status"] == {"phase": "Ready"} and st["spec"]["size"] == 3
    assert st["metadata"]["generation"] == 1
    main = widgets.patch(f"{WIDGETS}/w", {"spec": {"size": 5}, "status": {"phase": "Nope"}})
    assert main["metadata"]["generation"] == 2 and main["status"] == {"phase": "Ready"}
    ann = widgets.patch(f"{WIDGETS}/w", {"metadata": {"annotations": {"a": "b"}}})
    assert ann["metadata"]["generation"] == 2
    again = widgets.patch(f"{WIDGETS}/w", {"metadata": {"annotations": {"a": "b"}}})
    assert again["metadata"]["resourceVersion"] == ann["metadata"]["resourceVersion"]
    # PUT of a custom resource without resourceVersion is rejected like the real server does.
    body = {k: v for k, v in w.items() if k != "status"}
    body["metadata"] = {"name": "w", "namespace": "default"}
    status, out = widgets.request("PUT", f"{WIDGETS}/w", body)
    assert status == 422 and "must be specified for an update" in out["message"]


def test_json_patch_test_failure_is_422(widgets: KubeApi) -> None:
    w = widgets.create(WIDGETS, widget("w"))
    rv = w["metadata"]["resourceVersion"]
    ok = widgets.patch(f"{WIDGETS}/w", [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]},
    ], merge=False)
    assert ok["metadata"]["finalizers"] == ["x/y"]
    status, _ = widgets.request("PATCH", f"{WIDGETS}/w", [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv}],
        content_type="application/json-patch+json")
    assert status == 422
    status, _ = widgets.request("PATCH", f"{WIDGETS}/w", {"spec": {}},
                                content_type="application/strategic-merge-patch+json")
    assert status == 415


def test_strategic_merge_patch_on_builtin(kube_api: KubeApi) -> None:
    pods = "/api/v1/namespaces/default/pods"
    kube_api.create(pods, {"metadata": {"name": "p"}, "spec": {
        "restartPolicy": "Never", "containers": [
            {"name": "a", "image": "x", "command": ["sleep", "30"],
             "env": [{"name": "A", "value": "1"}]},
            {"name": "b", "image": "y", "command": ["sleep", "30"]}]}})
    out = kube_api.request("PATCH", f"{pods}/p", {
        "metadata": {"labels": {"l": "1"}},
        "spec": {"containers": [{"name": "a", "image": "x2"}]}},
        content_type="application/strategic-merge-patch+json")[1]
    containers = {c["name"]: c for c in out["spec"]["containers"]}
    assert containers["a"]["image"] == "x2" and containers["a"]["env"][0]["value"] == "1"
    assert containers["b"]["image"] == "y"
    status, body = kube_api.request("PATCH", f"{pods}/p", {
        "spec": {"restartPolicy": "Always"}},
        content_type="application/strategic-merge-patch+json")
    assert status == 422 and "pod updates may not change fields" in body["message"]


def test_list_selectors_and_pagination(kube_api: KubeApi) -> None:
    for i in range(5):
        kube_api.create(CMS, {"metadata": {"name": f"cm{i}",
                                           "labels": {"n": str(i), "even": str(i % 2 == 0)}}})
    body = kube_api.get(f"{CMS}?labelSelector=even%3DTrue")
    assert [o["metadata"]["name"] for o in body["items"]] == ["cm0", "cm2", "cm4"]
    body = kube_api.get(f"{CMS}?labelSelector=n+in+(1,3),even!%3DTrue")
    assert [o["metadata"]["name"] for o in body["items"]] == ["cm1", "cm3"]
    body = kube_api.get(f"{CMS}?fieldSelector=metadata.name%3Dcm3")
    assert [o["metadata"]["name"] for o in body["items"]] == ["cm3"]
    status, body = kube_api.request("GET", f"{CMS}?fieldSelector=data.x%3Dy")
    assert status == 400 and "field label not supported" in body["message"]
    names, token = [], ""
    while True:
        page = kube_api.get(f"{CMS}?limit=2" + (f"&continue={token}" if token else ""))
        names += [o["metadata"]["name"] for o in page["items"]]
        token = page["metadata"].get("continue", "")
        if not token:
            break
    assert names == [f"cm{i}" for i in range(5)]


def test_watch_resource_version_bookmarks_and_410(kube_api: KubeApi) -> None:
    first = kube_api.create(CMS, {"metadata": {"name": "a"}})
    rv = first["metadata"]["resourceVersion"]
    kube_api.create(CMS, {"metadata": {"name": "b"}})
    kube_api.patch(f"{CMS}/a", {"data": {"x": "1"}})
    kube_api.request("DELETE", f"{CMS}/b")
    events = watch_lines(kube_api, CMS, f"watch=true&resourceVersion={rv}", count=3)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    events = watch_lines(kube_api, CMS, "watch=true&allowWatchBookmarks=true&"
                         "resourceVersion=" + events[-1]["object"]["metadata"]["resourceVersion"],
                         count=1, timeout=6)
    assert events[0]["type"] == "BOOKMARK"
    events = watch_lines(kube_api, CMS, "watch=true&sendInitialEvents=true&"
                         "resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true", count=2)
    assert events[0]["type"] == "ADDED"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    kube_api.compact()
    events = watch_lines(kube_api, CMS, f"watch=true&resourceVersion={rv}", count=1)
    assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410


def test_watch_label_selector_transitions(kube_api: KubeApi) -> None:
    cm = kube_api.create(CMS, {"metadata": {"name": "a", "labels": {"x": "1"}}})
    rv = cm["metadata"]["resourceVersion"]
    kube_api.patch(f"{CMS}/a", {"metadata": {"labels": {"x": "2"}}})
    kube_api.patch(f"{CMS}/a", {"metadata": {"labels": {"x": "1"}}})
    events = watch_lines(kube_api, CMS, f"watch=true&labelSelector=x%3D1&resourceVersion={rv}",
                         count=2)
    assert [e["type"] for e in events] == ["DELETED", "ADDED"]


def test_finalizers_and_deletion_timestamp(widgets: KubeApi) -> None:
    widgets.create(WIDGETS, widget("w") | {"metadata": {"name": "w", "finalizers": ["a/b"]}})
    status, body = widgets.request("DELETE", f"{WIDGETS}/w")
    assert status == 202 and body["metadata"]["deletionTimestamp"]
    assert widgets.get(f"{WIDGETS}/w")["metadata"]["deletionTimestamp"]
    widgets.patch(f"{WIDGETS}/w", {"metadata": {"finalizers": None}})
    assert widgets.request("GET", f"{WIDGETS}/w")[0] == 404


def _owned_cm(name: str, owner: dict[str, Any], block: bool = False) -> dict[str, Any]:
    return {"metadata": {"name": name, "ownerReferences": [{
        "apiVersion": owner["apiVersion"], "kind": owner["kind"],
        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
        "blockOwnerDeletion": block}]}}


@pytest.mark.parametrize("policy", ["Background", "Foreground", "Orphan"])
def test_garbage_collection(widgets: KubeApi, policy: str) -> None:
    owner = widgets.create(WIDGETS, widget("owner"))
    widgets.create(CMS, _owned_cm("dep", owner, block=True))
    status, _ = widgets.request("DELETE", f"{WIDGETS}/owner",
                                {"propagationPolicy": policy})
    assert status in (200, 202)
    if policy == "Orphan":
        widgets.wait_for(lambda: widgets.request("GET", f"{WIDGETS}/owner")[0] == 404)
        dep = widgets.get(f"{CMS}/dep")
        assert not dep["metadata"].get("ownerReferences")
        return
    widgets.wait_for(lambda: widgets.request("GET", f"{CMS}/dep")[0] == 404,
                     message="dependent collected")
    widgets.wait_for(lambda: widgets.request("GET", f"{WIDGETS}/owner")[0] == 404,
                     message="owner gone")


def test_table_output(widgets: KubeApi) -> None:
    widgets.create(WIDGETS, widget("w", size=7, color="blue"))
    status, table = widgets.request(
        "GET", WIDGETS, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    assert status == 200 and table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Size", "Phase", "Color",
                                                               "Age"]
    cells = table["rows"][0]["cells"]
    assert cells[:2] == ["w", 7] and cells[3] == "blue" and cells[4].endswith("s")


def test_crd_deletion_removes_instances(widgets: KubeApi) -> None:
    widgets.create(WIDGETS, widget("w"))
    widgets.request("DELETE",
                    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                    "widgets.example.stagegate.io")
    widgets.wait_for(lambda: widgets.request("GET", WIDGETS)[0] == 404, message="CRD gone")


def test_namespace_deletion_cascades(kube_api: KubeApi) -> None:
    kube_api.create("/api/v1/namespaces", {"metadata": {"name": "tmp"}})
    kube_api.create("/api/v1/namespaces/tmp/configmaps", {"metadata": {"name": "c"}})
    status, body = kube_api.request("DELETE", "/api/v1/namespaces/tmp")
    assert status == 202 and body["status"]["phase"] == "Terminating"
    kube_api.wait_for(lambda: kube_api.request("GET", "/api/v1/namespaces/tmp")[0] == 404)
