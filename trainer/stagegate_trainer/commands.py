"""The local `stagegate` commands: run, plan and the steps every Job of a TrainingJob runs
(prepare, fold, summarise, final). stagegate_cli.main puts them on the root group.

They need the numeric stack, imported inside each command: with only `stagegate[cli]`
installed this module still imports, and a command says it needs `stagegate[trainer]`.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from stagegate_cli.errors import Refused, expect, friendly
from stagegate_cli.render import fold_line, make_console, plan_table, print_summary
from stagegate_core import approval as approvals
from stagegate_core.results import fold_result, prepare_result, summary_result, write_result
from stagegate_core.spec import TrainingJobManifest, load_manifest
from stagegate_core.statusmodel import TrainingJobStatus

from .report_command import report

F = TypeVar("F", bound=Callable[..., Any])

# The trainer's expected errors, by where they are defined (importing them here would import
# pandas): bad data, a look-ahead feature, unreachable storage, a run folder of another spec.
expect(
    "stagegate_trainer.data.errors:DataError",
    "stagegate_trainer.lookahead:FeatureError",
    "stagegate_trainer.store:StoreError",
    "stagegate_trainer.steps:RunMismatchError",
)
# What every step computes with. Checked before a command touches anything: with only
# `stagegate[cli]` installed, `run` would otherwise fail half-way, after creating the run folder.
NUMERIC_STACK = ("numpy", "pandas", "pyarrow", "lightgbm")


def needs_trainer(command: F) -> F:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for name in NUMERIC_STACK:
            if importlib.util.find_spec(name) is None:
                # friendly() says which extra brings it, as for one missing half-way.
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return command(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _manifest(path: str, data: str | None, artifacts: str | None) -> TrainingJobManifest:
    from .steps import with_overrides

    return with_overrides(load_manifest(path), data_uri=data, artifacts_uri=artifacts)


manifest_arg = click.argument("manifest", type=click.Path(dir_okay=False))
data_opt = click.option(
    "--data",
    "data",
    metavar="URI",
    help="Read candles from this parquet/CSV (file path, file:// or s3://) instead of spec.data.",
)
artifacts_opt = click.option(
    "--artifacts", metavar="URI", help="Write the run here instead of spec.artifacts.uri."
)


@click.command()
@manifest_arg
@click.option(
    "--mode", type=click.Choice(["quick", "full", "sequential"]), help="Override spec.mode."
)
@click.option(
    "--approve",
    type=click.Choice(["ask", "auto", "yes", "no"]),
    default=None,
    help="At the gate: ask (default on a terminal), auto (proceed when every gate "
    "passes), yes (approve), no (stop at AwaitingApproval; default without a terminal).",
)
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes (default: cores).")
@data_opt
@artifacts_opt
@click.option("--fresh", is_flag=True, help="Delete an earlier run of this name first.")
@click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    help="json: print only the final status object on stdout.",
)
@friendly
@needs_trainer
def run(
    manifest: str,
    mode: str | None,
    approve: str | None,
    workers: int | None,
    data: str | None,
    artifacts: str | None,
    fresh: bool,
    output: str,
) -> None:
    """Run the whole plan locally: quick stage, gate, full stage, final model."""
    from . import steps
    from .runner import LocalRunner

    parsed = _manifest(manifest, data, artifacts)
    if mode:
        parsed = parsed.model_copy(update={"spec": parsed.spec.model_copy(update={"mode": mode})})
    interactive = sys.stdin.isatty()
    approve_mode = approve or ("ask" if interactive else "no")
    if fresh:
        steps.open_run(parsed).store.delete_prefix("")
    console = make_console(stderr=output == "json")

    def ask(question: str) -> bool:
        return click.confirm(question, default=False)

    runner = LocalRunner(
        parsed,
        approve=approve_mode,  # type: ignore[arg-type]
        workers=workers,
        console=console,
        ask=ask if interactive else None,
    )
    result = runner.execute()
    status = result.status
    if output == "json":
        click.echo(json.dumps(status.to_dict(), indent=2, sort_keys=True))
    else:
        _print_outcome(console, status, result.exit_code)
    sys.exit(result.exit_code)


def _print_outcome(console: Any, status: TrainingJobStatus, code: int) -> None:
    from stagegate_core.status import gates_failed

    phase = status.shown_phase
    failed_stage = gates_failed(status)
    colour = {"Succeeded": "green", "AwaitingApproval": "yellow"}.get(phase, "red")
    if failed_stage:
        colour = "yellow"
    console.print(
        f"[bold {colour}]{phase}[/bold {colour}]: {status.message}  "
        f"({status.elapsedSeconds or 0.0:.1f} s)"
    )
    if failed_stage:
        console.print(f"  completed, gates failed: the {failed_stage} stage did not pass its gates")
    for warning in status.warnings or []:
        console.print(f"  [yellow]Warning: {warning}[/yellow]")
    for name, uri in (status.artifacts or {}).items():
        console.print(f"  {name}: {uri}")
    if phase == "AwaitingApproval":
        console.print(
            "  approve with --approve yes (or --approve auto) and run the same command "
            "again; finished folds are kept"
        )
    console.print(f"  exit code {code}")


@click.command()
@manifest_arg
@data_opt
@click.option("--output", type=click.Choice(["table", "json"]), default="table")
@friendly
@needs_trainer
def plan(manifest: str, data: str | None, output: str) -> None:
    """Print the exact walk-forward plan of each stage (no training)."""
    from . import steps
    from .dataset import build_dataset

    spec = _manifest(manifest, data, None).spec
    loaded = steps.load_data(spec)
    dataset = build_dataset(loaded.frame, spec.label, spec.canonical_timeframe)
    plans = {s: p for s, p in steps.plan_stages(spec, dataset).items() if s in spec.stages_to_run()}
    if output == "json":
        doc = {"data": loaded.report.as_dict(), "labelledRows": len(dataset), "stages": plans}
        click.echo(json.dumps(doc, indent=2, default=str))
        return
    console = make_console()
    console.print(f"data: {loaded.report.summary()}")
    console.print(f"labelled rows: {len(dataset):,}")
    for stage_plan in plans.values():
        console.print(plan_table(stage_plan))


@click.command()
@manifest_arg
@data_opt
@artifacts_opt
@friendly
@needs_trainer
def prepare(manifest: str, data: str | None, artifacts: str | None) -> None:
    """Snapshot the data, build the dataset and write plan.json (one step of a run)."""
    from . import steps

    run_ = steps.open_run(_manifest(manifest, data, artifacts))
    steps.claim(run_)
    doc = steps.prepare(run_)
    write_result(prepare_result(doc))
    counts = {s: p["foldCount"] for s, p in doc["stages"].items()}
    click.echo(
        f"prepared {run_.store.root_uri}: {doc['labelledRows']:,} labelled rows; folds "
        + ", ".join(f"{s}={n}" for s, n in counts.items())
    )


@click.command()
@manifest_arg
@click.option("--stage", type=click.Choice(["quick", "full"]), required=True)
@click.option("--fold", "number", type=click.IntRange(min=1), required=True)
@data_opt
@artifacts_opt
@click.option("--threads", type=click.IntRange(min=1), help="LightGBM threads (default: cores).")
@click.option("--force", is_flag=True, help="Recompute even when metrics.json exists.")
@friendly
@needs_trainer
def fold(
    manifest: str,
    stage: str,
    number: int,
    data: str | None,
    artifacts: str | None,
    threads: int | None,
    force: bool,
) -> None:
    """Train and evaluate one fold (prepares the run first if needed)."""
    from . import steps
    from .runner import available_cores

    run_ = steps.open_run(_manifest(manifest, data, artifacts))
    steps.claim(run_)
    steps.prepare(run_)
    outcome = steps.fold(
        run_,
        stage,  # type: ignore[arg-type]  # click.Choice has checked it
        number,
        num_threads=threads or available_cores(),
        force=force,
    )
    suffix = " (kept from an earlier run; --force recomputes)" if outcome.skipped else ""
    click.echo(fold_line(outcome.metrics) + suffix)
    write_result(fold_result(outcome.metrics))


@click.command()
@manifest_arg
@data_opt
@artifacts_opt
@click.option("--threads", type=click.IntRange(min=1), help="LightGBM threads (default: cores).")
@friendly
@needs_trainer
def final(manifest: str, data: str | None, artifacts: str | None, threads: int | None) -> None:
    """Train the production model on the latest window and write its model card."""
    from stagegate_core import layout

    from . import finalmodel, steps
    from .runner import available_cores

    run_ = steps.open_run(_manifest(manifest, data, artifacts))
    card = finalmodel.final(
        run_,
        num_threads=threads or available_cores(),
        approval=approvals.from_env(),
    )
    model = run_.store.uri(layout.FINAL_MODEL)
    training = card.get("training") or {}
    click.echo(
        f"model: {model} ({training.get('rounds')} rounds on {training.get('rows', 0):,} rows; "
        f"best iteration {card['parameters']['bestIteration']} on the inner split)"
    )
    write_result({"step": "final", "model": model, "modelCard": run_.store.uri(layout.MODEL_CARD)})


@click.command()
@manifest_arg
@click.option("--stage", type=click.Choice(["quick", "full"]), required=True)
@artifacts_opt
@friendly
@needs_trainer
def summarise(manifest: str, stage: str, artifacts: str | None) -> None:
    """Aggregate a stage's fold metrics, evaluate its gates and write summary.json."""
    from . import steps

    run_ = steps.open_run(_manifest(manifest, None, artifacts))
    plan = steps.stage_plan(run_, stage)  # type: ignore[arg-type]  # click.Choice checked it
    done = steps.finished_folds(run_, stage)
    missing = [f.fold for f in plan.folds if f.fold not in done]
    if missing:
        raise Refused(f"{stage} stage: folds {missing} have no metrics.json yet")
    summary = steps.summarise(run_, stage)  # type: ignore[arg-type]
    print_summary(make_console(), summary)
    write_result(summary_result(summary))


COMMANDS = (run, plan, prepare, fold, final, summarise, report)
