"""Time features + labels and single folds on real BTC/USDT bars against their compute floor.

    PYTHONPATH=core:trainer .venv/bin/python bench/bench_fold.py [--data PATH] [--threads 2]

What is measured (Foundation issue, speed section):

1. features + labels (`dataset.build_dataset`: features, barrier labels, dropping unknown
   labels) for the last `--bars` (175k) bars of the shared data, best of 3, next to one bare
   LightGBM fit on the resulting matrix (fold parameters, early stopping on the same inner
   split as a fold, so the round count is what a fold really trains).
2. one quick fold: the bundled 2022-2023 data, default quick stage, its last fold.
3. one full fold: the shared data 2019-01-01 .. 2023-12-31, default full stage, its last fold
   (about 4.9 years of training rows).

Each fold runs through the real code path: `steps.prepare` on a run in a fresh temporary
artifacts folder, then `steps.fold(run, stage, n, num_threads=--threads)`, which reads the
dataset from the store, plans, calls `fold.run_fold` (main model + volatility/time-of-day
baseline model) and writes predictions, model and metrics. It is timed twice: "cold" (the
worker's dataset cache empty, as for the first fold a worker runs) and "warm" (cache filled,
force=True; the state of every later fold in the same worker).

The compute floor of a fold is the bare LightGBM fit time on the same matrix: for each of the
two models of the fold, `lgb.Dataset(x_inner_train, y)` + `lgb.train(params, ...)` with
`fold.lightgbm_params` (+ the baseline's overrides), the same inner training rows, and exactly
the number of boosting rounds the fold's model really trained (best iteration + the early
stopping patience, capped at the round ceiling: what early stopping ran), with no validation
set and no callbacks. Floor = model floor + baseline floor. Everything else in a fold — the
validation set and its per-round evaluation, threshold search, predictions, metrics, parquet
and model writes, plan reads — is overhead. "fit (in fold)" is the fold's own `fit_seconds`
(construction + training with the validation set evaluated every round), reported separately.

Target on this 2-core machine: a fold's total time <= 1.3 x its bare fit time + 1 s.
Every figure is printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from bench_features_labels import best_of  # this folder: scripts run as bench/<name>.py
from stagegate_core.featureset import FEATURE_NAMES
from stagegate_core.spec import parse_manifest
from stagegate_core.specparts import ModelSpec
from stagegate_trainer import fold as fold_module
from stagegate_trainer import steps
from stagegate_trainer.dataset import LABEL, build_dataset, timestamps_ns
from stagegate_trainer.trading import OUTCOME_R, RISK_FRACTION, context_for, net_r

DEFAULT_DATA = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "ohlcv" / "BTC_USDT-15m.parquet"
)
TARGET_FACTOR, TARGET_SLACK = 1.3, 1.0


def manifest(name: str, artifacts: Path, stage: str, data: dict[str, Any]) -> Any:
    return parse_manifest(
        {
            "apiVersion": "stagegate.io/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": name},
            "spec": {
                "symbol": "BTC/USDT",
                "timeframe": "M15",
                "mode": stage,
                "data": data,
                "artifacts": {"uri": artifacts.as_uri()},
            },
        }
    )


@dataclass
class FitCall:
    """One call of `fold.fit` inside a fold, recorded by the spy."""

    x: np.ndarray
    y: np.ndarray
    ts: np.ndarray
    kwargs: dict[str, Any]
    fitted: fold_module.FittedModel
    call_seconds: float  # the whole fit() call: split, fit, validation predict, threshold


class FitSpy:
    """Wraps `fold.fit` (run_fold calls it by module name) to see each model a fold trains."""

    def __init__(self) -> None:
        self.calls: list[FitCall] = []
        self._real = fold_module.fit

    def __enter__(self) -> FitSpy:
        def spy(x: np.ndarray, y: np.ndarray, ts: np.ndarray, **kwargs: Any) -> Any:
            start = time.perf_counter()
            fitted = self._real(x, y, ts, **kwargs)
            self.calls.append(FitCall(x, y, ts, kwargs, fitted, time.perf_counter() - start))
            return fitted

        fold_module.fit = spy  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        fold_module.fit = self._real  # type: ignore[assignment]


def trained_rounds(call: FitCall) -> int:
    """The rounds early stopping really ran: best + patience, capped at the round ceiling.

    lgb.train truncates the returned booster to its best iteration, so the booster itself no
    longer says how many rounds were trained; early stopping stops exactly `patience` rounds
    after the best one, or at the ceiling.
    """
    spec: ModelSpec = call.kwargs["spec"]
    ceiling = call.kwargs.get("max_rounds") or spec.max_rounds
    return min(int(call.fitted.best_iteration) + spec.early_stopping_rounds, ceiling)


def bare_fit(call: FitCall, rounds: int | None = None, repeats: int = 1) -> float:
    """Bare Dataset + lgb.train on the fold's inner training rows: the compute floor."""
    spec: ModelSpec = call.kwargs["spec"]
    inner_end, _ = fold_module.inner_split(
        call.ts, spec.validation_fraction, call.kwargs["purge_ns"]
    )
    params = fold_module.lightgbm_params(spec, call.kwargs["num_threads"]) | (
        call.kwargs.get("overrides") or {}
    )
    x, y = call.x[:inner_end], call.y[:inner_end]
    names = call.kwargs["feature_names"]
    n = rounds or trained_rounds(call)

    def once() -> lgb.Booster:
        data = lgb.Dataset(x, y, feature_name=names, free_raw_data=True)
        return lgb.train(params, data, num_boost_round=n)

    seconds, _ = best_of(repeats, once)
    return seconds


