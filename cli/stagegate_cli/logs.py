"""`stagegate logs NAME`: the trainer pods' logs, each line prefixed with its pod's name; with
--follow, streamed from every matching pod, new ones included, until the run stops making pods.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

import click
from stagegate_core.keys import LABEL_FOLD, LABEL_STAGE, LABEL_STEP, LABEL_TJ
from stagegate_core.specparts import STAGES

from .client import Cluster, ClusterError, connect
from .common import cluster_command, name_arg
from .watch import watch_outcome


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
@cluster_command
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
    cluster = connect(kubeconfig, context, namespace)
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
