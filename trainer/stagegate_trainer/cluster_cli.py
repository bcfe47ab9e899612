"""The old scripts' jobs against a cluster: submit, approve/reject, status, watch, logs, cancel.

`train_quick.sh` / `train_full.sh` / `train_sequential.sh` become `stagegate submit … --mode`,
the confirmation prompt becomes `stagegate approve|reject`, the monitoring page becomes
`stagegate status` and `stagegate watch`, following a worker becomes `stagegate logs --follow`,
and stopping a job becomes `stagegate cancel`. Every command talks to the API server through
the kubeconfig (see cluster.py) and works as the kubectl plugin `kubectl stagegate …`.

Exit codes: 0 success; 2 an expected error (one line on stderr: bad options, no kubeconfig,
unreachable API server, no such TrainingJob, a refused approval). `watch` also ends with
0 at AwaitingApproval or Succeeded, 1 Failed, 4 Rejected, 130 Cancelled (the codes of
`stagegate run`, except that reaching the gate is the success of a watch), 124 on --timeout.
"""

from __future__ import annotations

import functools
import json
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click
from stagegate_core import exitcodes
from stagegate_core.keys import (
    APPROVAL_ANNOTATION,
    APPROVED_BY_ANNOTATION,
    CANCEL_ANNOTATION,
    CREATED_BY_ANNOTATION,
    LABEL_FOLD,
    LABEL_STAGE,
    LABEL_STEP,
    LABEL_TJ,
    REJECTION_REASON_ANNOTATION,
)
from stagegate_core.spec import (
    API_GROUP,
    API_VERSION,
    KIND,
    PLURAL,
    STAGES,
    SpecError,
    load_manifest,
    parse_manifest,
)
from stagegate_core.stagemachine import TERMINAL

from .cluster import ClusterError

if TYPE_CHECKING:
    from rich.console import Console

    from .cluster import Cluster

F = TypeVar("F", bound=Callable[..., Any])

RESOURCE = f"{PLURAL}.stagegate.io"
FOLD_METRICS = ("accuracy", "recall", "rocAuc", "f1", "hitRateTp1")


# ------------------------------------------------------------------------ plumbing
def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(exitcodes.USAGE)


