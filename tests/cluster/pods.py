"""What the node agent needs to turn a Pod spec into a process: env, volumes, argv.

Resolved as the kubelet does: `$(VAR)` expansion, `value`/`secretKeyRef`/`configMapKeyRef`/
`fieldRef`/`resourceFieldRef`, `envFrom`; `emptyDir`, `configMap`, `secret`, `projected`
(service-account token by TokenRequest, the CA bundle, the namespace) and
`persistentVolumeClaim` (a bound hostPath or local PersistentVolume) volumes, each materialised
under the pod's folder and bind-mounted at its `mountPath` in the container's own mount
namespace. Without mount namespaces (not root) mounts are skipped: `/tmp` becomes TMPDIR and the
service-account token is handed over as a kubeconfig (KUBECONFIG).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import podman
from .client import Api, ApiError

Obj = dict[str, Any]
PASS_THROUGH_ENV = (
    "LANG",
    "LC_ALL",
    "TZ",
    "PYTHONPATH",
    "SSL_CERT_FILE",
    "PYTHONDONTWRITEBYTECODE",
    "COVERAGE_PROCESS_START",
)
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class ConfigError(Exception):
    """The container cannot be configured yet (the kubelet's CreateContainerConfigError, or
    another waiting reason)."""

    def __init__(self, message: str, reason: str = "CreateContainerConfigError") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    mounts: list[tuple[str, str, bool]] = field(default_factory=list)
    message_file: Path | None = None


@dataclass
class PodContext:
    api: Api
    pod: Obj
    sandbox: Path
    node_name: str
    api_host: str
    api_port: int
    ca_file: str
    mount_namespaces: bool
    runtime: str = "process"
    volumes: dict[str, Path] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    async def _object(self, kind: str, name: str, optional: bool | None) -> Obj | None:
        try:
            return await self.api.get(f"/api/v1/namespaces/{self.namespace}/{kind}/{name}")  # type: ignore[no-any-return]
        except ApiError as exc:
            if exc.status != 404:
                raise
        if optional:
            return None
        singular = "configmap" if kind == "configmaps" else "secret"
        raise ConfigError(f'{singular} "{name}" not found')

    async def _data(self, kind: str, name: str, optional: bool | None) -> dict[str, str] | None:
        obj = await self._object(kind, name, optional)
        if obj is None:
            return None
        if kind == "secrets":
            return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        return dict(obj.get("data") or {})

    # --- volumes -------------------------------------------------------------------------

    async def prepare_volumes(self) -> None:
        for volume in self.pod["spec"].get("volumes") or []:
            path = self.sandbox / "volumes" / volume["name"]
            if "persistentVolumeClaim" in volume:
                path = await self._claim_path(volume["persistentVolumeClaim"]["claimName"])
            else:
                path.mkdir(parents=True, exist_ok=True)
                if "emptyDir" in volume:
                    path.chmod(0o777)  # as the kubelet makes it: any user of the pod writes
                for rel, content in (await self._volume_files(volume)).items():
                    target = path / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(content)
            self.volumes[volume["name"]] = path

    async def _volume_files(self, volume: Obj) -> dict[str, str]:
        if "emptyDir" in volume:
            return {}
        if "configMap" in volume or "secret" in volume:
            kind = "configmaps" if "configMap" in volume else "secrets"
            source = volume.get("configMap") or volume["secret"]
            name = source.get("name") or source.get("secretName")
            return await self._items(kind, name, source)
        if "projected" in volume:
            files: dict[str, str] = {}
            for source in volume["projected"].get("sources") or []:
                if "serviceAccountToken" in source:
                    tok = source["serviceAccountToken"]
                    files[tok["path"]] = await self._token(
                        tok.get("audience"), tok.get("expirationSeconds", 3607)
                    )
                elif "configMap" in source:
                    files.update(
                        await self._items(
                            "configmaps", source["configMap"]["name"], source["configMap"]
                        )
                    )
                elif "secret" in source:
                    files.update(
                        await self._items("secrets", source["secret"]["name"], source["secret"])
                    )
                elif "downwardAPI" in source:
                    for item in source["downwardAPI"].get("items") or []:
                        files[item["path"]] = field_ref(
                            self.pod, item["fieldRef"]["fieldPath"], self.node_name
                        )
            return files
        kinds = sorted(k for k in volume if k != "name")
        raise ConfigError(f"volume {volume['name']}: {kinds} is not supported by the node agent")

    async def _items(self, kind: str, name: str, source: Obj) -> dict[str, str]:
        data = await self._data(kind, name, source.get("optional")) or {}
        items = source.get("items")
        if not items:
            return data
        return {item["path"]: data[item["key"]] for item in items if item["key"] in data}

    async def _token(self, audience: str | None, seconds: int) -> str:
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        meta = self.pod["metadata"]
        spec: Obj = {
            "expirationSeconds": max(int(seconds), 600),
            "boundObjectRef": {
                "kind": "Pod",
                "apiVersion": "v1",
                "name": meta["name"],
                "uid": meta["uid"],
            },
        }
        if audience:
            spec["audiences"] = [audience]
        review = await self.api.create(
            f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{sa}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        return str(review["status"]["token"])

    async def _claim_path(self, claim: str) -> Path:
        pvc = await self._object("persistentvolumeclaims", claim, False)
        assert pvc is not None
        volume = (pvc.get("spec") or {}).get("volumeName")
        if not volume or (pvc.get("status") or {}).get("phase") != "Bound":
            raise ConfigError(f'persistentvolumeclaim "{claim}" is not bound')
        pv = await self.api.get(f"/api/v1/persistentvolumes/{volume}")
        source = pv["spec"].get("hostPath") or pv["spec"].get("local")
        if not source:
            raise ConfigError(
                f"persistentvolume {volume}: only hostPath and local volumes "
                "are supported by the node agent"
            )
        path = Path(source["path"])
        path.mkdir(parents=True, exist_ok=True)
        return path

    # --- containers ----------------------------------------------------------------------

    async def launch(self, container: Obj, state_dir: Path) -> Launch:
        if self.runtime == "podman":
            return await self._podman_launch(container, state_dir)
        bin_dir = os.path.dirname(sys.executable)
        home = self.sandbox / "home"
        home.mkdir(parents=True, exist_ok=True)
        message_file = state_dir / "termination-log"
        message_file.write_bytes(b"")
        message_path = container.get("terminationMessagePath") or "/dev/termination-log"
        env: dict[str, str] = {k: os.environ[k] for k in PASS_THROUGH_ENV if k in os.environ}
        env.update(
            {
                "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(home),
            }
        )
        env.update(await self._container_env(container))
        env = {k: v.replace(message_path, str(message_file)) for k, v in env.items()}

        mounts: list[tuple[str, str, bool]] = []
        for mount in container.get("volumeMounts") or []:
            source = self._mount_source(mount)
            target = mount["mountPath"]
            if self.mount_namespaces:
                Path(target).mkdir(parents=True, exist_ok=True)
                mounts.append((str(source), target, bool(mount.get("readOnly"))))
            elif target == "/tmp":
                env["TMPDIR"] = str(source)
            elif target == SA_DIR:
                env["KUBECONFIG"] = str(self._kubeconfig(source))

        def subst(items: list[str]) -> list[str]:
            return [expand(a, env).replace(message_path, str(message_file)) for a in items]

        argv = subst(container.get("command") or []) + subst(container.get("args") or [])
        if not argv:
            raise ConfigError("the process runtime runs no images: the container needs a command")
        return Launch(argv, env, container.get("workingDir") or str(home), mounts, message_file)

    def _mount_source(self, mount: Obj) -> Path:
        """The folder on this machine behind a volumeMount (its subPath made if missing)."""
        source = self.volumes.get(mount["name"])
        if source is None:
            raise ConfigError(f"volume {mount['name']} is not defined")
        if mount.get("subPath"):
            source = source / mount["subPath"]
            source.mkdir(parents=True, exist_ok=True)
        return source

    async def _container_env(self, container: Obj) -> dict[str, str]:
        """What the container's own environment holds: the service's address, then envFrom,
        then env (later wins, `$(VAR)` sees what came before)."""
        env = {
            "HOSTNAME": self.pod["metadata"]["name"],
            "KUBERNETES_SERVICE_HOST": self.api_host,
            "KUBERNETES_SERVICE_PORT": str(self.api_port),
        }
        for source in container.get("envFrom") or []:
            env.update(await self._env_from(source))
        for var in container.get("env") or []:
            if "valueFrom" in var:
                value = await self._value_from(container, var["valueFrom"])
                if value is None:
                    continue
            else:
                value = expand(var.get("value", ""), env)
            env[var["name"]] = value
        return env

    async def _podman_launch(self, container: Obj, state_dir: Path) -> Launch:
        """`podman run` of the container's image, with its own environment and mounts."""
        try:
            image_user = await podman.image_user(container["image"])
        except podman.ImageError as exc:
            raise ConfigError(str(exc), reason="ErrImageNeverPull") from None
        user, refused = podman.effective_user(self.pod, container, image_user)
        if refused:
            raise ConfigError(refused)
        env = await self._container_env(container)
        message_file = state_dir / "termination-log"
        message_file.write_bytes(b"")
        message_file.chmod(0o666)  # written by the container's user, whoever that is
        mounts = [
            (str(message_file), container.get("terminationMessagePath") or "/dev/termination-log",
             False),
        ]  # fmt: skip
        for mount in container.get("volumeMounts") or []:
            source = self._mount_source(mount)
            mounts.append((str(source), mount["mountPath"], bool(mount.get("readOnly"))))
        c_name = podman.container_name(self.pod, container["name"], int(state_dir.name))
        (state_dir / podman.NAME_FILE).write_text(c_name)
        argv = podman.run_argv(
            self.pod,
            container,
            name=c_name,
            node=self.node_name,
            user=user,
            env_names=sorted(env),
            mounts=mounts,
            command=[expand(a, env) for a in container.get("command") or []],
            args=[expand(a, env) for a in container.get("args") or []],
        )
        return Launch(argv, {**podman.env(), **env}, str(self.sandbox), [], message_file)

    def _kubeconfig(self, sa_dir: Path) -> Path:
        path = self.sandbox / "kubeconfig"
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "in-cluster",
                            "cluster": {
                                "server": f"https://{self.api_host}:{self.api_port}",
                                "certificate-authority": str(sa_dir / "ca.crt"),
                            },
                        }
                    ],
                    "users": [{"name": "sa", "user": {"tokenFile": str(sa_dir / "token")}}],
                    "contexts": [
                        {
                            "name": "sa",
                            "context": {
                                "cluster": "in-cluster",
                                "user": "sa",
                                "namespace": self.namespace,
                            },
                        }
                    ],
                    "current-context": "sa",
                }
            )
        )
        return path

    async def _env_from(self, source: Obj) -> dict[str, str]:
        prefix = source.get("prefix", "")
        for key, kind in (("configMapRef", "configmaps"), ("secretRef", "secrets")):
            ref = source.get(key)
            if ref is not None:
                data = await self._data(kind, ref.get("name", ""), ref.get("optional")) or {}
                return {prefix + k: v for k, v in data.items()}
        return {}

    async def _value_from(self, container: Obj, source: Obj) -> str | None:
        for key, kind in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
            ref = source.get(key)
            if ref is None:
                continue
            data = await self._data(kind, ref.get("name", ""), ref.get("optional"))
            if data is None:
                return None
            if ref["key"] not in data:
                if ref.get("optional"):
                    return None
                singular = "ConfigMap" if kind == "configmaps" else "Secret"
                raise ConfigError(
                    f"couldn't find key {ref['key']} in {singular} "
                    f"{self.namespace}/{ref.get('name')}"
                )
            return data[ref["key"]]
        if "fieldRef" in source:
            return field_ref(self.pod, source["fieldRef"]["fieldPath"], self.node_name)
        if "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            name = ref.get("containerName") or container["name"]
            limits = next(
                (
                    c.get("resources", {}).get("limits", {})
                    for c in self.pod["spec"]["containers"]
                    if c["name"] == name
                ),
                {},
            )
            return str(limits.get(ref["resource"].split(".")[-1], "0"))
        return None


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: unknown references stay as written, `$$` escapes."""
    return _VAR.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def pod_ip(pod: dict[str, Any]) -> str:
    """A loopback address of the pod's own. Pods share the host's network, but like a real
    cluster's pods each has an IP: two replicas of one Deployment can listen on the same port
    when they bind $(POD_IP)."""
    digest = hashlib.sha256(str(pod["metadata"].get("uid", "")).encode()).digest()
    return f"127.{1 + digest[0] % 254}.{digest[1]}.{1 + digest[2] % 254}"


def field_ref(pod: Obj, path: str, node_name: str) -> str:
    meta, spec = pod["metadata"], pod["spec"]
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        values = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName") or node_name,
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": pod_ip(pod),
        "status.hostIP": "127.0.0.1",
        "status.podIPs": pod_ip(pod),
        "status.hostIPs": "127.0.0.1",
    }
    return str(simple.get(path) or "")
