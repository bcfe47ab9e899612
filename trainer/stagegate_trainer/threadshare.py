"""LightGBM's threads follow the cores that idle workers leave free.

A stage's last folds run while other workers sit idle: 3 quick folds on 2 cores leave the third
alone for its whole fit, and 3 folds on 16 cores would leave 13 cores idle with one thread per
fold. In a pool worker, a fold is given every core as its `num_threads` and caps LightGBM at
cores // busy workers before it builds its data and after every boosting round. The trees do
not depend on the thread count (`deterministic: true`, force_col_wise): only the wall time
changes, never a result. Outside a pool (a fold Job) nothing is capped.
"""

from __future__ import annotations

import ctypes
from typing import Any

from lightgbm import basic

from . import workers

_capped: list[int] = [0]  # the cap set last in this process (0: never set)


def cap(ceiling: int) -> int:
    """Set LightGBM's thread cap for this worker's share of `ceiling` cores; returns it."""
    busy = workers.busy_workers()
    if busy is None:
        return ceiling
    share = max(1, ceiling // busy)
    if share != _capped[0]:
        # Process-wide and read on every parallel region, unlike num_threads, which only
        # Booster.reset_parameter changes, and that also re-seeds bagging: other trees.
        basic._safe_call(basic._LIB.LGBM_SetMaxThreads(ctypes.c_int(share)))
        _capped[0] = share
    return share


def callback(ceiling: int) -> Any:
    """A LightGBM callback that keeps the cap current between boosting rounds."""

    def follow(_env: Any) -> None:
        cap(ceiling)

    follow.order = 100  # type: ignore[attr-defined]  # after early stopping's bookkeeping
    return follow
