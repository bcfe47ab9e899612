"""Legacy discovery documents, `/version` and a minimal OpenAPI v3.

kopf and kubectl both read legacy discovery (kubectl falls back to it when the answer to its
aggregated-discovery request is a plain APIGroupList). kubectl's client-side apply reads
`/openapi/v3` only to learn the GVKs and that PATCH takes `fieldValidation`; with that it asks the
server to validate (`fieldValidation=Strict`), so the schemas here are informative only.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .api import Api
from .resources import ResourceType

Obj = dict[str, Any]

VERSION = {
    "major": "1",
    "minor": "35",
    "emulationMajor": "1",
    "emulationMinor": "35",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "34",
    "gitVersion": "v1.35.0-stagegate-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-12-17T00:00:00Z",
    "goVersion": "go1.25.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def api_versions(address: str) -> Obj:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]}


def _group_entry(group: str, versions: list[str]) -> Obj:
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}


def api_group_list(api: Api) -> Obj:
    groups = [_group_entry(g, vs) for g, vs in api.served_group_versions().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(api: Api, group: str) -> Obj | None:
    versions = api.served_group_versions().get(group)
    if not versions or not group:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(group, versions)}


def _resource_entries(rt: ResourceType) -> list[Obj]:
    main: Obj = {
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": rt.verbs(),
        "storageVersionHash": hashlib.sha256(rt.plural.encode()).hexdigest()[:12],
    }
    if rt.short_names:
        main["shortNames"] = rt.short_names
    if rt.categories:
        main["categories"] = rt.categories
    out = [main]
    for sub in rt.subresources:
        verbs = ["get", "patch", "update"] if sub == "status" else ["get"]
        if sub == "finalize":
            verbs = ["update"]
        out.append({"name": f"{rt.plural}/{sub}", "singularName": "", "namespaced": rt.namespaced,
                    "kind": "Pod" if sub == "log" else rt.kind, "verbs": verbs})
    return out


def api_resource_list(api: Api, group: str, version: str) -> Obj | None:
    types = [rt for rt in api.types.values()
             if rt.group == group and version in rt.versions and rt.versions[version].served]
    if not types:
        return None
    resources = [entry for rt in sorted(types, key=lambda t: t.plural)
                 for entry in _resource_entries(rt)]
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version, "resources": resources}


# --- OpenAPI v3 -------------------------------------------------------------------------------

def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def _definition_name(rt: ResourceType, version: str) -> str:
    group = ".".join(reversed(rt.group.split("."))) if rt.group else "io.k8s.api.core"
    return f"{group}.{version}.{rt.kind}"


def openapi_document(api: Api, group: str, version: str) -> Obj | None:
    types = [rt for rt in api.types.values() if rt.group == group and version in rt.versions]
    if not types:
        return None
    params = [
        {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
        for name in ("dryRun", "fieldManager", "fieldValidation")
    ]
    paths: Obj = {}
    schemas: Obj = {}
    for rt in types:
        name = _definition_name(rt, version)
        body = dict(rt.versions[version].schema or {"type": "object"})
        body["x-kubernetes-group-version-kind"] = [
            {"group": rt.group, "version": version, "kind": rt.kind}]
        schemas[name] = body
        base = f"/{_gv_path(group, version)}/"
        base += f"namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else rt.plural
        ref = {"content": {"application/json": {"schema": {"$ref":
                                                              f"#/components/schemas/{name}"}}}}
        gvk = {"group": rt.group, "version": version, "kind": rt.kind}

        def op(action: str, gvk: Obj = gvk, ref: Obj = ref) -> Obj:
            # kubectl finds the PATCH operation of a kind by this extension on the operation,
            # then checks that it takes `fieldValidation` before asking for server validation.
            return {"parameters": params, "x-kubernetes-action": action,
                    "x-kubernetes-group-version-kind": gvk,
                    "responses": {"200": {"description": "OK", **ref}}}

        paths[base] = {"post": op("post"), "get": op("list")}
        paths[base + "/{name}"] = {"get": op("get"), "put": op("put"), "patch": op("patch"),
                                   "delete": op("delete")}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (Stagegate emulator)", "version": "v1.35.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def openapi_index(api: Api) -> Obj:
    paths: Obj = {}
    for group, versions in api.served_group_versions().items():
        for version in versions:
            doc = openapi_document(api, group, version)
            digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]
            rel = _gv_path(group, version)
            paths[rel] = {"serverRelativeURL": f"/openapi/v3/{rel}?hash={digest.upper()}"}
    return {"paths": paths}
