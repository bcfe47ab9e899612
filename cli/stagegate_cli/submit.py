"""`stagegate submit`: the old train_quick.sh / train_full.sh / train_sequential.sh, as a
TrainingJob created through the kubeconfig (or printed, with --dry-run)."""

from __future__ import annotations

from typing import Any

import click
from stagegate_core.keys import CREATED_BY_ANNOTATION
from stagegate_core.specparts import STAGES

from .client import connect
from .common import RESOURCE, cluster_command
from .manifest import build_manifest, place


@click.command()
@click.argument("symbol", required=False)
@click.argument("timeframe", required=False)
@click.option(
    "-f", "--from-file", type=click.Path(dir_okay=False), help="Submit this manifest file."
)
@click.option("--name", help="TrainingJob name (default: <symbol>-<timeframe>, e.g. btc-usdt-m15).")
@click.option("--unique", is_flag=True, help="Append -YYYYMMDD-HHMMSS (UTC) to the name.")
@click.option(
    "--mode", type=click.Choice(["quick", "full", "sequential"]), help="Default: sequential."
)
@click.option("--approval", type=click.Choice(["manual", "auto"]), help="Gate policy.")
@click.option("--test-period-days", type=int, help="Length of each test period.")
@click.option("--min-train-days", type=int, help="Training days (fixed) or first fold (expanding).")
@click.option("--expanding/--fixed", default=None, help="Training window kind.")
@click.option("--lookback-days", type=int, help="Use only the last N days of data.")
@click.option("--max-folds", type=int, help="Keep only the most recent N folds.")
@click.option(
    "--stage",
    type=click.Choice(list(STAGES)),
    help="Apply the window options to this stage only (default: every stage the mode runs).",
)
@click.option("--data-source", help="bundled, ccxt, s3 or file.")
@click.option("--data-uri", help="Parquet/CSV for --data-source s3 or file.")
@click.option("--start", help="First bar (UTC, ISO 8601).")
@click.option("--end", help="Last bar (UTC, ISO 8601).")
@click.option("--artifacts", help="s3://bucket/prefix or file:///path for the run's artifacts.")
@click.option("--artifacts-secret", help="Secret with the S3 credentials.")
@click.option("--image", help="Trainer image.")
@click.option("--parallelism", type=int, help="Fold Jobs running at once.")
@click.option("--queue", help="Kueue LocalQueue name.")
@click.option("--dry-run", is_flag=True, help="Print the manifest as YAML; create nothing.")
@cluster_command
def submit(
    symbol: str | None,
    timeframe: str | None,
    from_file: str | None,
    dry_run: bool,
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
    **options: Any,
) -> None:
    """Create a TrainingJob for SYMBOL (BTC/USDT) and TIMEFRAME (M15), or from -f MANIFEST."""
    import yaml

    manifest = build_manifest(symbol, timeframe, from_file, options)
    place(manifest, namespace)
    if dry_run:
        # Offline on purpose: a dry run needs no cluster and no kubeconfig.
        click.echo(yaml.safe_dump(manifest, sort_keys=False), nl=False)
        return
    cluster = connect(kubeconfig, context, namespace)
    place(manifest, cluster.namespace)
    # Who created it, as the API server knows them: the chart's four-eyes policy requires it
    # and keeps that person from approving their own TrainingJob.
    annotations = manifest["metadata"].setdefault("annotations", {})
    annotations.setdefault(CREATED_BY_ANNOTATION, cluster.whoami())
    created = cluster.create(manifest)
    name = created["metadata"]["name"]
    click.echo(f"{RESOURCE}/{name} created in namespace {created['metadata']['namespace']}")
    click.echo(f"  follow it with: stagegate watch {name}", err=True)
