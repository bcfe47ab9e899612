"""The `stagegate` command line: thin wrappers over the spec, the steps and the local runner.

Every expected failure (bad manifest, bad data, unreachable storage) ends as one line on stderr
naming the problem and a non-zero exit code, never as a bare traceback.
"""

from __future__ import annotations

import faulthandler
import functools
import json
import signal
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from stagegate_core import approval as approvals
from stagegate_core import exitcodes
from stagegate_core.plan import PlanError
from stagegate_core.results import fold_result, prepare_result, summary_result, write_result
from stagegate_core.spec import SpecError, TrainingJobManifest, load_manifest

F = TypeVar("F", bound=Callable[..., Any])


def _expected_errors() -> tuple[type[BaseException], ...]:
    from .data import DataError
    from .lookahead import FeatureError
    from .steps import RunMismatchError
    from .store import StoreError

    return (SpecError, PlanError, DataError, FeatureError, StoreError, RunMismatchError)


def friendly(fn: F) -> F:
    """Turn the expected errors into `error: <one line>` and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _expected_errors() as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exitcodes.USAGE)

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stagegate")
def main() -> None:
    """Stagegate: two-stage walk-forward training of LightGBM trading models."""
    # In a pod this process is PID 1, which ignores SIGTERM unless it handles it: without this
    # a deleted Job's pod would wait out its whole grace period.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(exitcodes.TERMINATED))
    # `kill -USR1 <pid>` prints every thread's stack to stderr: how a run that seems stuck
    # is diagnosed without stopping it.
    faulthandler.register(signal.SIGUSR1, all_threads=True)


@main.command()
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
    from .report import make_console
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
        click.echo(json.dumps(status, indent=2, sort_keys=True))
    else:
        _print_outcome(console, status, result.exit_code)
    sys.exit(result.exit_code)


def _print_outcome(console: Any, status: dict[str, Any], code: int) -> None:
    from stagegate_core.status import gates_failed

    phase = status["phase"]
    failed_stage = gates_failed(status)
    colour = {"Succeeded": "green", "AwaitingApproval": "yellow"}.get(phase, "red")
    if failed_stage:
        colour = "yellow"
    console.print(
        f"[bold {colour}]{phase}[/bold {colour}]: {status['message']}  "
        f"({status['elapsedSeconds']:.1f} s)"
    )
    if failed_stage:
        console.print(f"  completed, gates failed: the {failed_stage} stage did not pass its gates")
    for warning in status.get("warnings", []):
        console.print(f"  [yellow]Warning: {warning}[/yellow]")
    for name, uri in status.get("artifacts", {}).items():
        console.print(f"  {name}: {uri}")
    if phase == "AwaitingApproval":
        console.print(
            "  approve with --approve yes (or --approve auto) and run the same command "
            "again; finished folds are kept"
        )
    console.print(f"  exit code {code}")


@main.command()
@manifest_arg
@data_opt
@click.option("--output", type=click.Choice(["table", "json"]), default="table")
@friendly
def plan(manifest: str, data: str | None, output: str) -> None:
    """Print the exact walk-forward plan of each stage (no training)."""
    from . import steps
    from .dataset import build_dataset
    from .report import make_console, plan_table

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


@main.command()
@manifest_arg
@data_opt
@artifacts_opt
@friendly
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


@main.command()
@manifest_arg
@click.option("--stage", type=click.Choice(["quick", "full"]), required=True)
@click.option("--fold", "number", type=click.IntRange(min=1), required=True)
@data_opt
@artifacts_opt
@click.option("--threads", type=click.IntRange(min=1), help="LightGBM threads (default: cores).")
@click.option("--force", is_flag=True, help="Recompute even when metrics.json exists.")
@friendly
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
    from .report import fold_line
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


@main.command()
@manifest_arg
@data_opt
@artifacts_opt
@click.option("--threads", type=click.IntRange(min=1), help="LightGBM threads (default: cores).")
@friendly
def final(manifest: str, data: str | None, artifacts: str | None, threads: int | None) -> None:
    """Train the production model on the latest window and write its model card."""
    from stagegate_core import layout

    from . import steps
    from .runner import available_cores

    run_ = steps.open_run(_manifest(manifest, data, artifacts))
    card = steps.final(
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


@main.command()
@manifest_arg
@click.option("--stage", type=click.Choice(["quick", "full"]), required=True)
@artifacts_opt
@friendly
def summarise(manifest: str, stage: str, artifacts: str | None) -> None:
    """Aggregate a stage's fold metrics, evaluate its gates and write summary.json."""
    from . import steps
    from .report import make_console, print_summary

    run_ = steps.open_run(_manifest(manifest, None, artifacts))
    plan = steps.stage_plan(run_, stage)  # type: ignore[arg-type]  # click.Choice checked it
    done = steps.finished_folds(run_, stage)
    missing = [f.fold for f in plan.folds if f.fold not in done]
    if missing:
        raise SpecError(f"{stage} stage: folds {missing} have no metrics.json yet")
    summary = steps.summarise(run_, stage)  # type: ignore[arg-type]
    print_summary(make_console(), summary)
    write_result(summary_result(summary))


@main.command()
def crd() -> None:
    """Print the TrainingJob CRD generated from the spec model."""
    from stagegate_core.crd import render_crd

    click.echo(render_crd(), nl=False)


# The cluster commands (submit, approve, reject, status, watch, logs, cancel) live apart.
from .cluster_cli import register  # noqa: E402
from .report_cli import register as register_report  # noqa: E402

register(main)
register_report(main)

if __name__ == "__main__":
    main()
