"""`stagegate-operator`: run the TrainingJob operator (kopf underneath)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import uuid

import kopf

from .config import OperatorConfig
from .defaults import DefaultsError, TrainerDefaults
from .handlers import register
from .kubeapi import SERVICE_ACCOUNT, NoCredentials, load_connection
from .metrics import OperatorMetrics


def _service_account_namespace() -> str | None:
    path = SERVICE_ACCOUNT / "namespace"
    return path.read_text().strip() if path.exists() else None


def parse_args(argv: list[str] | None = None) -> OperatorConfig:
    parser = argparse.ArgumentParser(
        prog="stagegate-operator",
        description="Run Stagegate's TrainingJob operator against the cluster of KUBECONFIG "
        "(or the in-cluster service account).",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", "-n", action="append", default=[], help="Watch this namespace (repeatable)."
    )
    scope.add_argument(
        "--all-namespaces",
        "-A",
        action="store_true",
        help="Watch every namespace (the default without --namespace).",
    )
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    parser.add_argument(
        "--metrics-port", type=int, default=8000, help="Prometheus /metrics port (0: off)."
    )
    parser.add_argument(
        "--health-port", type=int, default=8080, help="Liveness endpoint port, /healthz (0: off)."
    )
    parser.add_argument(
        "--bind-address",
        default="0.0.0.0",
        help="Address the metrics and health servers listen on (default: all interfaces).",
    )
    parser.add_argument(
        "--leader-election",
        action="store_true",
        help="Act only while holding a Lease, so several replicas can run (one leads, the "
        "others stand by with warm caches).",
    )
    parser.add_argument(
        "--lease",
        default="stagegate-operator",
        help="Name of the leader Lease (default: stagegate-operator).",
    )
    parser.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE") or _service_account_namespace(),
        help="Namespace of the leader Lease (default: $POD_NAMESPACE, or the service "
        "account's namespace).",
    )
    parser.add_argument(
        "--resync-seconds", type=float, default=10.0, help="Reconcile every TrainingJob this often."
    )
    parser.add_argument(
        "--trainer-command",
        default="stagegate",
        help="Command the step pods run (split on spaces); default: stagegate.",
    )
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    if args.leader_election and not args.lease_namespace:
        parser.error("--leader-election needs --lease-namespace (or $POD_NAMESPACE)")
    return OperatorConfig(
        namespaces=list(args.namespace),
        kubeconfig=args.kubeconfig,
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        bind_address=args.bind_address,
        lease=(args.lease_namespace, args.lease) if args.leader_election else None,
        # A restarted container is a new candidate, not the old holder: it must not inherit
        # a Lease that its previous life may still be acting under.
        identity=f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}",
        resync_seconds=args.resync_seconds,
        verbose=args.verbose,
        trainer_command=tuple(args.trainer_command.split()),
        defaults=TrainerDefaults.from_env(),
    )


def main(argv: list[str] | None = None) -> None:
    try:
        config = parse_args(argv)
    except DefaultsError as exc:
        print(f"stagegate-operator: {exc}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(
        level=logging.DEBUG if config.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if config.kubeconfig:
        os.environ["KUBECONFIG"] = config.kubeconfig  # kopf's own login reads it
    try:
        # Checked once here: kopf would retry a failing login handler without end.
        load_connection(config.kubeconfig)
    except NoCredentials as exc:
        print(f"stagegate-operator: {exc}", file=sys.stderr)
        sys.exit(2)
    metrics = OperatorMetrics()
    if config.metrics_port:
        metrics.serve(config.metrics_port, config.bind_address)
    registry = kopf.OperatorRegistry()
    register(registry, config, metrics)
    if not config.verbose:
        # kopf logs a line for every handled event; at 100 TrainingJobs that is noise.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    host = f"[{config.bind_address}]" if ":" in config.bind_address else config.bind_address
    liveness = f"http://{host}:{config.health_port}/healthz" if config.health_port else None
    try:
        asyncio.run(
            kopf.operator(
                registry=registry,
                standalone=True,
                clusterwide=not config.namespaces,
                namespaces=config.namespaces,
                liveness_endpoint=liveness,
            )
        )
    except Exception as exc:  # one clear line for a start-up failure (e.g. no cluster)
        print(f"stagegate-operator: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
