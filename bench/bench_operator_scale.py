"""The operator at scale: many TrainingJobs of many folds against a real local Kubernetes cluster.

    .venv/bin/python bench/bench_operator_scale.py                       # 100 TJs x 45 folds
    .venv/bin/python bench/bench_operator_scale.py --count 5 --folds 5   # a quick check

What runs (every process in its own process group, all stopped at exit, checked gone):
- a `tests.cluster.cluster.LocalCluster` in a fresh folder under /var/tmp: etcd, the real
  kube-apiserver, kube-controller-manager and kube-scheduler, plus the node agent that runs
  each pod's command as a local process (the venv's bin first on PATH). The node gets enough
  pod slots and CPU for every Job of the run (`max_pods` = count x (quick + full + 4) + 50).
  Two additions, made here only: the API server writes an audit log (policy below) so that
  requests can be told apart by client, and the node agent logs in as a user of its own
  (`bench-node-agent`, system:masters) because its aiohttp User-Agent is the operator's;
- the real operator, `stagegate-operator --kubeconfig <the cluster's admin kubeconfig>
  --trainer-command "<python> -S bench/stub_trainer.py"` (`--resync-seconds`, default 5),
  installed as the operator image has it: `pip install -e '.[operator]'` into
  .cache/venv-operator (made on first use), without the Kubernetes client, which kopf imports
  where it is installed (about 40 MiB); `--operator-bin` runs another one. So
  every step pod is one bare interpreter start that writes a result of the right shape
  (prepare: quick --quick-folds, full --folds folds; all gates pass);
- N TrainingJobs, manual approval, default stages except `maxFolds` (quick --quick-folds, full
  --folds) and `parallelism` (--parallelism, default 4 as in the spec); artifacts go to an
  absolute file:// URI in the work folder (the stub trainer writes nothing there).

Steps: create the N TrainingJobs, wait until all are AwaitingApproval, approve them (one merge
patch of the approval annotation each, back to back, or --approve-interval apart; the local time
just before each PATCH is sent is its approval time), wait until all are Succeeded.

Figures (printed, never asserted). The last line is one JSON object: count, folds,
approval_to_first_job_p50_s / _p99_s, operator_peak_rss_mib, and per child (Kubernetes) Job
(`_per_job`; `_per_trainingjob` divides by TrainingJobs instead) operator_cpu_s_per_job and
operator_requests_per_job (audit log: the operator's KubeApi plus kopf), each with its target.
- wall time of each phase and in total;
- operator peak RSS (psutil, every --sample seconds, the operator process alone; it has no
  children) and the API server's and etcd's for context;
- approval -> first full-stage fold Job: the bench watches Jobs itself (a streaming watch,
  started before anything is created) and stamps each Job's ADDED event with the local clock on
  arrival; p50 / p99 / max over the N TrainingJobs; the target is judged on this figure. The
  same span in the API server's own clock (audit log: the approval PATCH received -> the first
  full fold Job's CREATE answered) leaves out the bench's side (its PATCH on the way and its
  watch thread, which shares the bench's interpreter with the sampler); the three slowest are
  split into the server's time on the PATCH, the operator's (PATCH answered -> CREATE received)
  and the server's on the CREATE. Also approval -> phase Full (from a watch on the
  TrainingJobs);
- API requests per TrainingJob, from the kube-apiserver's audit log (level Metadata, user
  `admin` only, stage RequestReceived omitted; one request = one auditID, counted at its first
  logged stage, so a WATCH is one request however long it streams and is counted when it
  starts). `apiserver_request_total` cannot be used: it has no user or User-Agent label. The
  operator's process uses the admin token with two clients, told apart by User-Agent:
  `Python/... aiohttp/...` = the operator's own KubeApi, `kopf/...` = kopf's (its start-up
  discovery now; its watches and patches in operators before this round's, which
  `--operator-bin` may run; `operator_requests_per_job` counts both). `Python-urllib`
  = this bench; the scheduler/controller-manager use their own agents or service accounts.
  Cross-checked against `stagegate_reconciles_total` and friends from the operator's /metrics;
- CPU seconds of the operator, of the control plane (etcd + kube-apiserver +
  kube-controller-manager + kube-scheduler), of the node agent and of all pod processes (the
  agent's reaped children: shims and containers), against the wall time x cores, to tell which
  part saturates the machine.

Targets (issue 14): approval -> first full Job p99 <= 0.5 s at 20 x 45 and <= 1 s at 100 x 45,
operator memory <= 200 MiB at 100 x 45, per child Job <= 5 ms operator CPU and <= 2 requests.
`--profile-operator` runs py-spy (when on PATH or under --py-spy) on the operator for the
approval phase and prints its hottest frames.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OPERATOR_VENV = ROOT / ".cache" / "venv-operator"
STUB = ROOT / "bench" / "stub_trainer.py"
CRD = ROOT / "crds" / "trainingjob.yaml"
GROUP_PATH = "/apis/stagegate.io/v1alpha1"
TJ_PATH = f"{GROUP_PATH}/namespaces/default/trainingjobs"
JOBS_PATH = "/apis/batch/v1/namespaces/default/jobs"
LABEL_TJ = "stagegate.io/trainingjob"
MIB = 1024**2
# Issue 14's targets: p99 <= 1 s at 100 TrainingJobs x 45 folds, <= 0.5 s at 20 x 45; peak
# memory <= 200 MiB at 100 x 45; per child (Kubernetes) Job <= 5 ms operator CPU, <= 2 requests.
TARGET_MEMORY_MIB = 200.0
TARGET_CPU_S_PER_CHILD = 0.005
TARGET_REQUESTS_PER_CHILD = 2.0


def target_p99(count: int) -> float:
    return 0.5 if count <= 20 else 1.0


TARGET_PLANE_MIB = 2048.0  # the real control plane issue: etcd + API server + CM + scheduler
COUNTS_PATH = "/_bench/requests"


# --------------------------------------------------------------------------- the cluster
sys.path.insert(0, str(ROOT))
from tests.cluster.cluster import NODE, LocalCluster  # noqa: E402
from tests.cluster.controlplane import ControlPlane, token  # noqa: E402
from tests.support.procs import free_port, kill_group  # noqa: E402

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


class AuditCounter:
    """Reads the audit log incrementally; counts each auditID once, by client/verb/resource."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.seen: set[str] = set()
        self.counts: Counter[tuple[str, str, str]] = Counter()

    @staticmethod
    def client_of(agent: str, user: str) -> str:
        if user != "admin":
            return user
        if agent.startswith("kopf/"):
            return "kopf"
        if "aiohttp" in agent:
            return "operator"
        if "urllib" in agent:
            return "bench"
        return agent.split("/")[0] or "unknown"

    def read(self) -> Counter[tuple[str, str, str]]:
        if not self.path.exists():
            return Counter(self.counts)
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        cut = data.rfind(b"\n") + 1  # a partly written last line waits for the next read
        self.offset += cut
        for line in data[:cut].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            audit_id = event.get("auditID", "")
            if audit_id in self.seen:
                continue
            self.seen.add(audit_id)
            ref = event.get("objectRef") or {}
            resource = ref.get("resource") or "nonresource"
            if ref.get("subresource"):
                resource += "/" + ref["subresource"]
            verb = event.get("verb", "?").upper()
            client = self.client_of(event.get("userAgent", ""), event["user"]["username"])
            self.counts[(client, verb, resource)] += 1
        return Counter(self.counts)


