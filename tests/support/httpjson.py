"""One JSON request to the API server, its status and decoded body whatever the status: shared
by the tests' Kubernetes client (tests/support/kube.py) and the scale bench's."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any


def send(
    request: urllib.request.Request, context: ssl.SSLContext, timeout: float
) -> tuple[int, Any]:
    """(HTTP status, the body as JSON, or as text when it is not JSON); errors are answers too."""
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")
