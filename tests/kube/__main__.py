"""`python -m tests.kube serve --port PORT --kubeconfig PATH`: run the emulator standalone.

Prints one line (`kube-emulator ready url=... kubeconfig=...`) once it accepts connections, then
runs until SIGINT/SIGTERM, when it stops its pods' processes and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from .emulator import Emulator, EmulatorSettings, write_kubeconfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.kube")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the Kubernetes API emulator")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port")
    serve.add_argument("--kubeconfig", type=Path, help="write a kubeconfig for it here")
    serve.add_argument("--namespace", default="default", help="the kubeconfig's namespace")
    serve.add_argument("--workdir", type=Path, help="pod sandboxes and logs (default: a temp dir)")
    serve.add_argument("--bookmark-interval", type=float, default=15.0)
    serve.add_argument("--job-backoff", type=float, default=10.0,
                       help="seconds before a failed Job pod is replaced (doubles each time)")
    serve.add_argument("--restart-backoff", type=float, default=10.0,
                       help="seconds before a failed container is restarted")
    args = parser.parse_args(argv)
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    emulator = Emulator(EmulatorSettings(
        host=args.host, port=args.port, bookmark_interval=args.bookmark_interval,
        job_backoff_seconds=args.job_backoff, restart_backoff_seconds=args.restart_backoff,
        workdir=args.workdir))
    await emulator.start()
    if args.kubeconfig:
        write_kubeconfig(args.kubeconfig, emulator.url, args.namespace)
    print(f"kube-emulator ready url={emulator.url} kubeconfig={args.kubeconfig or ''}",
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