# --------------------------------------------------------------------------- helpers
class Processes:
    """Everything the bench starts, each in its own session; stopped at exit whatever happens."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []
        atexit.register(self.stop_all)

    def start(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[Any], grace: float = 20.0) -> None:
        kill_group(proc, grace)

    def stop_all(self, verbose: bool = False) -> None:
        for proc in reversed(self.procs):
            started = time.monotonic()
            running = proc.poll() is None
            self.stop(proc)
            if verbose and running:
                print(
                    f"  stopped {Path(str(proc.args[0])).name} {' '.join(map(str, proc.args[1:3]))}"
                    f" in {time.monotonic() - started:.1f} s (exit {proc.returncode})"
                )
        self.procs.clear()


class Http:
    """The bench's own client: admin's bearer token over HTTPS (User-Agent Python-urllib)."""

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
        content_type: str = "application/json",
        timeout: float = 60,
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": content_type, **self.headers},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ctx) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

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
            self.reconnects += 1


class Sampler(threading.Thread):
    """Peak RSS of the operator and of each control plane process every `interval` seconds,
    and the peak of the control plane's total (the sum within one sample, not of the peaks)."""

    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True, name="sampler")
        self.interval = interval
        self.procs: dict[str, psutil.Process] = {}
        self.peak: dict[str, int] = {}
        self.peak_at: dict[str, float] = {}
        self.last: dict[str, int] = {}
        self.samples = 0
        self.stopping = threading.Event()

    def watch(self, label: str, pid: int) -> None:
        self.procs[label] = psutil.Process(pid)

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            plane_total = 0
            for label, proc in list(self.procs.items()):
                try:
                    rss = proc.memory_info().rss
                except psutil.Error:
                    continue
                self.last[label] = rss
                if label in CONTROL_PLANE:
                    plane_total += rss
                if rss > self.peak.get(label, 0):
                    self.peak[label] = rss
                    self.peak_at[label] = time.monotonic()
            self.peak["control-plane"] = max(self.peak.get("control-plane", 0), plane_total)
            self.samples += 1


