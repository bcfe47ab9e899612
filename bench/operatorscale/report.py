"""The scale bench's figures: printed for a person, and returned for its JSON line."""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from .audit import approval_spans, by_client
from .cluster import CONTROL_PLANE
from .processes import Sampler
from .state import State
from .stats import histogram_quantile, percentile

MIB = 1024**2
# Issue 14's targets: p99 <= 1 s at 100 TrainingJobs x 45 folds, <= 0.5 s at 20 x 45; peak
# memory <= 200 MiB at 100 x 45; per child (Kubernetes) Job <= 5 ms operator CPU, <= 2 requests.
TARGET_MEMORY_MIB = 200.0
TARGET_CPU_S_PER_CHILD = 0.005
TARGET_REQUESTS_PER_CHILD = 2.0
TARGET_PLANE_MIB = 2048.0  # the real control plane issue: etcd + API server + CM + scheduler


def target_p99(count: int) -> float:
    return 0.5 if count <= 20 else 1.0


@dataclass(frozen=True)
class Finished:
    """A whole run, as the bench saw it: what `report` works from."""

    args: argparse.Namespace
    names: list[str]
    approved: dict[str, float]  # TrainingJob: local time just before its approval PATCH
    marks: dict[str, dict[str, Any]]  # label: cpu, requests, operator metrics
    state: State
    sampler: Sampler
    audit_log: Path
    op_log: Path
    t0: float
    quick_done: float
    approve_start: float
    approve_end: float
    full_done: float


def report(run: Finished) -> dict[str, Any]:
    """Print every figure; the JSON line's figures come back."""
    args, names, approved, marks, state, sampler = (
        run.args, run.names, run.approved, run.marks, run.state, run.sampler
    )  # fmt: skip
    n, op_log, final_metrics = len(names), run.op_log, marks["end"]["metrics"]
    t0, quick_done, full_done = run.t0, run.quick_done, run.full_done
    approve_start, approve_end = run.approve_start, run.approve_end
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
    spans = approval_spans(run.audit_log)
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
    result = {
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
    return result
