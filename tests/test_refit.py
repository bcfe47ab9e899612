"""The production model learns from its whole window; rounds are chosen by a noise-proof search."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
from stagegate_core import layout
from stagegate_core.specparts import ModelSpec
from stagegate_trainer import finalmodel, steps
from stagegate_trainer.dataset import from_parquet_bytes
from stagegate_trainer.fold import fit
from stagegate_trainer.stopping import RoundSearch, refit_rounds

from tests.support.runs import prepared_run

NS_BAR = 15 * 60 * 10**9


class TrainSpy:
    """Records the rows of every Dataset LightGBM trains on, then trains as usual."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.real = lgb.train

    def __call__(self, params: dict[str, Any], train_set: lgb.Dataset, **kw: Any) -> lgb.Booster:
        booster = self.real(params, train_set, **kw)
        self.rows.append(train_set.num_data())
        return booster


def _trees(model_text: str) -> int:
    return sum(1 for line in model_text.splitlines() if line.startswith("Tree="))


def test_final_model_is_trained_on_every_labelled_row_of_its_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = prepared_run(
        tmp_path, model={"maxRounds": 80, "earlyStoppingRounds": 10, "minRounds": 20}
    )
    spy = TrainSpy()
    monkeypatch.setattr(lgb, "train", spy)
    card = finalmodel.final(run, num_threads=2)

    # The window, computed here from the dataset itself: the full stage is expanding, so the
    # final model's window is every labelled row.
    dataset = from_parquet_bytes(run.store.read_bytes(layout.DATASET))
    training = card["training"]
    assert spy.rows[-1] == len(dataset) == training["rows"] == card["data"]["trainRows"]
    assert training["refit"] is True
    assert training["innerRows"] < training["rows"]  # the search itself saw the inner rows only
    assert spy.rows[0] == training["innerRows"]
    assert training["bestIteration"] >= 20
    assert training["rounds"] == math.ceil(
        training["bestIteration"] * training["rows"] / training["innerRows"]
    )
    assert _trees(run.store.read_bytes(layout.FINAL_MODEL).decode()) == training["rounds"]
    assert card["data"]["trainLastRow"] == dataset["timestamp"].iloc[-1].strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert card["warnings"] == []


def test_refit_none_keeps_the_inner_model_and_all_refits_every_fold(tmp_path: Path) -> None:
    model = {"maxRounds": 60, "earlyStoppingRounds": 10, "minRounds": 20}
    inner = prepared_run(tmp_path / "none", model={**model, "refit": "none"})
    card = finalmodel.final(inner, num_threads=2)
    assert card["training"]["refit"] is False
    assert card["training"]["rows"] == card["training"]["innerRows"] < card["data"]["trainRows"]
    assert card["training"]["rounds"] == card["training"]["bestIteration"]

    default = prepared_run(tmp_path / "final", model=model)
    folded = steps.fold(default, "quick", 1, num_threads=2).metrics
    assert folded["fit"]["refit"] is False  # refit: final leaves the folds as they were
    assert folded["fit"]["rows"] == folded["fit"]["innerRows"] < folded["train"]["rows"]

    every = prepared_run(tmp_path / "all", model={**model, "refit": "all"})
    refit = steps.fold(every, "quick", 1, num_threads=2).metrics
    assert refit["fit"]["refit"] is True
    assert refit["fit"]["rows"] == refit["train"]["rows"]
    assert refit["bestIteration"] == folded["bestIteration"]  # chosen the same way
    assert refit["fit"]["rounds"] == refit_rounds(
        refit["bestIteration"], refit["fit"]["innerRows"], refit["train"]["rows"]
    )
    trees = _trees(every.store.read_bytes(layout.fold_model("quick", 1)).decode())
    assert trees == refit["fit"]["rounds"]


def _noise(n: int = 6000, seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (rng.random(n) < 0.33).astype(np.float64)
    return x, y, np.arange(n, dtype=np.int64) * NS_BAR


@pytest.mark.parametrize("metric", ["binary_logloss", "auc", "average_precision"])
def test_on_noise_the_search_never_chooses_fewer_than_min_rounds(metric: str) -> None:
    x, y, ts = _noise()
    names = [f"f{i}" for i in range(x.shape[1])]
    common: dict[str, Any] = {
        "max_rounds": 200,
        "early_stopping_rounds": 15,
        "early_stopping_metric": metric,
    }
    if "threshold" in ModelSpec.model_fields:  # a threshold that needs no trade outcomes
        common["threshold"] = {"objective": "f1"}
    plain = fit(x, y, ts, spec=ModelSpec(**common, min_rounds=1), purge_ns=49 * NS_BAR,
                num_threads=1, feature_names=names)  # fmt: skip
    floored = fit(x, y, ts, spec=ModelSpec(**common, min_rounds=40), purge_ns=49 * NS_BAR,
                  num_threads=1, feature_names=names)  # fmt: skip
    # Without a floor, noise picks a tiny model; with one, never below it, and the search stops
    # `patience` rounds after its best.
    assert plain.best_iteration < 40
    assert floored.best_iteration >= 40
    assert floored.stopped_at == floored.best_iteration + 15
    assert floored.rounds == floored.best_iteration == floored.booster.current_iteration()
    assert floored.best_score is not None


class _Env:
    def __init__(self, iteration: int, score: float, metric: str) -> None:
        self.iteration = iteration
        self.evaluation_result_list = [("valid_0", metric, score, metric == "auc")]


def _search(scores: list[float], metric: str, min_rounds: int, patience: int) -> RoundSearch:
    search = RoundSearch(metric, min_rounds, patience)
    for i, score in enumerate(scores):
        try:
            search(_Env(i, score, metric))  # type: ignore[arg-type]
        except lgb.callback.EarlyStopException as stop:
            assert stop.best_iteration == search.best_round - 1
            break
    return search


def test_round_search_direction_floor_and_patience() -> None:
    # AUC: higher is better. The noisy early peak at round 2 is below the floor of 4.
    auc = _search([0.50, 0.60, 0.51, 0.52, 0.55, 0.53, 0.54, 0.52, 0.51], "auc", 4, 3)
    assert (auc.best_round, auc.best_score, auc.last_round) == (5, 0.55, 8)
    # Log loss: lower is better.
    loss = _search([0.70, 0.60, 0.65, 0.64, 0.66, 0.67, 0.68], "binary_logloss", 1, 3)
    assert (loss.best_round, loss.last_round) == (2, 5)
    # Training that ends before the floor (maxRounds below minRounds) keeps every round.
    short = _search([0.5, 0.6], "auc", 10, 3)
    assert short.best_round == 0 and short.chosen(2) == 2


def test_the_refit_rule() -> None:
    assert refit_rounds(40, 8000, 10000) == 50
    assert refit_rounds(1, 8000, 10000) == 2  # rounded up
    with pytest.raises(ValueError):
        refit_rounds(10, 0, 100)
