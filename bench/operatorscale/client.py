"""The bench's own Kubernetes client: admin's bearer token over HTTPS (User-Agent Python-urllib),
and a streaming watch that stamps each event with the local clock on arrival."""

from __future__ import annotations

import json
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.cluster.controlplane import token
from tests.support import httpjson

GROUP_PATH = "/apis/stagegate.io/v1alpha1"
TJ_PATH = f"{GROUP_PATH}/namespaces/default/trainingjobs"
JOBS_PATH = "/apis/batch/v1/namespaces/default/jobs"
LABEL_TJ = "stagegate.io/trainingjob"
JSON = "application/json"


class Http:
    def __init__(self, url: str, ca: Path) -> None:
        self.url = url
        self.ctx = ssl.create_default_context(cafile=str(ca))
        self.headers = {"Authorization": f"Bearer {token('admin')}"}

    def open(self, path: str, timeout: float) -> Any:
        req = urllib.request.Request(self.url + path, headers=self.headers)
        return urllib.request.urlopen(req, timeout=timeout, context=self.ctx)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = JSON,
        timeout: float = 60,
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": content_type, **self.headers},
        )
        return httpjson.send(req, self.ctx, timeout)

    def ok(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        status, out = self.request(method, path, body, **kwargs)
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {out}")
        return out


class Watch(threading.Thread):
    """A streaming watch that stamps every event with the local clock on arrival."""

    def __init__(self, http: Http, path: str, selector: str | None, on_event: Any) -> None:
        super().__init__(daemon=True, name=f"watch {path}")
        self.http, self.path, self.selector = http, path, selector
        self.on_event = on_event
        self.stopping = threading.Event()
        self.rv = ""
        self.reconnects = 0

    def run(self) -> None:
        http = self.http
        query = f"?labelSelector={self.selector}" if self.selector else "?"
        listing = http.ok("GET", self.path + query)
        self.rv = listing["metadata"]["resourceVersion"]
        for item in listing.get("items", []):
            self.on_event("ADDED", item, time.monotonic())
        while not self.stopping.is_set():
            path = (
                f"{self.path}{query}&watch=1&allowWatchBookmarks=true"
                f"&timeoutSeconds=300&resourceVersion={self.rv}"
            )
            try:
                with http.open(path, timeout=330) as resp:
                    for line in resp:
                        now = time.monotonic()
                        if self.stopping.is_set():
                            return
                        event = json.loads(line)
                        obj = event["object"]
                        if event["type"] == "ERROR":
                            raise RuntimeError(f"watch {self.path}: {obj}")
                        self.rv = obj["metadata"].get("resourceVersion", self.rv)
                        if event["type"] != "BOOKMARK":
                            self.on_event(event["type"], obj, now)
            except (OSError, ValueError) as exc:
                if self.stopping.is_set():
                    return
                print(f"  (watch {self.path} reconnects: {exc})", file=sys.stderr)
                self.stopping.wait(1.0)  # the server may be gone for good: the bench ends
            self.reconnects += 1
