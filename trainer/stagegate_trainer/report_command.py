"""`stagegate report MANIFEST|NAME [--stage]`: write or fetch a stage's report.html.

With a manifest, the run folder is the manifest's; with a TrainingJob name, it is found under
`--artifacts` (default: ./stagegate-runs) and `--namespace`, from the run.json its run wrote.
A report that exists is fetched (its location printed; `--to DIR` copies it and its SVGs from
S3 into DIR); a stage summarised before reports existed, or `--render`, renders it afresh.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from stagegate_cli.errors import Refused, friendly
from stagegate_core import layout
from stagegate_core.spec import API_GROUP, API_VERSION, KIND, load_manifest, parse_manifest


def _run_from_name(name: str, namespace: str, artifacts: str) -> Any:
    from .steps import Run
    from .store import open_store

    root = open_store(artifacts).child(f"{namespace}/{name}")
    records = sorted(k for k in root.list("") if k.endswith("/" + layout.RUN_RECORD))
    if not records:
        raise Refused(
            f"{name}: no run of this TrainingJob under {root.root_uri} "
            "(pass the manifest, --artifacts or --namespace)"
        )
    if len(records) > 1:
        uids = ", ".join(k.split("/")[0] for k in records)
        raise Refused(f"{name}: several runs under {root.root_uri} ({uids}); pass the manifest")
    uid = records[0].split("/")[0]
    record = root.child(uid).read_json(layout.RUN_RECORD)
    manifest = parse_manifest(
        {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "spec": record["spec"],
        },
        source=root.uri(f"{uid}/{layout.RUN_RECORD}"),
    )
    return Run(manifest, root.child(uid))


@click.command()
@click.argument("target", metavar="MANIFEST|NAME")
@click.option("--stage", type=click.Choice(["quick", "full"]), help="Default: the latest.")
@click.option("--artifacts", metavar="URI", help="Where the run lives (default: the spec's).")
@click.option("--namespace", default="default", show_default=True, help="For a NAME.")
@click.option("--render", is_flag=True, help="Render again even when the report exists.")
@click.option(
    "--to",
    "to",
    type=click.Path(file_okay=False),
    help="Copy report.html and its SVGs into this folder (e.g. from S3).",
)
@friendly
def report(
    target: str,
    stage: str | None,
    artifacts: str | None,
    namespace: str,
    render: bool,
    to: str | None,
) -> None:
    """Write or fetch a stage's report.html and print where it is."""
    from . import steps

    if Path(target).is_file():
        manifest = steps.with_overrides(load_manifest(target), artifacts_uri=artifacts)
        run = steps.open_run(manifest)
    else:
        run = _run_from_name(target, namespace, artifacts or "stagegate-runs")
    stages = [s for s in ("full", "quick") if run.store.exists(layout.stage_summary(s))]
    chosen = stage or (stages[0] if stages else None)
    if chosen is None or chosen not in stages:
        raise Refused(
            f"{run.store.root_uri}: the {chosen or 'quick or full'} stage has no summary "
            "yet (run or summarise it first)"
        )
    key = layout.stage_report(chosen)
    if render or not run.store.exists(key):
        steps.write_report(run, chosen, run.store.read_json(layout.stage_summary(chosen)))  # type: ignore[arg-type]
    location = run.store.local_path(key) or run.store.uri(key)
    if to:
        folder = Path(to)
        folder.mkdir(parents=True, exist_ok=True)
        for name in run.store.list(layout.report_dir(chosen) + "/"):
            (folder / Path(name).name).write_bytes(run.store.read_bytes(name))
        location = folder / Path(key).name
    click.echo(str(location))
