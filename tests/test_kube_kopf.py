"""A tiny kopf operator, run by kopf's own runner, against the emulator."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import kopf
import pytest

from tests.kube.samples import widget, widget_crd
from tests.support.kube import KubeApi

pytestmark = pytest.mark.timeout(90)

WIDGETS = "/apis/example.stagegate.io/v1/namespaces/default/widgets"


def test_kopf_operator_create_field_delete(kube_api: KubeApi) -> None:
    kube_api.create_crd(widget_crd())
    registry = kopf.OperatorRegistry()
    seen: list[tuple[str, Any]] = []

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=kube_api.url, insecure=True,
                                   default_namespace="default")

    @kopf.on.create("example.stagegate.io", "v1", "widgets", registry=registry)
    def created(body: Any, patch: kopf.Patch, **_: Any) -> None:
        seen.append(("create", body["spec"]["size"]))
        patch.status["phase"] = "Created"
        patch.status["observedGeneration"] = body["metadata"]["generation"]
        kopf.info(body, reason="Created", message="widget seen by kopf")

    @kopf.on.field("example.stagegate.io", "v1", "widgets", field="spec.size",
                   registry=registry)
    def resized(old: Any, new: Any, patch: kopf.Patch, body: Any, **_: Any) -> None:
        if old is None:  # kopf also calls field handlers when the object is created
            return
        seen.append(("size", (old, new)))
        patch.status["phase"] = f"Resized-{new}"
        patch.status["observedGeneration"] = body["metadata"]["generation"]

    @kopf.on.delete("example.stagegate.io", "v1", "widgets", registry=registry)
    def deleted(body: Any, **_: Any) -> None:
        seen.append(("delete", body["metadata"]["name"]))

    settings = kopf.OperatorSettings()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
    settings.watching.server_timeout = 10
    settings.posting.level = logging.INFO
    stop, ready = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(kopf.operator(registry=registry, settings=settings, standalone=True,
                                      namespaces=["default"], stop_flag=stop, ready_flag=ready))
        except BaseException as exc:  # surfaced by the assertions below
            errors.append(exc)

    thread = threading.Thread(target=run, name="kopf", daemon=True)
    thread.start()
    try:
        assert ready.wait(20), errors
        kube_api.create(WIDGETS, widget("w", size=2))
        got = kube_api.wait_for(
            lambda: (w := kube_api.get(f"{WIDGETS}/w")).get("status", {}).get("phase")
            == "Created" and w, timeout=20, message="create handler")
        assert "kopf.zalando.org/KopfFinalizerMarker" in got["metadata"]["finalizers"]
        kube_api.patch(f"{WIDGETS}/w", {"spec": {"size": 5}})
        kube_api.wait_for(
            lambda: kube_api.get(f"{WIDGETS}/w").get("status", {}).get("phase") == "Resized-5",
            timeout=20, message="field handler")
        events = kube_api.get("/api/v1/namespaces/default/events")["items"]
        assert any(e["reason"] == "Created" and e["involvedObject"]["name"] == "w"
                   for e in events)
        out = kube_api.kubectl("delete", "widget", "w", "--timeout=30s")
        assert "deleted" in out.stdout
        assert kube_api.request("GET", f"{WIDGETS}/w")[0] == 404
        assert seen == [("create", 2), ("size", (2, 5)), ("delete", "w")]
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert not errors, errors
