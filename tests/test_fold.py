"""One fold, honestly: determinism, no test rows in any choice, and no signal from noise."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from stagegate_trainer.fold import inner_split

from tests.support.runs import stagegate

NS_BAR = 15 * 60 * 10**9


def test_same_spec_data_and_seed_give_byte_identical_metrics(
    tmp_path: Path, manifest_factory: Callable[..., Path]
) -> None:
    path = str(manifest_factory())
    outputs = []
    for threads, folder in ((1, "a"), (2, "b")):
        result = stagegate(
            "fold",
            path,
            "--stage",
            "quick",
            "--fold",
            "2",
            "--threads",
            str(threads),
            "--artifacts",
            str(tmp_path / folder),
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("Fold 2/2: accuracy=")
        metrics = tmp_path / folder / "default/small/local/quick/folds/02/metrics.json"
        outputs.append(metrics.read_bytes())
    assert outputs[0] == outputs[1]
    again = stagegate(
        "fold",
        path,
        "--stage",
        "quick",
        "--fold",
        "2",
        "--artifacts",
        str(tmp_path / "a"),
        cwd=tmp_path,
    )
    assert "kept from an earlier run" in again.stdout
    forced = stagegate(
        "fold",
        path,
        "--stage",
        "quick",
        "--fold",
        "2",
        "--force",
        "--artifacts",
        str(tmp_path / "a"),
        cwd=tmp_path,
    )
    assert forced.returncode == 0 and "kept" not in forced.stdout
    assert (tmp_path / "a/default/small/local/quick/folds/02/metrics.json").read_bytes() == (
        outputs[0]
    )


def test_inner_split_is_purged() -> None:
    ts = np.arange(1000, dtype=np.int64) * NS_BAR
    inner_end, val_start = inner_split(ts, 0.2, 49 * NS_BAR)
    assert val_start == 800
    assert inner_end == 800 - 49
    assert ts[inner_end - 1] + 49 * NS_BAR < ts[val_start]


def test_predictions_cover_exactly_the_test_period(
    tmp_path: Path, manifest_factory: Callable[..., Path]
) -> None:
    path = str(manifest_factory())
    result = stagegate(
        "fold", path, "--stage", "quick", "--fold", "1", "--artifacts", str(tmp_path), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "default/small/local"
    metrics = json.loads((folder / "quick/folds/01/metrics.json").read_text())
    predictions = pd.read_parquet(folder / "quick/folds/01/predictions.parquet")
    start = pd.Timestamp(metrics["test"]["start"])
    end = pd.Timestamp(metrics["test"]["end"])
    assert len(predictions) == metrics["test"]["rows"]
    assert predictions["timestamp"].min() >= start and predictions["timestamp"].max() < end
    train_end = pd.Timestamp(metrics["train"]["end"])
    assert train_end + pd.Timedelta(minutes=15 * 49) <= start
    assert set(predictions["signal"].unique()) <= {0, 1}
    assert metrics["model"]["hitRateTp1"] == metrics["model"]["precision"]


@pytest.mark.timeout(300)
def test_a_random_walk_has_no_edge(tmp_path: Path, manifest_factory: Callable[..., Path]) -> None:
    """On a driftless random walk with ATR-scaled barriers, an honest pipeline's mean
    out-of-sample ROC AUC is about 0.5; leakage would push it up."""
    rng = np.random.default_rng(7)
    n = 96 * 400
    ts = pd.date_range("2022-01-01", periods=n, freq="15min", tz="UTC")
    vol = 0.002 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))  # volatility regimes, no drift
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1, n) * vol))
    open_ = np.concatenate(([100.0], close[:-1]))
    wiggle = np.abs(rng.normal(0, 1, n)) * vol * close
    frame = pd.DataFrame(
        {
            "timestamp": ts,
            "open": open_,
            "close": close,
            "high": np.maximum(open_, close) + wiggle,
            "low": np.minimum(open_, close) - wiggle,
            "volume": rng.lognormal(3, 1, n),
        }
    )
    frame.to_parquet(tmp_path / "walk.parquet")
    path = manifest_factory(
        data={"source": "file", "uri": str(tmp_path / "walk.parquet"), "start": None},
        stages={
            "quick": {"lookbackDays": 400, "minTrainDays": 120, "testPeriodDays": 40, "maxFolds": 6}
        },
        model={"maxRounds": 200, "earlyStoppingRounds": 30},
    )
    result = stagegate(
        "run",
        str(path),
        "--mode",
        "quick",
        "--output",
        "json",
        "--artifacts",
        str(tmp_path / "runs"),
        cwd=tmp_path,
    )
    # No edge, so the gates fail: the run completes with exit code 5 (completed, gates failed).
    assert result.returncode == 5, result.stderr
    summary = json.loads(result.stdout)["stages"]["quick"]["summary"]
    print("random-walk mean ROC AUC", summary["rocAuc"])
    assert abs(summary["rocAuc"]["mean"] - 0.5) < 0.03, summary["rocAuc"]