def cluster_errors(fn: F) -> F:
    """Expected failures become `error: <one line>` and exit 2; Ctrl-C exits 130 quietly."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ClusterError, SpecError) as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            sys.exit(exitcodes.CANCELLED)

    return wrapper  # type: ignore[return-value]


def connection_options(fn: F) -> F:
    """--kubeconfig/--context/-n on each command, so they work after `kubectl stagegate X`."""
    fn = click.option(
        "-n", "--namespace", help="Namespace (default: the kubeconfig context's, else default)."
    )(fn)
    fn = click.option("--context", help="kubeconfig context (default: the current one).")(fn)
    fn = click.option(
        "--kubeconfig",
        type=click.Path(dir_okay=False),
        help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).",
    )(fn)
    return fn


def _connect(kubeconfig: str | None, context: str | None, namespace: str | None) -> Cluster:
    from .cluster import connect

    return connect(kubeconfig, context, namespace)


def _console() -> Console:
    from rich.console import Console

    # No syntax highlighting: numbers in fold lines stay plain text in pipes and terminals.
    return Console(highlight=False, soft_wrap=True)


def _phase(tj: Mapping[str, Any]) -> str:
    return str((tj.get("status") or {}).get("phase") or "Pending")


def _annotations(tj: Mapping[str, Any]) -> Mapping[str, str]:
    return tj.get("metadata", {}).get("annotations") or {}


# ------------------------------------------------------------------------ submit
def default_name(symbol: str, timeframe: str) -> str:
    """`BTC/USDT`, `M15` -> `btc-usdt-m15` (a valid DNS-1123 name)."""
    raw = f"{symbol}-{timeframe}".lower()
    return re.sub(r"[^a-z0-9]+", "-", raw).strip("-")[:63]


def _stage_overrides(options: Mapping[str, Any]) -> dict[str, Any]:
    fields = {
        "testPeriodDays": options.get("test_period_days"),
        "minTrainDays": options.get("min_train_days"),
        "lookbackDays": options.get("lookback_days"),
        "maxFolds": options.get("max_folds"),
    }
    expanding = options.get("expanding")
    if expanding is not None:
        fields["trainWindow"] = "expanding" if expanding else "fixed"
    return {k: v for k, v in fields.items() if v is not None}


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    if value is None:
        return
    *parents, leaf = path.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def build_manifest(
    symbol: str | None,
    timeframe: str | None,
    from_file: str | None,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """The TrainingJob to create, validated by the spec model (SpecError on bad options)."""
    if from_file:
        doc = load_manifest(from_file).model_dump(mode="json", by_alias=True, exclude_unset=True)
    elif symbol:
        doc = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "metadata": {}, "spec": {}}
    else:
        raise click.UsageError("give SYMBOL [TIMEFRAME], or -f MANIFEST")
    spec = doc.setdefault("spec", {})
    _set(spec, "symbol", symbol.upper() if symbol else None)
    _set(spec, "timeframe", timeframe)
    for path, key in (
        ("mode", "mode"),
        ("approval.policy", "approval"),
        ("data.source", "data_source"),
        ("data.uri", "data_uri"),
        ("data.start", "start"),
        ("data.end", "end"),
        ("artifacts.uri", "artifacts"),
        ("artifacts.secretRef.name", "artifacts_secret"),
        ("image", "image"),
        ("parallelism", "parallelism"),
        ("queueName", "queue"),
    ):
        _set(spec, path, options.get(key))
    # The old API call's window fields apply to the stages this run will execute.
    stage_fields = _stage_overrides(options)
    if stage_fields:
        mode = spec.get("mode", "sequential")
        stages = [options["stage"]] if options.get("stage") else _mode_stages(mode)
        for stage in stages:
            spec.setdefault("stages", {}).setdefault(stage, {}).update(stage_fields)
    metadata = doc.setdefault("metadata", {})
    name = options.get("name") or metadata.get("name")
    if not name:
        name = default_name(spec.get("symbol", ""), spec.get("timeframe", "M15"))
    if options.get("unique"):
        name = f"{name[:47]}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    metadata["name"] = name
    source = from_file or "options"
    checked = parse_manifest(doc, source)
    return checked.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _mode_stages(mode: str) -> list[str]:
    return {"quick": ["quick"], "full": ["full"]}.get(mode, list(STAGES))


def _place(manifest: dict[str, Any], namespace: str | None) -> None:
    """Put the manifest in the target namespace; refuse a contradiction, as kubectl does."""
    written = manifest["metadata"].get("namespace")
    if namespace and written and written != namespace:
        raise SpecError(
            f"the manifest's namespace {written!r} does not match --namespace {namespace!r}"
        )
    if namespace or written:
        manifest["metadata"]["namespace"] = namespace or written


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
@connection_options
@cluster_errors
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
    _place(manifest, namespace)
    if dry_run:
        # Offline on purpose: a dry run needs no cluster and no kubeconfig.
        click.echo(yaml.safe_dump(manifest, sort_keys=False), nl=False)
        return
    cluster = _connect(kubeconfig, context, namespace)
    _place(manifest, cluster.namespace)
    # Who created it, as the API server knows them: the chart's four-eyes policy requires it
    # and keeps that person from approving their own TrainingJob.
    annotations = manifest["metadata"].setdefault("annotations", {})
    annotations.setdefault(CREATED_BY_ANNOTATION, cluster.whoami())
    created = cluster.create(manifest)
    name = created["metadata"]["name"]
    click.echo(f"{RESOURCE}/{name} created in namespace {created['metadata']['namespace']}")
    click.echo(f"  follow it with: stagegate watch {name}", err=True)


# ------------------------------------------------------------------------ approve / reject / cancel
def _refuse_if_terminal(tj: Mapping[str, Any], verb: str) -> None:
    phase = _phase(tj)
    if phase in TERMINAL:
        name = tj["metadata"]["name"]
        raise ClusterError(f"cannot {verb} {name}: it has already ended ({phase})")


def _decide(cluster: Cluster, name: str, decision: str, reason: str | None) -> None:
    """Set the decision and the deciding user's name, as the API server knows them (the
    chart's approval policy admits nothing else)."""
    tj = cluster.get(name)
    _refuse_if_terminal(tj, "approve" if decision == "approved" else "reject")
    who = cluster.whoami()
    recorded = (tj.get("status") or {}).get("approval") or {}
    if recorded.get("decision") in ("approved", "rejected"):
        raise ClusterError(
            f"{name} was already {recorded['decision']} by {recorded.get('by', '?')} "
            f"at {recorded.get('at', '?')}"
        )
    annotations: dict[str, str | None] = {
        APPROVAL_ANNOTATION: decision,
        APPROVED_BY_ANNOTATION: who,
        REJECTION_REASON_ANNOTATION: reason if decision == "rejected" else None,
    }
    cluster.annotate(name, annotations)
    click.echo(f"{RESOURCE}/{name} {decision} by {who}")
    phase = _phase(tj)
    if phase != "AwaitingApproval":
        # The annotation is level-based: it is applied when the run reaches its gate.
        click.echo(f"  note: {name} is in phase {phase}; the decision applies at its gate")


