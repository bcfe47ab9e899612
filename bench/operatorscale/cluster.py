"""The bench's cluster: the harness's real control plane with an audit log, and a node agent
that logs in as a user of its own (its aiohttp User-Agent is the operator's)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.cluster import NODE, LocalCluster
from tests.cluster.controlplane import ControlPlane, token

ROOT = Path(__file__).resolve().parents[2]
NODE_USER = "bench-node-agent"
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "users": ["admin"]}, {"level": "None"}],
}
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


class AuditedControlPlane(ControlPlane):
    """The harness's control plane, plus an audit log and a token for the node agent."""

    @property
    def audit_log(self) -> Path:
        return self.workdir / "logs" / "audit.jsonl"

    def start_apiserver(self) -> None:
        tokens = self.workdir / "tokens.csv"
        if NODE_USER not in tokens.read_text():
            with open(tokens, "a") as f:
                f.write(f'{token(NODE_USER)},{NODE_USER},uid-{NODE_USER},"system:masters"\n')
        (self.workdir / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))
        super().start_apiserver()

    def _spawn(self, name: str, argv: list[str]) -> None:
        if name == "kube-apiserver":
            argv = [
                *argv,
                "--audit-policy-file", str(self.workdir / "audit-policy.yaml"),
                "--audit-log-path", str(self.audit_log),
                "--audit-log-format", "json",
                "--audit-log-maxsize", "0",
            ]  # fmt: skip
        super()._spawn(name, argv)


class BenchCluster(LocalCluster):
    def __init__(self, workdir: Path, **kwargs: Any) -> None:
        super().__init__(workdir, **kwargs)
        self.audited = AuditedControlPlane(workdir, self.plane.bin_dir)
        self.plane = self.audited

    def start_agent(self) -> None:
        """LocalCluster.start_agent, logged in as NODE_USER instead of admin."""
        assert self.plane.pki is not None
        with open(self.workdir / "logs" / "node-agent.log", "ab") as log:
            self.agent = subprocess.Popen(
                [sys.executable, "-m", "tests.cluster", "agent", "--server", self.server,
                 "--token", token(NODE_USER), "--pki", str(self.plane.pki.dir),
                 "--workdir", str(self.workdir / "node"), "--node-name", NODE,
                 "--log-port", str(self.log_port), "--cpu", self.cpu, "--memory", self.memory,
                 "--pods", str(self.max_pods)],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)  # fmt: skip
