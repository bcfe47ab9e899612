"""The steps of a run — prepare, fold, summarise (and final, in finalmodel.py) — as work on the
artifacts store.

Each step is idempotent: it reads what earlier steps wrote and skips work whose result already
exists. The local runner calls these functions, folds and the final model in worker processes,
prepare and summarise in its own; on Kubernetes, each is the command of one Job
(`stagegate prepare|fold|summarise|final`). Results are written last and atomically, so
a step killed halfway leaves nothing that a later look could take as done.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stagegate_core import layout, timeframes
from stagegate_core.formatting import now_iso
from stagegate_core.plan import PlanError, StagePlan, plan_stage
from stagegate_core.spec import TrainingJobManifest, TrainingJobSpec, spec_fingerprint
from stagegate_core.specparts import STAGES, DataSpec, StageName

from .store import ArtifactStore, open_store

if TYPE_CHECKING:  # pandas and the data modules are imported inside the steps that use them:
    # commands that need only this module's light helpers (with_overrides, RunMismatchError)
    # must not pay for them
    import pandas as pd

    from .data import LoadedData


class RunMismatchError(ValueError):
    """The artifacts folder holds a run of another spec."""


@dataclass(frozen=True)
class Run:
    manifest: TrainingJobManifest
    store: ArtifactStore  # rooted at the run's own prefix

    @property
    def spec(self) -> TrainingJobSpec:
        return self.manifest.spec

    @property
    def name(self) -> str:
        return self.manifest.metadata.name


def with_overrides(
    manifest: TrainingJobManifest, *, data_uri: str | None = None, artifacts_uri: str | None = None
) -> TrainingJobManifest:
    """The manifest as a CLI flag (--data, --artifacts) changes it."""
    spec = manifest.spec
    if data_uri:
        source = "s3" if data_uri.startswith("s3://") else "file"
        data = DataSpec(source=source, uri=data_uri, start=spec.data.start, end=spec.data.end)
        spec = spec.model_copy(update={"data": data})
    if artifacts_uri:
        spec = spec.model_copy(
            update={"artifacts": spec.artifacts.model_copy(update={"uri": artifacts_uri})}
        )
    return manifest.model_copy(update={"spec": spec})


def open_run(manifest: TrainingJobManifest) -> Run:
    meta = manifest.metadata
    root = open_store(manifest.spec.artifacts.uri)
    return Run(manifest, root.child(layout.run_prefix(meta.namespace, meta.name, meta.uid)))


def claim(run: Run) -> dict[str, Any]:
    """Record which spec this run folder belongs to, or refuse when it holds another one."""
    fingerprint = spec_fingerprint(run.spec)
    if run.store.exists(layout.RUN_RECORD):
        record: dict[str, Any] = run.store.read_json(layout.RUN_RECORD)
        if record.get("specFingerprint") != fingerprint:
            raise RunMismatchError(
                f"{run.store.root_uri} holds a run of a different spec "
                f"(fingerprint {record.get('specFingerprint')}, this spec {fingerprint}); "
                "rename metadata.name, pass another --artifacts location, or pass --fresh "
                "to delete the old run"
            )
        return record
    record = {
        "name": run.name,
        "namespace": run.manifest.metadata.namespace,
        "specFingerprint": fingerprint,
        "spec": run.spec.model_dump(mode="json", by_alias=True),
        "created": now_iso(),
    }
    run.store.write_json(layout.RUN_RECORD, record)
    return record


# Datasets are large and read by every fold; a worker process keeps the last one it read.
_DATASET_CACHE: dict[str, Any] = {}


def load_dataset(run: Run) -> pd.DataFrame:
    from .dataset import from_parquet_bytes

    key = run.store.uri(layout.DATASET)
    if key not in _DATASET_CACHE:
        _DATASET_CACHE.clear()
        _DATASET_CACHE[key] = from_parquet_bytes(run.store.read_bytes(layout.DATASET))
    return _DATASET_CACHE[key]


def prepare(run: Run) -> dict[str, Any]:
    """Snapshot the data, build the dataset and write the plan of every stage (once per run).

    The snapshot makes a rerun see the same bars even when `data.end` is unset and the source
    has grown since. Returns the plan document.
    """
    from .dataset import from_parquet_bytes, model_columns, prepare_dataset, to_parquet_bytes

    if run.store.exists(layout.PLAN):
        plan: dict[str, Any] = run.store.read_json(layout.PLAN)
        return plan
    spec = run.spec
    timeframe = spec.canonical_timeframe
    if run.store.exists(layout.OHLCV):
        ohlcv = from_parquet_bytes(run.store.read_bytes(layout.OHLCV))
        report = run.store.read_json(layout.DATA_REPORT)
    else:
        loaded = load_data(spec, cache=open_store(spec.artifacts.uri))
        ohlcv = loaded.frame
        report = {
            **loaded.report.as_dict(),
            "summary": loaded.report.summary(),
            "contentHash": loaded.content_hash,
        }
        run.store.write_bytes(layout.OHLCV, to_parquet_bytes(ohlcv))
        run.store.write_json(layout.DATA_REPORT, report)

    guard: dict[str, Any] | None = None
    if run.store.exists(layout.DATASET):
        dataset = from_parquet_bytes(run.store.read_bytes(layout.DATASET))
    else:
        dataset, checked = prepare_dataset(ohlcv, spec, load_context(run))
        guard = checked.as_dict()
        run.store.write_bytes(layout.DATASET, to_parquet_bytes(dataset))

    stages = plan_stages(spec, dataset)
    plan = {
        "symbol": spec.symbol,
        "timeframe": timeframe,
        "bars": len(ohlcv),
        "labelledRows": len(dataset),
        "dataHash": report.get("contentHash"),
        "dataSummary": report.get("summary"),
        "features": model_columns(spec.features, dataset.columns),
        "stages": stages,
    }
    if guard is not None:
        # What the look-ahead guard checked and its cost (absent when the dataset was kept
        # from an interrupted prepare, whose guard had passed).
        plan["featureGuard"] = guard
    run.store.write_json(layout.PLAN, plan)
    return plan


def load_context(run: Run) -> dict[str, pd.DataFrame]:
    """The bars of every `spec.data.context` symbol over the main data's range, snapshot in the
    run like the main bars (a rerun sees the same)."""
    from .data import load_ohlcv
    from .dataset import from_parquet_bytes, to_parquet_bytes

    spec, out = run.spec, {}
    for context in spec.data.context:
        key = layout.context_ohlcv(context.symbol)
        if run.store.exists(key):
            out[context.symbol] = from_parquet_bytes(run.store.read_bytes(key))
            continue
        loaded = load_ohlcv(
            source=context.source or spec.data.source,
            symbol=context.symbol,
            timeframe=spec.canonical_timeframe,
            exchange=spec.data.exchange,
            uri=context.uri,
            start=spec.data.start,
            end=spec.data.end,
            cache=open_store(spec.artifacts.uri),
            ohlc_tolerance=spec.data.ohlc_tolerance,
        )
        run.store.write_bytes(key, to_parquet_bytes(loaded.frame))
        out[context.symbol] = loaded.frame
    return out


def load_data(spec: TrainingJobSpec, cache: ArtifactStore | None = None) -> LoadedData:
    """The spec's candles, validated and cut to its range (ccxt pages cached in `cache`)."""
    from .data import load_ohlcv

    return load_ohlcv(
        source=spec.data.source,
        symbol=spec.symbol,
        timeframe=spec.canonical_timeframe,
        exchange=spec.data.exchange,
        uri=spec.data.uri,
        start=spec.data.start,
        end=spec.data.end,
        cache=cache,
        ohlc_tolerance=spec.data.ohlc_tolerance,
    )


