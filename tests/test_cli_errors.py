"""Bad input through the real `stagegate` command: one line naming the problem, exit 2,
nothing written as complete."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.support.runs import stagegate


def assert_clean_error(result, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def no_completed_fold(root: Path) -> bool:
    return not list(root.rglob("metrics.json")) and not list(root.rglob("summary.json"))


def test_malformed_yaml(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("spec:\n  symbol: [BTC\n")
    assert_clean_error(stagegate("run", "bad.yaml", cwd=tmp_path), "bad.yaml", "malformed YAML")


def test_unknown_field_and_wrong_type(
    tmp_path: Path, manifest_factory: Callable[..., Path]
) -> None:
    path = manifest_factory(label={"horizonBarz": 5})
    assert_clean_error(
        stagegate("plan", str(path), cwd=tmp_path), "spec.label.horizonBarz: unknown field"
    )
    path = manifest_factory(parallelism="four")
    assert_clean_error(stagegate("run", str(path), cwd=tmp_path), "spec.parallelism")


def test_unknown_timeframe(tmp_path: Path, manifest_factory: Callable[..., Path]) -> None:
    path = manifest_factory(timeframe="M7")
    assert_clean_error(stagegate("run", str(path), cwd=tmp_path), "spec.timeframe")


def test_data_too_short_for_one_fold(tmp_path: Path, manifest_factory: Callable[..., Path]) -> None:
    path = manifest_factory(data={"source": "bundled", "start": "2023-12-01T00:00:00Z"})
    result = stagegate("run", str(path), "--artifacts", str(tmp_path / "runs"), cwd=tmp_path)
    assert_clean_error(result, "data too short for one fold", "rows available", "needs")
    assert no_completed_fold(tmp_path / "runs")


def _write_parquet(path: Path, frame: pd.DataFrame) -> None:
    frame.to_parquet(path)


def test_empty_corrupt_and_nan_data(tmp_path: Path, manifest_factory: Callable[..., Path]) -> None:
    path = manifest_factory()
    runs = tmp_path / "runs"
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet")
    result = stagegate(
        "run",
        str(path),
        "--data",
        str(tmp_path / "corrupt.parquet"),
        "--artifacts",
        str(runs),
        cwd=tmp_path,
    )
    assert_clean_error(result, "corrupt.parquet")

    empty = pd.DataFrame(
        {c: pd.Series(dtype="float64") for c in ["open", "high", "low", "close", "volume"]}
    )
    empty.insert(0, "timestamp", pd.Series(dtype="datetime64[ms, UTC]"))
    _write_parquet(tmp_path / "empty.parquet", empty)
    result = stagegate(
        "run",
        str(path),
        "--data",
        str(tmp_path / "empty.parquet"),
        "--artifacts",
        str(runs / "2"),
        cwd=tmp_path,
    )
    assert_clean_error(result, "empty.parquet")

    ts = pd.date_range("2023-01-01", periods=500, freq="15min", tz="UTC")
    price = 100 + np.cumsum(np.random.default_rng(0).normal(0, 0.1, 500))
    frame = pd.DataFrame(
        {
            "timestamp": ts,
            "open": price,
            "high": price + 1,
            "low": price - 1,
            "close": price,
            "volume": 1.0,
        }
    )
    frame.loc[123, "close"] = np.nan
    _write_parquet(tmp_path / "nan.parquet", frame)
    result = stagegate(
        "run",
        str(path),
        "--data",
        str(tmp_path / "nan.parquet"),
        "--artifacts",
        str(runs / "3"),
        cwd=tmp_path,
    )
    assert_clean_error(result, "nan.parquet", "2023-01-02 06:45")
    assert no_completed_fold(runs)


def test_unwritable_artifacts_location(
    tmp_path: Path, manifest_factory: Callable[..., Path]
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    result = stagegate(
        "run",
        str(manifest_factory()),
        "--artifacts",
        str(tmp_path / "a-file" / "runs"),
        cwd=tmp_path,
    )
    assert_clean_error(result, "a-file")


def test_unreachable_s3(tmp_path: Path, manifest_factory: Callable[..., Path]) -> None:
    env = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "AWS_DEFAULT_REGION": "us-east-1",
        "STAGEGATE_S3_MAX_ATTEMPTS": "2",
    }
    result = stagegate(
        "run", str(manifest_factory()), "--artifacts", "s3://runs/x", cwd=tmp_path, env=env
    )
    assert_clean_error(result, "127.0.0.1:9")


def test_missing_s3_credentials(
    tmp_path: Path, manifest_factory: Callable[..., Path], moto_server: str
) -> None:
    env = {
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    result = stagegate(
        "run", str(manifest_factory()), "--artifacts", "s3://runs/x", cwd=tmp_path, env=env
    )
    assert_clean_error(result, "credentials")


@pytest.mark.parametrize("command", ["run", "plan", "prepare"])
def test_missing_manifest(tmp_path: Path, command: str) -> None:
    assert_clean_error(stagegate(command, "nope.yaml", cwd=tmp_path), "nope.yaml", "cannot read")