def cpu_seconds(proc: psutil.Process) -> tuple[float, float]:
    """(own CPU seconds, CPU seconds of its reaped children)."""
    t = proc.cpu_times()
    return t.user + t.system, t.children_user + t.children_system


def _server_time(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def approval_spans(audit_log: Path) -> dict[str, tuple[float, float, float, float]]:
    """Per TrainingJob, in the API server's clock: its approval PATCH received and answered,
    then its first full-stage fold Job's CREATE received and answered (the Job exists)."""
    approvals: dict[str, tuple[float, float]] = {}
    creates: dict[str, tuple[float, float]] = {}
    with open(audit_log, "rb") as f:
        for line in f:
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            if event.get("stage") != "ResponseComplete" or ref.get("subresource"):
                continue
            span = (_server_time(event["requestReceivedTimestamp"]),
                    _server_time(event["stageTimestamp"]))  # fmt: skip
            name = ref.get("name") or ""
            client = AuditCounter.client_of(event.get("userAgent", ""), event["user"]["username"])
            if (event["verb"], ref.get("resource"), client) == ("patch", "trainingjobs", "bench"):
                approvals.setdefault(name, span)
            elif (event["verb"], ref.get("resource")) == ("create", "jobs") and (
                "-full-fold-" in name
            ):
                owner = name.split("-full-fold-")[0]
                creates[owner] = min(creates.get(owner, span), span)
    return {tj: (*approval, *creates[tj]) for tj, approval in approvals.items() if tj in creates}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 100 values is the 99th smallest)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 100)))
    return ordered[min(rank, len(ordered)) - 1]


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = float(value)
    return out


def histogram_quantile(metrics: dict[str, float], name: str, q: float) -> float:
    buckets = []
    for key, value in metrics.items():
        m = re.fullmatch(rf'{name}_bucket\{{le="([^"]+)"\}}', key)
        if m:
            buckets.append((float(m.group(1)), value))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    target = q * buckets[-1][1]
    for le, count in buckets:
        if count >= target:
            return le
    return float("inf")


def manifest(name: str, args: argparse.Namespace, artifacts: str) -> dict[str, Any]:
    return {
        "apiVersion": "stagegate.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "symbol": "BTC/USDT",
            "timeframe": "M15",
            "parallelism": args.parallelism,
            "stages": {"quick": {"maxFolds": args.quick_folds}, "full": {"maxFolds": args.folds}},
            # The operator refuses a relative folder (no two pods could share it); the stub
            # trainer writes nothing there.
            "artifacts": {"uri": artifacts},
        },
    }


