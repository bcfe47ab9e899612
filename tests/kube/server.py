"""The HTTP face of the emulator: routing, content negotiation, watch streams and pod logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml
from aiohttp import web

from . import discovery, errors, tables
from .api import Api, WriteOptions
from .errors import ApiError, Warnings
from .resources import ResourceType
from .selectors import parse_field_selector, parse_label_selector
from .store import TooOld, Watcher
from .util import dumps

if TYPE_CHECKING:
    from .kubelet import Kubelet

Obj = dict[str, Any]


@dataclass
class ServerSettings:
    bookmark_interval: float = 15.0  # kopf reconnects after 70 s of silence
    # Without timeoutSeconds the real server closes watches after 30-60 min; so do we.
    default_watch_timeout: float = 1800.0


def _json(body: Any, status: int = 200, warnings: Warnings | None = None) -> web.Response:
    resp = web.Response(text=dumps(body), status=status, content_type="application/json")
    for w in (warnings.items if warnings else []):
        resp.headers.add("Warning", f'299 - "{w}"')
    return resp


def _error(exc: ApiError) -> web.Response:
    return _json(exc.status(), exc.code)


def _accept(request: web.Request) -> str | None:
    """`Table`, `PartialObjectMetadata(List)` or None for plain JSON."""
    for part in request.headers.get("Accept", "").split(","):
        params = dict(
            p.strip().split("=", 1) for p in part.split(";")[1:] if "=" in p
        )
        media = part.split(";")[0].strip()
        if media in ("application/json", "*/*", "application/*") and params.get("as") in (
                "Table", "PartialObjectMetadata", "PartialObjectMetadataList"):
            return params["as"]
        if media == "application/json" and "as" not in params:
            return None
    return None



def parse_bool(value: str | None) -> bool:
    """Query booleans as the API server reads them (Go's strconv.ParseBool): kubectl sends
    `true`, the Python client `True`."""
    return value in ("1", "t", "T", "true", "TRUE", "True")


class Server:
    def __init__(self, api: Api, settings: ServerSettings, kubelet: Kubelet | None,
                 address: str = "") -> None:
        self.api = api
        self.settings = settings
        self.kubelet = kubelet
        self.address = address
        self.stopping = asyncio.Event()
        self.app = web.Application(client_max_size=16 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._dispatch(request)
        except ApiError as exc:
            return _error(exc)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug in the emulator: answer like an apiserver panic
            import traceback

            traceback.print_exc()
            return _error(ApiError(500, "InternalError", f"Internal error occurred: {exc!r}"))

    # --- routing -------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        segs = [s for s in path.split("/") if s]
        if path == "/version":
            return _json(discovery.VERSION)
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/api":
            return _json(discovery.api_versions(self.address))
        if path == "/apis":
            return _json(discovery.api_group_list(self.api))
        if segs[:2] == ["openapi", "v3"]:
            return self._openapi(segs[2:])
        if segs and segs[0] == "api" and len(segs) >= 2:
            group, version, rest = "", segs[1], segs[2:]
        elif segs and segs[0] == "apis" and len(segs) >= 2:
            if len(segs) == 2:
                doc = discovery.api_group(self.api, segs[1])
                if doc is None:
                    raise errors.resource_not_found()
                return _json(doc)
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            raise errors.resource_not_found()
        if not rest:
            doc = discovery.api_resource_list(self.api, group, version)
            if doc is None:
                raise errors.resource_not_found()
            return _json(doc)
        return await self._resource(request, group, version, rest)

    def _openapi(self, rest: list[str]) -> web.Response:
        if not rest:
            return _json(discovery.openapi_index(self.api))
        if rest[0] == "api" and len(rest) == 2:
            doc = discovery.openapi_document(self.api, "", rest[1])
        elif rest[0] == "apis" and len(rest) == 3:
            doc = discovery.openapi_document(self.api, rest[1], rest[2])
        else:
            doc = None
        if doc is None:
            raise errors.resource_not_found()
        return _json(doc)

    async def _resource(self, request: web.Request, group: str, version: str,
                        rest: list[str]) -> web.StreamResponse:
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise errors.resource_not_found()
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        rt = self.api.lookup(group, version, plural)
        if namespace is not None and not rt.namespaced:
            raise errors.resource_not_found()
        if rt.namespaced and name is not None and namespace is None:
            raise errors.resource_not_found()
        if sub is not None and sub not in rt.subresources:
            raise errors.resource_not_found()
        q = request.query
        method = request.method
        if method == "GET":
            if name is None:
                if parse_bool(q.get("watch")):
                    return await self._watch(request, rt, version, namespace)
                return self._list(request, rt, version, namespace)
            if sub == "log":
                return await self._logs(request, namespace or "", name)
            obj = self.api.get(rt, version, namespace, name)
            return self._render_one(request, rt, version, obj)
        opts = WriteOptions(
            field_validation=q.get("fieldValidation") or "Warn",
            dry_run=q.get("dryRun") == "All",
            warnings=Warnings(),
        )
        if opts.field_validation not in ("Strict", "Warn", "Ignore"):
            raise errors.bad_request(f"fieldValidation parameter unsupported: "
                                     f"{opts.field_validation}")
        if method == "POST" and name is None:
            obj = self.api.create(rt, version, namespace, await self._body(request), opts)
            return _json(obj, 201, opts.warnings)
        if method == "PUT" and name is not None:
            obj = self.api.update(rt, version, namespace, name, await self._body(request), opts,
                                  subresource=sub)
            return _json(obj, 200, opts.warnings)
        if method == "PATCH" and name is not None:
            obj = self.api.patch(rt, version, namespace, name,
                                 request.headers.get("Content-Type", ""),
                                 await self._body(request), opts, subresource=sub)
            return _json(obj, 200, opts.warnings)
        if method == "DELETE":
            options = await self._body(request, allow_empty=True) or {}
            for key in ("propagationPolicy", "gracePeriodSeconds"):
                if key in q:
                    options[key] = int(q[key]) if key == "gracePeriodSeconds" else q[key]
            if name is None:
                return self._delete_collection(request, rt, version, namespace, options,
                                               opts.dry_run)
            obj, gone = self.api.delete(rt, version, namespace, name, options,
                                        dry_run=opts.dry_run)
            return _json(obj, 200 if gone else 202)
        raise errors.method_not_allowed()

    async def _body(self, request: web.Request, allow_empty: bool = False) -> Any:
        ctype = request.headers.get("Content-Type", "")
        if "protobuf" in ctype or "cbor" in ctype:
            # Binary encodings (what `kubectl create job|namespace|secret ...` generators send)
            # are not decoded: the emulator speaks JSON (and YAML) only.
            raise ApiError(415, "UnsupportedMediaType", f"the Stagegate test emulator does not "
                           f"decode {ctype.split(';')[0]} request bodies: send JSON (use "
                           "`kubectl create -f` or `kubectl apply -f` for built-in kinds)")
        raw = await request.read()
        if not raw.strip():
            if allow_empty:
                return None
            raise errors.bad_request("the request body is empty")
        try:
            return json.loads(raw)
        except ValueError:
            try:
                return yaml.safe_load(raw)
            except yaml.YAMLError as exc:
                raise errors.bad_request(f"the body of the request could not be decoded: "
                                         f"{exc}") from exc

    # --- reads ---------------------------------------------------------------------------

    def _render_one(self, request: web.Request, rt: ResourceType, version: str,
                    obj: Obj) -> web.Response:
        form = _accept(request)
        if form == "Table":
            return _json(tables.table(rt, version, [obj],
                                      resource_version=obj["metadata"]["resourceVersion"],
                                      include=request.query.get("includeObject", "Metadata")))
        if form == "PartialObjectMetadata":
            return _json({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                          "metadata": obj["metadata"]})
        return _json(obj)

    def _list(self, request: web.Request, rt: ResourceType, version: str,
              namespace: str | None) -> web.Response:
        q = request.query
        limit = int(q["limit"]) if q.get("limit") else None
        items, rv, token, remaining = self.api.list(
            rt, version, namespace, label_selector=q.get("labelSelector"),
            field_selector=q.get("fieldSelector"), limit=limit, continue_token=q.get("continue"))
        form = _accept(request)
        if form == "Table":
            return _json(tables.table(rt, version, items, resource_version=rv,
                                      include=q.get("includeObject", "Metadata"),
                                      continue_token=token))
        meta: Obj = {"resourceVersion": rv}
        if token:
            meta["continue"] = token
            meta["remainingItemCount"] = remaining
        if form in ("PartialObjectMetadataList", "PartialObjectMetadata"):
            return _json({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                          "metadata": meta,
                          "items": [{"kind": "PartialObjectMetadata",
                                     "apiVersion": "meta.k8s.io/v1",
                                     "metadata": o["metadata"]} for o in items]})
        for item in items:
            # Items in a list carry no apiVersion/kind, as from the real server.
            item.pop("apiVersion", None)
            item.pop("kind", None)
        return _json({"kind": rt.list_kind, "apiVersion": rt.api_version(version),
                      "metadata": meta, "items": items})

    def _delete_collection(self, request: web.Request, rt: ResourceType, version: str,
                           namespace: str | None, options: Obj, dry_run: bool) -> web.Response:
        items, rv, _, _ = self.api.list(
            rt, version, namespace, label_selector=request.query.get("labelSelector"),
            field_selector=request.query.get("fieldSelector"))
        out = []
        for item in items:
            with contextlib.suppress(ApiError):
                obj, _ = self.api.delete(rt, version, item["metadata"].get("namespace"),
                                         item["metadata"]["name"], options, dry_run=dry_run)
                out.append(obj)
        return _json({"kind": rt.list_kind, "apiVersion": rt.api_version(version),
                      "metadata": {"resourceVersion": rv}, "items": out})

    # --- watch ---------------------------------------------------------------------------

    async def _watch(self, request: web.Request, rt: ResourceType, version: str,
                     namespace: str | None) -> web.StreamResponse:
        q = request.query
        store = self.api.store
        watcher = Watcher(rt.key, namespace if rt.namespaced else None,
                          parse_label_selector(q.get("labelSelector")),
                          parse_field_selector(q.get("fieldSelector"), rt.plural))
        as_table = _accept(request) == "Table"
        include = q.get("includeObject", "Metadata")
        bookmarks = parse_bool(q.get("allowWatchBookmarks"))
        timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else \
            self.settings.default_watch_timeout
        rv_param = q.get("resourceVersion") or ""
        send_initial = parse_bool(q.get("sendInitialEvents"))
        if rv_param and not rv_param.isdigit():
            raise errors.bad_request(f'invalid resource version "{rv_param}"')

        # Everything up to the first await runs atomically on the loop: subscribing here and
        # reading the snapshot or history below leaves no gap and no duplicate.
        store.subscribe(watcher)
        initial: list[tuple[str, Obj]] = []
        too_old = False
        if send_initial or rv_param in ("", "0"):
            initial = [("ADDED", o) for o in store.list(rt.key, watcher.namespace)
                       if watcher.matches(o)]
        else:
            try:
                for event in store.events_since(int(rv_param)):
                    translated = watcher.translate(event)
                    if translated:
                        initial.append(translated)
            except TooOld:
                too_old = True
        snapshot_rv = store.rv

        resp = web.StreamResponse(headers={"Content-Type": "application/json",
                                           "Cache-Control": "no-cache, private"})
        resp.enable_chunked_encoding()
        first_table = True

        def encode(kind: str, obj: Obj) -> bytes:
            nonlocal first_table
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                obj = self.api._present(rt, version, obj)
                if as_table:
                    obj = tables.table(rt, version, [obj],
                                       resource_version=obj["metadata"]["resourceVersion"],
                                       include=include, with_columns=first_table)
                    first_table = False
            return (dumps({"type": kind, "object": obj}) + "\n").encode()

        def bookmark(rv: int, initial_end: bool = False) -> bytes:
            meta: Obj = {"resourceVersion": str(rv)}
            if initial_end:
                meta["annotations"] = {"k8s.io/initial-events-end": "true"}
            obj = {"kind": rt.kind, "apiVersion": rt.api_version(version), "metadata": meta}
            return (dumps({"type": "BOOKMARK", "object": obj}) + "\n").encode()

        try:
            await resp.prepare(request)
            if too_old:
                # kopf needs the 410 inside the stream: an HTTP 410 here would crash it.
                status = ApiError(410, "Expired", f"too old resource version: {rv_param} "
                                  f"({store.compacted_rv + 1})").status()
                await resp.write((dumps({"type": "ERROR", "object": status}) + "\n").encode())
                return resp
            for kind, obj in initial:
                await resp.write(encode(kind, obj))
            if send_initial:
                await resp.write(bookmark(snapshot_rv, initial_end=True))
            deadline = time.monotonic() + timeout
            last_sent = time.monotonic()
            # The resourceVersion this watcher has been served up to (its queue gets every
            # event unfiltered): what a bookmark may carry even while events are still queued.
            served_rv = snapshot_rv
            while not self.stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    if bookmarks:
                        # kube-apiserver's watch cache sends one just before the timeout, so a
                        # client resumes from a recent resourceVersion and not from its last
                        # matching event, which busy types can have compacted away (410).
                        await resp.write(bookmark(served_rv))
                    break
                wait = min(left, max(0.05, self.settings.bookmark_interval -
                                     (time.monotonic() - last_sent)))
                try:
                    incoming = await asyncio.wait_for(watcher.queue.get(), wait)
                except TimeoutError:
                    if bookmarks and time.monotonic() - last_sent >= \
                            self.settings.bookmark_interval:
                        await resp.write(bookmark(store.rv))
                        last_sent = time.monotonic()
                    continue
                if incoming is None:
                    break
                served_rv = max(served_rv, incoming.rv)
                translated = watcher.translate(incoming)
                if translated:
                    await resp.write(encode(*translated))
                    last_sent = time.monotonic()
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            store.unsubscribe(watcher)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write_eof()
        return resp

    # --- logs ----------------------------------------------------------------------------

    async def _logs(self, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        rt = self.api.type(("", "pods"))
        pod = self.api.get(rt, "v1", namespace, name)
        q = request.query
        containers = [c["name"] for c in pod["spec"].get("containers") or []]
        container = q.get("container")
        if not container:
            if len(containers) != 1:
                raise errors.bad_request(f"a container name must be specified for pod {name}, "
                                         f"choose one of: [{' '.join(containers)}]")
            container = containers[0]
        elif container not in containers + [c["name"] for c in
                                            pod["spec"].get("initContainers") or []]:
            raise errors.bad_request(f"container {container} is not valid for pod {name}")
        if self.kubelet is None or not self.kubelet.has_log(pod, container):
            raise errors.bad_request(f'container "{container}" in pod "{name}" is waiting to '
                                     "start: ContainerCreating")
        follow = parse_bool(q.get("follow"))
        tail = int(q["tailLines"]) if q.get("tailLines") else None
        limit = int(q["limitBytes"]) if q.get("limitBytes") else None
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        sent = 0
        try:
            async for chunk in self.kubelet.read_log(pod, container, follow=follow, tail=tail,
                                                     stopping=self.stopping):
                if limit is not None:
                    chunk = chunk[: max(0, limit - sent)]
                await resp.write(chunk)
                sent += len(chunk)
                if limit is not None and sent >= limit:
                    break
        except (ConnectionResetError, ConnectionError):
            pass
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write_eof()
        return resp
