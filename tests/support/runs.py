"""Small TrainingJobs and a way to run the real `stagegate` command on them.

The stages are shortened so a whole two-stage run on real bundled candles takes seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

BIN = Path(sys.executable).parent


# Gates every model passes: for tests of the flow, not of the gates.
OPEN_GATES: dict[str, Any] = {
    "minAccuracy": 0,
    "minRecall": 0,
    "minRocAuc": 0,
    "minF1": 0,
    "mustBeatBaselines": False,
    "minExpectedReturn": -100,
    "minTrades": 0,
}


def small_spec(**overrides: Any) -> dict[str, Any]:
    """A spec over the last ~7 months of the bundled data: 2 quick folds, 4 full folds."""
    spec: dict[str, Any] = {
        "symbol": "BTC/USDT",
        "timeframe": "M15",
        "data": {"source": "bundled", "start": "2023-06-01T00:00:00Z"},
        "stages": {
            "quick": {"lookbackDays": 120, "minTrainDays": 60, "testPeriodDays": 20, "maxFolds": 2},
            "full": {"minTrainDays": 90, "testPeriodDays": 30, "maxFolds": 4},
        },
        "model": {"maxRounds": 60, "earlyStoppingRounds": 10},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def write_manifest(path: Path, name: str = "small", **overrides: Any) -> Path:
    doc = {
        "apiVersion": "stagegate.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": small_spec(**overrides),
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def stagegate(
    *args: str, cwd: Path, timeout: float = 240, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed `stagegate` console script, capturing text output."""
    return subprocess.run(
        [str(BIN / "stagegate"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


@pytest.fixture
def manifest_factory(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "small", **overrides: Any) -> Path:
        return write_manifest(tmp_path / f"{name}.yaml", name, **overrides)

    return make


def prepared_run(tmp_path: Path, **overrides: Any) -> Any:
    """A small run, claimed and prepared in `tmp_path`, for calling the steps on directly."""
    from stagegate_core.spec import parse_manifest
    from stagegate_trainer import steps

    spec = small_spec(**overrides)
    spec["artifacts"] = {"uri": str(tmp_path / "runs")}
    doc = {"apiVersion": "stagegate.io/v1alpha1", "kind": "TrainingJob",
           "metadata": {"name": "small"}, "spec": spec}  # fmt: skip
    run = steps.open_run(parse_manifest(doc))
    steps.claim(run)
    steps.prepare(run)
    return run
