"""The kubelet's log endpoint, which the API server calls for `kubectl logs [-f]`.

Served over TLS with the node's certificate; only clients with a certificate from the cluster's
CA (the API server's kubelet client certificate) are let in, as a kubelet does.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from aiohttp import web

from .agent import NodeAgent, PodRun
from .pki import Pki


def _log_path(run: PodRun, container: str, previous: bool) -> Path | None:
    base = run.sandbox / "containers" / container
    runs = sorted((int(p.name) for p in base.glob("*") if p.name.isdigit()), reverse=True)
    if previous:
        runs = runs[1:]
    return base / str(runs[0]) / "log" if runs else None


def routes(agent: NodeAgent) -> web.Application:
    async def container_logs(request: web.Request) -> web.StreamResponse:
        ns, pod, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        run = agent.find(ns, pod)
        if run is None:
            raise web.HTTPNotFound(text=f'pod "{pod}" not found on this node')
        q = request.query
        follow = q.get("follow", "").lower() in ("1", "t", "true")
        path = _log_path(run, container, q.get("previous", "").lower() in ("1", "t", "true"))
        if path is None or not path.exists():
            raise web.HTTPBadRequest(
                text=f'container "{container}" in pod "{pod}" is waiting to start'
            )
        tail = int(q["tailLines"]) if q.get("tailLines") else None
        limit = int(q["limitBytes"]) if q.get("limitBytes") else None
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        sent = 0
        with open(path, "rb") as f:
            data = f.read()
            if tail is not None:
                data = b"".join(data.splitlines(keepends=True)[-tail:]) if tail > 0 else b""
            while True:
                if limit is not None:
                    data = data[: max(limit - sent, 0)]
                if data:
                    await response.write(data)
                    sent += len(data)
                if not follow or (limit is not None and sent >= limit):
                    break
                data = f.read()
                if data:
                    continue
                if (path.parent / "exit").exists() or run.uid not in agent.pods:
                    data = f.read()
                    if not data:
                        break
                    continue
                await asyncio.sleep(0.1)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", container_logs)
    return app


async def serve_logs(agent: NodeAgent, pki: Pki) -> web.AppRunner:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    ctx.load_cert_chain(str(pki.cert("node")), str(pki.key("node")))
    ctx.verify_mode = ssl.CERT_REQUIRED
    runner = web.AppRunner(routes(agent), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", agent.log_port, ssl_context=ctx).start()
    return runner
