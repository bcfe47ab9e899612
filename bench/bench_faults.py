"""The fault campaign (issue 11): many TrainingJobs on the real control plane, each hit by one
real fault at a random moment, each judged against a fault-free run.

    .venv/bin/python bench/bench_faults.py                 # 35 runs: every fault 5 times
    .venv/bin/python bench/bench_faults.py --rounds 1      # one run per fault

What runs: a private `tests.cluster` cluster (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, the node agent), the Helm chart's operator as its Deployment, SeaweedFS
(`weed mini`, built by scripts/build-seaweedfs) as S3 behind a delay proxy, and a versioned
bucket. Each run is a sequential TrainingJob (2 quick + 4 full folds, auto approval, open
gates, maxRetries 3) on the bundled candles. Faults (tests/support/faults.py): the operator
pod deleted with no grace, a training fold process SIGKILLed, the API server restarted, etcd
restarted, the S3 server stopped for 5-60 s, the node agent SIGKILLed and restarted, S3
delayed by 0.2-1 s per chunk for 10-30 s. The moment is uniform over the first 80 % of the
fault-free run's duration.

A run passes when it ends Succeeded with every fold's metrics.json byte-identical to the
fault-free run's and no fold trained twice (versions of metrics.json), or Failed with a
message naming the cause. Printed: one row per run (fault, when, outcome, extra time against
the fault-free run, failed attempts, trainings, metrics), a summary per fault, and one JSON
line last. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import faults
from tests.support.kube import fetch_kube_binaries
from tests.support.seaweed import weed_binary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="runs per fault (default 5)")
    p.add_argument("--seed", type=int, default=11)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    plan = [fault for _ in range(args.rounds) for fault in faults.FAULTS]
    rng.shuffle(plan)
    work = Path(tempfile.mkdtemp(prefix="stagegate-faults-", dir="/var/tmp"))
    started = time.monotonic()
    try:
        with faults.campaign(work, fetch_kube_binaries(), weed_binary()) as campaign:
            reference = campaign.run_reference()
            print(f"fault-free run: {reference.seconds:.1f} s, {len(campaign.reference)} folds")
            outcomes = [reference]
            for number, fault in enumerate(plan):
                at = faults.moment(fault, rng, campaign.reference_seconds)
                outcome = campaign.run(f"run-{number:02d}", fault, at, rng)
                outcomes.append(outcome)
                print(f"  [{number + 1}/{len(plan)}] {fault} at {at:.1f} s: {outcome.phase}"
                      f"{'' if outcome.passed else ' (FAILED THE CHECK)'} in {outcome.seconds} s"
                      f"{'' if outcome.injected else ' (fault not injected)'}",
                      flush=True)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(faults.table(outcomes, reference.seconds))
    print()
    injected = outcomes[1:]
    by_fault: dict[str, list[faults.Outcome]] = {}
    for o in injected:
        by_fault.setdefault(str(o.fault), []).append(o)
    for fault, runs in by_fault.items():
        extra = [o.seconds - reference.seconds for o in runs]
        print(f"  {fault:22s} runs {len(runs)}, passed {sum(o.passed for o in runs)}, "
              f"succeeded {sum(o.phase == 'Succeeded' for o in runs)}, extra time "
              f"mean {sum(extra) / len(extra):+.1f} s, max {max(extra):+.1f} s")  # fmt: skip
    passed = sum(o.passed for o in injected)
    missed = sum(not o.injected for o in injected)
    twice = sum(bool(o.trained_twice) for o in injected)
    print(f"\n{passed}/{len(injected)} runs passed (floor: all; a fault that could not be "
          f"injected does not pass: {missed} such); folds trained twice in {twice} "
          f"runs (floor: 0); campaign wall {time.monotonic() - started:.0f} s")  # fmt: skip
    print(json.dumps({
        "runs": len(injected), "passed": passed, "not_injected": missed,
        "trained_twice_runs": twice,
        "succeeded": sum(o.phase == "Succeeded" for o in injected),
        "failed_with_cause": sum(o.phase == "Failed" and o.passed for o in injected),
        "reference_seconds": reference.seconds,
        "extra_seconds_mean": round(
            sum(o.seconds - reference.seconds for o in injected) / max(len(injected), 1), 1),
        "by_fault": {f: sum(o.passed for o in runs) for f, runs in by_fault.items()},
    }))  # fmt: skip
    return 0 if passed == len(injected) else 1


if __name__ == "__main__":
    raise SystemExit(main())
