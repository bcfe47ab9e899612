"""Reading a kubeconfig without the Kubernetes client.

The operator image leaves the client out (84 MB), and where it is installed kopf imports it
(about 40 MiB more resident memory) only to offer a login the operator does not use. A kubeconfig
that names a server, its CA and a token or client certificate is read here; one that needs a
credential plugin (`exec`, `auth-provider`) or a password raises `NeedsClient`, and the caller
tries the Kubernetes client. Of a KUBECONFIG list, the first file is read (kubectl merges them).
"""

from __future__ import annotations

import base64
import functools
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml


class KubeconfigError(Exception):
    """The kubeconfig cannot be used; the message names the file and what is wrong."""


class NeedsClient(Exception):
    """The kubeconfig's user needs a credential plugin or a password: for the Kubernetes client."""


def read_kubeconfig(path: Path) -> dict[str, Any]:
    """server, token, ca_file, cert_file, key_file and insecure of the current context."""
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise KubeconfigError(f"cannot read kubeconfig {path}: {exc}") from None
    if not isinstance(config, dict):
        raise KubeconfigError(f"kubeconfig {path} is not a mapping")
    current = config.get("current-context")
    if not current:
        raise KubeconfigError(f"kubeconfig {path} has no current-context")
    context = _named(config, "contexts", current, path).get("context") or {}
    cluster = _named(config, "clusters", context.get("cluster"), path).get("cluster") or {}
    user = _named(config, "users", context.get("user"), path).get("user") or {}
    if not cluster.get("server"):
        raise KubeconfigError(
            f"kubeconfig {path}: cluster {context.get('cluster')!r} has no server"
        )
    if any(key in user for key in ("exec", "auth-provider", "username", "password")):
        raise NeedsClient(f"kubeconfig {path}: user {context.get('user')!r} needs the client")
    base = path.parent
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = _resolved(base, user["tokenFile"]).read_text().strip()
    return {
        "server": cluster["server"],
        "token": token or None,
        "ca_file": _file(base, cluster, "certificate-authority"),
        "cert_file": _file(base, user, "client-certificate"),
        "key_file": _file(base, user, "client-key"),
        "insecure": bool(cluster.get("insecure-skip-tls-verify")),
    }


def _named(config: dict[str, Any], kind: str, name: Any, path: Path) -> dict[str, Any]:
    for entry in config.get(kind) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    raise KubeconfigError(f"kubeconfig {path}: no {kind[:-1]} named {name!r} in {kind}")


def _resolved(base: Path, name: str) -> Path:
    return (
        Path(os.path.expanduser(name)) if os.path.isabs(os.path.expanduser(name)) else base / name
    )


def _file(base: Path, section: dict[str, Any], key: str) -> str | None:
    """The file the kubeconfig names for `key`, or its `key-data` written to a private file."""
    if section.get(key):
        return str(_resolved(base, section[key]))
    data = section.get(f"{key}-data")
    return _written(key, data) if data else None


@functools.cache
def _written(key: str, data: str) -> str:
    """`data` (base64) in a private file. ssl wants files; like the Kubernetes client, keep
    them for the life of the process: one per content, however often the kubeconfig is read."""
    handle, name = tempfile.mkstemp(prefix=f"stagegate-{key}-")
    with os.fdopen(handle, "wb") as out:
        out.write(base64.b64decode(data))
    return name
