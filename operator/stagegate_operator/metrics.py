"""The operator's Prometheus metrics. Every metric name is defined here, once.

The dashboard and the alert rules in the Helm chart query these names; a test checks every
query against a real Prometheus scraping a running operator.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from stagegate_core.formatting import parse_iso
from stagegate_core.metricnames import BASELINES, METRICS, snake
from stagegate_core.stagemachine import PHASES
from stagegate_core.statusmodel import StageStatus, TrainingJobStatus

_TJ = ("namespace", "trainingjob", "symbol", "timeframe")


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.trainingjobs = Gauge(
            "stagegate_trainingjobs", "TrainingJobs by phase.", ["phase"], registry=r
        )
        self.phase = Gauge(
            "stagegate_trainingjob_phase",
            "1 for the phase a TrainingJob is in, 0 for the others.",
            [*_TJ, "phase"],
            registry=r,
        )
        self.phase_seconds = Gauge(
            "stagegate_trainingjob_phase_seconds",
            "Seconds a TrainingJob has spent in its current phase.",
            [*_TJ, "phase"],
            registry=r,
        )
        self.progress = Gauge(
            "stagegate_stage_progress_ratio",
            "Finished folds / planned folds of the running stage.",
            [*_TJ, "stage"],
            registry=r,
        )
        self.folds = Counter(
            "stagegate_folds",
            "Fold Jobs that ended, by stage and result.",
            ["stage", "result"],
            registry=r,
        )
        self.fold_duration = Histogram(
            "stagegate_fold_duration_seconds",
            "Wall time of successful fold Jobs.",
            ["stage"],
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600, 7200),
            registry=r,
        )
        # The latest fold, not one series per fold: at 100 TrainingJobs x 50 folds x 10 metrics
        # those were 50,000 series (most of the operator's memory, and of Prometheus's). Over
        # time this series shows each fold's value as the fold finishes.
        self.fold_metric = Gauge(
            "stagegate_latest_fold_metric",
            "Out-of-sample metric of the stage's latest finished fold (stagegate_latest_fold).",
            [*_TJ, "stage", "metric"],
            registry=r,
        )
        self.latest_fold = Gauge(
            "stagegate_latest_fold",
            "Number of the stage's latest finished fold.",
            [*_TJ, "stage"],
            registry=r,
        )
        self.stage_metric = Gauge(
            "stagegate_stage_metric",
            "Mean out-of-sample metric over a stage's folds.",
            [*_TJ, "stage", "metric"],
            registry=r,
        )
        self.stage_metric_std = Gauge(
            "stagegate_stage_metric_std",
            "Standard deviation of a metric over a stage's folds.",
            [*_TJ, "stage", "metric"],
            registry=r,
        )
        self.baseline_metric = Gauge(
            "stagegate_stage_baseline_metric",
            "Mean out-of-sample metric of a baseline over a stage's folds.",
            [*_TJ, "stage", "baseline", "metric"],
            registry=r,
        )
        self.gate_passed = Gauge(
            "stagegate_gate_passed",
            "1 when a stage gate passed, 0 when it failed.",
            [*_TJ, "stage", "gate"],
            registry=r,
        )
        self.gate_threshold = Gauge(
            "stagegate_gate_threshold",
            "The threshold a stage gate compares with.",
            [*_TJ, "stage", "gate"],
            registry=r,
        )
        self.awaiting_approval = Histogram(
            "stagegate_approval_wait_seconds",
            "Time from AwaitingApproval to the gate's decision.",
            buckets=(60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86_400, 3 * 86_400),
            registry=r,
        )
        self.leader = Gauge(
            "stagegate_operator_leader",
            "1 while this replica acts (it holds the leader Lease, or runs without election).",
            registry=r,
        )
        self.leader.set(1)
        self.reconciles = Counter("stagegate_reconciles", "Reconcile passes.", registry=r)
        self.reconcile_errors = Counter(
            "stagegate_reconcile_errors",
            "Reconcile passes that raised, by error type.",
            ["error"],
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "stagegate_reconcile_duration_seconds",
            "Time of one reconcile pass.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self._phases: dict[tuple[str, str], str] = {}
        # Per TrainingJob: the (stage, fold) and (stage, "summary") already exported.
        self._exported: dict[tuple[str, str], set[tuple[str, Any]]] = {}
        # Counters start at 0 so that increase() sees their first event.
        for stage in ("quick", "full"):
            for result in ("succeeded", "failed"):
                self.folds.labels(stage, result)

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        start_http_server(port, addr=address, registry=self.registry)

    def record(
        self, namespace: str, name: str, spec: Any, status: TrainingJobStatus, phase_seconds: float
    ) -> None:
        """Export one TrainingJob's status. Called on every pass: what was exported already (a
        fold's metrics, a stage's summary, the phase) is not set again."""
        key = (namespace, name)
        labels = (namespace, name, spec.symbol, spec.canonical_timeframe)
        phase = status.shown_phase
        if self._phases.get(key) != phase:
            self._phases[key] = phase
            for p in PHASES:
                self.phase.labels(*labels, p).set(1 if p == phase else 0)
            for p in PHASES:  # only the current phase has a duration
                if p != phase:
                    with contextlib.suppress(KeyError):
                        self.phase_seconds.remove(*labels, p)
            self._count_phases()
        self.phase_seconds.labels(*labels, phase).set(phase_seconds)
        exported = self._exported.setdefault(key, set())
        for stage, entry in (status.stages or {}).items():
            folds = entry.folds
            done = [(f.fold, f.metrics) for f in folds if f.metrics is not None]
            if folds:
                self.progress.labels(*labels, stage).set(len(done) / len(folds))
            new = [(n, metrics) for n, metrics in done if (stage, n) not in exported]
            if new:
                exported.update((stage, n) for n, _ in new)
                number, metrics = new[-1]
                self.latest_fold.labels(*labels, stage).set(number)
                for metric in METRICS:
                    value = metrics.get(metric)
                    if value is not None:
                        self.fold_metric.labels(*labels, stage, snake(metric)).set(value)
            if not entry.summarised or (stage, "summary") in exported:
                continue
            exported.add((stage, "summary"))
            self._stage(labels, stage, entry)

    def count_changes(
        self,
        old: TrainingJobStatus,
        new: TrainingJobStatus,
        fold_seconds: Sequence[tuple[str, float | None]],
        now: float,
    ) -> None:
        """Count what a written status changed. `fold_seconds`: (stage, wall time if known) of
        each fold whose result this pass harvested."""
        for stage, failures in _new_failures(old, new).items():
            self.folds.labels(stage, "failed").inc(failures)
        for stage, seconds in fold_seconds:
            self.folds.labels(stage, "succeeded").inc()
            if seconds is not None:
                self.fold_duration.labels(stage).observe(seconds)
        if old.phase == "AwaitingApproval" and new.phase != "AwaitingApproval":
            since = parse_iso(old.phaseSince)
            if since is not None:
                self.awaiting_approval.observe(max(0.0, now - since))

    def _stage(self, labels: tuple[str, ...], stage: str, entry: StageStatus) -> None:
        summary, baselines = entry.summary or {}, entry.baselines or {}
        for metric in METRICS:
            stats = summary[metric]
            if stats.mean is not None:
                self.stage_metric.labels(*labels, stage, snake(metric)).set(stats.mean)
                self.stage_metric_std.labels(*labels, stage, snake(metric)).set(stats.std or 0.0)
            for baseline in BASELINES:
                mean = baselines[baseline][metric].mean
                if mean is not None:
                    self.baseline_metric.labels(*labels, stage, baseline, snake(metric)).set(mean)
        for gate in entry.gates or []:
            self.gate_passed.labels(*labels, stage, gate["gate"]).set(1 if gate["passed"] else 0)
            if gate["threshold"] is not None:
                self.gate_threshold.labels(*labels, stage, gate["gate"]).set(gate["threshold"])

    def forget(self, namespace: str, name: str) -> None:
        """A deleted TrainingJob leaves the per-job series."""
        self._phases.pop((namespace, name), None)
        self._exported.pop((namespace, name), None)
        for gauge in (
            self.phase,
            self.phase_seconds,
            self.progress,
            self.fold_metric,
            self.latest_fold,
            self.stage_metric,
            self.stage_metric_std,
            self.baseline_metric,
            self.gate_passed,
            self.gate_threshold,
        ):
            gauge.remove_by_labels({_TJ[0]: namespace, _TJ[1]: name})
        self._count_phases()

    def _count_phases(self) -> None:
        counts = dict.fromkeys(PHASES, 0)
        for phase in self._phases.values():
            counts[phase] = counts.get(phase, 0) + 1
        for phase, count in counts.items():
            self.trainingjobs.labels(phase).set(count)


def _failures(status: TrainingJobStatus) -> dict[tuple[str, int], int]:
    """Failed attempts of each fold in a status."""
    out = {}
    for stage, entry in (status.stages or {}).items():
        for fold in entry.folds:
            done = 1 if fold.state == "Succeeded" else 0
            out[(stage, fold.fold)] = fold.attempts - done
    return out


def _new_failures(old: TrainingJobStatus, new: TrainingJobStatus) -> dict[str, int]:
    before = _failures(old)
    counts: dict[str, int] = {}
    for (stage, fold), failures in _failures(new).items():
        extra = failures - before.get((stage, fold), 0)
        if extra > 0:
            counts[stage] = counts.get(stage, 0) + extra
    return counts
