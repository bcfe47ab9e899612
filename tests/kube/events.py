"""core/v1 Events recorded by the emulator's controllers (what `kubectl describe` lists)."""

from __future__ import annotations

import contextlib
import secrets
from typing import Any

from .api import Api
from .errors import ApiError
from .util import rfc3339

Obj = dict[str, Any]


def record(api: Api, involved: Obj, type_: str, reason: str, message: str,
           component: str) -> None:
    meta = involved["metadata"]
    namespace = meta.get("namespace") or "default"
    stamp = rfc3339()
    body = {
        "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion", ""), "kind": involved.get("kind", ""),
            "name": meta["name"], "namespace": meta.get("namespace", ""), "uid": meta["uid"],
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": reason, "message": message, "type": type_,
        "source": {"component": component}, "firstTimestamp": stamp, "lastTimestamp": stamp,
        "count": 1, "reportingComponent": component, "reportingInstance": component,
    }
    with contextlib.suppress(ApiError):  # e.g. the namespace is terminating
        api.create(api.type(("", "events")), "v1", namespace, body)
