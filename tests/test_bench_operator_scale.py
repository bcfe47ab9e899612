"""bench/bench_operator_scale.py still runs end to end (a small run): the figures of the
README come from it, and a bench that rots silently measures nothing."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]


def test_a_small_run_succeeds_and_reports_every_figure(tmp_path: Path) -> None:
    operator = Path(sys.executable).parent / "stagegate-operator"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_operator_scale.py"), "--count", "2",
         "--folds", "3", "--quick-folds", "2", "--operator-bin", str(operator)],
        capture_output=True, text=True, timeout=280, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "no process left" in done.stdout
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["succeeded"] == 2
    # Per TrainingJob: prepare, 2 quick folds, a summary, 3 full folds, a summary, the final.
    assert figures["k8s_jobs_created"] == 2 * (1 + 2 + 1 + 3 + 1 + 1)
    for key in (
        "approval_to_first_job_p50_s",
        "approval_to_first_job_p99_s",
        "approval_to_first_job_server_p99_s",
        "operator_cpu_s_per_job",
        "operator_requests_per_job",
        "operator_peak_rss_mib",
    ):
        assert math.isfinite(figures[key]) and figures[key] > 0, key
    # The operator's requests were told apart from the bench's and the node agent's.
    assert 1 <= figures["operator_requests_per_job"] < 10