def features_vs_fit(data: Path, bars: int, threads: int) -> None:
    print("== features + labels ==")
    frame = pd.read_parquet(data).tail(bars).reset_index(drop=True)
    man = manifest("bench-features", Path(tempfile.gettempdir()), "full", {"source": "bundled"})
    spec = man.spec
    t_build, table = best_of(3, lambda: build_dataset(frame, spec.label, "M15"))
    print(
        f"bars:                         {len(frame):,} ({frame['timestamp'].iloc[0]} .. "
        f"{frame['timestamp'].iloc[-1]}), {len(table):,} labelled rows x {len(FEATURE_NAMES)} "
        "features"
    )
    print(f"features+labels (build_dataset, best of 3): {t_build:8.3f} s")
    # One bare fit on the same matrix: the round count comes from a fit with early stopping
    # on the fold's inner split, then the bare fit reruns exactly those rounds.
    x = table[list(FEATURE_NAMES)].to_numpy(dtype=np.float32)
    y = table[LABEL].to_numpy(dtype=np.float64)
    ts = timestamps_ns(table)
    bar_ns = 15 * 60 * 10**9
    kwargs = {
        "spec": spec.model,
        "purge_ns": spec.purge_bars("full") * bar_ns,
        "num_threads": threads,
        "feature_names": list(FEATURE_NAMES),
        # The threshold is chosen on the validation rows' trades, as in a fold.
        "r_net": net_r(
            table[OUTCOME_R].to_numpy(dtype=np.float64),
            table[RISK_FRACTION].to_numpy(dtype=np.float64),
            context_for(spec).cost_fraction,
        ),
    }
    fitted = fold_module.fit(x, y, ts, **kwargs)  # type: ignore[arg-type]
    call = FitCall(x, y, ts, kwargs, fitted, 0.0)
    t_fit = bare_fit(call)
    print(
        f"bare lightgbm fit, same matrix:             {t_fit:8.3f} s  "
        f"({trained_rounds(call)} rounds = best {fitted.best_iteration} + patience "
        f"{spec.model.early_stopping_rounds}, "
        f"num_threads={threads})"
    )
    print(f"features+labels / bare fit:                 {t_build / t_fit:8.1%}")