# --------------------------------------------------------------------------- the bench
class State:
    """What the watches saw, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.job_added: dict[str, float] = {}
        self.job_done: dict[str, float] = {}
        self.first_full: dict[str, float] = {}
        self.phase_at: dict[str, dict[str, float]] = {}
        self.phase: dict[str, str] = {}
        self.active_jobs = 0
        self.max_active = 0

    def on_job(self, kind: str, job: dict[str, Any], now: float) -> None:
        meta = job["metadata"]
        name, labels = meta["name"], meta.get("labels") or {}
        with self.lock:
            if kind == "ADDED" and name not in self.job_added:
                self.job_added[name] = now
                self.active_jobs += 1
                self.max_active = max(self.max_active, self.active_jobs)
                if (
                    labels.get("stagegate.io/stage") == "full"
                    and labels.get("stagegate.io/step") == "fold"
                ):
                    self.first_full.setdefault(labels[LABEL_TJ], now)
            conditions = {
                c["type"]: c["status"] for c in (job.get("status") or {}).get("conditions", [])
            }
            if name not in self.job_done and "True" in (
                conditions.get("Complete"),
                conditions.get("Failed"),
            ):
                self.job_done[name] = now
                self.active_jobs -= 1

    def on_tj(self, kind: str, tj: dict[str, Any], now: float) -> None:
        name = tj["metadata"]["name"]
        phase = (tj.get("status") or {}).get("phase") or "Pending"
        with self.lock:
            self.phase[name] = phase
            self.phase_at.setdefault(name, {}).setdefault(phase, now)

    def count(self, names: list[str], phases: tuple[str, ...]) -> int:
        with self.lock:
            return sum(1 for n in names if self.phase.get(n) in phases)


def wait_all(
    state: State,
    names: list[str],
    phases: tuple[str, ...],
    timeout: float,
    label: str,
    extra: Any = None,
) -> bool:
    start = time.monotonic()
    last = -1.0
    while True:
        done = state.count(names, phases)
        now = time.monotonic()
        if done == len(names):
            return True
        if now - start > timeout:
            print(f"  TIMEOUT after {timeout:.0f} s waiting for {label}: {done}/{len(names)}")
            return False
        if now - last >= 10:
            with state.lock:
                phases_now = Counter(state.phase.get(n, "-") for n in names)
                jobs, active = len(state.job_added), state.active_jobs
            line = (
                f"  [{now - start:6.1f} s] {label}: {done}/{len(names)}  phases "
                f"{dict(phases_now)}  jobs created {jobs}, unfinished {active}"
            )
            print(line + (f"  {extra()}" if extra else ""), flush=True)
            last = now
        time.sleep(0.2)


def by_client(counts: Counter[tuple[str, str, str]], client: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for (c, verb, res), n in counts.items():
        if c == client:
            out[f"{verb} {res}"] += n
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=100, help="TrainingJobs (default 100)")
    p.add_argument("--folds", type=int, default=45, help="full-stage folds each (default 45)")
    p.add_argument("--quick-folds", type=int, default=5, help="quick-stage folds (default 5)")
    p.add_argument("--parallelism", type=int, default=4, help="spec.parallelism (default 4)")
    p.add_argument("--resync-seconds", type=float, default=5.0)
    p.add_argument(
        "--approve-interval",
        type=float,
        default=0.0,
        help="seconds between approvals (default 0: back to back)",
    )
    p.add_argument("--timeout", type=float, default=900.0, help="per waiting phase, seconds")
    p.add_argument("--sample", type=float, default=0.2, help="RSS sampling interval, seconds")
    p.add_argument(
        "--profile-operator",
        action="store_true",
        help="py-spy the operator from the first approval until all are Succeeded",
    )
    p.add_argument("--py-spy", default=shutil.which("py-spy") or "/tmp/pyspy/bin/py-spy")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, pods)")
    p.add_argument(
        "--operator-bin",
        type=Path,
        help="the stagegate-operator to run (default: .cache/venv-operator's, made if missing)",
    )
    args = p.parse_args(argv)

    procs = Processes()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sys.exit(130))
    work = Path(tempfile.mkdtemp(prefix="stagegate-scale-", dir="/var/tmp"))
    n_jobs = args.count * (args.quick_folds + args.folds + 4)
    cluster = BenchCluster(
        work / "cluster",
        # Every step pod may ask for CPU; let all of them fit at once (nothing is enforced).
        cpu=str(max(64, 2 * args.count * args.parallelism)),
        memory="4Ti",
        max_pods=n_jobs + 50,
    )
    atexit.register(cluster.stop)  # also on an exception before the finally below
    try:
        return run(args, procs, cluster, work)
    finally:
        stopping = time.monotonic()
        procs.stop_all(verbose=True)
        pids = [p.pid for _, p in cluster.processes()]
        cluster.stop()
        left = leftovers(work, pids)
        print(
            f"stopped everything in {time.monotonic() - stopping:.1f} s"
            + (f"; STILL RUNNING: {left}" if left else "; no process left")
        )
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        if RESULT:
            print(json.dumps(RESULT), flush=True)


RESULT: dict[str, Any] = {}


def leftovers(work: Path, pids: list[int]) -> list[str]:
    """Processes of this run still alive: the cluster's own, or any naming the work folder."""
    out = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
                continue
            cmd = " ".join(proc.info["cmdline"] or [])
            if proc.pid in pids or str(work) in cmd:
                out.append(f"{proc.pid} {cmd[:100]}")
    return out