def plan_stages(spec: TrainingJobSpec, dataset: pd.DataFrame) -> dict[str, Any]:
    """Every stage's plan, whatever the mode, so one run folder serves a later run of another
    mode; a stage that cannot fit a fold is an error only when it is to run."""
    from .dataset import timestamps_ns

    ts = timestamps_ns(dataset).tolist()
    bar_ns = timeframes.bar_ns(spec.canonical_timeframe)
    stages: dict[str, Any] = {}
    for stage in STAGES:
        try:
            stages[stage] = plan_stage(
                stage,
                ts,
                bar_ns=bar_ns,
                spec=spec.stages.get(stage),
                purge_bars=spec.purge_bars(stage),
            ).to_json()
        except PlanError as exc:
            if stage in spec.stages_to_run():
                raise
            stages[stage] = {"stage": stage, "error": str(exc)}
    return stages


def stage_plan_json(plan: dict[str, Any], stage: str) -> dict[str, Any]:
    """One stage's plan from plan.json; PlanError when that stage could not be planned."""
    entry: dict[str, Any] = plan["stages"][stage]
    if "error" in entry:
        raise PlanError(entry["error"])
    return entry


def stage_plan(run: Run, stage: StageName) -> StagePlan:
    return StagePlan.from_json(stage_plan_json(run.store.read_json(layout.PLAN), stage))


