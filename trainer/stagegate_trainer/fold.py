"""One walk-forward fold, honestly: fit on its training rows only, evaluate on its test rows.

Nothing is chosen on the test rows. Early stopping and the decision threshold use an inner
validation split taken from the tail of the training window, with the same purge between the
inner training rows and the validation rows as between training and test.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from stagegate_core.featureset import BASELINE_FEATURES, FEATURE_NAMES
from stagegate_core.plan import Fold
from stagegate_core.specparts import ModelSpec

from . import threadshare
from .dataset import LABEL, TIMESTAMP, timestamps_ns
from .evaluate import classification_metrics
from .stopping import REFIT_RULE, RoundSearch, refit_rounds
from .thresholds import choose_threshold
from .trading import OUTCOME_R, RISK_FRACTION, TradingContext, fold_trading, net_r

# The volatility/time-of-day baseline is a deliberately small model: it asks what the label's
# predictability owes to volatility regimes and the clock alone, not to the features' content.
_BASELINE_MODEL = {"num_leaves": 15, "max_rounds": 200, "min_data_in_leaf": 200}


@dataclass(frozen=True)
class FittedModel:
    booster: lgb.Booster
    threshold: float
    best_iteration: int  # chosen on the inner split (spec.model: minRounds, patience, metric)
    fit_seconds: float
    # What the booster is: its trees (best_iteration, or the refit's scaled rounds) and rows.
    rounds: int = 0
    rows: int = 0
    inner_rows: int = 0
    validation_rows: int = 0
    stopped_at: int = 0  # the last round the search trained
    best_score: float | None = None
    refit: bool = False

    def describe(self, metric: str) -> dict[str, Any]:
        """How the model was trained: the `fit` block of metrics.json and the model card."""
        return {
            "rows": self.rows,
            "rounds": self.rounds,
            "refit": self.refit,
            "roundsRule": REFIT_RULE if self.refit else "bestIteration",
            "bestIteration": self.best_iteration,
            "stoppedAt": self.stopped_at,
            "metric": metric,
            "bestScore": None if self.best_score is None else round(self.best_score, 6),
            "innerRows": self.inner_rows,
            "validationRows": self.validation_rows,
        }


def lightgbm_params(spec: ModelSpec, num_threads: int) -> dict[str, Any]:
    return {
        "objective": "binary",
        # The metric early stopping watches on the inner validation rows (only that one).
        "metric": spec.early_stopping_metric,
        "first_metric_only": True,
        "num_leaves": spec.num_leaves,
        "learning_rate": spec.learning_rate,
        "min_data_in_leaf": spec.min_data_in_leaf,
        "feature_fraction": spec.feature_fraction,
        "bagging_fraction": spec.bagging_fraction,
        "bagging_freq": spec.bagging_freq,
        "lambda_l2": spec.lambda_l2,
        "max_depth": spec.max_depth,
        "seed": spec.seed,
        # Same data, params and seed give the same trees whatever the thread count.
        "deterministic": True,
        "force_col_wise": True,
        "num_threads": num_threads,
        "verbosity": -1,
    }


def predict(booster: lgb.Booster, x: np.ndarray, iterations: int) -> np.ndarray:
    return np.asarray(booster.predict(x, num_iteration=iterations), dtype=np.float64)


def inner_split(ts: np.ndarray, validation_fraction: float, purge_ns: int) -> tuple[int, int]:
    """(end of inner training rows, start of validation rows) within a training window."""
    val_start = int(len(ts) * (1.0 - validation_fraction))
    inner_end = bisect_left(ts, int(ts[val_start]) - purge_ns, hi=val_start)
    return inner_end, val_start


def fit(
    x: np.ndarray,
    y: np.ndarray,
    ts: np.ndarray,
    *,
    spec: ModelSpec,
    purge_ns: int,
    num_threads: int,
    feature_names: list[str],
    max_rounds: int | None = None,
    overrides: dict[str, Any] | None = None,
    r_net: np.ndarray | None = None,
    refit: bool = False,
) -> FittedModel:
    """Choose rounds and threshold on the inner split; with `refit`, retrain on every row.

    The refit model has `refit_rounds` trees and keeps the threshold chosen on the inner split:
    nothing is chosen on rows the chosen model was trained on.
    """
    if len(ts) < 2:
        raise ValueError(f"training window too short: {len(ts)} rows")
    inner_end, val_start = inner_split(ts, spec.validation_fraction, purge_ns)
    if inner_end == 0 or val_start >= len(y):
        raise ValueError("training window too short for the inner early-stopping split")
    params = lightgbm_params(spec, num_threads) | (overrides or {})
    threadshare.cap(num_threads)
    started = time.perf_counter()
    # Each fold builds its own Dataset, so bin edges come from its training rows only; the
    # validation set reuses them through `reference`.
    train_set = lgb.Dataset(
        x[:inner_end], y[:inner_end], feature_name=feature_names, free_raw_data=True
    )
    valid_set = lgb.Dataset(x[val_start:], y[val_start:], reference=train_set)
    ceiling = max_rounds or spec.max_rounds
    search = RoundSearch(
        spec.early_stopping_metric, min(spec.min_rounds, ceiling), spec.early_stopping_rounds
    )
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=ceiling,
        valid_sets=[valid_set],
        callbacks=[search, threadshare.callback(num_threads)],
    )
    elapsed = time.perf_counter() - started
    best = search.chosen(booster.current_iteration())
    validation_proba = predict(booster, x[val_start:], best)
    # The cut is chosen on the validation rows only (model.threshold); r_net are their trades.
    threshold = choose_threshold(
        spec.threshold,
        y[val_start:].astype(np.float64),
        validation_proba,
        None if r_net is None else r_net[val_start:],
    )
    chosen = FittedModel(
        booster,
        threshold,
        best,
        elapsed,
        rounds=best,
        rows=inner_end,
        inner_rows=inner_end,
        validation_rows=len(y) - val_start,
        stopped_at=search.last_round,
        best_score=None if search.best_round == 0 else search.best_score,
    )
    return _refit(chosen, x, y, params, feature_names) if refit else chosen


def _refit(
    chosen: FittedModel,
    x: np.ndarray,
    y: np.ndarray,
    params: dict[str, Any],
    feature_names: list[str],
) -> FittedModel:
    """Train on the whole window (inner rows, purge gap and validation tail) with scaled rounds."""
    rounds = refit_rounds(chosen.best_iteration, chosen.inner_rows, len(y))
    threadshare.cap(params["num_threads"])
    started = time.perf_counter()
    # Its own Dataset again: the bins now come from every training row, still none of the test.
    full_set = lgb.Dataset(x, y, feature_name=feature_names, free_raw_data=True)
    booster = lgb.train(
        params,
        full_set,
        num_boost_round=rounds,
        callbacks=[threadshare.callback(params["num_threads"])],
    )
    return replace(
        chosen,
        booster=booster,
        fit_seconds=chosen.fit_seconds + time.perf_counter() - started,
        rounds=rounds,
        rows=len(y),
        refit=True,
    )


def _rounded(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if np.isnan(v) else round(float(v), 6)) for k, v in metrics.items()}


@dataclass(frozen=True)
class FoldResult:
    metrics: dict[str, Any]  # the content of metrics.json
    predictions: pd.DataFrame
    model_text: str
    fit_seconds: float
    importance: dict[str, float]  # mean split gain per model feature, for the report


def run_fold(
    dataset: pd.DataFrame,
    fold: Fold,
    *,
    spec: ModelSpec,
    purge_ns: int,
    num_threads: int,
    trading: TradingContext,
    features: Sequence[str] = FEATURE_NAMES,
) -> FoldResult:
    train = dataset.iloc[fold.train_rows[0] : fold.train_rows[1]]
    test = dataset.iloc[fold.test_rows[0] : fold.test_rows[1]]
    names = list(features)
    ts_train = timestamps_ns(train)
    y_train = train[LABEL].to_numpy(dtype=np.float64)
    y_test = test[LABEL].to_numpy(dtype=np.float64)
    r_train = net_r(
        train[OUTCOME_R].to_numpy(dtype=np.float64),
        train[RISK_FRACTION].to_numpy(dtype=np.float64),
        trading.cost_fraction,
    )

    model = fit(
        train[names].to_numpy(dtype=np.float32),
        y_train,
        ts_train,
        spec=spec,
        purge_ns=purge_ns,
        num_threads=num_threads,
        feature_names=names,
        r_net=r_train,
        refit=spec.refit == "all",
    )
    proba = predict(model.booster, test[names].to_numpy(dtype=np.float32), model.rounds)

    base_names = list(BASELINE_FEATURES)
    baseline = fit(
        train[base_names].to_numpy(dtype=np.float32),
        y_train,
        ts_train,
        spec=spec,
        purge_ns=purge_ns,
        num_threads=num_threads,
        feature_names=base_names,
        max_rounds=_BASELINE_MODEL["max_rounds"],
        overrides={k: v for k, v in _BASELINE_MODEL.items() if k != "max_rounds"},
        r_net=r_train,
        # The baseline is refit too, or a refit model would be compared with a weaker one.
        refit=spec.refit == "all",
    )
    baseline_proba = predict(
        baseline.booster, test[base_names].to_numpy(dtype=np.float32), baseline.rounds
    )
    # The majority class is the training rows' majority: the test labels choose nothing.
    majority = 1.0 if y_train.mean() > 0.5 else 0.0
    constant = np.full(len(y_test), majority)
    signal = proba >= model.threshold
    baseline_signal = baseline_proba >= baseline.threshold
    trades, trade_columns = fold_trading(
        test,
        test_end_ns=fold.test_end,
        context=trading,
        label=y_test,
        signals={
            "model": signal,
            "majority": constant >= 0.5,
            "alwaysPositive": np.ones(len(y_test), dtype=bool),
            "volatilityTime": baseline_signal,
        },
        scores={"model": proba, "volatilityTime": baseline_proba},
    )

    metrics = {
        "fold": fold.fold,
        "train": {
            "start": fold.to_json()["trainStart"],
            "end": fold.to_json()["trainEnd"],
            "rows": fold.n_train,
            "positiveRate": round(float(y_train.mean()), 6),
        },
        "test": {
            "start": fold.to_json()["testStart"],
            "end": fold.to_json()["testEnd"],
            "rows": fold.n_test,
        },
        "model": _rounded(classification_metrics(y_test, proba, model.threshold)),
        "threshold": round(model.threshold, 6),
        "bestIteration": model.best_iteration,
        "fit": model.describe(spec.early_stopping_metric),
        "baselines": {
            "majority": _rounded(classification_metrics(y_test, constant, 0.5)),
            "alwaysPositive": _rounded(classification_metrics(y_test, np.ones(len(y_test)), 0.5)),
            "volatilityTime": _rounded(
                classification_metrics(y_test, baseline_proba, baseline.threshold)
            ),
        },
        "baselineThreshold": round(baseline.threshold, 6),
        "trading": trades,
    }
    predictions = pd.DataFrame(
        {
            TIMESTAMP: test[TIMESTAMP].array,
            "label": y_test.astype(np.int8),
            "proba": proba,
            "signal": signal.astype(np.int8),
            "baselineProba": baseline_proba,
            "baselineSignal": baseline_signal.astype(np.int8),
            **trade_columns,
        }
    )
    return FoldResult(
        metrics=metrics,
        predictions=predictions,
        model_text=model.booster.model_to_string(num_iteration=model.rounds),
        fit_seconds=model.fit_seconds + baseline.fit_seconds,
        importance=dict(
            zip(
                model.booster.feature_name(),
                map(float, model.booster.feature_importance("gain", iteration=model.rounds)),
                strict=True,
            )
        ),
    )
