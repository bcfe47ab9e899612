"""What every cluster command shares: the connection options, the resource's name as kubectl
prints it, and reading a TrainingJob's phase and annotations."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from stagegate_core.spec import PLURAL, format_validation_error
from stagegate_core.statusmodel import TrainingJobStatus

from .errors import Refused, friendly

F = TypeVar("F", bound=Callable[..., Any])

RESOURCE = f"{PLURAL}.stagegate.io"

name_arg = click.argument("name")


def cluster_command(fn: F) -> F:
    """--kubeconfig/--context/-n on each command, so they work after `kubectl stagegate X`;
    expected failures as one line, and a Ctrl-C ends the wait quietly."""
    fn = friendly(ctrl_c=True)(fn)
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


def status_of(tj: Mapping[str, Any]) -> TrainingJobStatus:
    """The TrainingJob's status, typed; one the API server holds but this version cannot read
    is a clear error, not a traceback."""
    try:
        return TrainingJobStatus.parse(tj.get("status"))
    except ValidationError as exc:
        name = tj.get("metadata", {}).get("name", "?")
        problem = format_validation_error(exc, "status")
        raise Refused(
            f"{RESOURCE}/{name} has a status this stagegate cannot read: {problem}"
        ) from None


def phase(tj: Mapping[str, Any]) -> str:
    return status_of(tj).shown_phase


def annotations_of(tj: Mapping[str, Any]) -> Mapping[str, str]:
    return tj.get("metadata", {}).get("annotations") or {}
