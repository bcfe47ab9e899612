"""`stagegate approve|reject|cancel`: the decisions a person takes on a TrainingJob, written as
the annotations the operator acts on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
from stagegate_core.keys import (
    APPROVAL_ANNOTATION,
    APPROVED_BY_ANNOTATION,
    CANCEL_ANNOTATION,
    REJECTION_REASON_ANNOTATION,
)
from stagegate_core.stagemachine import TERMINAL

from .client import Cluster, connect
from .common import RESOURCE, cluster_command, name_arg, phase, status_of
from .errors import Refused


def refuse_if_terminal(tj: Mapping[str, Any], verb: str) -> None:
    ended = phase(tj)
    if ended in TERMINAL:
        name = tj["metadata"]["name"]
        raise Refused(f"cannot {verb} {name}: it has already ended ({ended})")


def decide(cluster: Cluster, name: str, decision: str, reason: str | None) -> None:
    """Set the decision and the deciding user's name, as the API server knows them (the
    chart's approval policy admits nothing else)."""
    tj = cluster.get(name)
    refuse_if_terminal(tj, "approve" if decision == "approved" else "reject")
    who = cluster.whoami()
    recorded = status_of(tj).approval
    if recorded is not None and recorded.decision in ("approved", "rejected"):
        raise Refused(
            f"{name} was already {recorded.decision} by {recorded.by or '?'} "
            f"at {recorded.at or '?'}"
        )
    annotations: dict[str, str | None] = {
        APPROVAL_ANNOTATION: decision,
        APPROVED_BY_ANNOTATION: who,
        REJECTION_REASON_ANNOTATION: reason if decision == "rejected" else None,
    }
    cluster.annotate(name, annotations)
    click.echo(f"{RESOURCE}/{name} {decision} by {who}")
    now = phase(tj)
    if now != "AwaitingApproval":
        # The annotation is level-based: it is applied when the run reaches its gate.
        click.echo(f"  note: {name} is in phase {now}; the decision applies at its gate")


@click.command()
@name_arg
@cluster_command
def approve(name: str, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
    """Approve NAME at its gate, so the full stage (or the final model) goes ahead. The
    approver recorded is the user the cluster knows you as (`kubectl auth whoami`)."""
    decide(connect(kubeconfig, context, namespace), name, "approved", None)


@click.command()
@name_arg
@click.option("--reason", help="Why (stored as the stagegate.io/rejection-reason annotation).")
@cluster_command
def reject(
    name: str,
    reason: str | None,
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
) -> None:
    """Reject NAME at its gate, so the run ends as Rejected."""
    decide(connect(kubeconfig, context, namespace), name, "rejected", reason)


@click.command()
@name_arg
@cluster_command
def cancel(name: str, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
    """Cancel NAME, stopping its running Jobs (finished folds are kept)."""
    cluster = connect(kubeconfig, context, namespace)
    tj = cluster.get(name)
    refuse_if_terminal(tj, "cancel")
    cluster.annotate(name, {CANCEL_ANNOTATION: "true"})
    click.echo(f"{RESOURCE}/{name} cancel requested")
