"""Time whole stages through the local runner against their compute floor, with peak memory.

    PYTHONPATH=core:cli:trainer .venv/bin/python bench/bench_stages.py [--stage quick|full|both]

What is measured (local run issue):

- quick: `LocalRunner(manifest, approve="no")` with mode quick on the bundled 2022-2023 data
  (examples/btc-usdt-m15.yaml, default quick stage).
- full: `LocalRunner(manifest, approve="yes")` with mode full on the shared BTC/USDT M15 data
  from 2019-01-01 to 2023-12-31, passed the way `stagegate run --data` passes it
  (`steps.with_overrides(manifest, data_uri=<temp parquet slice of those years>)`). Mode full
  also trains the final model after the stage, which is included in the wall time.

Each stage runs in its own child process (so its figures belong to that stage alone) in a
fresh temporary artifacts folder, with the runner's default workers (one per core), each fold's
LightGBM threads capped at cores // busy workers (threadshare.py), exactly as `stagegate run`
does.

Figures per stage:
- wall: `execute()` end to end, prepare (data load, features, labels, plan) included; plus the
  runner's own stage wall time (first fold submitted .. stage summarised).
- compute floor: the sum over the stage's folds of the bare LightGBM fit seconds the runner
  reports (`RunResult.fit_seconds`: model + baseline fit inside each fold). Because folds run
  in parallel, the sum is also divided by the worker count ("floor per core"). A fold that
  ran alone took the idle workers' cores, so its fit seconds are those at more threads: that
  lowers the floor (a stricter ratio), as the wall time falls too.
- ratios: wall / sum of fits, and wall / (sum of fits / workers), the latter being the honest
  overhead ratio when the workers ran in parallel.
- peak memory: the largest sum of RSS over the whole process tree (runner + worker
  processes), sampled with psutil every --interval seconds in a thread; and ru_maxrss of the
  runner process itself, and the largest sampled RSS of one worker.

Targets on this 2-core machine: quick stage <= 60 s end to end, full stage <= 15 min, overhead
ratio (wall / floor per core) <= 1.5 for the quick stage and <= 1.1 for the full stage (issue
14), peak memory <= 4 GiB. For context, the replaced system took 3-4 h for the quick stage and
35-45 h for the full stage. Every figure is printed; nothing is asserted. The last line is one
JSON object (quick_wall_s, quick_ratio_to_fits, full_wall_s, full_ratio_to_fits, peak_rss_gib,
...) for comparing runs.

`--python` runs the stages under another interpreter (it needs psutil). Use one with
`pip install 'stagegate[trainer]'` only, as `scripts/run-example` sets up, to measure what a
user meets: with scikit-learn installed (the dev extra), importing LightGBM also imports
scikit-learn, about 1 s more of start-up (in the fork server). The figures say which it was.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MANIFEST = ROOT / "examples" / "btc-usdt-m15.yaml"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ohlcv" / "BTC_USDT-15m.parquet"
GIB = 1024**3
TARGETS = {"quick": 60.0, "full": 15 * 60.0}
OLD_SYSTEM = {"quick": "3-4 h", "full": "35-45 h"}
OLD_SECONDS = {"quick": (3 * 3600, 4 * 3600), "full": (35 * 3600, 45 * 3600)}
RATIO_TARGETS = {"quick": 1.5, "full": 1.1}
MEMORY_TARGET = 4 * GIB


class TreeSampler(threading.Thread):
    """Peak of the summed RSS of this process and all its descendants, and the CPU time of the
    descendants (workers are the fork server's children, which RUSAGE_CHILDREN never counts:
    the fork server outlives the stage). A descendant's CPU is its last sample, so up to one
    interval of each short-lived process may be missed."""

    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = 0
        self.peak_processes = 0
        self.samples = 0
        self._halt = threading.Event()
        self._me = psutil.Process(os.getpid())
        self._cpu: dict[int, float] = {}  # pid: user + system seconds, last seen
        self.largest_descendant = 0  # the largest RSS of one worker (or the fork server)

    @property
    def descendants_cpu(self) -> float:
        return sum(self._cpu.values())

    def sample(self) -> None:
        procs = [self._me, *self._me.children(recursive=True)]
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                rss = p.memory_info().rss
                total += rss
                if p.pid != self._me.pid:
                    self.largest_descendant = max(self.largest_descendant, rss)
                    times = p.cpu_times()
                    self._cpu[p.pid] = times.user + times.system
        self.samples += 1
        if total > self.peak:
            self.peak, self.peak_processes = total, len(procs)

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sample()


def slice_data(source: Path, start: str, end: str, target: Path) -> tuple[int, str, str]:
    import pandas as pd

    frame = pd.read_parquet(source)
    ts = frame["timestamp"]
    lo = pd.Timestamp(start, tz="UTC")
    hi = pd.Timestamp(end, tz="UTC")
    part = frame.loc[(ts >= lo) & (ts <= hi)].reset_index(drop=True)
    part.to_parquet(target, index=False)
    return len(part), str(part["timestamp"].iloc[0]), str(part["timestamp"].iloc[-1])


def run_stage(args: argparse.Namespace) -> dict[str, Any]:
    """Run one stage in this process and return its figures (called in the child)."""
    from rich.console import Console
    from stagegate_core import layout
    from stagegate_core.spec import load_manifest
    from stagegate_trainer import steps
    from stagegate_trainer.runner import LocalRunner, available_cores

    stage = args.stage
    out: dict[str, Any] = {"stage": stage}
    with tempfile.TemporaryDirectory(prefix=f"bench-stage-{stage}-") as tmp:
        manifest = load_manifest(args.manifest)
        data_uri = None
        if stage == "full":
            sliced = Path(tmp) / "btc-usdt-m15-slice.parquet"
            rows, first, last = slice_data(args.data, args.start, args.end, sliced)
            out["data"] = f"{args.data} sliced to {rows:,} bars, {first} .. {last}"
            data_uri = str(sliced)
        else:
            out["data"] = f"bundled ({manifest.spec.data.source})"
        manifest = steps.with_overrides(
            manifest, data_uri=data_uri, artifacts_uri=(Path(tmp) / "artifacts").as_uri()
        )
        manifest = manifest.model_copy(
            update={"spec": manifest.spec.model_copy(update={"mode": stage})}
        )
        log = io.StringIO()
        console = Console(file=sys.stderr if args.verbose else log, width=120)
        sampler = TreeSampler(args.interval)
        sampler.start()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        runner = LocalRunner(
            manifest,
            approve="yes" if stage == "full" else "no",
            workers=args.workers,
            console=console,
            show_progress=False,
        )
        result = runner.execute()
        wall = time.perf_counter() - t0
        runner_cpu = time.process_time() - cpu0
        sampler.stop()
        plan = runner.run.store.read_json(layout.PLAN)
        out.update(
            phase=result.status.phase,
            exit_code=result.exit_code,
            wall=wall,
            runner_wall=result.wall_seconds,
            stage_wall=result.stage_seconds.get(stage),
            fit_sum=result.fit_seconds.get(stage, 0.0),
            folds=plan["stages"][stage]["foldCount"],
            bars=plan["bars"],
            rows=plan["labelledRows"],
            workers=runner.workers,
            cores=available_cores(),
            final_model=runner.run.store.exists(layout.MODEL_CARD),
            peak_tree=sampler.peak,
            peak_processes=sampler.peak_processes,
            samples=sampler.samples,
            runner_cpu=runner_cpu,
            children_cpu=sampler.descendants_cpu,
            load=os.getloadavg()[0],
            sklearn=importlib.util.find_spec("sklearn") is not None,
            python=sys.executable,
            maxrss_self=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            largest_descendant=sampler.largest_descendant,
        )
    return out


def report(r: dict[str, Any]) -> None:
    s = r["stage"]
    wall, fit_sum, workers = r["wall"], r["fit_sum"], r["workers"]
    per_core = fit_sum / workers if workers else fit_sum
    print(f"== {s} stage ==")
    print(f"data:                        {r['data']}")
    print(
        f"plan:                        {r['folds']} {s} folds ({r['bars']:,} bars, "
        f"{r['rows']:,} labelled rows); {r['workers']} workers on {r['cores']} cores, threads "
        "= cores / busy workers"
    )
    print(
        f"result:                      phase {r['phase']}, exit code {r['exit_code']}, "
        f"final model {'written' if r['final_model'] else 'not trained'}"
    )
    print(f"wall time, end to end:       {wall:9.2f} s  (runner's own: {r['runner_wall']:.2f} s)")
    stage_wall = r["stage_wall"]
    if stage_wall is not None:
        print(
            f"stage wall (folds+summary):  {stage_wall:9.2f} s  (outside it: prepare, startup"
            f"{', final model' if r['final_model'] else ''}: {wall - stage_wall:.2f} s)"
        )
    print(f"sum of fit seconds (floor):  {fit_sum:9.2f} s  over {r['folds']} folds")
    print(f"floor per core (sum/{workers}):     {per_core:9.2f} s")
    print(f"ratio wall / sum of fits:    {wall / fit_sum:9.2f}")
    ratio = wall / per_core
    aim = RATIO_TARGETS[s]
    print(
        f"ratio wall / floor per core: {ratio:9.2f}  (target <= {aim}: "
        f"{'MET' if ratio <= aim else 'NOT MET'})"
    )
    if stage_wall is not None:
        print(f"ratio stage wall / per core: {stage_wall / per_core:9.2f}")
    target = TARGETS[s]
    print(
        f"wall target:                 <= {target:.0f} s: {'MET' if wall <= target else 'NOT MET'}"
    )
    peak = r["peak_tree"]
    print(
        f"peak RSS, process tree:      {peak / GIB:9.3f} GiB  ({r['peak_processes']} processes at "
        f"the peak, {r['samples']} samples; target <= 4 GiB: "
        f"{'MET' if peak <= MEMORY_TARGET else 'NOT MET'})"
    )
    print(
        f"cpu seconds:                 runner process {r['runner_cpu']:.2f} s (prepare, loop, "
        f"summaries, sampler), fork server and workers {r['children_cpu']:.2f} s; 1-min load at "
        f"the end {r['load']:.2f} (other work on the machine skews timings)"
    )
    print(
        f"interpreter:                 {r['python']} (scikit-learn "
        f"{'installed: LightGBM imports it' if r['sklearn'] else 'absent'})"
    )
    print(f"ru_maxrss runner process:    {r['maxrss_self'] / GIB:9.3f} GiB")
    print(f"largest worker RSS (sampled): {r['largest_descendant'] / GIB:8.3f} GiB")
    lo, hi = OLD_SECONDS[s]
    print(
        f"old system, for context:     {OLD_SYSTEM[s]} -> {lo / wall:,.0f}x-{hi / wall:,.0f}x "
        "faster now"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        epilog="Prints figures only; see the module docstring for what each figure means.",
    )
    parser.add_argument("--stage", choices=["quick", "full", "both"], default="both")
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="full stage candles")
    parser.add_argument("--start", default="2019-01-01", help="full stage: first bar (UTC)")
    parser.add_argument("--end", default="2023-12-31T23:45:00", help="full stage: last bar (UTC)")
    parser.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: cores)"
    )
    parser.add_argument("--interval", type=float, default=0.2, help="RSS sampling period, s")
    parser.add_argument("--verbose", action="store_true", help="show the runner's output")
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter that runs the stages (needs psutil)"
    )
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()

    if args.json:  # one stage, in this process; figures as JSON on the last line
        print(json.dumps(run_stage(args)))
        return
    stages = ["quick", "full"] if args.stage == "both" else [args.stage]
    results: dict[str, dict[str, Any]] = {}
    for stage in stages:
        cmd = [
            args.python,
            __file__,
            "--json",
            "--stage",
            stage,
            "--manifest",
            str(args.manifest),
            "--data",
            str(args.data),
            "--start",
            args.start,
            "--end",
            args.end,
            "--interval",
            str(args.interval),
        ]
        if args.workers:
            cmd += ["--workers", str(args.workers)]
        if args.verbose:
            cmd.append("--verbose")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("core", "cli", "trainer")),
        }
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True, env=env)
        results[stage] = json.loads(done.stdout.strip().splitlines()[-1])
        report(results[stage])
        sys.stdout.flush()
    print(json.dumps(summary_line(results)))


def summary_line(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The figures of every stage that ran, under names stable from run to run."""
    line: dict[str, Any] = {"bench": "stages"}
    for stage, r in results.items():
        per_core = r["fit_sum"] / r["workers"] if r["workers"] else r["fit_sum"]
        line.update({
            f"{stage}_wall_s": round(r["wall"], 3),
            f"{stage}_stage_wall_s": round(r["stage_wall"] or 0.0, 3),
            f"{stage}_fit_sum_s": round(r["fit_sum"], 3),
            f"{stage}_floor_per_core_s": round(per_core, 3),
            f"{stage}_ratio_to_fits": round(r["wall"] / per_core, 3) if per_core else None,
            f"{stage}_ratio_target": RATIO_TARGETS[stage],
            f"{stage}_folds": r["folds"],
        })  # fmt: skip
    line["peak_rss_gib"] = round(max(r["peak_tree"] for r in results.values()) / GIB, 3)
    first = next(iter(results.values()))
    line.update(workers=first["workers"], cores=first["cores"], sklearn=first["sklearn"])
    return line


if __name__ == "__main__":
    main()
