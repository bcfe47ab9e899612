"""The fold lines, ages and durations a local run and the cluster commands print, rendered in
one place (stagegate_cli.render): the old system's text, character for character."""

from __future__ import annotations

from typing import Any

from stagegate_cli.render import age, duration, fmt, fold_line, fold_status_line
from stagegate_core.formatting import parse_iso
from stagegate_core.statusmodel import FoldStatus

MODEL = {"accuracy": 0.625, "recall": 0.45, "rocAuc": 0.652, "f1": 0.47, "hitRateTp1": 0.51}
SHOWN = "accuracy=62.5% recall=45.0% roc_auc=65.2% f1=0.47 hit_rate_tp1=51.0%"


def test_a_local_fold_line_and_a_status_fold_line_read_the_same() -> None:
    metrics: dict[str, Any] = {
        "fold": 1,
        "folds": 5,
        "model": MODEL,
        "baselines": {"volatilityTime": {"rocAuc": 0.5}, "alwaysPositive": {"f1": 0.412}},
        "bestIteration": 37,
    }
    assert fold_line(metrics) == f"Fold 1/5: {SHOWN} trees=37 | baseline roc_auc=0.50 f1=0.41"
    fold = FoldStatus(fold=2, state="Succeeded", attempts=1, metrics=MODEL)
    assert fold_status_line("quick", fold, 4) == f"Fold 2/4: {SHOWN}  [quick]"
    bare = FoldStatus(fold=1, state="Succeeded", attempts=1, metrics={}, bestIteration=3)
    missing = fold_status_line("full", bare, 1)
    assert missing == (
        "Fold 1/1: accuracy=- recall=- roc_auc=- f1=- hit_rate_tp1=- trees=3  [full]"
    )


def test_numbers_ages_and_durations() -> None:
    assert (fmt("rocAuc", 0.6524), fmt("brier", 0.24), fmt("accuracy", None)) == (
        "65.2%",
        "0.240",
        "-",
    )
    created = "2024-01-01T00:00:00Z"
    then = parse_iso(created)
    assert then is not None
    ages = [age(created, then + s) for s in (-5, 45, 60, 7199, 7200, 172799, 172800)]
    assert ages == ["0s", "45s", "1m", "119m", "2h", "47h", "2d"]
    assert age(None) == "-"
    assert [duration(s) for s in (None, 95, 3600, 7325.9)] == ["-", "1m35s", "1h00m", "2h02m"]
