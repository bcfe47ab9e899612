"""The example features themselves: shape, values, and (through Stagegate's own guard) which
are causal."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from stagegate_example_features import causal, leaky
from stagegate_trainer.lookahead import FeatureError, check_causality


def bars(n: int = 3000, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.003, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    return pd.DataFrame({
        "timestamp": pd.date_range("2023-01-01", periods=n, freq="15min", tz="UTC"),
        "open": open_, "high": np.maximum(open_, close) * 1.001,
        "low": np.minimum(open_, close) * 0.999, "close": close,
        "volume": rng.lognormal(3, 1, n),
    })  # fmt: skip


def test_range_position_is_between_zero_and_one() -> None:
    out = causal.range_position(bars(), window=48)
    assert list(out.columns) == ["position", "width"]
    known = out["position"].dropna()
    assert len(known) == 3000 - 47 and known.between(0, 1).all()
    assert (out["width"].dropna() > 0).all()


def test_return_zscore_has_unit_spread() -> None:
    z = causal.return_zscore(bars(), window=96)["value"].dropna()
    assert 0.8 < z.std() < 1.2


@pytest.mark.parametrize("feature", [causal.return_zscore, causal.range_position])
def test_causal_features_pass_the_guard(feature: Callable[..., pd.DataFrame]) -> None:
    check_causality(feature, bars(), cuts=4, window_bars=3000, after_bars=200,
                    warmup_bars=200, seed=3)  # fmt: skip


@pytest.mark.parametrize("feature", [leaky.next_return, leaky.centred_mean])
def test_leaky_features_are_refused(feature: Callable[..., pd.DataFrame]) -> None:
    with pytest.raises(FeatureError, match="looks ahead"):
        check_causality(feature, bars(), cuts=4, window_bars=3000, after_bars=200,
                        warmup_bars=200, seed=3)  # fmt: skip
