"""The spec model: defaults, presets, and errors that name the field and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from stagegate_core.spec import (
    SpecError,
    TrainingJobSpec,
    load_manifest,
    parse_manifest,
    spec_fingerprint,
)

REPO = Path(__file__).resolve().parents[1]


def manifest(**spec: object) -> dict[str, object]:
    return {
        "apiVersion": "stagegate.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "tj"},
        "spec": {"symbol": "BTC/USDT", **spec},
    }


def error_of(document: object) -> str:
    with pytest.raises(SpecError) as caught:
        parse_manifest(document, "tj.yaml")
    return str(caught.value)


def test_defaults_follow_the_replaced_system() -> None:
    spec = parse_manifest(manifest()).spec
    quick, full = spec.stages.quick, spec.stages.full
    assert (quick.lookback_days, quick.train_window, quick.min_train_days) == (365, "fixed", 180)
    assert (quick.test_period_days, quick.max_folds) == (60, 5)
    assert (full.lookback_days, full.train_window, full.min_train_days) == (None, "expanding", 120)
    assert (full.test_period_days, full.max_folds) == (21, None)
    assert spec.mode == "sequential" and spec.approval.policy == "manual"
    assert (spec.gates.min_accuracy, spec.gates.min_recall) == (0.60, 0.35)
    assert (spec.gates.min_roc_auc, spec.gates.min_f1) == (0.61, 0.45)
    assert spec.gates.must_beat_baselines is True
    assert spec.resources.quick.requests.memory == "4Gi"
    assert spec.resources.full.limits.memory == "16Gi"
    assert spec.purge_bars("quick") == spec.label.horizon_bars + 1


def test_the_example_parses() -> None:
    parsed = load_manifest(REPO / "examples" / "btc-usdt-m15.yaml")
    assert parsed.metadata.name == "btc-usdt-m15"
    assert parsed.spec.canonical_timeframe == "M15"


@pytest.mark.parametrize("spelling", ["M15", "15m"])
def test_ccxt_and_stagegate_timeframes(spelling: str) -> None:
    assert parse_manifest(manifest(timeframe=spelling)).spec.canonical_timeframe == "M15"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"stages": {"quick": {"testPeriodDays": 0}}},
            "spec.stages.quick.testPeriodDays: must be greater than 0",
        ),
        (
            {"stages": {"full": {"trainWindow": "rolling"}}},
            "spec.stages.full.trainWindow: must be one of 'fixed' or 'expanding'",
        ),
        ({"timeframe": "M7"}, "spec.timeframe: must be one of"),
        ({"label": {"horizonBars": "many"}}, "spec.label.horizonBars:"),
        ({"model": {"learningRate": 2}}, "spec.model.learningRate: must be at most 1"),
        ({"gates": {"minAccuracy": -0.1}}, "spec.gates.minAccuracy: must be at least 0"),
        ({"parallelism": 0}, "spec.parallelism: must be at least 1"),
        ({"data": {"source": "s3"}}, "spec.data: uri is required when source is 's3'"),
        ({"artifacts": {"uri": "ftp://x"}}, "spec.artifacts.uri: must start with s3:// or file://"),
        (
            {"artifacts": {"uri": "runs", "volumeClaim": "rwx"}},
            "spec.artifacts: uri must be file:///<absolute path> when volumeClaim is set",
        ),
        (
            {"artifacts": {"volumeClaim": "Not_A_Name"}},
            "spec.artifacts.volumeClaim: does not match",
        ),
        ({"symbol": "btcusdt"}, "spec.symbol: does not match"),
        ({"sybmol": "BTC/USDT"}, "spec.sybmol: unknown field"),
    ],
)
def test_errors_name_the_field_and_the_reason(spec: dict[str, object], expected: str) -> None:
    message = error_of(manifest(**spec))
    assert message.startswith("tj.yaml: ")
    assert expected in message
    assert "\n" not in message


def test_missing_symbol_and_wrong_kind() -> None:
    doc = manifest()
    del doc["spec"]["symbol"]  # type: ignore[attr-defined]
    assert "spec.symbol: required field is missing" in error_of(doc)
    assert "kind: must be TrainingJob" in error_of({**manifest(), "kind": "Job"})
    assert "apiVersion: must be stagegate.io/v1alpha1" in error_of(
        {**manifest(), "apiVersion": "v1"}
    )


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("apiVersion: stagegate.io/v1alpha1\nspec:\n  symbol: [BTC\n")
    with pytest.raises(SpecError, match=r"bad.yaml: malformed YAML at line \d+"):
        load_manifest(path)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_manifest(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(SpecError, match="holds no document"):
        load_manifest(tmp_path / "empty.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="expected a TrainingJob mapping"):
        load_manifest(tmp_path / "list.yaml")


def test_multi_document_file_picks_the_trainingjob(tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump_all([{"kind": "Secret", "apiVersion": "v1"}, manifest()]))
    assert load_manifest(path).spec.symbol == "BTC/USDT"


def test_fingerprint_ignores_scheduling_but_not_results() -> None:
    base = TrainingJobSpec(symbol="BTC/USDT")
    same = base.model_copy(update={"parallelism": 9, "mode": "quick", "suspend": True})
    assert spec_fingerprint(base) == spec_fingerprint(same)
    other = parse_manifest(manifest(model={"seed": 7})).spec
    assert spec_fingerprint(base) != spec_fingerprint(other)
    fewer_features = parse_manifest(manifest(features={"groups": ["returns"]})).spec
    assert spec_fingerprint(base) != spec_fingerprint(fewer_features)
    stricter_gates = parse_manifest(manifest(gates={"minRocAuc": 0.7})).spec
    assert spec_fingerprint(base) == spec_fingerprint(stricter_gates)  # judged, not computed
    # M15 and 15m are one timeframe, so one run.
    assert spec_fingerprint(base) == spec_fingerprint(
        parse_manifest(manifest(timeframe="15m")).spec
    )
