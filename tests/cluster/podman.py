"""The node agent's podman runtime: each container runs as `podman run` of its pod's image.

The shim runs the `podman run` client in the container's session, so the agent's SIGTERM
reaches the container through podman's signal proxy and the container's output and exit code
come back through the client as they do for a process. conmon lives in a session of its own,
so a SIGKILL to that session leaves the container running: `remove` stops it for real.

What the pod spec asks is passed on where podman can do it: the image (never pulled: the agent
runs what `scripts/build-images` put in the local store), command/args as entrypoint/cmd,
securityContext (user and group, runAsNonRoot checked against the image's USER, read-only root
without podman's extra tmpfs mounts, capabilities, no privilege escalation, fsGroup as a
supplementary group), volume mounts, the termination message file, limits as podman limits, and
the host network (the pod reaches the API server and S3 on loopback, as in the process runtime).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
REPO = Path(__file__).resolve().parents[2]
# See the file: runc and explicit ulimits, which this machine's hybrid cgroups need.
CONTAINERS_CONF = REPO / "scripts" / "containers.conf"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LABEL = "io.stagegate.node"
# In a container's state folder: its podman name, for whoever must stop it (agent or cluster).
NAME_FILE = "podman-name"
_BINARY_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}
_DECIMAL_SUFFIX = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "": 1}


class ImageError(Exception):
    """The image is not in the node's store (the kubelet's ErrImageNeverPull)."""


def env() -> dict[str, str]:
    """The podman client's own environment, before the container's variables join it."""
    conf = os.environ.get("CONTAINERS_CONF") or str(CONTAINERS_CONF)
    return {"PATH": SYSTEM_PATH, "CONTAINERS_CONF": conf}


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity ("512Mi", "2G", "1e9", "1000") in bytes."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?(?:e[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P|)", str(quantity))
    if not m:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    scale = _BINARY_SUFFIX.get(m.group(2)) or _DECIMAL_SUFFIX[m.group(2)]
    return int(float(m.group(1)) * scale)


def cpus(quantity: str) -> float:
    """A Kubernetes CPU quantity ("500m", "2", "1.5") in CPUs."""
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def container_name(pod: Obj, container: str, restarts: int) -> str:
    meta = pod["metadata"]
    return f"k8s_{container}_{meta['name']}_{meta['namespace']}_{meta['uid'][:8]}_{restarts}"


async def _podman(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "podman",
        *args,
        env=env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace").strip()


async def image_user(image: str) -> str:
    """The image's USER; ImageError when the local store does not have the image."""
    code, out = await _podman("image", "inspect", "--format", "{{json .Config.User}}", image)
    if code != 0:
        raise ImageError(
            f'image "{image}" is not in the node\'s podman store and the node agent never '
            "pulls (build it: scripts/build-images)"
        )
    return str(json.loads(out.splitlines()[-1]) or "")


def effective_user(pod: Obj, container: Obj, image_user: str) -> tuple[str | None, str | None]:
    """(user, error): the `--user` value, or why runAsNonRoot refuses the container (with the
    kubelet's words)."""
    pod_sc = pod["spec"].get("securityContext") or {}
    sc = {**pod_sc, **(container.get("securityContext") or {})}
    uid, gid = sc.get("runAsUser"), sc.get("runAsGroup")
    user = None
    if uid is not None:
        user = f"{uid}:{gid}" if gid is not None else str(uid)
    if sc.get("runAsNonRoot"):
        name = str(uid) if uid is not None else image_user.split(":")[0]
        if name in ("", "0", "root"):
            return None, "container has runAsNonRoot and image will run as root"
        if not name.isdigit():
            return None, (
                f"container has runAsNonRoot and image has non-numeric user ({name}), "
                "cannot verify user is non-root"
            )
    return user, None


def run_argv(
    pod: Obj,
    container: Obj,
    *,
    name: str,
    node: str,
    user: str | None,
    env_names: list[str],
    mounts: list[tuple[str, str, bool]],
    command: list[str],
    args: list[str],
) -> list[str]:
    spec = pod["spec"]
    pod_sc = spec.get("securityContext") or {}
    sc = container.get("securityContext") or {}
    argv = ["podman", "run", "--rm", "--replace", "--name", name, "--label", f"{LABEL}={node}"]
    # Kubernetes ignores HEALTHCHECK (its probes are the agent's business).
    argv += ["--pull=never", "--log-driver=none", "--network=host", "--no-healthcheck"]
    argv += ["--hostname", pod["metadata"]["name"]]
    if user:
        argv += ["--user", user]
    for group in [pod_sc.get("fsGroup"), *(pod_sc.get("supplementalGroups") or [])]:
        if group is not None:
            argv += ["--group-add", str(group)]
    if sc.get("readOnlyRootFilesystem"):
        # podman would mount tmpfs on /tmp, /var/tmp and /run; Kubernetes does not.
        argv += ["--read-only", "--read-only-tmpfs=false"]
    caps = sc.get("capabilities") or {}
    argv += [f"--cap-drop={c.lower()}" for c in caps.get("drop") or []]
    argv += [f"--cap-add={c.lower()}" for c in caps.get("add") or []]
    if sc.get("allowPrivilegeEscalation") is False:
        argv += ["--security-opt", "no-new-privileges"]
    if sc.get("privileged"):
        argv += ["--privileged"]
    limits = (container.get("resources") or {}).get("limits") or {}
    if "memory" in limits:
        argv += ["--memory", str(memory_bytes(limits["memory"]))]
    if "cpu" in limits:
        argv += ["--cpus", f"{cpus(limits['cpu']):g}"]
    for source, target, read_only in mounts:
        argv += ["--volume", f"{source}:{target}:{'ro' if read_only else 'rw'}"]
    # Names only: the values reach podman in its environment, not on a command line.
    for key in env_names:
        argv += ["--env", key]
    if container.get("workingDir"):
        argv += ["--workdir", container["workingDir"]]
    if command:
        # Kubernetes: `command` replaces the image's ENTRYPOINT and drops its CMD.
        argv += ["--entrypoint", json.dumps(command)]
    return [*argv, container["image"], *args]


def names_in(state_dirs: list[Path]) -> list[str]:
    return [(d / NAME_FILE).read_text() for d in state_dirs if (d / NAME_FILE).is_file()]


def remove_argv(names: list[str]) -> list[str]:
    """Stop and remove containers at once (SIGKILL), whatever their client is doing."""
    return ["podman", "rm", "--force", "--ignore", "--time", "0", *names]


async def remove(state_dirs: list[Path]) -> None:
    names = names_in(state_dirs)
    if names:
        await _podman(*remove_argv(names)[1:])
