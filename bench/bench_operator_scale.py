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
  arrival; p50 / p99 / max over the N TrainingJobs; the target is judged on this figure. (A
  watcher in a process of its own, metadata only, as `kubectl get jobs -w` would be, was tried
  against it in one 20 x 45 run: p50 0.281 s and p99 0.609 s against 0.281 s and 0.608 s, so
  sharing this interpreter with the sampler and the TrainingJob watch does not skew it.) The
  same span in the API server's own clock (audit log: the approval PATCH received -> the first
  full fold Job's CREATE answered) leaves out the clients' side (the PATCH on its way, the
  watch delivering the Job); the three slowest are split into the server's time on the PATCH,
  the operator's (PATCH answered -> CREATE received) and the server's on the CREATE. Also
  approval -> phase Full (from a watch on the TrainingJobs);
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
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
STUB = ROOT / "bench" / "stub_trainer.py"
CRD = ROOT / "crds" / "trainingjob.yaml"
MIB = 1024**2


sys.path.insert(0, str(ROOT))  # the test harness's cluster; this folder is on the path already
from operatorscale.audit import AuditCounter  # noqa: E402
from operatorscale.client import JOBS_PATH, LABEL_TJ, TJ_PATH, Http, Watch  # noqa: E402
from operatorscale.cluster import CONTROL_PLANE, BenchCluster  # noqa: E402
from operatorscale.operator import client_state, operator_install  # noqa: E402
from operatorscale.processes import Processes, Sampler, cpu_seconds, leftovers  # noqa: E402
from operatorscale.report import Finished, report  # noqa: E402
from operatorscale.state import State, wait_all  # noqa: E402
from operatorscale.stats import (  # noqa: E402
    parse_metrics,
    print_profile,
)

from tests.support.procs import free_port  # noqa: E402


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

    if profile:  # py-spy writes its file when the operator exits
        os.kill(op_pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            operator.wait(timeout=60)
    finished = Finished(
        args, names, approved, marks, state, sampler, cluster.audited.audit_log, op_log,
        t0, quick_done, approve_start, approve_end, full_done,
    )  # fmt: skip
    RESULT.update(report(finished))
    if profile:
        print_profile(spy_file)
    return 0 if RESULT["succeeded"] == n else 1


if __name__ == "__main__":
    sys.exit(main())