@dataclass(frozen=True)
class FoldOutcome:
    metrics: dict[str, Any]
    seconds: float  # wall time of this call
    fit_seconds: float  # bare LightGBM fit time within it (0 when skipped)
    skipped: bool  # the result already existed


def fold(
    run: Run, stage: StageName, number: int, *, num_threads: int, force: bool = False
) -> FoldOutcome:
    from .dataset import model_columns, to_parquet_bytes
    from .fold import run_fold
    from .trading import context_for

    started = time.perf_counter()
    key = layout.fold_metrics(stage, number)
    if not force and run.store.exists(key):
        return FoldOutcome(run.store.read_json(key), time.perf_counter() - started, 0.0, True)
    plan = stage_plan(run, stage)
    folds = plan.fold(number)
    dataset = load_dataset(run)
    result = run_fold(
        dataset,
        folds,
        features=model_columns(run.spec.features, dataset.columns),
        spec=run.spec.model,
        purge_ns=plan.purge_bars * timeframes.bar_ns(run.spec.canonical_timeframe),
        num_threads=num_threads,
        trading=context_for(run.spec),
    )
    metrics = {"stage": stage, "folds": len(plan.folds), **result.metrics}
    run.store.write_bytes(
        layout.fold_predictions(stage, number), to_parquet_bytes(result.predictions)
    )
    run.store.write_bytes(layout.fold_model(stage, number), result.model_text.encode())
    # The report reads gains from here, so summarising needs no LightGBM (1.3 s to import).
    run.store.write_json(layout.fold_importance(stage, number), result.importance)
    # metrics.json last: its presence is what marks the fold done.
    run.store.write_json(key, metrics)
    return FoldOutcome(metrics, time.perf_counter() - started, result.fit_seconds, False)


def finished_folds(
    run: Run, stage: str, known: dict[int, dict[str, Any]] | None = None
) -> dict[int, dict[str, Any]]:
    """The stage's fold metrics in the store, by fold number. A metrics.json never changes once
    written, so those already in `known` (which is filled in and returned) are not read again."""
    out = {} if known is None else known
    for key in run.store.list(f"{stage}/folds/"):
        if key.endswith("/metrics.json"):
            number = int(key.split("/")[-2])
            if number not in out:
                out[number] = run.store.read_json(key)
    return out


def summarise(run: Run, stage: StageName) -> dict[str, Any]:
    """The stage's summary.json and report."""
    from .summary import summarise_stage

    folds = finished_folds(run, stage)
    summary = summarise_stage(stage, list(folds.values()), run.spec.gates)
    run.store.write_json(layout.stage_summary(stage), summary)
    write_report(run, stage, summary)
    return summary


def write_report(run: Run, stage: StageName, summary: dict[str, Any]) -> str:
    """Render the stage's report.html and its SVGs into the store; returns its URI."""
    from .htmlreport import render_stage_report

    folder = layout.report_dir(stage)
    files = render_stage_report(run, stage, summary)
    for name, data in sorted(files.items()):
        run.store.write_bytes(f"{folder}/{name}", data)
    # Rendered again over an older report (its pictures were PNGs): leave no stale picture.
    for key in run.store.list(f"{folder}/"):
        if key.rsplit("/", 1)[-1] not in files:
            run.store.delete_prefix(key)
    return run.store.uri(layout.stage_report(stage))
