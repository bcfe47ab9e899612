"""The steps as a local run's workers run them, by manifest.

Module-level functions, so a worker unpickles them by name; in a module of their own because a
worker imports a task's module with its first task: the runner's (rich, the CLI's rendering)
cost every worker 0.2 s before it began, while this one's imports are already in the fork
server (WorkerPool's preload).
"""

from __future__ import annotations

from typing import Any

from stagegate_core.spec import TrainingJobManifest
from stagegate_core.specparts import StageName

from . import steps


def prepare(manifest: TrainingJobManifest) -> dict[str, Any]:
    return steps.prepare(steps.open_run(manifest))


def fold(
    manifest: TrainingJobManifest, stage: StageName, number: int, num_threads: int
) -> steps.FoldOutcome:
    return steps.fold(steps.open_run(manifest), stage, number, num_threads=num_threads)


def final(
    manifest: TrainingJobManifest, num_threads: int, approval: dict[str, Any]
) -> dict[str, Any]:
    from . import finalmodel

    return finalmodel.final(steps.open_run(manifest), num_threads=num_threads, approval=approval)
