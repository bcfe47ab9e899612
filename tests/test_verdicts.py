"""Verdicts that say plainly what they mean: exit 5 for failed gates, no silent leaky purge,
labelled plan bounds, one progress bar per stage."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from stagegate_cli.watch import watch_outcome
from stagegate_core.spec import SpecError, parse_manifest
from stagegate_core.status import gates_failed as status_gates_failed
from stagegate_core.statusmodel import TrainingJobStatus

from tests.support.runs import small_spec, stagegate

pytestmark = pytest.mark.timeout(300)

# Gates every model passes: the thresholds at their floor, no baseline comparison.
LOW_GATES: dict[str, Any] = {
    "minAccuracy": 0.0,
    "minRecall": 0.0,
    "minRocAuc": 0.0,
    "minF1": 0.0,
    "mustBeatBaselines": False,
}


def _low_gates() -> dict[str, Any]:
    from stagegate_core.specparts import GatesSpec

    gates = dict(LOW_GATES)
    # Gates other parts of the spec may add, switched off where the spec has them.
    for field, off in (("min_expected_return", None), ("min_trades", None)):
        if field in GatesSpec.model_fields:
            gates[GatesSpec.model_fields[field].alias or field] = off
    return gates


def _quick(tmp_path: Path, manifest: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    result = stagegate(
        "run", str(manifest), "--mode", "quick", "--output", "json",
        "--artifacts", str(tmp_path / "runs"), *extra, cwd=tmp_path,
    )  # fmt: skip
    return result.returncode, json.loads(result.stdout), result.stderr


def test_a_quick_run_exits_5_when_its_gates_fail_and_0_when_they_pass(
    tmp_path: Path, manifest_factory: Callable[..., Path]
) -> None:
    code, status, err = _quick(tmp_path, manifest_factory("strict", gates={"minRocAuc": 0.99}))
    assert status["phase"] == "Succeeded"
    assert status["stages"]["quick"]["passed"] is False
    assert code == 5, err

    code, status, err = _quick(tmp_path, manifest_factory("lenient", gates=_low_gates()))
    assert status["phase"] == "Succeeded"
    assert status["stages"]["quick"]["passed"] is True, status["stages"]["quick"]["gates"]
    assert code == 0, err


def test_text_output_names_the_verdict_and_each_bar_ends_once(
    tmp_path: Path, manifest_factory: Callable[..., Path]
) -> None:
    result = stagegate(
        "run", str(manifest_factory(gates={"minRocAuc": 0.99})), "--mode", "quick",
        "--artifacts", str(tmp_path / "runs"), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 5, result.stderr
    out = result.stdout + result.stderr
    assert "completed, gates failed: the quick stage did not pass its gates" in out
    assert "exit code 5" in out
    # The finished stage's bar: "quick stage ━━━ 2/2 0:00:01 eta 0:00:00", printed once.
    bars = [line for line in out.splitlines() if line.startswith("quick stage ") and "2/2" in line]
    assert len(bars) == 1, bars
    assert "trees=" in out  # the fold lines show the trees early stopping chose


def _status(phase: str, **passed: bool) -> dict[str, Any]:
    stages = {s: {"plan": {"foldCount": 1}, "folds": [], "passed": p} for s, p in passed.items()}
    return {"phase": phase, "stages": stages}


def gates_failed(status: dict[str, Any]) -> str | None:
    return status_gates_failed(TrainingJobStatus.parse(status))


def test_exit_code_5_is_the_last_stage_that_ran() -> None:
    # Mode quick, sequential approved past failed gates, mode full: the last summary decides.
    assert gates_failed(_status("Succeeded", quick=False)) == "quick"
    assert gates_failed(_status("Succeeded", quick=False, full=False)) == "full"
    assert gates_failed(_status("Succeeded", quick=False, full=True)) is None
    assert gates_failed(_status("Succeeded", full=False)) == "full"
    assert gates_failed(_status("AwaitingApproval", quick=False)) is None
    tj = {"metadata": {"annotations": {}}, "status": _status("Succeeded", full=False)}
    assert watch_outcome(tj) == 5
    tj["status"] = _status("Succeeded", full=True)
    assert watch_outcome(tj) == 0


def _manifest(**overrides: Any) -> dict[str, Any]:
    return {"apiVersion": "stagegate.io/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": "purge"}, "spec": small_spec(**overrides)}  # fmt: skip


def test_a_purge_shorter_than_the_label_horizon_is_refused_naming_the_field() -> None:
    with pytest.raises(SpecError) as info:
        parse_manifest(_manifest(stages={"quick": {"purgeBars": 0}}), "tj.yaml")
    message = str(info.value)
    assert message.startswith("tj.yaml: spec.stages.quick.purgeBars: must be at least 49 ")
    assert "allowLeakyPurge" in message and "\n" not in message
    # The boundary: horizon + 1 bars is enough, whatever the horizon.
    parse_manifest(_manifest(stages={"full": {"purgeBars": 49}}))
    with pytest.raises(SpecError, match=r"spec\.stages\.full\.purgeBars: must be at least 13 "):
        parse_manifest(_manifest(label={"horizonBars": 12}, stages={"full": {"purgeBars": 12}}))
    parse_manifest(_manifest(label={"horizonBars": 12}, stages={"full": {"purgeBars": 13}}))


def test_cli_refuses_a_leaky_purge_with_one_line(
    tmp_path: Path, manifest_factory: Callable[..., Path]
) -> None:
    leaky = manifest_factory(stages={"quick": {"purgeBars": 0}})
    result = stagegate("plan", str(leaky), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "spec.stages.quick.purgeBars: must be at least 49" in result.stderr


def test_an_allowed_leaky_purge_is_a_warning_in_status_and_model_card(
    tmp_path: Path, manifest_factory: Callable[..., Path]
) -> None:
    stages = small_spec()["stages"]
    stages["quick"].update(purgeBars=0, allowLeakyPurge=True)
    stages["full"].update(purgeBars=10, allowLeakyPurge=True)
    leaky = manifest_factory(stages=stages, gates=_low_gates())
    code, status, err = _quick(tmp_path, leaky)
    assert code == 0, err
    assert any("spec.stages.quick.purgeBars 0 is below" in w for w in status["warnings"])
    assert "Warning: spec.stages.quick.purgeBars 0" in err
    runs = str(tmp_path / "runs")
    final = stagegate("final", str(leaky), "--artifacts", runs, cwd=tmp_path)
    assert final.returncode == 0, final.stderr
    card = json.loads((tmp_path / "runs/default/small/local/model/model_card.json").read_text())
    assert [w.split(" is below")[0] for w in card["warnings"]] == [
        "spec.stages.quick.purgeBars 0",
        "spec.stages.full.purgeBars 10",
    ]


def test_the_plan_table_labels_its_exclusive_ends(
    tmp_path: Path, manifest_factory: Callable[..., Path]
) -> None:
    result = stagegate("plan", str(manifest_factory()), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "train end (excl.)" in result.stdout and "test end (excl.)" in result.stdout
