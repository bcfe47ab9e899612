"""A local kubelet (and scheduler): runs each Pod's containers as subprocesses.

The image is ignored: a container's `command` + `args` run in the current Python environment
(the virtualenv's bin directory first on PATH, so `python` and `stagegate` resolve there), in a
new session so that deletion can signal the whole process group: SIGTERM, then SIGKILL after the
grace period. stdout and stderr go to a per-container log file, which is what `kubectl logs`
reads. The container's `terminationMessagePath` is remapped to a file in the pod's sandbox (the
literal path is substituted in command, args and env values, and exported as
`KUBE_TERMINATION_MESSAGE_PATH`); at most 4 KiB of it becomes the terminated state's message.
Everything is asyncio: no call here blocks the event loop on a process.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api import Api
from .errors import ApiError
from .store import Event
from .util import rfc3339

Obj = dict[str, Any]
PODS = ("", "pods")
NODE_NAME = "stagegate-emulator"
MESSAGE_LIMIT = 4096
PASS_THROUGH_ENV = ("LANG", "LC_ALL", "TZ", "PYTHONPATH", "TMPDIR", "SSL_CERT_FILE",
                    "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE", "COVERAGE_PROCESS_START")


class ConfigError(Exception):
    """The container's configuration cannot be resolved yet (CreateContainerConfigError)."""


@dataclass
class ContainerRun:
    name: str
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    restarts: int = 0
    proc: asyncio.subprocess.Process | None = None
    log_files: list[Path] = field(default_factory=list)
    done: bool = False


@dataclass
class PodRun:
    uid: str
    namespace: str
    name: str
    sandbox: Path
    containers: dict[str, ContainerRun] = field(default_factory=dict)
    init_containers: dict[str, ContainerRun] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    deleting: asyncio.Event = field(default_factory=asyncio.Event)
    finished: bool = False
    start_time: str = ""


