"""`stagegate watch NAME`: a TrainingJob's phase changes, fold lines and stage summaries as they
come, until the next gate or the end, with the exit code of the outcome."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
from stagegate_core import exitcodes
from stagegate_core.keys import APPROVAL_ANNOTATION
from stagegate_core.specparts import STAGES
from stagegate_core.status import gates_failed
from stagegate_core.statusmodel import FoldStatus

from .client import connect
from .common import annotations_of, cluster_command, name_arg, phase, status_of
from .errors import fail
from .render import fold_status_line, plain_console, print_summary, stage_summary

if TYPE_CHECKING:
    from rich.console import Console


class Watcher:
    """Turns successive statuses into new lines: phase changes, finished folds, stage gates."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.phase: str | None = None
        self.folds: dict[tuple[str, int], str] = {}
        self.summaries: set[str] = set()

    def update(self, tj: Mapping[str, Any]) -> None:
        status = status_of(tj)
        now = status.shown_phase
        if now != self.phase:
            stamp = datetime.now(UTC).strftime("%H:%M:%S")
            line = f"[{stamp}] {now}: {status.message or ''}".rstrip(": ")
            self.console.print(line, markup=False)
            self.phase = now
        for stage in STAGES:
            entry = status.stage_status(stage)
            if entry is None:
                continue
            for fold in sorted(entry.folds, key=lambda f: f.fold):
                self._fold(stage, fold, len(entry.folds))
            summary = stage_summary(stage, entry)
            if summary is not None and stage not in self.summaries:
                self.summaries.add(stage)
                print_summary(self.console, summary)

    def _fold(self, stage: str, fold: FoldStatus, total: int) -> None:
        key = (stage, fold.fold)
        state = fold.state
        if self.folds.get(key) == state:
            return
        self.folds[key] = state
        if state == "Succeeded" and fold.metrics:
            # markup=False: "[quick]" is text, not a rich style tag.
            self.console.print(fold_status_line(stage, fold, total), markup=False)
        elif state == "Retrying":
            error = fold.error or "failed"
            line = f"Fold {key[1]}/{total}: failed, retrying: {error}  [{stage}]"
            self.console.print(line, markup=False)


def watch_outcome(tj: Mapping[str, Any]) -> int | None:
    """The exit code once the watch is over, else None.

    AwaitingApproval ends a watch unless an approval/rejection is already annotated: then the
    operator has yet to act on it and the run is about to move on.
    """
    now = phase(tj)
    if now == "AwaitingApproval" and annotations_of(tj).get(APPROVAL_ANNOTATION) in (
        "approved",
        "rejected",
    ):
        return None
    if gates_failed(status_of(tj)):
        return exitcodes.GATES_FAILED
    return exitcodes.WATCH.get(now)


def _watch_hint(tj: Mapping[str, Any]) -> None:
    if phase(tj) == "AwaitingApproval":
        name = tj["metadata"]["name"]
        click.echo(f"{name} awaits approval: stagegate approve {name}  |  stagegate reject {name}")


@click.command()
@name_arg
@click.option("--timeout", type=float, help="Give up after this many seconds (exit 124).")
@click.option(
    "--interval", type=click.FloatRange(min=0.05), default=2.0, show_default=True,
    help="Seconds between polls of the status.",
)  # fmt: skip
@cluster_command
def watch(
    name: str,
    timeout: float | None,
    interval: float,
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
) -> None:
    """Follow NAME's fold lines and phase changes until the next gate or the end.

    Exit code: 0 AwaitingApproval or Succeeded, 1 Failed, 4 Rejected, 130 Cancelled,
    124 timed out, 2 an error (e.g. NAME not found).
    """
    cluster = connect(kubeconfig, context, namespace)
    watcher = Watcher(plain_console())
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        tj = cluster.get(name)
        watcher.update(tj)
        code = watch_outcome(tj)
        if code is not None:
            _watch_hint(tj)
            sys.exit(code)
        if deadline is not None and time.monotonic() >= deadline:
            fail(f"{name} still {phase(tj)} after {timeout:g}s", exitcodes.TIMEOUT)
        time.sleep(interval)
