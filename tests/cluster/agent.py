"""The node agent: our stand-in for the kubelet.

It registers one Node (capacity from the machine or the command line) so the real scheduler
binds pods to it, renews the node's Lease, runs each bound pod's containers through
`shim.py` as local processes (each in its own session and, as root, its own mount namespace)
or, with the podman runtime, as containers of their images (`podman.py`),
reports Pending → Running → Succeeded/Failed with exit codes, reasons and termination messages,
honours deletion with the grace period (SIGTERM, then SIGKILL) and `restartPolicy`, and serves
the kubelet's log endpoint so `kubectl logs [-f]` works through the API server. Container state
lives on disk, so a restarted agent adopts the containers that are still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from . import podman
from .client import Api, ApiError
from .pods import ConfigError, Launch, PodContext, pod_ip

Obj = dict[str, Any]
SHIM = Path(__file__).with_name("shim.py")
MESSAGE_LIMIT = 4096
TERMINAL = ("Succeeded", "Failed")
VERSION = "v1.35.4"
# The API server (or etcd behind it) is away for a moment: wait and try again, as kubelets do.
TRANSIENT = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


def transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT) or (isinstance(exc, ApiError) and exc.status >= 500)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@dataclass
class Container:
    spec: Obj
    init: bool
    restarts: int = 0
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    shim: subprocess.Popen[bytes] | None = None
    shim_pid: int = 0
    done: bool = False

    @property
    def name(self) -> str:
        return str(self.spec["name"])


@dataclass
class PodRun:
    pod: Obj
    sandbox: Path
    containers: list[Container]
    deleting: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    start_time: str = field(default_factory=now)

    @property
    def uid(self) -> str:
        return str(self.pod["metadata"]["uid"])

    @property
    def path(self) -> str:
        meta = self.pod["metadata"]
        return f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"

    def state_dir(self, c: Container) -> Path:
        return self.sandbox / "containers" / c.name / str(c.restarts)

    def signal(self, sig: int) -> None:
        for c in self.containers:
            if c.shim_pid and _alive(c.shim_pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(c.shim_pid, sig)


@dataclass
class NodeAgent:
    api: Api
    workdir: Path
    node_name: str
    api_host: str
    api_port: int
    ca_file: str
    cpu: str
    memory: str
    max_pods: int
    log_port: int
    restart_backoff: float = 1.0
    runtime: str = "process"
    mount_namespaces: bool = field(default_factory=lambda: os.geteuid() == 0)
    pods: dict[str, PodRun] = field(default_factory=dict)
    # Terminations in flight: asyncio keeps only weak references to tasks.
    stopping: set[asyncio.Task[None]] = field(default_factory=set)

    # --- node ----------------------------------------------------------------------------

    async def register(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            },
        }
        with contextlib.suppress(ApiError):
            await self.api.create("/api/v1/nodes", node)
        await self.post_status()

    async def post_status(self) -> None:
        resources = {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": str(self.max_pods),
            "ephemeral-storage": "100Gi",
        }
        stamp = now()
        await self.api.merge_patch(
            f"/api/v1/nodes/{self.node_name}/status",
            {
                "status": {
                    "capacity": resources,
                    "allocatable": resources,
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "node agent is posting ready status",
                            "lastHeartbeatTime": stamp,
                            "lastTransitionTime": stamp,
                        },
                        *(
                            {
                                "type": t,
                                "status": "False",
                                "reason": f"KubeletHas{r}",
                                "lastHeartbeatTime": stamp,
                                "lastTransitionTime": stamp,
                            }
                            for t, r in (
                                ("MemoryPressure", "SufficientMemory"),
                                ("DiskPressure", "NoDiskPressure"),
                                ("PIDPressure", "SufficientPID"),
                            )
                        ),
                    ],
                    "addresses": [
                        {"type": "InternalIP", "address": "127.0.0.1"},
                        {"type": "Hostname", "address": self.node_name},
                    ],
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": self.log_port}},
                    "nodeInfo": {
                        "machineID": "stagegate",
                        "systemUUID": "stagegate",
                        "bootID": "stagegate",
                        "kernelVersion": os.uname().release,
                        "osImage": "stagegate node agent",
                        "containerRuntimeVersion": f"{self.runtime}://1",
                        "kubeletVersion": VERSION,
                        "kubeProxyVersion": "",
                        "operatingSystem": "linux",
                        "architecture": "amd64",
                    },
                }
            },
        )

    async def heartbeat(self) -> None:
        lease_path = (
            f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}"
        )
        beats = 0
        while True:
            try:
                try:
                    await self.api.merge_patch(
                        lease_path,
                        {"spec": {"holderIdentity": self.node_name, "renewTime": micro_now()}},
                    )
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                    await self.api.create(
                        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                        {
                            "metadata": {"name": self.node_name},
                            "spec": {
                                "holderIdentity": self.node_name,
                                "leaseDurationSeconds": 40,
                                "renewTime": micro_now(),
                            },
                        },
                    )
                beats += 1
                if beats % 6 == 0:
                    await self.post_status()
            except Exception as exc:
                print(f"node agent: heartbeat: {exc}", file=sys.stderr, flush=True)
            await asyncio.sleep(5)

    # --- pods ----------------------------------------------------------------------------

    async def watch_pods(self) -> None:
        async for kind, pod in self.api.watch(
            "/api/v1/pods", fieldSelector=f"spec.nodeName={self.node_name}"
        ):
            uid = pod["metadata"]["uid"]
            run = self.pods.get(uid)
            if kind == "DELETED":
                if run is not None:
                    run.deleting.set()
                    await self._kill(run)
                    self.pods.pop(uid, None)
                continue
            if run is None:
                meta = pod["metadata"]
                sandbox = self.workdir / "pods" / f"{meta['namespace']}_{meta['name']}_{uid}"
                specs = [
                    *((c, True) for c in pod["spec"].get("initContainers") or []),
                    *((c, False) for c in pod["spec"]["containers"]),
                ]
                run = PodRun(pod, sandbox, [Container(c, init) for c, init in specs])
                for c in run.containers:
                    done = [
                        int(p.name)
                        for p in (sandbox / "containers" / c.name).glob("*")
                        if p.name.isdigit()
                    ]
                    c.restarts = max(done, default=0)
                self.pods[uid] = run
                if not pod["metadata"].get("deletionTimestamp"):
                    run.task = asyncio.create_task(self._run_pod(run))
            else:
                run.pod = pod
            if pod["metadata"].get("deletionTimestamp") and not run.deleting.is_set():
                # Adopt what an earlier agent started, so its processes are stopped too.
                for c in run.containers:
                    self._adopt(c, run.state_dir(c))
                run.deleting.set()
                task = asyncio.create_task(self._terminate(run))
                self.stopping.add(task)
                task.add_done_callback(self.stopping.discard)

    def find(self, namespace: str, name: str) -> PodRun | None:
        for run in self.pods.values():
            meta = run.pod["metadata"]
            if meta["namespace"] == namespace and meta["name"] == name:
                return run
        return None

    async def _run_pod(self, run: PodRun) -> None:
        try:
            if (run.pod.get("status") or {}).get("phase") in TERMINAL:
                return  # a restarted agent does not rerun finished pods
            if run.deleting.is_set():
                return
            run.sandbox.mkdir(parents=True, exist_ok=True)
            ctx = PodContext(
                self.api,
                run.pod,
                run.sandbox,
                self.node_name,
                self.api_host,
                self.api_port,
                self.ca_file,
                self.mount_namespaces,
                self.runtime,
            )
            while not run.deleting.is_set():
                try:
                    await ctx.prepare_volumes()
                    break
                except ConfigError as exc:
                    await self._waiting(run, exc.reason, str(exc))
                except Exception as exc:
                    if not transient(exc):
                        raise
                    await asyncio.sleep(1)
            for c in run.containers:
                if c.init and not await self._run_container(run, ctx, c):
                    await self.write_status(run, "Failed")
                    return
            results = await asyncio.gather(
                *(self._run_container(run, ctx, c) for c in run.containers if not c.init)
            )
            if not run.deleting.is_set():
                await self.write_status(run, "Succeeded" if all(results) else "Failed")
        except Exception as exc:  # one pod's failure must not stop the agent
            if not (isinstance(exc, ApiError) and exc.status == 404):
                print(f"node agent: pod {run.path}: {exc!r}", file=sys.stderr, flush=True)

    async def _waiting(self, run: PodRun, reason: str, message: str) -> None:
        for c in run.containers:
            if not c.done:
                c.state = {"waiting": {"reason": reason, "message": message}}
        await self.write_status(run, None)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.deleting.wait(), 2.0)

    async def _run_container(self, run: PodRun, ctx: PodContext, c: Container) -> bool:
        """Run (and restart, per restartPolicy) one container; True when it ended with 0."""
        policy = run.pod["spec"].get("restartPolicy", "Always")
        if c.init and policy == "Always":
            policy = "OnFailure"
        backoff = self.restart_backoff
        while not run.deleting.is_set():
            state = run.state_dir(c)
            if not (state / "exit").exists() and not self._adopt(c, state):
                state.mkdir(parents=True, exist_ok=True)
                try:
                    launch = await ctx.launch(c.spec, state)
                except ConfigError as exc:
                    await self._waiting(run, exc.reason, str(exc))
                    continue
                except Exception as exc:
                    if not transient(exc):
                        raise
                    await asyncio.sleep(1)
                    continue
                self._start(c, state, launch)
            started = (state / "started").read_text() if (state / "started").exists() else now()
            c.state = {"running": {"startedAt": started}}
            await self.write_status(run, None)
            result = await self._wait_exit(c, state)
            code = int(result["exitCode"])
            terminated: Obj = {
                "exitCode": code,
                "reason": result["reason"],
                "startedAt": started,
                "finishedAt": now(),
                "containerID": f"{self.runtime}://{run.uid}/{c.name}/{c.restarts}",
            }
            if code > 128:
                terminated["signal"] = code - 128
            message = self._message(c, state, code)
            if message:
                terminated["message"] = message
            c.state = {"terminated": terminated}
            restart = not run.deleting.is_set() and (
                policy == "Always" or (policy == "OnFailure" and code != 0)
            )
            if not restart:
                c.done = True
                await self.write_status(run, None)
                return code == 0
            c.last_state = {"terminated": terminated}
            c.restarts += 1
            c.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {backoff:g}s restarting failed "
                    f"container {c.name} in pod "
                    f"{run.pod['metadata']['name']}",
                }
            }
            await self.write_status(run, None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.deleting.wait(), backoff)
            backoff = min(backoff * 2, 30)
        return False

    def _adopt(self, c: Container, state: Path) -> bool:
        """A container started by an earlier agent that is still running: watch it again."""
        with contextlib.suppress(OSError, ValueError):
            pid = int((state / "shim.pid").read_text())
            if _alive(pid):
                c.shim_pid = pid
                return True
        return False

    def _start(self, c: Container, state: Path, launch: Launch) -> None:
        (state / "started").write_text(now())
        c.shim = subprocess.Popen(
            [
                sys.executable,
                "-S",
                str(SHIM),
                str(state),
                json.dumps(launch.mounts),
                "--",
                *launch.argv,
            ],
            env=launch.env,
            cwd=launch.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        c.shim_pid = c.shim.pid
        (state / "shim.pid").write_text(str(c.shim.pid))

    async def _wait_exit(self, c: Container, state: Path) -> Obj:
        exit_file = state / "exit"
        while True:
            if c.shim is not None:
                c.shim.poll()  # reap our own shim
            if exit_file.exists():
                with contextlib.suppress(ValueError, OSError):
                    return json.loads(exit_file.read_text())  # type: ignore[no-any-return]
            elif not _alive(c.shim_pid):
                # The shim itself was killed (SIGKILL to the group): so was the container.
                await asyncio.sleep(0.1)
                if not exit_file.exists():
                    return {"exitCode": 137, "reason": "Error"}
            await asyncio.sleep(0.2)

    def _message(self, c: Container, state: Path, code: int) -> str:
        message = ""
        with contextlib.suppress(OSError):
            message = (
                (state / "termination-log").read_bytes()[:MESSAGE_LIMIT].decode(errors="replace")
            )
        if (
            not message
            and code != 0
            and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        ):
            with contextlib.suppress(OSError):
                lines = (state / "log").read_bytes().decode(errors="replace").splitlines()
                message = "\n".join(lines[-80:])[-2048:]
        return message

    async def _kill(self, run: PodRun) -> None:
        run.signal(signal.SIGKILL)
        if self.runtime == "podman":
            # conmon keeps the container alive without its client: stop it through podman.
            await podman.remove([run.state_dir(c) for c in run.containers])

    async def _terminate(self, run: PodRun) -> None:
        grace = run.pod["metadata"].get("deletionGracePeriodSeconds") or 0
        run.signal(signal.SIGTERM)
        deadline = asyncio.get_running_loop().time() + grace
        while any(c.shim_pid and _alive(c.shim_pid) for c in run.containers):
            if asyncio.get_running_loop().time() > deadline:
                await self._kill(run)
            await asyncio.sleep(0.1)
            for c in run.containers:
                if c.shim is not None:
                    c.shim.poll()
        if run.task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(run.task), 5)
        with contextlib.suppress(ApiError):
            await self.api.delete(
                run.path, {"gracePeriodSeconds": 0, "preconditions": {"uid": run.uid}}
            )
        self.pods.pop(run.uid, None)

    # --- status --------------------------------------------------------------------------

    async def write_status(self, run: PodRun, phase: str | None) -> None:
        old = run.pod.get("status") or {}
        mains = [c for c in run.containers if not c.init]
        if phase is None:
            if all(c.done for c in mains):
                codes = [c.state.get("terminated", {}).get("exitCode", 1) for c in mains]
                phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
            elif any("running" in c.state or c.restarts for c in mains):
                phase = "Running"
            else:
                phase = "Pending"
        if old.get("phase") in TERMINAL:
            phase = old["phase"]  # terminal phases never change
        inits = [c for c in run.containers if c.init]
        init_done = all(
            c.done and c.state.get("terminated", {}).get("exitCode") == 0 for c in inits
        )
        ready = bool(mains) and all("running" in c.state for c in mains) and phase == "Running"
        stamp = now()

        def condition(kind: str, ok: bool, reason: str) -> Obj:
            prev = next((c for c in old.get("conditions") or [] if c["type"] == kind), None)
            status = "True" if ok else "False"
            cond: Obj = {
                "type": kind,
                "status": status,
                "lastProbeTime": None,
                "lastTransitionTime": prev["lastTransitionTime"]
                if prev and prev["status"] == status
                else stamp,
            }
            if not ok:
                cond["reason"] = reason
            return cond

        def statuses(cs: list[Container]) -> list[Obj]:
            return [
                {
                    "name": c.name,
                    "image": c.spec.get("image", ""),
                    "imageID": f"{self.runtime}://{c.spec.get('image', '')}",
                    "containerID": f"{self.runtime}://{run.uid}/{c.name}/{c.restarts}",
                    "ready": "running" in c.state,
                    "started": "running" in c.state,
                    "restartCount": c.restarts,
                    "state": c.state,
                    "lastState": c.last_state,
                }
                for c in cs
            ]

        not_ready = "PodCompleted" if phase in TERMINAL else "ContainersNotReady"
        status: Obj = {
            "phase": phase,
            "conditions": [
                condition("PodReadyToStartContainers", True, ""),
                condition("Initialized", init_done, "ContainersNotInitialized"),
                condition("Ready", ready, not_ready),
                condition("ContainersReady", ready, not_ready),
                condition("PodScheduled", True, ""),
            ],
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": pod_ip(run.pod),
            "podIPs": [{"ip": pod_ip(run.pod)}],
            "startTime": old.get("startTime") or run.start_time,
            "containerStatuses": statuses(mains),
        }
        if inits:
            status["initContainerStatuses"] = statuses(inits)
        deadline = asyncio.get_running_loop().time() + 600
        while True:
            try:
                run.pod = await self.api.merge_patch(run.path + "/status", {"status": status})
                return
            except ApiError as exc:
                if exc.status in (404, 409, 422):
                    return
                if not transient(exc) or asyncio.get_running_loop().time() > deadline:
                    raise
            except TRANSIENT:
                if asyncio.get_running_loop().time() > deadline:
                    raise
            await asyncio.sleep(0.5)