name_arg = click.argument("name")


@click.command()
@name_arg
@connection_options
@cluster_errors
def approve(name: str, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
    """Approve NAME at its gate, so the full stage (or the final model) goes ahead. The
    approver recorded is the user the cluster knows you as (`kubectl auth whoami`)."""
    _decide(_connect(kubeconfig, context, namespace), name, "approved", None)


@click.command()
@name_arg
@click.option("--reason", help="Why (stored as the stagegate.io/rejection-reason annotation).")
@connection_options
@cluster_errors
def reject(
    name: str,
    reason: str | None,
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
) -> None:
    """Reject NAME at its gate, so the run ends as Rejected."""
    _decide(_connect(kubeconfig, context, namespace), name, "rejected", reason)


@click.command()
@name_arg
@connection_options
@cluster_errors
def cancel(name: str, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
    """Cancel NAME, stopping its running Jobs (finished folds are kept)."""
    cluster = _connect(kubeconfig, context, namespace)
    tj = cluster.get(name)
    _refuse_if_terminal(tj, "cancel")
    cluster.annotate(name, {CANCEL_ANNOTATION: "true"})
    click.echo(f"{RESOURCE}/{name} cancel requested")


# ------------------------------------------------------------------------ status
def age(created: str | None, now: datetime | None = None) -> str:
    """kubectl's short age: 45s, 12m, 5h, 3d."""
    if not created:
        return "-"
    then = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _columns(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def list_table(items: Iterable[Mapping[str, Any]], namespaces: bool = False) -> str:
    head = ["NAME", "SYMBOL", "TIMEFRAME", "MODE", "PHASE", "PROGRESS", "ACCURACY", "RECALL"]
    head += ["AUC", "EXP R", "AGE"]
    rows = [(["NAMESPACE"] if namespaces else []) + head]
    for tj in items:
        meta, spec = tj["metadata"], tj.get("spec") or {}
        status = tj.get("status") or {}
        summary = status.get("summary") or {}
        row = [meta["namespace"]] if namespaces else []
        row += [
            meta["name"],
            str(spec.get("symbol", "")),
            str(spec.get("timeframe", "M15")),
            str(spec.get("mode", "sequential")),
            _phase(tj),
            str(status.get("progress") or "-"),
            str(summary.get("accuracy", "-")),
            str(summary.get("recall", "-")),
            str(summary.get("rocAuc", "-")),
            str(summary.get("expectedR", "-")),
            age(meta.get("creationTimestamp")),
        ]
        rows.append(row)
    return _columns(rows)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _approval_line(tj: Mapping[str, Any]) -> str:
    status = tj.get("status") or {}
    recorded = status.get("approval") or {}
    if recorded.get("decision"):
        from stagegate_core.approval import describe

        return describe(recorded)
    asked = _annotations(tj).get(APPROVAL_ANNOTATION)
    if asked:
        return f"{asked} (annotation; applied at the gate)"
    policy = ((tj.get("spec") or {}).get("approval") or {}).get("policy", "manual")
    if _phase(tj) == "AwaitingApproval":
        name = tj["metadata"]["name"]
        return f"waiting: stagegate approve {name}   or   stagegate reject {name} --reason …"
    return f"policy {policy}, not decided yet"


def fold_table(stage: str, entry: Mapping[str, Any]) -> Any:
    from rich.table import Table
    from stagegate_core.metricnames import snake

    from .report import fmt

    plan = entry.get("plan") or {}
    table = Table(title=f"{stage} stage folds ({plan.get('trainWindow', '?')} window)")
    for column in ("fold", "state", "train", "test", "test rows", "trees"):
        right = column in ("fold", "test rows", "trees")
        table.add_column(column, justify="right" if right else "left")
    for metric in FOLD_METRICS:
        table.add_column(snake(metric), justify="right")
    for fold in entry.get("folds", []):
        train, test = fold.get("train") or {}, fold.get("test") or {}
        metrics = fold.get("metrics") or {}
        state = str(fold.get("state", "?"))
        if fold.get("error"):
            state += f" ({fold['error'][:40]})"
        table.add_row(
            str(fold["fold"]),
            state,
            _period(train),
            _period(test),
            f"{test['rows']:,}" if "rows" in test else "-",
            str(fold.get("bestIteration", "-")),  # chosen by early stopping on the inner split
            *[fmt(m, metrics.get(m)) for m in FOLD_METRICS],
        )
    return table


def _period(span: Mapping[str, Any]) -> str:
    if not span:
        return "-"
    return f"{str(span.get('start', ''))[:10]} → {str(span.get('end', ''))[:10]}"


def stage_summary(stage: str, entry: Mapping[str, Any]) -> dict[str, Any] | None:
    """The status's stage entry in the shape report.py's tables take."""
    if "summary" not in entry:
        return None
    return {
        "stage": stage,
        "folds": (entry.get("plan") or {}).get("foldCount", len(entry.get("folds", []))),
        "model": entry["summary"],
        "baselines": entry.get("baselines") or {},
        "gates": entry.get("gates") or [],
        "passed": entry.get("passed"),
    }


def print_detail(console: Console, tj: Mapping[str, Any]) -> None:
    from .report import print_summary

    meta, spec = tj["metadata"], tj.get("spec") or {}
    status = tj.get("status") or {}
    eta = status.get("etaSeconds")
    lines = [
        ("Name", f"{meta['name']}  (namespace {meta['namespace']})"),
        ("Symbol", f"{spec.get('symbol')} {spec.get('timeframe', 'M15')}"),
        ("Mode", f"{spec.get('mode', 'sequential')}"),
        ("Phase", f"{_phase(tj)}  {status.get('progress') or ''}".rstrip()),
        ("Message", str(status.get("message") or "-")),
        ("Approval", _approval_line(tj)),
        ("Elapsed", _duration(status.get("elapsedSeconds"))
         + (f"  (ETA {_duration(eta)})" if eta else "")),
    ]  # fmt: skip
    lines += [(f"  {k}", v) for k, v in (status.get("artifacts") or {}).items()]
    lines += [("Warning", w) for w in status.get("warnings") or []]
    for key, value in lines:
        console.print(f"{key + ':':<11} {value}", markup=False)
    for stage in STAGES:
        entry = (status.get("stages") or {}).get(stage)
        if not entry:
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
@connection_options
@cluster_errors
def status(
    name: str | None,
    all_namespaces: bool,
    output: str,
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
) -> None:
    """List TrainingJobs, or show NAME's folds, summary, baselines and gates."""
    cluster = _connect(kubeconfig, context, namespace)
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
    print_detail(_console(), tj)


def _raw(tj: Mapping[str, Any]) -> dict[str, Any]:
    meta = tj["metadata"]
    return {"name": meta["name"], "namespace": meta["namespace"], "status": tj.get("status") or {}}


# ------------------------------------------------------------------------ watch
def fold_status_line(stage: str, fold: Mapping[str, Any], total: int) -> str:
    """The old log line, `Fold 1/5: accuracy=62.5% recall=45.0% roc_auc=65.2% …`, from status.

    report.fold_line needs the baselines of each fold, which the status does not keep.
    """
    from stagegate_core.metricnames import snake

    metrics = fold.get("metrics") or {}
    parts = [f"{snake(m)}={_value(m, metrics.get(m))}" for m in FOLD_METRICS]
    if fold.get("bestIteration") is not None:
        parts.append(f"trees={fold['bestIteration']}")
    return f"Fold {fold['fold']}/{total}: {' '.join(parts)}  [{stage}]"


def _value(metric: str, value: float | None) -> str:
    from .report import fmt

    # As report.fold_line: F1 with two decimals, the rates as percentages.
    return f"{value:.2f}" if metric == "f1" and value is not None else fmt(metric, value)


class Watcher:
    """Turns successive statuses into new lines: phase changes, finished folds, stage gates."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.phase: str | None = None
        self.folds: dict[tuple[str, int], str] = {}
        self.summaries: set[str] = set()

    def update(self, tj: Mapping[str, Any]) -> None:
        from .report import print_summary

        status = tj.get("status") or {}
        phase = _phase(tj)
        if phase != self.phase:
            stamp = datetime.now(UTC).strftime("%H:%M:%S")
            line = f"[{stamp}] {phase}: {status.get('message') or ''}".rstrip(": ")
            self.console.print(line, markup=False)
            self.phase = phase
        for stage in STAGES:
            entry = (status.get("stages") or {}).get(stage) or {}
            folds = entry.get("folds") or []
            for fold in sorted(folds, key=lambda f: f["fold"]):
                self._fold(stage, fold, len(folds))
            summary = stage_summary(stage, entry)
            if summary is not None and stage not in self.summaries:
                self.summaries.add(stage)
                print_summary(self.console, summary)

    def _fold(self, stage: str, fold: Mapping[str, Any], total: int) -> None:
        key = (stage, int(fold["fold"]))
        state = str(fold.get("state"))
        if self.folds.get(key) == state:
            return
        self.folds[key] = state
        if state == "Succeeded" and fold.get("metrics"):
            # markup=False: "[quick]" is text, not a rich style tag.
            self.console.print(fold_status_line(stage, fold, total), markup=False)
        elif state == "Retrying":
            error = fold.get("error") or "failed"
            line = f"Fold {key[1]}/{total}: failed, retrying: {error}  [{stage}]"
            self.console.print(line, markup=False)


def watch_outcome(tj: Mapping[str, Any]) -> int | None:
    """The exit code once the watch is over, else None.

    AwaitingApproval ends a watch unless an approval/rejection is already annotated: then the
    operator has yet to act on it and the run is about to move on.
    """
    phase = _phase(tj)
    if phase == "AwaitingApproval" and _annotations(tj).get(APPROVAL_ANNOTATION) in (
        "approved",
        "rejected",
    ):
        return None
    from stagegate_core.status import gates_failed

    if gates_failed(tj.get("status") or {}):
        return exitcodes.GATES_FAILED
    return exitcodes.WATCH.get(phase)


@click.command()
@name_arg
@click.option("--timeout", type=float, help="Give up after this many seconds (exit 124).")
@click.option(
    "--interval", type=click.FloatRange(min=0.05), default=2.0, show_default=True,
    help="Seconds between polls of the status.",
)  # fmt: skip
@connection_options
@cluster_errors
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
    cluster = _connect(kubeconfig, context, namespace)
    watcher = Watcher(_console())
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        tj = cluster.get(name)
        watcher.update(tj)
        code = watch_outcome(tj)
        if code is not None:
            _watch_hint(tj)
            sys.exit(code)
        if deadline is not None and time.monotonic() >= deadline:
            click.echo(f"error: {name} still {_phase(tj)} after {timeout:g}s", err=True)
            sys.exit(exitcodes.TIMEOUT)
        time.sleep(interval)


def _watch_hint(tj: Mapping[str, Any]) -> None:
    if _phase(tj) == "AwaitingApproval":
        name = tj["metadata"]["name"]
        click.echo(f"{name} awaits approval: stagegate approve {name}  |  stagegate reject {name}")


# ------------------------------------------------------------------------ logs
def _selector(name: str, stage: str | None, step: str | None, fold: int | None) -> str:
    parts = [f"{LABEL_TJ}={name}"]
    if stage:
        parts.append(f"{LABEL_STAGE}={stage}")
    if step:
        parts.append(f"{LABEL_STEP}={step}")
    if fold is not None:
        parts.append(f"{LABEL_FOLD}={fold}")
    return ",".join(parts)


def _has_log(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed")


def _print_logs(cluster: Cluster, pods: list[dict[str, Any]], tail: int | None) -> None:
    for pod in pods:
        name = pod["metadata"]["name"]
        if not _has_log(pod):
            click.echo(f"[{name}] (not started yet)", err=True)
            continue
        for line in cluster.log(name, tail).splitlines():
            click.echo(f"[{name}] {line}")


def _follow(cluster: Cluster, name: str, selector: str, tail: int | None, poll: float) -> None:
    """Stream every matching pod, picking up new ones, until the run stops making pods."""
    lines: queue.Queue[str | None] = queue.Queue()
    followed: set[str] = set()
    live = 0

    def pump(pod: str) -> None:
        try:
            for line in cluster.follow_log(pod, tail):
                lines.put(f"[{pod}] {line}")
        except ClusterError as exc:
            lines.put(f"[{pod}] ({exc})")
        finally:
            lines.put(None)

    next_poll = 0.0
    while True:
        if time.monotonic() >= next_poll:
            starting = False
            for pod in cluster.pods(selector):
                pod_name = pod["metadata"]["name"]
                if pod_name not in followed and _has_log(pod):
                    followed.add(pod_name)
                    live += 1
                    threading.Thread(target=pump, args=(pod_name,), daemon=True).start()
                elif pod_name not in followed:
                    starting = True  # a pod that will have a log: wait for it
            done = watch_outcome(cluster.get(name)) is not None
            next_poll = time.monotonic() + poll
            if done and live == 0 and not starting:
                return
        try:
            item = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if item is None:
            live -= 1
        else:
            click.echo(item)


@click.command()
@name_arg
@click.option("--stage", type=click.Choice(list(STAGES)), help="Only this stage's pods.")
@click.option(
    "--step", type=click.Choice(["prepare", "fold", "summary", "final"]), help="Only this step."
)
@click.option("--fold", type=click.IntRange(min=1), help="Only this fold's pods.")
@click.option("--tail", type=int, help="Lines from the end of each pod's log.")
@click.option(
    "-f", "--follow", is_flag=True,
    help="Stream the logs, including pods that start later, until the run ends or reaches "
    "a gate (Ctrl-C stops).",
)  # fmt: skip
@connection_options
@cluster_errors
def logs(
    name: str,
    stage: str | None,
    step: str | None,
    fold: int | None,
    tail: int | None,
    follow: bool,
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
) -> None:
    """The trainer pods' logs of NAME, each line prefixed with its pod's name."""
    cluster = _connect(kubeconfig, context, namespace)
    cluster.get(name)  # a clear "not found" rather than an empty listing
    selector = _selector(name, stage, step, fold)
    if follow:
        _follow(cluster, name, selector, tail, poll=1.0)
        return
    pods = cluster.pods(selector)
    if not pods:
        click.echo(
            f"no trainer pods of {name} match {selector} (not started yet, or their Jobs "
            "expired; the results stay in `stagegate status`)",
            err=True,
        )
        return
    _print_logs(cluster, pods, tail)


COMMANDS = (submit, approve, reject, status, watch, logs, cancel)


def register(group: click.Group) -> None:
    """Add the cluster commands to the `stagegate` group (called at the end of cli.py)."""
    for command in COMMANDS:
        group.add_command(command)
