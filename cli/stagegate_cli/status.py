"""`stagegate status [NAME]`: the TrainingJob list, or one TrainingJob's folds, stage summaries,
baselines, gates and approval."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click
from stagegate_core.approval import describe
from stagegate_core.keys import APPROVAL_ANNOTATION
from stagegate_core.specparts import STAGES

from .client import connect
from .common import annotations_of, cluster_command, phase, status_of
from .render import duration, fold_table, list_table, plain_console, print_summary, stage_summary

if TYPE_CHECKING:
    from rich.console import Console


def _approval_line(tj: Mapping[str, Any]) -> str:
    recorded = status_of(tj).approval
    if recorded is not None and recorded.decision:
        return describe(recorded.to_dict())
    asked = annotations_of(tj).get(APPROVAL_ANNOTATION)
    if asked:
        return f"{asked} (annotation; applied at the gate)"
    policy = ((tj.get("spec") or {}).get("approval") or {}).get("policy", "manual")
    if phase(tj) == "AwaitingApproval":
        name = tj["metadata"]["name"]
        return f"waiting: stagegate approve {name}   or   stagegate reject {name} --reason …"
    return f"policy {policy}, not decided yet"


def print_detail(console: Console, tj: Mapping[str, Any]) -> None:
    meta, spec = tj["metadata"], tj.get("spec") or {}
    status = status_of(tj)
    eta = status.etaSeconds
    lines = [
        ("Name", f"{meta['name']}  (namespace {meta['namespace']})"),
        ("Symbol", f"{spec.get('symbol')} {spec.get('timeframe', 'M15')}"),
        ("Mode", f"{spec.get('mode', 'sequential')}"),
        ("Phase", f"{status.shown_phase}  {status.progress or ''}".rstrip()),
        ("Message", status.message or "-"),
        ("Approval", _approval_line(tj)),
        ("Elapsed", duration(status.elapsedSeconds)
         + (f"  (ETA {duration(eta)})" if eta else "")),
    ]  # fmt: skip
    lines += [(f"  {k}", v) for k, v in (status.artifacts or {}).items()]
    lines += [("Warning", w) for w in status.warnings or []]
    for key, value in lines:
        console.print(f"{key + ':':<11} {value}", markup=False)
    for stage in STAGES:
        entry = status.stage_status(stage)
        if entry is None:
            continue
        console.print()
        console.print(fold_table(stage, entry))
        summary = stage_summary(stage, entry)
        if summary is not None:
            print_summary(console, summary)


def _dump(doc: Any, output: str) -> None:
    import yaml

    if output == "json":
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
    else:
        click.echo(yaml.safe_dump(doc, sort_keys=False), nl=False)


def _raw(tj: Mapping[str, Any]) -> dict[str, Any]:
    meta = tj["metadata"]
    return {"name": meta["name"], "namespace": meta["namespace"], "status": tj.get("status") or {}}


@click.command()
@click.argument("name", required=False)
@click.option("-A", "--all-namespaces", is_flag=True, help="List TrainingJobs of every namespace.")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "json", "yaml"]),
    default="text",
    help="json/yaml: the raw status (a list of {name, namespace, status} without NAME).",
)
@cluster_command
def status(
    name: str | None,
    all_namespaces: bool,
    output: str,
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
) -> None:
    """List TrainingJobs, or show NAME's folds, summary, baselines and gates."""
    cluster = connect(kubeconfig, context, namespace)
    if name is None:
        items = cluster.list_all(all_namespaces)
        if output != "text":
            _dump([_raw(tj) for tj in items], output)
        elif not items:
            where = "any namespace" if all_namespaces else f"namespace {cluster.namespace}"
            click.echo(f"No TrainingJobs found in {where}.", err=True)
        else:
            click.echo(list_table(items, namespaces=all_namespaces))
        return
    tj = cluster.get(name)
    if output != "text":
        _dump(tj.get("status") or {}, output)
        return
    print_detail(plain_console(), tj)
