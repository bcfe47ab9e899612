"""Server-side Table output (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`).

kubectl shows a CRD's printer columns only from a server-side Table, so CRD columns come from
`additionalPrinterColumns` (JSONPath, `date` columns rendered as ages, `priority > 0` only with
`-o wide`) and the built-in kinds get the printers of kube-apiserver's internal/printers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .resources import Column, ResourceType
from .util import age, cell_text, jsonpath, parse_time

Obj = dict[str, Any]

NAME = Column("Name", description="Name must be unique within a namespace.", format="name")


def _age_col() -> Column:
    return Column("Age", "string", description="CreationTimestamp is a timestamp representing "
                  "the server time when this object was created.")


def _pod_row(pod: Obj) -> list[Any]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for s in statuses:
        state = s.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state:
            term = state["terminated"]
            reason = term.get("reason") or (f"Signal:{term['signal']}" if term.get("signal")
                                            else f"ExitCode:{term.get('exitCode')}")
    if pod["metadata"].get("deletionTimestamp") and reason not in ("Completed", "Error"):
        reason = "Terminating"
    return [pod["metadata"]["name"], f"{ready}/{len(spec.get('containers') or [])}", reason,
            restarts, age(pod["metadata"].get("creationTimestamp")),
            status.get("podIP") or "<none>", spec.get("nodeName") or "<none>", "<none>",
            "<none>"]


def _job_status(job: Obj) -> str:
    conditions = {c["type"]: c["status"] for c in (job.get("status") or {}).get("conditions")
                  or []}
    for kind, text in (("Failed", "Failed"), ("Complete", "Complete"),
                       ("Suspended", "Suspended"), ("FailureTarget", "FailureTarget"),
                       ("SuccessCriteriaMet", "SuccessCriteriaMet")):
        if conditions.get(kind) == "True":
            return text
    if job["metadata"].get("deletionTimestamp"):
        return "Terminating"
    return "Running"


def _job_row(job: Obj) -> list[Any]:
    spec, status = job.get("spec") or {}, job.get("status") or {}
    completions = spec.get("completions")
    shown = f"{status.get('succeeded', 0)}/{completions}" if completions is not None \
        else f"{status.get('succeeded', 0)}/1 of {spec.get('parallelism', 1)}"
    duration = ""
    if status.get("startTime"):
        end = status.get("completionTime")
        from .util import human_duration, now

        stop = parse_time(end) if end else now()
        duration = human_duration((stop - parse_time(status["startTime"])).total_seconds())
    containers = (spec.get("template") or {}).get("spec", {}).get("containers") or []
    selector = ",".join(f"{k}={v}" for k, v in
                        ((spec.get("selector") or {}).get("matchLabels") or {}).items())
    return [job["metadata"]["name"], _job_status(job), shown, duration,
            age(job["metadata"].get("creationTimestamp")),
            ",".join(c.get("name", "") for c in containers),
            ",".join(c.get("image", "") for c in containers), selector]


def _event_row(ev: Obj) -> list[Any]:
    inv = ev.get("involvedObject") or {}
    last = ev.get("lastTimestamp") or ev.get("eventTime") or ev["metadata"].get(
        "creationTimestamp")
    return [age(last), ev.get("type", ""), ev.get("reason", ""),
            f"{(inv.get('kind') or '').lower()}/{inv.get('name', '')}", ev.get("message", "")]


def _selector_text(selector: Obj | None) -> str:
    selector = selector or {}
    parts = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for e in selector.get("matchExpressions") or []:
        values = ",".join(e.get("values") or [])
        op = e.get("operator", "")
        parts.append({"In": f"{e['key']} in ({values})", "NotIn": f"{e['key']} notin ({values})",
                      "Exists": e["key"], "DoesNotExist": f"!{e['key']}"}.get(op, e["key"]))
    return ",".join(parts) or "<none>"


def _deployment_row(d: Obj) -> list[Any]:
    spec, status = d.get("spec") or {}, d.get("status") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    return [d["metadata"]["name"], f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            status.get("updatedReplicas", 0), status.get("availableReplicas", 0),
            age(d["metadata"].get("creationTimestamp")),
            ",".join(c.get("name", "") for c in containers),
            ",".join(c.get("image", "") for c in containers),
            _selector_text(spec.get("selector"))]


def _service_row(svc: Obj) -> list[Any]:
    spec = svc.get("spec") or {}
    kind = spec.get("type", "ClusterIP")
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    external = ",".join(spec.get("externalIPs") or [])
    if kind == "ExternalName":
        external = spec.get("externalName", "")
    elif kind == "LoadBalancer":
        external = ",".join([*(i.get("ip") or i.get("hostname", "") for i in ingress),
                             *(spec.get("externalIPs") or [])]) or "<pending>"
    ports = []
    for p in spec.get("ports") or []:
        text = f"{p.get('port')}/{p.get('protocol', 'TCP')}"
        if p.get("nodePort"):
            text = f"{p['port']}:{p['nodePort']}/{p.get('protocol', 'TCP')}"
        ports.append(text)
    selector = ",".join(f"{k}={v}" for k, v in (spec.get("selector") or {}).items())
    return [svc["metadata"]["name"], kind, spec.get("clusterIP") or "<none>",
            external or "<none>", ",".join(ports) or "<none>",
            age(svc["metadata"].get("creationTimestamp")), selector or "<none>"]


def _binding_row(b: Obj) -> list[Any]:
    ref = b.get("roleRef") or {}
    subjects = b.get("subjects") or []

    def names(kind: str) -> str:
        return ",".join(
            (f"{s.get('namespace', '')}/{s['name']}" if kind == "ServiceAccount" else s["name"])
            for s in subjects if s.get("kind") == kind)

    return [b["metadata"]["name"], f"{ref.get('kind', '')}/{ref.get('name', '')}",
            age(b["metadata"].get("creationTimestamp")), names("User"), names("Group"),
            names("ServiceAccount")]


def _role_row(r: Obj) -> list[Any]:
    return [r["metadata"]["name"], r["metadata"].get("creationTimestamp", "")]


ROLE_COLUMNS = [NAME, Column("Created At", "date")]
BINDING_COLUMNS = [NAME, Column("Role"), _age_col(), Column("Users", priority=1),
                   Column("Groups", priority=1), Column("ServiceAccounts", priority=1)]
RBAC = "rbac.authorization.k8s.io"

BuiltinPrinter = tuple[list[Column], Callable[[Obj], list[Any]]]

BUILTIN: dict[tuple[str, str], BuiltinPrinter] = {
    ("", "pods"): (
        [NAME, Column("Ready"), Column("Status"), Column("Restarts", "string"), _age_col(),
         Column("IP", priority=1), Column("Node", priority=1),
         Column("Nominated Node", priority=1), Column("Readiness Gates", priority=1)],
        _pod_row,
    ),
    ("batch", "jobs"): (
        [NAME, Column("Status"), Column("Completions"), Column("Duration"), _age_col(),
         Column("Containers", priority=1), Column("Images", priority=1),
         Column("Selector", priority=1)],
        _job_row,
    ),
    ("", "namespaces"): (
        [NAME, Column("Status"), _age_col()],
        lambda o: [o["metadata"]["name"], (o.get("status") or {}).get("phase", ""),
                   age(o["metadata"].get("creationTimestamp"))],
    ),
    ("", "configmaps"): (
        [NAME, Column("Data", "integer"), _age_col()],
        lambda o: [o["metadata"]["name"],
                   len(o.get("data") or {}) + len(o.get("binaryData") or {}),
                   age(o["metadata"].get("creationTimestamp"))],
    ),
    ("", "secrets"): (
        [NAME, Column("Type"), Column("Data", "integer"), _age_col()],
        lambda o: [o["metadata"]["name"], o.get("type", ""), len(o.get("data") or {}),
                   age(o["metadata"].get("creationTimestamp"))],
    ),
    ("", "events"): (
        [Column("Last Seen"), Column("Type"), Column("Reason"), Column("Object"),
         Column("Message")],
        _event_row,
    ),
    ("", "nodes"): (
        [NAME, Column("Status"), Column("Roles"), _age_col(), Column("Version")],
        lambda o: [o["metadata"]["name"], "Ready", "<none>",
                   age(o["metadata"].get("creationTimestamp")),
                   (o.get("status") or {}).get("nodeInfo", {}).get("kubeletVersion", "")],
    ),
    ("apps", "deployments"): (
        [NAME, Column("Ready"), Column("Up-to-date", "integer"), Column("Available", "integer"),
         _age_col(), Column("Containers", priority=1), Column("Images", priority=1),
         Column("Selector", priority=1)],
        _deployment_row,
    ),
    ("", "services"): (
        [NAME, Column("Type"), Column("Cluster-IP"), Column("External-IP"), Column("Port(s)"),
         _age_col(), Column("Selector", priority=1)],
        _service_row,
    ),
    ("", "serviceaccounts"): (
        [NAME, Column("Secrets", "integer"), _age_col()],
        lambda o: [o["metadata"]["name"], len(o.get("secrets") or []),
                   age(o["metadata"].get("creationTimestamp"))],
    ),
    (RBAC, "roles"): (ROLE_COLUMNS, _role_row),
    (RBAC, "clusterroles"): (ROLE_COLUMNS, _role_row),
    (RBAC, "rolebindings"): (BINDING_COLUMNS, _binding_row),
    (RBAC, "clusterrolebindings"): (BINDING_COLUMNS, _binding_row),
    ("apiextensions.k8s.io", "customresourcedefinitions"): (
        [NAME, Column("Created At", "date")],
        lambda o: [o["metadata"]["name"], o["metadata"].get("creationTimestamp", "")],
    ),
}


def columns_for(rt: ResourceType, version: str) -> list[Column]:
    if rt.key in BUILTIN:
        return BUILTIN[rt.key][0]
    if rt.builtin:
        return [NAME, _age_col()]
    return [NAME, *rt.versions[version].columns]


def _crd_cell(obj: Obj, col: Column) -> Any:
    try:
        values = jsonpath(obj, col.json_path or "")
    except ValueError:
        return "<error>"
    if not values:
        return None
    if col.type == "date":
        # The server renders date columns as ages, as kubectl expects.
        return age(values[0]) if isinstance(values[0], str) else None
    if col.type == "integer" and len(values) == 1 and isinstance(values[0], int):
        return values[0]
    if col.type == "number" and len(values) == 1 and isinstance(values[0], int | float):
        return values[0]
    if col.type == "boolean" and len(values) == 1 and isinstance(values[0], bool):
        return values[0]
    return cell_text(values)


def row_cells(rt: ResourceType, version: str, obj: Obj) -> list[Any]:
    if rt.key in BUILTIN:
        return BUILTIN[rt.key][1](obj)
    if rt.builtin:
        return [obj["metadata"]["name"], age(obj["metadata"].get("creationTimestamp"))]
    return [obj["metadata"]["name"], *(_crd_cell(obj, c) for c in rt.versions[version].columns)]


def _row_object(obj: Obj, include: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"]}


def table(rt: ResourceType, version: str, items: list[Obj], *, resource_version: str,
          include: str = "Metadata", continue_token: str | None = None,
          with_columns: bool = True) -> Obj:
    columns = columns_for(rt, version)
    rows = []
    for obj in items:
        row: Obj = {"cells": row_cells(rt, version, obj)}
        embedded = _row_object(obj, include)
        if embedded is not None:
            row["object"] = embedded
        rows.append(row)
    meta: Obj = {"resourceVersion": resource_version}
    if continue_token:
        meta["continue"] = continue_token
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": [c.definition() for c in columns] if with_columns else [],
        "rows": rows,
    }
