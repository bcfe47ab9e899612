"""What early stopping and the refit give: trees, ROC AUC and top-decile precision per stage.

    PYTHONPATH=core:trainer .venv/bin/python bench/bench_early_stopping.py \
        [--data PATH] [--start ISO] [--end ISO] [--stage quick|full|both] \
        [--config NAME='{"minRounds": 1, ...}' ...]

Each configuration is a set of `spec.model` overrides applied to examples/btc-usdt-m15.yaml.
Without --config the script compares the behaviour before issue 16 (`before`: logloss early
stopping, no minimum, patience 50, no refit) with the current defaults (`defaults`). Every fold
of each stage runs in this process through `steps.fold` (so exactly what a run computes), on a
temporary artifacts folder, followed by the final model.

Printed per configuration and stage:
- trees: the per-fold best iteration chosen on the inner split (median, min-max) and the
  rounds the fold's evaluated model has (after a refit, the scaled number);
- roc_auc: mean out-of-sample ROC AUC over the folds;
- top10%: mean over folds of the precision of the 10 % of test rows with the highest predicted
  probability (ties at the cut counted at their average label, so the figure does not depend on
  how ties are broken); beside it the test rows' base rate (the precision of no skill);
- final: the final model's rounds, its best iteration on the inner split, and its rows.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "trainer")]

from stagegate_core import layout  # noqa: E402
from stagegate_core.spec import load_manifest  # noqa: E402
from stagegate_trainer import finalmodel, steps  # noqa: E402
from stagegate_trainer.dataset import from_parquet_bytes  # noqa: E402

MANIFEST = ROOT / "examples" / "btc-usdt-m15.yaml"
BEFORE = {"minRounds": 1, "earlyStoppingRounds": 50, "earlyStoppingMetric": "binary_logloss",
          "refit": "none"}  # fmt: skip


def top_decile_precision(label: np.ndarray, proba: np.ndarray) -> float:
    k = max(1, len(label) // 10)
    order = np.sort(proba)[::-1]
    cut = order[k - 1]
    above = proba > cut
    tied = proba == cut
    taken_at_cut = k - int(above.sum())
    return float((label[above].sum() + taken_at_cut * label[tied].mean()) / k)


def run_config(name: str, overrides: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    manifest = load_manifest(MANIFEST)
    spec = manifest.spec
    model = spec.model.model_validate({**spec.model.model_dump(by_alias=True), **overrides})
    data = spec.data.model_copy(
        update={k: v for k, v in (("start", args.start), ("end", args.end)) if v}
    )
    stages = ("quick", "full") if args.stage == "both" else (args.stage,)
    mode = "sequential" if len(stages) == 2 else stages[0]
    spec = spec.model_copy(update={"model": model, "data": data, "mode": mode})
    out: dict[str, Any] = {"config": name, "overrides": overrides}
    with tempfile.TemporaryDirectory() as folder:
        manifest = manifest.model_copy(update={"spec": spec})
        manifest = steps.with_overrides(manifest, data_uri=args.data, artifacts_uri=folder)
        run = steps.open_run(manifest)
        steps.claim(run)
        plan = steps.prepare(run)
        for stage in stages:
            t0 = time.perf_counter()
            count = plan["stages"][stage]["foldCount"]
            best, rounds, auc, top, base = [], [], [], [], []
            for number in range(1, count + 1):
                metrics = steps.fold(run, stage, number, num_threads=args.threads).metrics
                best.append(metrics["bestIteration"])
                rounds.append(metrics.get("training", {}).get("rounds", metrics["bestIteration"]))
                auc.append(metrics["model"]["rocAuc"])
                predictions = from_parquet_bytes(
                    run.store.read_bytes(layout.fold_predictions(stage, number))
                )
                label = predictions["label"].to_numpy(dtype=np.float64)
                top.append(top_decile_precision(label, predictions["proba"].to_numpy()))
                base.append(float(label.mean()))
            out[stage] = {
                "folds": count,
                "bestIteration": {
                    "median": statistics.median(best),
                    "min": min(best),
                    "max": max(best),
                },
                "rounds": {"median": statistics.median(rounds), "max": max(rounds)},
                "rocAuc": statistics.fmean(a for a in auc if a is not None and not math.isnan(a)),
                "topDecilePrecision": statistics.fmean(top),
                "baseRate": statistics.fmean(base),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        card = finalmodel.final(run, num_threads=args.threads)
        training = card.get("training") or {}
        out["final"] = {
            "rounds": training.get("rounds", card["parameters"]["bestIteration"]),
            "bestIteration": card["parameters"]["bestIteration"],
            "rows": training.get("rows", card["data"]["trainRows"]),
        }
    return out


def show(result: dict[str, Any]) -> None:
    print(f"== {result['config']}: {json.dumps(result['overrides'])}")
    for stage in ("quick", "full"):
        if stage not in result:
            continue
        s = result[stage]
        b, r = s["bestIteration"], s["rounds"]
        print(
            f"  {stage:5} {s['folds']:3} folds  best iteration median {b['median']:g} "
            f"({b['min']}-{b['max']}), rounds used median {r['median']:g} (max {r['max']})  "
            f"roc_auc {s['rocAuc']:.4f}  top10% precision {s['topDecilePrecision']:.4f} "
            f"(base rate {s['baseRate']:.4f})  {s['seconds']} s"
        )
    f = result["final"]
    print(
        f"  final model: {f['rounds']} rounds (best iteration {f['bestIteration']} on the inner "
        f"split), {f['rows']:,} rows"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="parquet/CSV of candles instead of the bundled data")
    parser.add_argument("--start", help="first bar (ISO), e.g. 2017-08-17")
    parser.add_argument("--end", help="last bar (ISO)")
    parser.add_argument("--stage", choices=["quick", "full", "both"], default="both")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--config", action="append", default=[], metavar="NAME=JSON")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args()
    configs = [("before", BEFORE), ("defaults", {})]
    if args.config:
        configs = [(c.split("=", 1)[0], json.loads(c.split("=", 1)[1])) for c in args.config]
    results = []
    for name, overrides in configs:
        result = run_config(name, overrides, args)
        show(result)
        results.append(result)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