def time_fold(label: str, man: Any, stage: str, threads: int) -> None:
    print(f"== {label} ==")
    run = steps.open_run(man)
    steps.claim(run)
    t_prep = time.perf_counter()
    plan = steps.prepare(run)
    t_prep = time.perf_counter() - t_prep
    stage_plan = steps.stage_plan(run, stage)  # type: ignore[arg-type]
    last = stage_plan.folds[-1]
    years = (last.train_end - last.train_start) / (365.25 * 86_400e9)
    print(
        f"prepare (not part of the fold):   {t_prep:8.3f} s  ({plan['bars']:,} bars, "
        f"{plan['labelledRows']:,} labelled rows, {len(stage_plan.folds)} {stage} folds)"
    )
    print(
        f"fold:                             {stage} {last.fold}/{len(stage_plan.folds)}: train "
        f"{last.to_json()['trainStart']} .. {last.to_json()['trainEnd']} ({years:.2f} years, "
        f"{last.n_train:,} rows), test {last.n_test:,} rows"
    )
    print(
        f"code path:                        steps.fold(run, {stage!r}, {last.fold}, "
        f"num_threads={threads}) on a prepared run in a temp artifacts folder"
    )

    results = {}
    for mode in ("cold", "warm"):
        if mode == "cold":
            steps._DATASET_CACHE.clear()
        with FitSpy() as spy:
            start = time.perf_counter()
            outcome = steps.fold(run, stage, last.fold, num_threads=threads, force=True)  # type: ignore[arg-type]
            total = time.perf_counter() - start
        results[mode] = (total, outcome, spy.calls)

    _, outcome, calls = results["warm"]
    model, baseline = calls
    floors = [bare_fit(c, repeats=2) for c in calls]
    floor = sum(floors)
    print(
        f"main model:      in-fold fit {model.fitted.fit_seconds:7.3f} s, fit() call "
        f"{model.call_seconds:7.3f} s, bare fit (floor) {floors[0]:7.3f} s  "
        f"[{model.x.shape[0]:,} rows x {model.x.shape[1]} features, {trained_rounds(model)} "
        f"rounds trained, best {model.fitted.best_iteration}]"
    )
    print(
        f"baseline model:  in-fold fit {baseline.fitted.fit_seconds:7.3f} s, fit() call "
        f"{baseline.call_seconds:7.3f} s, bare fit (floor) {floors[1]:7.3f} s  "
        f"[{baseline.x.shape[0]:,} rows x {baseline.x.shape[1]} features, "
        f"{trained_rounds(baseline)} rounds trained, best {baseline.fitted.best_iteration}]"
    )
    budget = TARGET_FACTOR * floor + TARGET_SLACK
    for mode in ("cold", "warm"):
        total, out, _ = results[mode]
        overhead = total - floor
        in_fold_fits = out.fit_seconds
        verdict = "MET" if total <= budget else "NOT MET"
        print(
            f"fold total ({mode}): {total:7.3f} s | floor (model+baseline bare fits) "
            f"{floor:7.3f} s | in-fold fits {in_fold_fits:7.3f} s | overhead vs floor "
            f"{overhead:7.3f} s | overhead beyond in-fold fits {total - in_fold_fits:7.3f} s | "
            f"total/floor {total / floor:5.2f}x"
        )
        print(
            f"target ({mode}):      total <= {TARGET_FACTOR} x {floor:.3f} + {TARGET_SLACK:.0f} s "
            f"= {budget:.3f} s  -> {verdict}"
        )
    written = sorted(k for k in run.store.list(f"{stage}/folds/") if f"/{last.fold:02d}/" in k)
    print(f"fold artifacts:                   {', '.join(written)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        epilog="Prints figures only; see the module docstring for the floor definition.",
    )
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="shared BTC/USDT M15 parquet"
    )
    parser.add_argument("--bars", type=int, default=175_000, help="bars for features+labels")
    parser.add_argument("--threads", type=int, default=2, help="LightGBM num_threads (cores)")
    parser.add_argument("--start", default="2019-01-01", help="full fold: first bar (UTC)")
    parser.add_argument("--end", default="2023-12-31T23:45:00", help="full fold: last bar (UTC)")
    parser.add_argument(
        "--skip",
        choices=["features", "quick", "full"],
        action="append",
        default=[],
        help="skip a section (repeatable)",
    )
    args = parser.parse_args()

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"machine: {cores} cores seen, lightgbm {lgb.__version__}, python "
        f"{sys.version.split()[0]}, num_threads={args.threads}, "
        f"{datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"
    )
    if "features" not in args.skip:
        features_vs_fit(args.data, args.bars, args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-fold-") as tmp:
        root = Path(tmp)
        if "quick" not in args.skip:
            time_fold(
                "quick fold (bundled data, default quick stage, last fold)",
                manifest("bench-quick", root / "quick", "quick", {"source": "bundled"}),
                "quick",
                args.threads,
            )
        if "full" not in args.skip:
            data = {
                "source": "file",
                "uri": str(args.data),
                "start": args.start,
                "end": args.end,
            }
            time_fold(
                f"full fold (shared data {args.start} .. {args.end}, default full stage, "
                "last fold)",
                manifest("bench-full", root / "full", "full", data),
                "full",
                args.threads,
            )


if __name__ == "__main__":
    main()
