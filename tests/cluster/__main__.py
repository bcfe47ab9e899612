"""A real Kubernetes control plane and our node agent on this machine.

    python -m tests.cluster serve --kubeconfig PATH [--workdir DIR] [--cpu N] [--memory Q]
    python -m tests.cluster agent --server URL --pki DIR --workdir DIR [...]

`serve` builds (or finds cached) binaries, starts etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and the node agent, writes an admin kubeconfig, prints one line containing
`ready` once a pod can be scheduled and run, and stops everything it started on SIGTERM or
Ctrl-C. `agent` runs the node agent alone (serve starts it that way, so that it can be killed
and restarted like a kubelet).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from .cluster import LocalCluster

RUNTIMES = ("process", "podman")
RUNTIME_HELP = (
    "how pods run: as local processes (fast; images ignored) or as podman containers of "
    "their images (scripts/build-images)"
)


def _machine_memory() -> str:
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return f"{pages // (1024 * 1024)}Mi"


def serve(args: argparse.Namespace) -> int:
    workdir = (
        Path(args.workdir)
        if args.workdir
        else Path(tempfile.mkdtemp(prefix="stagegate-cluster-", dir="/var/tmp"))
    )
    cluster = LocalCluster(
        workdir, cpu=args.cpu, memory=args.memory, max_pods=args.pods, runtime=args.runtime
    )
    stop = {"now": False}

    def on_signal(signum: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    try:
        cluster.start()
        shutil.copyfile(cluster.kubeconfig, args.kubeconfig)
        print(
            f"ready in {time.monotonic() - started:.1f}s: {cluster.server} "
            f"kubeconfig {args.kubeconfig}",
            flush=True,
        )
        while not stop["now"]:
            for name, proc in cluster.processes():
                if proc.poll() is not None and not stop["now"]:
                    print(f"{name} exited {proc.returncode}", file=sys.stderr, flush=True)
            time.sleep(0.5)
    finally:
        cluster.stop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def agent(args: argparse.Namespace) -> int:
    from .agent import NodeAgent
    from .client import Api
    from .logs import serve_logs
    from .pki import Pki

    pki = Pki(Path(args.pki))

    async def main() -> None:
        api = Api(args.server, args.token, str(pki.ca))
        url = args.server.removeprefix("https://")
        host, port = url.rsplit(":", 1)
        node = NodeAgent(
            api,
            Path(args.workdir),
            args.node_name,
            host,
            int(port),
            str(pki.ca),
            args.cpu,
            args.memory,
            args.pods,
            args.log_port,
            restart_backoff=args.restart_backoff,
            runtime=args.runtime,
        )
        runner = await serve_logs(node, pki)
        while True:
            try:
                await node.register()
                break
            except Exception as exc:
                print(f"node agent: register: {exc}", file=sys.stderr, flush=True)
                await asyncio.sleep(0.5)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        tasks = [asyncio.create_task(node.heartbeat()), asyncio.create_task(node.watch_pods())]
        print("node agent ready", flush=True)
        await stopping.wait()
        for task in tasks:
            task.cancel()
        # Like a kubelet stopping: its containers keep running and are adopted on restart.
        await runner.cleanup()
        with contextlib.suppress(Exception):
            await api.close()

    asyncio.run(main())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run a control plane and a node agent")
    s.add_argument("--kubeconfig", required=True, help="where to write the admin kubeconfig")
    s.add_argument(
        "--workdir", help="state folder (default: a new folder under /var/tmp, removed at exit)"
    )
    s.add_argument("--cpu", default=str(os.cpu_count() or 2), help="the node's CPU capacity")
    s.add_argument("--memory", default=_machine_memory(), help="the node's memory capacity")
    s.add_argument("--pods", type=int, default=110, help="the node's pod capacity")
    s.add_argument("--runtime", choices=RUNTIMES, default="process", help=RUNTIME_HELP)
    s.set_defaults(func=serve)
    a = sub.add_parser("agent", help="run the node agent alone")
    a.add_argument("--server", required=True)
    a.add_argument("--token", required=True)
    a.add_argument("--pki", required=True)
    a.add_argument("--workdir", required=True)
    a.add_argument("--node-name", default="stagegate-node")
    a.add_argument("--log-port", type=int, required=True)
    a.add_argument("--cpu", required=True)
    a.add_argument("--memory", required=True)
    a.add_argument("--pods", type=int, default=110)
    a.add_argument("--restart-backoff", type=float, default=1.0)
    a.add_argument("--runtime", choices=RUNTIMES, default="process", help=RUNTIME_HELP)
    a.set_defaults(func=agent)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