class Kubelet:
    def __init__(self, api: Api, workdir: Path, *, server_host: str = "127.0.0.1",
                 server_port: int = 0, restart_backoff: float = 1.0,
                 extra_env: dict[str, str] | None = None) -> None:
        self.api = api
        self.workdir = workdir
        self.server_host = server_host
        self.server_port = server_port
        self.restart_backoff = restart_backoff
        self.extra_env = dict(extra_env or {})
        self.pods: dict[str, PodRun] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self.api.store.listeners.append(self._on_event)
        nodes = self.api.type(("", "nodes"))
        if self.api.store.get(nodes.key, "", NODE_NAME) is None:
            node = self.api.create(nodes, "v1", None, {
                "metadata": {"name": NODE_NAME,
                             "labels": {"kubernetes.io/hostname": NODE_NAME,
                                        "kubernetes.io/os": "linux"}}})
            node["status"] = {
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "kubelet is posting ready status",
                                "lastHeartbeatTime": rfc3339(),
                                "lastTransitionTime": rfc3339()}],
                "nodeInfo": {"kubeletVersion": "v1.35.0", "operatingSystem": "linux",
                             "architecture": "amd64"},
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            }
            self.api.write_status(nodes.key, node)
        for pod in self.api.store.list(PODS):
            self._spawn(self._admit(pod))

    async def stop(self) -> None:
        if self._on_event in self.api.store.listeners:
            self.api.store.listeners.remove(self._on_event)
        for run in self.pods.values():
            for c in [*run.init_containers.values(), *run.containers.values()]:
                _signal(c.proc, signal.SIGKILL)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        for run in self.pods.values():
            for c in [*run.init_containers.values(), *run.containers.values()]:
                if c.proc is not None and c.proc.returncode is None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(c.proc.wait(), 5)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_event(self, event: Event) -> None:
        if event.key != PODS:
            return
        uid = event.obj["metadata"]["uid"]
        if event.type == "DELETED":
            run = self.pods.get(uid)
            if run is not None:
                run.deleting.set()
                for c in [*run.init_containers.values(), *run.containers.values()]:
                    _signal(c.proc, signal.SIGKILL)
            return
        if uid not in self.pods:
            self._spawn(self._admit(event.obj))
        elif event.obj["metadata"].get("deletionTimestamp"):
            run = self.pods[uid]
            if not run.deleting.is_set():
                run.deleting.set()
                self._spawn(self._terminate(run, event.obj))

    # --- pod lifecycle -------------------------------------------------------------------

    async def _admit(self, pod: Obj) -> None:
        meta = pod["metadata"]
        if meta["uid"] in self.pods:
            return
        sandbox = self.workdir / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"
        sandbox.mkdir(parents=True, exist_ok=True)
        run = PodRun(meta["uid"], meta["namespace"], meta["name"], sandbox)
        spec = pod["spec"]
        run.init_containers = {c["name"]: ContainerRun(c["name"])
                               for c in spec.get("initContainers") or []}
        run.containers = {c["name"]: ContainerRun(c["name"]) for c in spec["containers"]}
        self.pods[meta["uid"]] = run
        if meta.get("deletionTimestamp"):
            run.deleting.set()
            self._spawn(self._terminate(run, pod))
            return
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            run.finished = True  # a restarted emulator does not rerun finished pods
            return
        run.task = asyncio.current_task()
        try:
            await self._run_pod(run, pod)
        except ApiError as exc:
            if exc.code != 404:
                raise

    async def _run_pod(self, run: PodRun, pod: Obj) -> None:
        rt = self.api.type(PODS)
        # Scheduling: this is the only node.
        if not pod["spec"].get("nodeName"):
            pod = self.api.patch(rt, "v1", run.namespace, run.name,
                                 "application/merge-patch+json",
                                 {"spec": {"nodeName": NODE_NAME}})
        run.start_time = rfc3339()
        self._write_status(run, pod, "Pending")
        spec = pod["spec"]
        for c in spec.get("initContainers") or []:
            state = run.init_containers[c["name"]]
            ok = await self._run_container(run, pod, c, state, init=True)
            if not ok or run.deleting.is_set():
                if not run.deleting.is_set():
                    for main in run.containers.values():
                        main.state = {"waiting": {"reason": "PodInitializing"}}
                    self._write_status(run, pod, "Failed")
                run.finished = True
                return
        results = await asyncio.gather(*(
            self._run_container(run, pod, c, run.containers[c["name"]], init=False)
            for c in spec["containers"]))
        run.finished = True
        if not run.deleting.is_set():
            self._write_status(run, pod, "Succeeded" if all(results) else "Failed")

    async def _run_container(self, run: PodRun, pod: Obj, spec: Obj, state: ContainerRun, *,
                             init: bool) -> bool:
        """Run (and restart, per restartPolicy) one container; True when it ended with 0."""
        policy = pod["spec"].get("restartPolicy", "Always")
        if init and policy == "Always":
            policy = "OnFailure"
        while True:
            if run.deleting.is_set():
                return False
            try:
                argv, env, cwd, message_file = self._prepare(run, pod, spec, state)
            except ConfigError as exc:
                state.state = {"waiting": {"reason": "CreateContainerConfigError",
                                           "message": str(exc)}}
                self._write_status(run, pod, "Pending")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(run.deleting.wait(), 1.0)
                continue
            exit_code, reason, message, started = await self._exec(
                run, pod, spec, state, argv, env, cwd, message_file)
            terminated: Obj = {"exitCode": exit_code, "reason": reason,
                               "startedAt": started or rfc3339(), "finishedAt": rfc3339(),
                               "containerID": f"emulator://{run.uid}/{spec['name']}"}
            if exit_code > 128 and reason == "Error":
                terminated["signal"] = exit_code - 128
            if message:
                terminated["message"] = message
            state.state = {"terminated": terminated}
            state.proc = None
            restart = not run.deleting.is_set() and (
                policy == "Always" or (policy == "OnFailure" and exit_code != 0))
            if not restart:
                state.done = True
                self._write_status(run, pod, None)
                return exit_code == 0
            state.last_state = {"terminated": terminated}
            state.restarts += 1
            state.state = {"waiting": {"reason": "CrashLoopBackOff",
                                       "message": f"back-off restarting failed container "
                                       f"{spec['name']} in pod {run.name}"}}
            self._write_status(run, pod, None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.deleting.wait(), self.restart_backoff)

    def _prepare(self, run: PodRun, pod: Obj, spec: Obj, state: ContainerRun
                 ) -> tuple[list[str], dict[str, str], str, Path]:
        cdir = run.sandbox / spec["name"]
        cdir.mkdir(parents=True, exist_ok=True)
        message_file = cdir / "termination-log"
        message_file.write_bytes(b"")
        message_path = spec.get("terminationMessagePath") or "/dev/termination-log"
        bin_dir = os.path.dirname(sys.executable)
        env: dict[str, str] = {k: os.environ[k] for k in PASS_THROUGH_ENV if k in os.environ}
        env.update({
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(run.sandbox / "home"),
            "HOSTNAME": run.name,
            "KUBERNETES_SERVICE_HOST": self.server_host,
            "KUBERNETES_SERVICE_PORT": str(self.server_port),
            "KUBE_TERMINATION_MESSAGE_PATH": str(message_file),
        })
        env.update(self.extra_env)
        (run.sandbox / "home").mkdir(exist_ok=True)
        for source in spec.get("envFrom") or []:
            env.update(self._env_from(run.namespace, source))
        for var in spec.get("env") or []:
            if "valueFrom" in var:
                value = self._value_from(run, pod, spec, var["valueFrom"])
                if value is None:
                    continue
            else:
                value = _expand(var.get("value", ""), env)
            env[var["name"]] = value.replace(message_path, str(message_file))

        def expand(items: list[str]) -> list[str]:
            return [_expand(a, env).replace(message_path, str(message_file)) for a in items]

        argv = expand(spec.get("command") or []) + expand(spec.get("args") or [])
        cwd = spec.get("workingDir") or str(run.sandbox / "home")
        return argv, env, cwd, message_file

    def _lookup(self, kind: str, namespace: str, name: str) -> Obj | None:
        return self.api.store.get(("", kind), namespace, name)

    def _env_from(self, namespace: str, source: Obj) -> dict[str, str]:
        prefix = source.get("prefix", "")
        for key, kind in (("configMapRef", "configmaps"), ("secretRef", "secrets")):
            ref = source.get(key)
            if ref is None:
                continue
            obj = self._lookup(kind, namespace, ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    return {}
                singular = "configmap" if kind == "configmaps" else "secret"
                raise ConfigError(f'{singular} "{ref.get("name")}" not found')
            data = obj.get("data") or {}
            if kind == "secrets":
                return {prefix + k: base64.b64decode(v).decode() for k, v in data.items()}
            return {prefix + k: v for k, v in data.items()}
        return {}

    def _value_from(self, run: PodRun, pod: Obj, spec: Obj, source: Obj) -> str | None:
        for key, kind in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
            ref = source.get(key)
            if ref is None:
                continue
            singular = "configmap" if kind == "configmaps" else "secret"
            obj = self._lookup(kind, run.namespace, ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    return None
                raise ConfigError(f'{singular} "{ref.get("name")}" not found')
            data = obj.get("data") or {}
            if ref["key"] not in data:
                if ref.get("optional"):
                    return None
                raise ConfigError(f"couldn't find key {ref['key']} in {singular.capitalize()} "
                                  f"{run.namespace}/{ref.get('name')}")
            value = data[ref["key"]]
            return base64.b64decode(value).decode() if kind == "secrets" else value
        if "fieldRef" in source:
            return _field_ref(pod, source["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            limits: Obj = next((c.get("resources", {}).get("limits", {})
                           for c in pod["spec"]["containers"]
                           if c["name"] == ref.get("containerName", spec["name"])), {})
            resource = ref["resource"].split(".", 1)[1] if "." in ref["resource"] else \
                ref["resource"]
            return str(limits.get(resource, "0"))
        return None

    async def _exec(self, run: PodRun, pod: Obj, spec: Obj, state: ContainerRun,
                    argv: list[str], env: dict[str, str], cwd: str, message_file: Path
                    ) -> tuple[int, str, str, str]:
        if not argv:
            return 128, "StartError", ("the emulator runs no images: the container needs a "
                                       "command"), ""
        exe = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env["PATH"])
        if exe is None:
            return 127, "StartError", (f'failed to create containerd task: exec: "{argv[0]}": '
                                       "executable file not found in $PATH"), ""
        try:
            os.makedirs(cwd, exist_ok=True)
        except OSError as exc:
            return 128, "StartError", f"cannot create working directory {cwd}: {exc}", ""
        log_file = run.sandbox / spec["name"] / f"{state.restarts}.log"
        state.log_files.append(log_file)
        with open(log_file, "wb") as out:
            try:
                proc = await asyncio.create_subprocess_exec(
                    exe, *argv[1:], env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
                    stdout=out, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                return 128, "StartError", f"exec {argv[0]}: {exc}", ""
        started = rfc3339()
        state.proc = proc
        state.state = {"running": {"startedAt": started}}
        self._write_status(run, pod, None)
        code = await proc.wait()
        exit_code = code if code >= 0 else 128 - code
        reason = "Completed" if exit_code == 0 else "Error"
        message = message_file.read_bytes()[:MESSAGE_LIMIT].decode(errors="replace")
        if not message and exit_code != 0 and \
                spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            lines = log_file.read_bytes().decode(errors="replace").splitlines()[-80:]
            message = "\n".join(lines)[-2048:]
        return exit_code, reason, message, started

    async def _terminate(self, run: PodRun, pod: Obj) -> None:
        grace = pod["metadata"].get("deletionGracePeriodSeconds") or 0
        procs = [c.proc for c in [*run.init_containers.values(), *run.containers.values()]
                 if c.proc is not None and c.proc.returncode is None]
        for proc in procs:
            _signal(proc, signal.SIGTERM)
        if procs:
            waits = asyncio.gather(*(p.wait() for p in procs))
            try:
                await asyncio.wait_for(waits, grace)
            except TimeoutError:
                for proc in procs:
                    _signal(proc, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 10)
        if run.task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(run.task), 5)
        rt = self.api.type(PODS)
        with contextlib.suppress(ApiError):
            self.api.delete(rt, "v1", run.namespace, run.name, {"gracePeriodSeconds": 0})

    # --- status --------------------------------------------------------------------------

    def _write_status(self, run: PodRun, pod: Obj, phase: str | None) -> None:
        current = self.api.store.get(PODS, run.namespace, run.name)
        if current is None or current["metadata"]["uid"] != run.uid:
            return
        old_status = current.get("status") or {}
        spec = current["spec"]
        mains = list(run.containers.values())
        if phase is None:
            if all(c.done for c in mains):
                codes = [c.state.get("terminated", {}).get("exitCode", 1) for c in mains]
                phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
            elif any("running" in c.state for c in mains) or any(c.restarts for c in mains):
                phase = "Running"
            else:
                phase = old_status.get("phase", "Pending")
        if old_status.get("phase") in ("Succeeded", "Failed"):
            phase = old_status["phase"]  # terminal phases never change
        init_done = all(c.done and "terminated" in c.state and
                        c.state["terminated"]["exitCode"] == 0
                        for c in run.init_containers.values())
        ready = all("running" in c.state for c in mains) and bool(mains)
        stamp = rfc3339()

        def condition(kind: str, ok: bool, reason: str | None = None) -> Obj:
            prev = next((c for c in old_status.get("conditions") or [] if c["type"] == kind),
                        None)
            status = "True" if ok else "False"
            cond = {"type": kind, "status": status, "lastProbeTime": None,
                    "lastTransitionTime": prev["lastTransitionTime"]
                    if prev and prev["status"] == status else stamp}
            if reason and not ok:
                cond["reason"] = reason
            return cond

        def statuses(runs: dict[str, ContainerRun], specs: list[Obj]) -> list[Obj]:
            out = []
            for c in specs:
                r = runs[c["name"]]
                entry: Obj = {
                    "name": c["name"], "image": c.get("image", ""),
                    "imageID": f"emulator://{c.get('image', '')}",
                    "ready": "running" in r.state, "restartCount": r.restarts,
                    "started": "running" in r.state, "state": r.state,
                    "lastState": r.last_state,
                }
                if "terminated" in r.state or "running" in r.state:
                    entry["containerID"] = f"emulator://{run.uid}/{c['name']}"
                out.append(entry)
            return out

        status: Obj = {
            "phase": phase,
            "conditions": [
                condition("PodReadyToStartContainers", True),
                condition("Initialized", init_done, "ContainersNotInitialized"),
                condition("Ready", ready and phase == "Running",
                          "PodCompleted" if phase in ("Succeeded", "Failed")
                          else "ContainersNotReady"),
                condition("ContainersReady", ready and phase == "Running",
                          "PodCompleted" if phase in ("Succeeded", "Failed")
                          else "ContainersNotReady"),
                condition("PodScheduled", True),
            ],
            "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": old_status.get("startTime") or run.start_time or stamp,
            "qosClass": old_status.get("qosClass", "BestEffort"),
            "containerStatuses": statuses(run.containers, spec["containers"]),
        }
        if spec.get("initContainers"):
            status["initContainerStatuses"] = statuses(run.init_containers,
                                                       spec["initContainers"])
        updated = dict(current)
        updated["status"] = status
        with contextlib.suppress(ApiError):
            self.api.write_status(PODS, updated)

    # --- logs ----------------------------------------------------------------------------

    def _container(self, pod: Obj, container: str) -> ContainerRun | None:
        run = self.pods.get(pod["metadata"]["uid"])
        if run is None:
            return None
        return run.containers.get(container) or run.init_containers.get(container)

    def has_log(self, pod: Obj, container: str) -> bool:
        c = self._container(pod, container)
        return c is not None and bool(c.log_files)

    async def read_log(self, pod: Obj, container: str, *, follow: bool, tail: int | None,
                       stopping: asyncio.Event, previous: bool = False) -> AsyncIterator[bytes]:
        c = self._container(pod, container)
        if c is None or not c.log_files:
            return
        path = c.log_files[-2] if previous and len(c.log_files) > 1 else c.log_files[-1]
        with open(path, "rb") as f:
            data = f.read()
            if tail is not None:
                lines = data.splitlines(keepends=True)
                data = b"".join(lines[-tail:]) if tail > 0 else b""
            if data:
                yield data
            if not follow:
                return
            run = self.pods.get(pod["metadata"]["uid"])
            while not stopping.is_set():
                chunk = f.read()
                if chunk:
                    yield chunk
                    continue
                still_running = c.proc is not None and c.proc.returncode is None \
                    and c.log_files[-1] == path
                if not still_running or run is None or run.uid not in self.pods:
                    chunk = f.read()
                    if chunk:
                        yield chunk
                    return
                await asyncio.sleep(0.1)


def _signal(proc: asyncio.subprocess.Process | None, sig: int) -> None:
    if proc is None or proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: unknown references stay as written, `$$` escapes."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR.sub(sub, text)


def _field_ref(pod: Obj, path: str) -> str:
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    simple = {
        "metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName") or NODE_NAME,
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP") or "127.0.0.1",
        "status.hostIP": status.get("hostIP") or "127.0.0.1",
        "status.podIPs": status.get("podIP") or "127.0.0.1",
        "status.hostIPs": status.get("hostIP") or "127.0.0.1",
    }
    if path in ("metadata.labels", "metadata.annotations"):
        values = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
    return str(simple.get(path) or "")
