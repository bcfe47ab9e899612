"""The operator's garbage collection: full collections rarely, and never of what lives forever.

At 100 TrainingJobs x 45 folds CPython's full (generation 2) collection ran every 2-5 s and took
0.05-0.4 s each with the event loop stopped, and found next to nothing to collect: what the
operator keeps are JSON trees without cycles (its caches of TrainingJobs and Jobs, renewed by
every watch event, which is what kept promoting survivors and so triggering full collections).
In one such run the pauses over 20 ms added up to 11 s, a third of the operator's CPU; with
this policy, in the run beside it, to 1.1 s. So, once the operator has started:
- everything alive then (modules, classes, kopf's and aiohttp's machinery) is frozen: never
  scanned again (`gc.freeze`; an object of it is still freed when nothing refers to it);
- a full collection waits for FULL_EVERY collections of the middle generation instead of 10.
Cyclic garbage (asyncio's exception tracebacks, mostly) is still collected, only later.
"""

from __future__ import annotations

import gc

FULL_EVERY = 100  # middle-generation collections per full one (CPython's default: 10)


def settle() -> None:
    """Collect once, freeze what survives, and space the full collections out."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_EVERY)
