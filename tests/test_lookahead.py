"""The look-ahead guard and custom features (issue 13): every feature, built in or custom, is
checked by `prepare` before any fold trains; the example package under examples/features is
installed in the dev environment and reached through its real entry points."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from stagegate_core.featureset import FEATURE_NAMES, feature_names
from stagegate_core.spec import SpecError, TrainingJobSpec, parse_manifest
from stagegate_trainer.dataset import context_columns, feature_table, prepare_dataset
from stagegate_trainer.features import build_features
from stagegate_trainer.labels import horizon_labels
from stagegate_trainer.lookahead import FeatureError, check_causality, check_quality

from tests.support.runs import OPEN_GATES, stagegate, write_manifest
from tests.test_features import BAR, load_btc, random_ohlcv

REPO = Path(__file__).resolve().parents[1]


def spec(**overrides: Any) -> TrainingJobSpec:
    doc = {"apiVersion": "stagegate.io/v1alpha1", "kind": "TrainingJob",
           "metadata": {"name": "t"}, "spec": {"symbol": "BTC/USDT", **overrides}}  # fmt: skip
    return parse_manifest(doc).spec


def guard(compute: Any, frame: pd.DataFrame) -> None:
    check_causality(compute, frame, cuts=4, window_bars=4000, after_bars=300, warmup_bars=700,
                    seed=7)  # fmt: skip


def test_built_in_features_pass_the_guard_on_real_bars_with_its_cost() -> None:
    frame = load_btc("2023-01-01", "2023-07-01")
    dataset, report = prepare_dataset(frame, spec())
    assert len(report.cuts) == 3 and report.window[1] == len(frame)
    print(f"guard on {len(frame):,} bars: {report.seconds:.3f} s, cuts {report.cuts}")
    assert list(dataset.columns[1 : 1 + len(FEATURE_NAMES)]) == list(FEATURE_NAMES)


def test_gap_aware_features_are_not_flagged_on_data_with_outages() -> None:
    frame = random_ohlcv(5000, seed=3, gap_rate=0.05)
    guard(lambda f: build_features(f, bar=BAR), frame)  # prev_gap_bars, bars_since_gap among them

    def bars_since_outage(f: pd.DataFrame) -> pd.DataFrame:  # a custom gap-aware feature
        step = f["timestamp"].diff().dt.total_seconds().to_numpy()
        gap = np.nan_to_num(step) > 900 * 1.5
        since = np.arange(len(f)) - np.maximum.accumulate(np.where(gap, np.arange(len(f)), 0))
        return pd.DataFrame({"since": since.astype(float)}, index=f.index)

    guard(bars_since_outage, frame)


@pytest.mark.parametrize(
    ("name", "leak"),
    [("shifted", lambda c: c.pct_change().shift(-1)),
     ("centred", lambda c: c.rolling(9, center=True).mean() / c),
     ("future_max", lambda c: c[::-1].rolling(24, min_periods=1).max()[::-1] / c),
     ("whole_series_z", lambda c: (c - c.mean()) / c.std())],
)  # fmt: skip
def test_look_ahead_is_caught_and_named(name: str, leak: Any) -> None:
    frame = random_ohlcv(5000, seed=4)

    def compute(f: pd.DataFrame) -> pd.DataFrame:
        out = build_features(f, bar=BAR, names=["ret_1", "rsi_14"])
        out[name] = leak(f["close"]).to_numpy()
        return out

    with pytest.raises(FeatureError, match=rf"^feature {name} looks ahead: its value at row \d+"):
        guard(compute, frame)


def test_short_data_still_gets_every_cut_and_is_checked() -> None:
    """Three years of daily bars are fewer than the warm-up plus the bars after a cut: the
    check shrinks both instead of skipping."""
    frame = random_ohlcv(1100, seed=12, gap_rate=0.0)

    def leaky(f: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"next": f["close"].shift(-1).to_numpy()}, index=f.index)

    builtin = lambda f: build_features(f, bar=BAR)  # noqa: E731
    report = check_causality(builtin, frame, cuts=3, window_bars=8192, after_bars=512,
                             warmup_bars=1000, seed=1)  # fmt: skip
    assert len(report.cuts) == 3
    with pytest.raises(FeatureError, match="feature next looks ahead"):
        check_causality(leaky, frame, cuts=3, window_bars=8192, after_bars=512,
                        warmup_bars=1000, seed=1)  # fmt: skip


def test_quality_checks_name_the_feature() -> None:
    rows = pd.DataFrame({"ok": np.arange(100.0), "flat": np.ones(100), "holes": np.nan})
    with pytest.raises(FeatureError, match="feature flat is constant"):
        check_quality(rows[["ok", "flat"]], warmup_bars=10, max_nan_fraction=0.05)
    assert check_quality(rows[["ok", "flat"]], warmup_bars=10, max_nan_fraction=0.05,
                         may_be_constant=frozenset({"flat"})) == ["flat"]  # fmt: skip
    with pytest.raises(FeatureError, match="feature holes is NaN on every row"):
        check_quality(rows[["holes"]], warmup_bars=10, max_nan_fraction=0.05)
    mostly = rows[["ok"]].copy()
    mostly.loc[50:, "ok"] = np.nan
    with pytest.raises(
        FeatureError, match=r"feature ok is NaN on 55\.6% .*\(features\.guard\.maxNanFraction\)"
    ):
        check_quality(mostly, warmup_bars=10, max_nan_fraction=0.05)


def test_feature_groups_and_windows_choose_the_model_columns() -> None:
    chosen = spec(features={"groups": ["calendar", "returns"], "windows": {"returns": [3, 1]}})
    assert chosen.features.builtin_names() == ("ret_1", "ret_3", "tod_sin", "tod_cos",
                                               "dow_sin", "dow_cos")  # fmt: skip
    assert spec().features.builtin_names() == FEATURE_NAMES == feature_names()
    table = feature_table(random_ohlcv(2000, seed=1), chosen.features, "M15")
    # The baseline's inputs are always there, whatever the model is given.
    assert {"rv_8", "atr_14", "hl_range_mean_16"} <= set(table.columns)
    with pytest.raises(SpecError, match="at least one feature group or custom feature"):
        spec(features={"groups": []})
    with pytest.raises(SpecError, match="named twice"):
        spec(features={"custom": [{"name": "a"}, {"name": "a"}]})


def test_custom_features_come_from_entry_points_and_fail_by_name() -> None:
    frame = random_ohlcv(3000, seed=2)
    custom = spec(features={"custom": [{"name": "range_position", "params": {"window": 24}},
                                       {"name": "return_zscore"}]}).features  # fmt: skip
    table = feature_table(frame, custom, "M15")
    # Several columns are named <feature>.<column>; a single one takes the feature's name.
    assert {"range_position.position", "range_position.width", "return_zscore"} <= set(
        table.columns
    )
    for features, message in (
        ({"custom": [{"name": "nope"}]}, "custom feature nope: no entry point 'nope'"),
        ({"custom": [{"name": "return_zscore", "params": {"window": "x"}}]},
         "custom feature return_zscore raised ValueError: min_periods must be an integer"),
    ):  # fmt: skip
        with pytest.raises(FeatureError, match=message):
            feature_table(frame, spec(features=features).features, "M15")


def test_horizon_labels_use_the_close_h_bars_after_the_entry() -> None:
    frame = pd.DataFrame({
        "timestamp": pd.date_range("2023-01-01", periods=6, freq="15min", tz="UTC"),
        "open": [10.0, 10.0, 10.0, 10.0, 10.0, 10.0],
        "close": [10.0, 10.5, 9.0, 10.05, 11.0, 10.0],
    })  # fmt: skip
    y = horizon_labels(frame, horizon_bars=2, dead_band=0.01, bar=BAR)
    # Entry at the next open (10); the close 2 bars later: 9.0 -> 0, 10.05 inside ±1 % -> NaN,
    # 11.0 -> 1, 10.0 inside the band -> NaN, then the horizon runs past the data.
    assert np.array_equal(y, [0.0, np.nan, 1.0, np.nan, np.nan, np.nan], equal_nan=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_local_run_with_a_custom_feature_and_the_horizon_label(tmp_path: Path) -> None:
    manifest = write_manifest(
        tmp_path / "custom.yaml", "custom", mode="quick", gates=OPEN_GATES,
        label={"kind": "horizon", "deadBand": 0.002},
        features={"custom": [{"name": "range_position"}, {"name": "return_zscore"}]},
    )  # fmt: skip
    out = stagegate("run", str(manifest), "--artifacts", str(tmp_path / "runs"),
                    "--output", "json", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["phase"] == "Succeeded"
    (plan_file,) = (tmp_path / "runs").glob("**/plan.json")
    plan = json.loads(plan_file.read_text())
    assert plan["features"][-3:] == ["range_position.position", "range_position.width",
                                     "return_zscore"]  # fmt: skip
    assert plan["featureGuard"]["seconds"] > 0 and len(plan["featureGuard"]["cuts"]) == 3
    (model,) = (tmp_path / "runs").glob("**/quick/folds/01/model.txt")
    assert "range_position.position" in model.read_text()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("leaky", ["next_return", "centred_mean"])
def test_a_leaky_custom_feature_fails_the_run_naming_it(tmp_path: Path, leaky: str) -> None:
    manifest = write_manifest(tmp_path / "leaky.yaml", "leaky", mode="quick",
                              features={"custom": [{"name": leaky}]})  # fmt: skip
    out = stagegate("run", str(manifest), "--artifacts", str(tmp_path / "runs"), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert f"error: feature {leaky} looks ahead" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert not list((tmp_path / "runs").glob("**/quick/folds/*/metrics.json"))


def test_context_bars_enter_only_once_closed() -> None:
    main = random_ohlcv(300, seed=5, gap_rate=0.0)
    other = random_ohlcv(300, seed=6, gap_rate=0.0)
    other = other[other.index != 200].reset_index(drop=True)  # the context misses one bar
    features = spec().features
    ctx = context_columns(main, "ETH/USDT", other, features, "M15")
    own = build_features(other, bar=BAR, names=["ret_1"])["ret_1"].to_numpy()
    got = ctx["ctx.ETH_USDT.ret_1"].to_numpy()
    # Same open time, same bar: the context bar that closes with the main bar, never a later one.
    assert np.array_equal(got[:200], own[:200], equal_nan=True)
    # Its missing bar: the last closed one stands in (at most CONTEXT_STALE_BARS bars old).
    assert got[200] == own[199] and np.array_equal(got[201:], own[200:], equal_nan=True)
    # Context bars after the main data's last bar are never used.
    cut = context_columns(main.iloc[:150], "ETH/USDT", other, features, "M15")
    assert np.array_equal(cut["ctx.ETH_USDT.ret_1"].to_numpy(), got[:150], equal_nan=True)


def test_context_features_pass_the_guard() -> None:
    main, other = random_ohlcv(5000, seed=8), random_ohlcv(5200, seed=9)
    features = spec().features
    guard(lambda f: feature_table(f, features, "M15", {"ETH/USDT": other}), main)
    with pytest.raises(SpecError, match="BTC/USDT is the main symbol already"):
        spec(data={"context": [{"symbol": "BTC/USDT"}]})
    with pytest.raises(SpecError, match="context symbols named twice: ETH/USDT"):
        spec(data={"context": [{"symbol": "ETH/USDT"}, {"symbol": "ETH/USDT"}]})


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_local_run_with_a_context_symbol(tmp_path: Path) -> None:
    data = REPO / "tests" / "data" / "ohlcv"
    manifest = write_manifest(
        tmp_path / "ctx.yaml", "ctx", mode="quick", gates=OPEN_GATES,
        data={"source": "file", "uri": str(data / "BTC_USDT-15m.parquet"),
              "start": "2017-09-01T00:00:00Z", "end": "2018-03-31T00:00:00Z",
              "context": [{"symbol": "ETH/USDT", "uri": str(data / "ETH_USDT-15m.parquet")}]},
    )  # fmt: skip
    out = stagegate("run", str(manifest), "--artifacts", str(tmp_path / "runs"),
                    "--output", "json", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    (plan_file,) = (tmp_path / "runs").glob("**/plan.json")
    plan = json.loads(plan_file.read_text())
    assert "ctx.ETH_USDT.ret_1" in plan["features"] and "ctx.ETH_USDT.rv_96" in plan["features"]
    assert list((tmp_path / "runs").glob("**/data/context/ETH_USDT.parquet"))
