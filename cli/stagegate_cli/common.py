"""What every cluster command shares: the connection options, the resource's name as kubectl
prints it, and reading a TrainingJob's phase and annotations."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click
from stagegate_core.spec import PLURAL

from .errors import friendly

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


def phase(tj: Mapping[str, Any]) -> str:
    return str((tj.get("status") or {}).get("phase") or "Pending")


def annotations_of(tj: Mapping[str, Any]) -> Mapping[str, str]:
    return tj.get("metadata", {}).get("annotations") or {}
