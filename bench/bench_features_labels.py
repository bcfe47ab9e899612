"""Time features and labels on real BTC/USDT bars against one bare LightGBM fit.

    PYTHONPATH=core:trainer .venv/bin/python bench/bench_features_labels.py [--data PATH] [--bars N]

Features and labels are computed once per stage; a fit runs once per fold. The point of the
comparison is to show that preparing the matrix is a small fraction of one fit.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import lightgbm as lgb
import numpy as np
import pandas as pd
from stagegate_trainer.features import build_features
from stagegate_trainer.labels import barrier_labels

T = TypeVar("T")
DEFAULT_DATA = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "ohlcv" / "BTC_USDT-15m.parquet"
)
BAR = timedelta(minutes=15)


def best_of(runs: int, fn: Callable[[], T]) -> tuple[float, T]:
    best, result = float("inf"), None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    assert result is not None
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--bars", type=int, default=175_000, help="last N rows of the file")
    parser.add_argument("--horizon", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    frame = pd.read_parquet(args.data).tail(args.bars).reset_index(drop=True)
    n = len(frame)
    print(
        f"data:              {args.data} — {n:,} bars, {frame['timestamp'].iloc[0]} … "
        f"{frame['timestamp'].iloc[-1]}"
    )

    t_feat, feats = best_of(3, lambda: build_features(frame, bar=BAR))
    t_lab, labels = best_of(
        3,
        lambda: barrier_labels(
            frame,
            horizon_bars=args.horizon,
            take_profit=2.0,
            stop_loss=1.0,
            barriers="volatility",
            bar=BAR,
        ),
    )
    known = ~np.isnan(labels)
    print(
        f"build_features:    {t_feat * 1000:8.1f} ms  ({n / t_feat:,.0f} bars/s, "
        f"{feats.shape[1]} features, best of 3)"
    )
    print(
        f"barrier_labels:    {t_lab * 1000:8.1f} ms  ({n / t_lab:,.0f} bars/s, "
        f"horizon {args.horizon}, ATR TP 2x / SL 1x, best of 3)"
    )
    print(
        f"labels:            {int(known.sum()):,} known, {int((~known).sum()):,} NaN, "
        f"positive rate {float(labels[known].mean()):.4f}"
    )

    x, y = feats.to_numpy()[known], labels[known]
    params = {
        "objective": "binary",
        "num_leaves": 63,
        "learning_rate": 0.05,
        "num_threads": args.threads,
        "verbose": -1,
        "seed": 0,
        "deterministic": True,
    }
    start = time.perf_counter()
    lgb.train(params, lgb.Dataset(x, y), num_boost_round=300)
    t_fit = time.perf_counter() - start
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"lightgbm fit:      {t_fit * 1000:8.1f} ms  ({x.shape[0]:,} rows x {x.shape[1]} "
        f"features, 300 rounds, 63 leaves, num_threads={args.threads}; {cores} cores seen)"
    )
    print(f"features+labels:   {(t_feat + t_lab) / t_fit:8.1%} of one fit")


if __name__ == "__main__":
    main()
