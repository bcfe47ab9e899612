"""How many boosting rounds a model gets: early stopping on the inner split, then the refit rule.

The inner validation rows are the noisy tail of a training window. On 15-minute candles their
loss often improves for a handful of rounds and then only drifts, so plain early stopping keeps
one to fifteen trees: a choice made by noise. Two guards (spec.model):

- `minRounds`: the chosen number of rounds is the best iteration *at or after* minRounds, and the
  search never stops before minRounds + patience rounds;
- `earlyStoppingMetric`: the metric that chooses (ROC AUC by default: it ranks, which is what the
  threshold and the trades use, and does not reward a shift of the base rate the way log loss
  does); `earlyStoppingRounds` is the patience.

After the choice, a refit trains on the whole window (see `refit_rounds` for the rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb

# Metrics LightGBM computes where a higher value is better.
_HIGHER_IS_BETTER = frozenset({"auc", "average_precision"})


@dataclass(eq=False)  # LightGBM keeps its callbacks in a set: hashed by identity
class RoundSearch:
    """A LightGBM callback: early stopping with a floor, recording what it chose."""

    metric: str
    min_rounds: int
    patience: int
    best_round: int = 0  # 1-based: the number of trees of the chosen model
    best_score: float = math.nan
    last_round: int = 0  # the last round trained before the search stopped
    _best_result: list[Any] = field(default_factory=list)

    # LightGBM reads these attributes of a callback.
    order = 30
    before_iteration = False

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        results = [r for r in env.evaluation_result_list or [] if r[1] == self.metric]
        if not results:
            raise ValueError(f"early stopping metric {self.metric!r} was not evaluated")
        score = float(results[0][2])
        self.last_round = env.iteration + 1
        if self.last_round >= self.min_rounds and (
            self.best_round == 0 or self._better(score, self.best_score)
        ):
            self.best_round, self.best_score = self.last_round, score
            self._best_result = list(env.evaluation_result_list or [])
        if self.best_round and self.last_round - self.best_round >= self.patience:
            raise lgb.callback.EarlyStopException(self.best_round - 1, self._best_result)

    def _better(self, score: float, best: float) -> bool:
        return score > best if self.metric in _HIGHER_IS_BETTER else score < best

    def chosen(self, trained: int) -> int:
        """The chosen rounds; when training ended before minRounds (maxRounds below it), all."""
        return self.best_round or trained


def refit_rounds(best_iteration: int, inner_rows: int, window_rows: int) -> int:
    """Rounds for a refit on `window_rows` rows after `best_iteration` was best on `inner_rows`.

    The rule: scale by the row ratio and round up, ceil(bestIteration × windowRows / innerRows).
    With bagging and a fixed learning rate, each round fits about the same share of the
    remaining signal; more rows carry more signal before the trees start to fit noise, and the
    ratio is the usual first-order correction (about × 1.25 with the default 20 % tail).
    """
    if inner_rows <= 0:
        raise ValueError("inner split has no rows")
    return max(1, math.ceil(best_iteration * window_rows / inner_rows))


REFIT_RULE = "ceil(bestIteration × rows / innerRows)"
