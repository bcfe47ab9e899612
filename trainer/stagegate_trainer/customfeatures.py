"""Custom features: functions from installed packages, found as entry points.

A package declares, in its pyproject.toml,

    [project.entry-points."stagegate.features"]
    my_feature = "my_package.module:function"

and a spec asks for it with `features.custom: [{name: my_feature, params: {...}}]`. The function
is called as `function(ohlcv, **params)` with the bars as the loader gives them (columns
timestamp, open, high, low, close, volume) and returns a DataFrame (or Series) with the same
index and numeric columns. Its columns are named `my_feature` (one column) or
`my_feature.<column>`. Installed in a custom trainer image (`spec.image`) or the local
environment; every failure is a FeatureError naming the feature.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

import numpy as np
import pandas as pd
from stagegate_core.specparts import CustomFeatureSpec

from .lookahead import FeatureError

GROUP = "stagegate.features"


def installed() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def load(name: str) -> Callable[..., Any]:
    found = list(entry_points(group=GROUP, name=name))
    if not found:
        names = ", ".join(installed()) or "none"
        raise FeatureError(
            f"custom feature {name}: no entry point {name!r} in group {GROUP!r} is installed "
            f"here (installed: {names}); install its package in the trainer image (spec.image) "
            "or the local environment"
        )
    try:
        function = found[0].load()
    except Exception as exc:
        raise FeatureError(
            f"custom feature {name}: cannot import {found[0].value}: {type(exc).__name__}: {exc}"
        ) from None
    if not callable(function):
        raise FeatureError(f"custom feature {name}: {found[0].value} is not callable")
    return function


def compute(ohlcv: pd.DataFrame, feature: CustomFeatureSpec) -> pd.DataFrame:
    """The feature's columns as float32, NaN for inf, named after the feature."""
    function = load(feature.name)
    try:
        # A copy: a feature that writes into its input must not change what others see.
        out = function(ohlcv.copy(), **feature.params)
    except Exception as exc:
        raise FeatureError(
            f"custom feature {feature.name} raised {type(exc).__name__}: {exc}"
        ) from None
    if isinstance(out, pd.Series):
        out = out.to_frame(feature.name)
    if not isinstance(out, pd.DataFrame):
        raise FeatureError(
            f"custom feature {feature.name} returned {type(out).__name__}, not a DataFrame"
        )
    if len(out.columns) == 0:
        raise FeatureError(f"custom feature {feature.name} returned no columns")
    if not out.index.equals(ohlcv.index):
        raise FeatureError(
            f"custom feature {feature.name} returned {len(out)} rows with another index than "
            f"its input's {len(ohlcv)}: it must keep one row per bar, in order"
        )
    columns: dict[str, np.ndarray] = {}
    for column in out.columns:
        name = feature.name if len(out.columns) == 1 else f"{feature.name}.{column}"
        try:
            values = out[column].to_numpy(dtype=np.float64)
        except (TypeError, ValueError):
            raise FeatureError(
                f"custom feature {feature.name}: column {column!r} is not numeric "
                f"({out[column].dtype})"
            ) from None
        with np.errstate(over="ignore"):
            values32 = values.astype(np.float32)
        values32[~np.isfinite(values32)] = np.nan
        columns[name] = values32
    return pd.DataFrame(columns, index=ohlcv.index)