def run(args: argparse.Namespace, procs: Processes, cluster: BenchCluster, work: Path) -> int:
    n = args.count
    print(
        f"operator scale bench: {n} TrainingJobs x (prepare + {args.quick_folds} quick + "
        f"{args.folds} full folds + 2 summaries + final), parallelism {args.parallelism}, "
        f"resync {args.resync_seconds:g} s, {psutil.cpu_count()} CPUs; real cluster in {work}"
    )
    boot = time.monotonic()
    cluster.start()
    assert cluster.plane.pki is not None
    http = Http(cluster.server, cluster.plane.pki.ca)
    print(
        f"cluster up in {time.monotonic() - boot:.1f} s ({cluster.server}, node: "
        f"{cluster.cpu} CPU, {cluster.max_pods} pods)"
    )
    crd = yaml.safe_load(CRD.read_text())
    http.ok("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    deadline = time.monotonic() + 60
    while http.request("GET", TJ_PATH)[0] != 200:
        if time.monotonic() > deadline:
            raise RuntimeError("CRD not served")
        time.sleep(0.2)

    operator_bin = args.operator_bin or operator_install()
    print(f"operator: {operator_bin} (Kubernetes client {client_state(operator_bin)})")
    metrics_port, health_port = free_port(), free_port()
    trainer = f"{sys.executable} -S {STUB}"
    op_log = work / "operator.log"
    op_boot = time.monotonic()
    # py-spy cannot attach to a running interpreter here ("failed to find python version"),
    # so a profiled operator is started under it: the operator is py-spy's child.
    spy_file = work / "operator.pyspy.txt"
    profile = args.profile_operator and Path(args.py_spy).exists()
    under_spy = (
        [str(Path(args.py_spy).resolve()), "record", "--format", "raw", "--output",
         str(spy_file), "--rate", "100", "--nonblocking", "--"]
        if profile else []
    )  # fmt: skip
    operator = procs.start(
        [
            *under_spy,
            str(operator_bin),
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--namespace",
            "default",
            "--metrics-port",
            str(metrics_port),
            "--health-port",
            str(health_port),
            "--resync-seconds",
            str(args.resync_seconds),
            "--trainer-command",
            trainer,
        ],
        stdout=open(op_log, "w"),  # noqa: SIM115  (the child holds it)
        stderr=subprocess.STDOUT,
        cwd=work,
        env={**os.environ, "HOME": str(work)},
    )
    deadline = time.monotonic() + 60
    while True:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=1),
        ):
            break
        if operator.poll() is not None or time.monotonic() > deadline:
            print("operator did not start:\n" + op_log.read_text()[-3000:])
            return 1
        time.sleep(0.2)

    def op_metrics() -> dict[str, float]:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as resp:
            return parse_metrics(resp.read().decode())

    print(f"operator up in {time.monotonic() - op_boot:.1f} s")
    op_pid = psutil.Process(operator.pid).children()[0].pid if profile else operator.pid
    state = State()
    watches = [
        Watch(http, JOBS_PATH, LABEL_TJ, state.on_job),
        Watch(http, TJ_PATH, None, state.on_tj),
    ]
    for w in watches:
        w.start()
    sampler = Sampler(args.sample)
    plane = dict(cluster.processes())
    op_ps = psutil.Process(op_pid)
    plane_ps = {name: psutil.Process(plane[name].pid) for name in CONTROL_PLANE}
    agent_ps = psutil.Process(plane["node-agent"].pid)
    sampler.watch("operator", op_pid)
    for name in CONTROL_PLANE:
        sampler.watch(name, plane[name].pid)
    sampler.start()
    time.sleep(1.0)  # the watches have listed and subscribed
    audit = AuditCounter(cluster.audited.audit_log)

    def cpu_now() -> dict[str, float]:
        op, _ = cpu_seconds(op_ps)
        cp = sum(cpu_seconds(x)[0] for x in plane_ps.values())
        agent, pods = cpu_seconds(agent_ps)
        sys_t = psutil.cpu_times()
        busy = sum(sys_t) - sys_t.idle - getattr(sys_t, "iowait", 0.0)
        return {
            "operator": op,
            "plane": cp,
            "agent": agent,
            "pods": pods,
            "machine": busy,
            "t": time.monotonic(),
        }

    def extra() -> str:
        rss = sampler.last.get("operator", 0) / MIB
        return f"operator RSS {rss:.0f} MiB"

    names = [f"scale-{i:03d}" for i in range(n)]
    marks: dict[str, dict[str, Any]] = {}
    artifacts = (work / "artifacts").as_uri()

    def mark(label: str) -> None:
        time.sleep(0.3)  # audit events of requests just answered reach the log
        marks[label] = {"cpu": cpu_now(), "requests": audit.read(), "metrics": op_metrics()}

    mark("start")
    t0 = time.monotonic()
    for name in names:
        http.ok("POST", TJ_PATH, manifest(name, args, artifacts))
    created = time.monotonic()
    print(f"created {n} TrainingJobs in {created - t0:.2f} s")
    ok = wait_all(
        state,
        names,
        ("AwaitingApproval", "Failed", "Rejected"),
        args.timeout,
        "AwaitingApproval",
        extra,
    )
    quick_done = time.monotonic()
    mark("quick")
    bad = [x for x in names if state.phase.get(x) != "AwaitingApproval"]
    if not ok or bad:
        print(f"  not AwaitingApproval: {[(x, state.phase.get(x)) for x in bad[:5]]}")
        print(op_log.read_text()[-3000:])
        return 1
    print(f"all {n} AwaitingApproval after {quick_done - t0:.1f} s")

    approved: dict[str, float] = {}
    patch = {
        "metadata": {
            "annotations": {
                "stagegate.io/approval": "approved",
                "stagegate.io/approved-by": "bench",
            }
        }
    }
    approve_start = time.monotonic()
    for name in names:
        approved[name] = time.monotonic()
        http.ok("PATCH", f"{TJ_PATH}/{name}", patch, content_type="application/merge-patch+json")
        if args.approve_interval:
            time.sleep(args.approve_interval)
    approve_end = time.monotonic()
    print(f"approved {n} in {approve_end - approve_start:.2f} s")
    ok = wait_all(
        state,
        names,
        ("Succeeded", "Failed", "Rejected", "Cancelled"),
        args.timeout,
        "Succeeded",
        extra,
    )
    full_done = time.monotonic()
    time.sleep(max(args.sample * 2, 0.5))
    mark("end")
    for w in watches:
        w.stopping.set()
    sampler.stopping.set()
    sampler.join()
    final_metrics = marks["end"]["metrics"]

    # ------------------------------------------------------------------ figures
    with state.lock:
        phases = Counter(state.phase.get(x, "-") for x in names)
        first_full = dict(state.first_full)
        full_at = {x: state.phase_at.get(x, {}).get("Full") for x in names}
        succeeded_at = {x: state.phase_at.get(x, {}).get("Succeeded") for x in names}
        jobs_created, max_active = len(state.job_added), state.max_active
        job_added, job_done = dict(state.job_added), dict(state.job_done)
    lat = [first_full[x] - approved[x] for x in names if x in first_full]
    lat_full = [at - approved[x] for x in names if (at := full_at.get(x))]
    lat_done = [at - approved[x] for x in names if (at := succeeded_at.get(x))]
    job_durations = [job_done[j] - job_added[j] for j in job_done if j in job_added]
    wall = full_done - t0
    peak_op = sampler.peak.get("operator", 0) / MIB
    peaks = {name: sampler.peak.get(name, 0) / MIB for name in CONTROL_PLANE}
    peak_plane = sampler.peak.get("control-plane", 0) / MIB
    cores = psutil.cpu_count() or 1

    print()
    print("=" * 78)
    print(
        f"RESULT  {n} TrainingJobs x {args.folds} full folds "
        f"(+{args.quick_folds} quick), parallelism {args.parallelism}: {dict(phases)}"
    )
    print(
        f"  wall: total {wall:.1f} s = create+quick {quick_done - t0:.1f} s "
        f"+ approve {approve_end - approve_start:.2f} s + full {full_done - approve_end:.1f} s"
    )
    print(
        f"  Jobs created: {jobs_created} (expected {n * (args.quick_folds + args.folds + 4)}), "
        f"most unfinished at once: {max_active}, Job added->Complete seen by the bench: "
        f"p50 {percentile(job_durations, 50):.2f} s, p99 {percentile(job_durations, 99):.2f}"
        f" s; throughput {jobs_created / max(wall, 1e-9):.1f} Jobs/s"
    )
    print(
        f"  operator peak RSS: {peak_op:.1f} MiB (target <= {TARGET_MEMORY_MIB:.0f} MiB: "
        f"{'met' if peak_op <= TARGET_MEMORY_MIB else 'NOT met'}); {sampler.samples} "
        f"samples every {args.sample:g} s"
    )
    print(
        "  control plane peak RSS: "
        + ", ".join(f"{name} {mib:.0f} MiB" for name, mib in peaks.items())
        + f"; all four together at most {peak_plane:.0f} MiB (target <= "
        f"{TARGET_PLANE_MIB:.0f} MiB: {'met' if peak_plane <= TARGET_PLANE_MIB else 'NOT met'})"
    )
    met = percentile(lat, 99) <= target_p99(n) and len(lat) == n
    print(
        f"  approval -> first full fold Job (bench watch, local clock), n={len(lat)}: "
        f"p50 {percentile(lat, 50):.3f} s, p99 {percentile(lat, 99):.3f} s, "
        f"max {max(lat, default=float('nan')):.3f} s "
        f"(target p99 <= {target_p99(n):g} s: {'met' if met else 'NOT met'})"
    )
    spans = approval_spans(cluster.audited.audit_log)
    server = [created - received for received, _, _, created in spans.values()]
    print(
        f"  same, in the API server's clock (audit log: approval PATCH received -> first full "
        f"fold Job's CREATE answered), n={len(server)}: p50 {percentile(server, 50):.3f} s, "
        f"p99 {percentile(server, 99):.3f} s, max {max(server, default=float('nan')):.3f} s"
    )
    print("    slowest (bench watch | server: PATCH in the server, PATCH answered -> CREATE "
          "received, CREATE in the server):")  # fmt: skip
    for name in sorted(spans, key=lambda x: -(spans[x][3] - spans[x][0]))[:3]:
        received, answered, create_received, created = spans[name]
        client = first_full[name] - approved[name] if name in first_full else float("nan")
        print(f"      {name}: {client:.3f} s | {created - received:.3f} s = "
              f"{answered - received:.3f} + {create_received - answered:.3f} + "
              f"{created - create_received:.3f}")  # fmt: skip
    print(
        f"  approval -> status.phase Full: p50 {percentile(lat_full, 50):.3f} s, p99 "
        f"{percentile(lat_full, 99):.3f} s; approval -> Succeeded: p50 "
        f"{percentile(lat_done, 50):.1f} s, max {max(lat_done, default=float('nan')):.1f} s"
    )

    # CPU: where the time went
    def cpu_delta(a: str, b: str) -> dict[str, float]:
        x, y = marks[a]["cpu"], marks[b]["cpu"]
        return {k: y[k] - x[k] for k in x}

    print("  CPU seconds (share of wall x cores):")
    for a, b, label in (
        ("start", "quick", "create..AwaitingApproval"),
        ("quick", "end", "approve..Succeeded"),
        ("start", "end", "total"),
    ):
        d = cpu_delta(a, b)
        cap = d["t"] * cores
        ours = d["operator"] + d["plane"] + d["agent"] + d["pods"]
        print(
            f"    {label:26s} wall {d['t']:7.1f} s  operator {d['operator']:7.1f} "
            f"({d['operator'] / cap:5.1%})  control plane {d['plane']:7.1f} "
            f"({d['plane'] / cap:5.1%})  node agent {d['agent']:6.1f} ({d['agent'] / cap:5.1%})"
            f"  pods {d['pods']:7.1f} ({d['pods'] / cap:5.1%})  sum {ours / cap:5.1%}; whole "
            f"machine busy {d['machine'] / cap:5.1%} (other processes "
            f"{(d['machine'] - ours) / cap:5.1%})"
        )

    # API requests
    total = marks["end"]["requests"] - marks["start"]["requests"]
    quick = marks["quick"]["requests"] - marks["start"]["requests"]
    full = marks["end"]["requests"] - marks["quick"]["requests"]
    print(
        "  API requests from the kube-apiserver's audit log (user admin, by User-Agent; "
        "the node agent is its own user), per TrainingJob:"
    )
    for client in ("operator", "kopf", "bench"):
        t, q, f = (sum(by_client(c, client).values()) for c in (total, quick, full))
        print(
            f"    {client:9s} total {t:7d} = {t / n:8.1f}/TJ   (quick phase {q / n:.1f}/TJ, "
            f"full phase {f / n:.1f}/TJ)"
        )
    print("    operator's own client by verb and resource (per TJ):")
    for key, value in sorted(by_client(total, "operator").items(), key=lambda kv: -kv[1]):
        print(f"      {key:40s} {value:7d}  {value / n:7.1f}")
    print("    kopf by verb and resource (since the operator started; a WATCH counts once):")
    for key, value in sorted(
        by_client(marks["end"]["requests"], "kopf").items(), key=lambda kv: -kv[1]
    ):
        print(f"      {key:40s} {value:7d}")

    m0, m1 = marks["start"]["metrics"], final_metrics
    reconciles = m1.get("stagegate_reconciles_total", 0) - m0.get("stagegate_reconciles_total", 0)
    errors = {k: v for k, v in m1.items() if k.startswith("stagegate_reconcile_errors_total")}
    dur_sum = m1.get("stagegate_reconcile_duration_seconds_sum", 0)
    dur_count = m1.get("stagegate_reconcile_duration_seconds_count", 0)
    print(
        f"  operator /metrics: stagegate_reconciles_total {reconciles:.0f} "
        f"({reconciles / n:.1f}/TJ); reconcile errors {errors or 0}; reconcile duration "
        f"mean {dur_sum / max(dur_count, 1) * 1000:.1f} ms, p50 <= "
        f"{histogram_quantile(m1, 'stagegate_reconcile_duration_seconds', 0.5)} s, p99 <= "
        f"{histogram_quantile(m1, 'stagegate_reconcile_duration_seconds', 0.99)} s "
        f"(bucket bounds); time in reconcile {dur_sum:.1f} s"
    )
    op_requests = sum(by_client(total, "operator").values())
    print(f"    operator requests per reconcile: {op_requests / max(reconciles, 1):.2f}")
    log_text = op_log.read_text(errors="replace")
    print(
        f"  operator log: {len(log_text.splitlines())} lines, "
        f"{log_text.count(' ERROR ')} ERROR, {log_text.count(' WARNING ')} WARNING"
    )
    print(
        f"  targets: approval->first full Job p99 <= {target_p99(n):g} s: "
        f"{'met' if met else 'NOT met'}; operator memory <= {TARGET_MEMORY_MIB:.0f} MiB: "
        f"{'met' if peak_op <= TARGET_MEMORY_MIB else 'NOT met'}"
    )

    if profile:  # py-spy writes its file when the operator exits
        os.kill(op_pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            operator.wait(timeout=60)
        print_profile(spy_file)
    op_cpu = cpu_delta("start", "end")["operator"]
    op_all = op_requests + sum(by_client(total, "kopf").values())
    per_child_cpu = op_cpu / max(jobs_created, 1)
    per_child_requests = op_all / max(jobs_created, 1)
    print(
        f"  per child Job: operator CPU {per_child_cpu * 1000:.1f} ms (target <= "
        f"{TARGET_CPU_S_PER_CHILD * 1000:.0f} ms: "
        f"{'met' if per_child_cpu <= TARGET_CPU_S_PER_CHILD else 'NOT met'}), requests "
        f"{per_child_requests:.2f} (target <= {TARGET_REQUESTS_PER_CHILD:g}: "
        f"{'met' if per_child_requests <= TARGET_REQUESTS_PER_CHILD else 'NOT met'})"
    )
    RESULT.update(
        {
            "count": n,
            "folds": args.folds,
            "quick_folds": args.quick_folds,
            "parallelism": args.parallelism,
            "succeeded": phases.get("Succeeded", 0),
            "wall_s": round(wall, 2),
            "k8s_jobs_created": jobs_created,
            "approval_to_first_job_p50_s": round(percentile(lat, 50), 3),
            "approval_to_first_job_p99_s": round(percentile(lat, 99), 3),
            "approval_to_first_job_max_s": round(max(lat, default=float("nan")), 3),
            "approval_to_first_job_server_p50_s": round(percentile(server, 50), 3),
            "approval_to_first_job_server_p99_s": round(percentile(server, 99), 3),
            "operator_peak_rss_mib": round(peak_op, 1),
            "control_plane_peak_rss_mib": round(peak_plane, 1),
            **{f"{name}_peak_rss_mib": round(mib, 1) for name, mib in peaks.items()},
            # "per_job" = per child (Kubernetes) Job, as issue 14's targets; per TrainingJob too.
            "operator_cpu_s_per_job": round(per_child_cpu, 4),
            "operator_cpu_s_per_job_target": TARGET_CPU_S_PER_CHILD,
            "operator_cpu_s_per_trainingjob": round(op_cpu / n, 3),
            "operator_requests_per_job": round(per_child_requests, 2),
            "operator_requests_per_job_target": TARGET_REQUESTS_PER_CHILD,
            "operator_requests_per_trainingjob": round(op_all / n, 1),
            "approval_to_first_job_p99_target_s": target_p99(n),
            "operator_peak_rss_target_mib": TARGET_MEMORY_MIB,
            "operator_kubeapi_requests_per_trainingjob": round(op_requests / n, 1),
            "operator_kopf_requests_per_trainingjob": round((op_all - op_requests) / n, 1),
            "requests_source": "kube-apiserver audit log, user admin, User-Agent aiohttp+kopf",
            "cpus": cores,
        }
    )
    return 0 if phases.get("Succeeded") == n else 1


def operator_install() -> Path:
    """stagegate-operator as the operator image installs it: the core and the operator extra."""
    binary = OPERATOR_VENV / "bin" / "stagegate-operator"
    pyproject = ROOT / "pyproject.toml"
    if not binary.exists() or binary.stat().st_mtime < pyproject.stat().st_mtime:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(OPERATOR_VENV)], check=True)
        subprocess.run([str(OPERATOR_VENV / "bin" / "pip"), "install", "--quiet", "-e",
                        f"{ROOT}[operator]"], check=True)  # fmt: skip
    return binary


def client_state(binary: Path) -> str:
    python = binary.parent / "python"
    if not python.exists():
        return "unknown"
    found = subprocess.run([str(python), "-c", "import kubernetes"], capture_output=True)
    return "installed: kopf imports it" if found.returncode == 0 else "absent, as in the image"


def print_profile(path: Path, top: int = 25) -> None:
    """Own time and inclusive time per function from py-spy's raw (collapsed) output."""
    if not path.exists():
        print(f"  (no py-spy output at {path})")
        return
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    print(
        f"  py-spy on the operator (its whole life, 100 Hz, --nonblocking, idle "
        f"included): {total} samples"
    )
    print("    inclusive:")
    for frame, samples in inclusive.most_common(top):
        print(f"      {samples / total:6.1%}  {frame}")
    print("    own:")
    for frame, samples in own.most_common(15):
        print(f"      {samples / total:6.1%}  {frame}")


if __name__ == "__main__":
    sys.exit(main())
