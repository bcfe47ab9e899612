"""The control plane plus the node agent, started and stopped as one cluster."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import podman
from .controlplane import REPO, ControlPlane, control_plane_binaries, free_port, token

NODE = "stagegate-node"


class LocalCluster:
    def __init__(
        self,
        workdir: Path,
        *,
        cpu: str,
        memory: str,
        max_pods: int = 110,
        bin_dir: Path | None = None,
        runtime: str = "process",
    ) -> None:
        self.workdir = workdir
        self.runtime = runtime
        self.cpu, self.memory, self.max_pods = cpu, memory, max_pods
        self.plane = ControlPlane(workdir, bin_dir or control_plane_binaries())
        self.agent: subprocess.Popen[bytes] | None = None
        self.log_port = free_port()

    @property
    def server(self) -> str:
        return self.plane.server

    @property
    def kubeconfig(self) -> Path:
        return self.plane.admin_kubeconfig

    def start(self, timeout: float = 90) -> None:
        self.plane.start()
        self.start_agent()
        self.wait(self._schedulable, timeout, "the node to be Ready and schedulable")
        self.wait(
            lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default"),
            timeout,
            "the default ServiceAccount",
        )

    def start_agent(self) -> None:
        assert self.plane.pki is not None
        log = open(self.workdir / "logs" / "node-agent.log", "ab")  # noqa: SIM115
        self.agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.cluster",
                "agent",
                "--server",
                self.server,
                "--token",
                token("admin"),
                "--pki",
                str(self.plane.pki.dir),
                "--workdir",
                str(self.workdir / "node"),
                "--node-name",
                NODE,
                "--log-port",
                str(self.log_port),
                "--cpu",
                self.cpu,
                "--memory",
                self.memory,
                "--pods",
                str(self.max_pods),
                "--runtime",
                self.runtime,
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def stop_agent(self, sig: int = signal.SIGTERM) -> None:
        if self.agent is None or self.agent.poll() is not None:
            return
        # Only the agent's own process: its containers live in sessions of their own.
        self.agent.send_signal(sig)
        try:
            self.agent.wait(15)
        except subprocess.TimeoutExpired:
            self.agent.kill()
            self.agent.wait(5)

    def processes(self) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
        yield from self.plane.procs.items()
        if self.agent is not None:
            yield "node-agent", self.agent

    def stop(self) -> None:
        self.stop_agent()
        self.plane.stop()
        self.kill_pods()

    def kill_pods(self) -> None:
        """Every container the agent started (they outlive the agent by design)."""
        states = list((self.workdir / "node").glob("pods/*/containers/*/*"))
        for state in states:
            with contextlib.suppress(ValueError, OSError, ProcessLookupError):
                os.killpg(int((state / "shim.pid").read_text()), signal.SIGKILL)
        names = podman.names_in(states)
        if names:
            subprocess.run(podman.remove_argv(names), env=podman.env(), capture_output=True,
                           timeout=120, check=False)  # fmt: skip

    # --- readiness -----------------------------------------------------------------------

    def _get(self, path: str) -> Any:
        assert self.plane.pki is not None
        ctx = ssl.create_default_context(cafile=str(self.plane.pki.ca))
        req = urllib.request.Request(
            self.server + path, headers={"Authorization": f"Bearer {token('admin')}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def _schedulable(self) -> bool:
        node = self._get(f"/api/v1/nodes/{NODE}")
        if not node:
            return False
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in node.get("status", {}).get("conditions", [])
        )
        return ready and not node.get("spec", {}).get("taints")

    def wait(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.processes():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited {proc.returncode} while waiting for "
                        f"{what}:\n{self.plane.log_tail(name)}"
                    )
            if predicate():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
