"""Kind-specific behaviour: defaulting, validation and side effects of the built-in kinds.

This is where the emulator is as strict as kube-apiserver on what Stagegate touches: DNS names,
labels, Job and Pod templates (immutable once created), immutable ConfigMaps and Secrets, the
structure of CustomResourceDefinitions, and what the Helm chart renders: Deployments (selector
matching the template, immutable; strategy), Services (type, ports, the cluster IP allocated
once and kept) and RBAC objects (rules, roleRef kinds and immutability, subjects).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from . import schema
from .errors import FieldError
from .resources import ResourceType
from .util import rfc3339

if TYPE_CHECKING:
    from .api import Api

Obj = dict[str, Any]

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)

DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")

# Kinds whose names must be DNS labels rather than subdomains.
LABEL_NAMED = {"namespaces", "jobs"}
# Services are DNS-1035 labels (they become DNS names that must not start with a digit).
DNS1035_NAMED = {"services"}
# Events are named `<object>.<hex>` and may contain anything a path segment allows; so may RBAC
# objects (`system:controller:...`), except '%'.
FREE_NAMED = {"events", "roles", "rolebindings", "clusterroles", "clusterrolebindings"}
RBAC = "rbac.authorization.k8s.io"


def _q(value: Any) -> str:
    return json.dumps(value)


def validate_meta(rt: ResourceType, meta: Obj) -> list[FieldError]:
    errs: list[FieldError] = []
    name = meta.get("name", "")
    if rt.plural in FREE_NAMED:
        if "/" in name or name in (".", ".."):
            errs.append(FieldError("metadata.name", f"Invalid value: {_q(name)}: may not contain "
                                   "'/'"))
        elif "%" in name and rt.group == RBAC:
            errs.append(FieldError("metadata.name", f"Invalid value: {_q(name)}: may not contain "
                                   "'%'"))
    elif rt.plural in DNS1035_NAMED:
        if len(name) > 63:
            errs.append(FieldError("metadata.name", f"Invalid value: {_q(name)}: must be no more "
                                   "than 63 characters"))
        elif not DNS1035_LABEL.match(name):
            errs.append(FieldError("metadata.name", f"Invalid value: {_q(name)}: {DNS1035_MSG}"))
    elif rt.plural in LABEL_NAMED:
        if len(name) > 63:
            errs.append(FieldError("metadata.name", f"Invalid value: {_q(name)}: must be no more "
                                   "than 63 characters"))
        elif not DNS1123_LABEL.match(name):
            errs.append(FieldError("metadata.name", f"Invalid value: {_q(name)}: {LABEL_MSG}"))
    elif len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        errs.append(FieldError("metadata.name", f"Invalid value: {_q(name)}: {SUBDOMAIN_MSG}"))
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, base = key.rpartition("/")
        if (prefix and not DNS1123_SUBDOMAIN.match(prefix)) or not QUALIFIED_NAME.match(base) \
                or len(base) > 63:
            errs.append(FieldError("metadata.labels", f"Invalid value: {_q(key)}: name part must "
                                   "consist of alphanumeric characters, '-', '_' or '.', and must "
                                   "start and end with an alphanumeric character"))
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            errs.append(FieldError("metadata.labels", f"Invalid value: {_q(value)}: a valid label "
                                   "must be an empty string or consist of alphanumeric "
                                   "characters, '-', '_' or '.', and must start and end with an "
                                   "alphanumeric character"))
    annotations = meta.get("annotations") or {}
    if sum(len(k) + len(str(v)) for k, v in annotations.items()) > 256 * 1024:
        errs.append(FieldError("metadata.annotations", "Too long: must have at most 262144 bytes",
                               "FieldValueTooLong"))
    for i, ref in enumerate(meta.get("ownerReferences") or []):
        for key in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(key):
                errs.append(FieldError(f"metadata.ownerReferences[{i}].{key}",
                                       "Invalid value: \"\": " + key + " must not be empty"))
    if sum(1 for r in meta.get("ownerReferences") or [] if r.get("controller")) > 1:
        errs.append(FieldError("metadata.ownerReferences", "Invalid value: ...: Only one "
                               "reference can have Controller set to true"))
    return errs


# --- defaulting -------------------------------------------------------------------------------

def _default_container(c: Obj) -> None:
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    image = c.get("image", "")
    tag = image.rsplit("/", 1)[-1]
    if "imagePullPolicy" not in c:
        c["imagePullPolicy"] = "Always" if ":" not in tag or tag.endswith(":latest") \
            else "IfNotPresent"
    c.setdefault("resources", {})
    for env in c.get("env") or []:
        ref = (env.get("valueFrom") or {}).get("fieldRef")
        if ref is not None:
            ref.setdefault("apiVersion", "v1")


def default_pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                _default_container(c)


def default(api: Api, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
    creating = old is None
    if rt.key == ("", "secrets"):
        from .api import decode_secret_string_data

        decode_secret_string_data(obj)
        obj.setdefault("type", "Opaque")
    elif rt.key == ("", "namespaces"):
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        if creating:
            obj["status"] = {"phase": "Active"}
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = \
            obj["metadata"]["name"]
    elif rt.key == ("", "pods"):
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            default_pod_spec(spec)
            if creating:
                spec.setdefault("serviceAccountName", "default")
                spec.setdefault("serviceAccount", spec["serviceAccountName"])
                obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    elif rt.key == ("batch", "jobs"):
        _default_job(obj, creating)
    elif rt.key == ("apps", "deployments"):
        _default_deployment(obj)
    elif rt.key == ("", "services"):
        _default_service(api, rt, obj, old)
    elif rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
        _default_crd(obj, old)


def _default_deployment(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {})
    if isinstance(strategy, dict):
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            if isinstance(rolling, dict):
                rolling.setdefault("maxUnavailable", "25%")
                rolling.setdefault("maxSurge", "25%")
    pod_spec = (spec.get("template") or {}).get("spec")
    if isinstance(pod_spec, dict):
        default_pod_spec(pod_spec)


def _allocate_cluster_ip(api: Api, rt: ResourceType) -> str:
    used = {(o.get("spec") or {}).get("clusterIP") for o in api.store.list(rt.key)}
    for n in range(10, 65534):
        ip = f"10.96.{n // 256}.{n % 256}"
        if n % 256 not in (0, 255) and ip not in used:
            return ip
    raise RuntimeError("service cluster IP range exhausted")


def _allocate_node_port(api: Api, rt: ResourceType, taken: set[Any]) -> int:
    for o in api.store.list(rt.key):
        taken |= {p.get("nodePort") for p in (o.get("spec") or {}).get("ports") or []
                  if isinstance(p, dict)}
    return next(p for p in range(30000, 32768) if p not in taken)


def _default_service(api: Api, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
    """kube-apiserver's defaults, plus the allocations (cluster IP, node ports) it makes."""
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    old_spec = (old or {}).get("spec") or {}
    kind = spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    ports = spec.get("ports") or []
    for port in ports:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            if "targetPort" not in port and isinstance(port.get("port"), int):
                port["targetPort"] = port["port"]
    if kind == "ExternalName":
        return
    # An update that omits the cluster IP keeps the allocated one (as PUT does since 1.20).
    for key in ("clusterIP", "clusterIPs"):
        if key not in spec and key in old_spec:
            spec[key] = old_spec[key]
    if not spec.get("clusterIP"):
        spec["clusterIP"] = _allocate_cluster_ip(api, rt)
    spec.setdefault("clusterIPs", [spec["clusterIP"]])
    if spec["clusterIP"] != "None":
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    if kind in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
        if kind == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)
        old_ports = {(p.get("port"), p.get("protocol")): p.get("nodePort")
                     for p in old_spec.get("ports") or [] if isinstance(p, dict)}
        taken = {p.get("nodePort") for p in ports if isinstance(p, dict)}
        for port in ports:
            if isinstance(port, dict) and not port.get("nodePort"):
                kept = old_ports.get((port.get("port"), port.get("protocol")))
                port["nodePort"] = kept or _allocate_node_port(api, rt, taken)
                taken.add(port["nodePort"])
    if old is None:
        obj["status"] = {"loadBalancer": {}}


def _default_job(obj: Obj, creating: bool) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    if creating:
        obj["status"] = {}
        if spec.get("completions") is None and spec.get("parallelism") is None:
            spec["completions"] = 1
            spec["parallelism"] = 1
        spec.setdefault("parallelism", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
        if not spec.get("manualSelector"):
            uid, name = obj["metadata"]["uid"], obj["metadata"]["name"]
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
            template = spec.setdefault("template", {})
            if isinstance(template, dict):
                labels = template.setdefault("metadata", {}).setdefault("labels", {})
                labels.update({
                    "batch.kubernetes.io/controller-uid": uid,
                    "batch.kubernetes.io/job-name": name,
                    "controller-uid": uid,
                    "job-name": name,
                })
    pod_spec = (spec.get("template") or {}).get("spec")
    if isinstance(pod_spec, dict):
        default_pod_spec(pod_spec)


def _default_crd(obj: Obj, old: Obj | None) -> None:
    spec = obj.get("spec") or {}
    meta = obj["metadata"]
    if old is None:
        meta["finalizers"] = [*(meta.get("finalizers") or []),
                              "customresourcecleanup.apiextensions.k8s.io"]
    names = dict(spec.get("names") or {})
    if names.get("kind"):
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
        spec["names"] = names
    stamp = rfc3339()
    old_status = (old or {}).get("status") or {}
    obj["status"] = {
        "acceptedNames": names,
        "conditions": old_status.get("conditions") or [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": stamp},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": stamp},
        ],
        "storedVersions": sorted({
            *(old_status.get("storedVersions") or []),
            *(v["name"] for v in spec.get("versions") or []
              if isinstance(v, dict) and v.get("storage")),
        }),
    }


# --- validation -------------------------------------------------------------------------------

def validate(api: Api, rt: ResourceType, obj: Obj, old: Obj | None) -> list[FieldError]:
    errs: list[FieldError] = []
    if rt.builtin:
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        schema.validate(body, rt.versions[rt.storage_version].schema, "", errs)
        if errs:
            return errs
    if rt.key == ("", "pods"):
        errs += validate_pod_spec(obj.get("spec") or {}, "spec")
        if old is not None:
            errs += _pod_immutability(old, obj)
    elif rt.key == ("batch", "jobs"):
        errs += _validate_job(obj, old)
    elif rt.key in (("", "configmaps"), ("", "secrets")):
        if old is not None and old.get("immutable"):
            for key in ("data", "binaryData", "stringData"):
                if old.get(key) != obj.get(key):
                    errs.append(FieldError(key, "Forbidden: field is immutable when `immutable` "
                                           "is set", "FieldValueForbidden"))
            if not obj.get("immutable"):
                errs.append(FieldError("immutable", "Forbidden: field is immutable when "
                                       "`immutable` is set", "FieldValueForbidden"))
    elif rt.key == ("", "events"):
        inv_ns = (obj.get("involvedObject") or {}).get("namespace")
        if inv_ns and inv_ns != obj["metadata"].get("namespace"):
            errs.append(FieldError("involvedObject.namespace", f"Invalid value: {_q(inv_ns)}: "
                                   "does not match event.namespace"))
    elif rt.key == ("apps", "deployments"):
        errs += _validate_deployment(obj, old)
    elif rt.key == ("", "services"):
        errs += _validate_service(obj, old)
    elif rt.group == RBAC:
        errs += _validate_rbac(rt, obj, old)
    elif rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
        errs += _validate_crd(api, obj, old)
    return errs


def validate_pod_spec(spec: Obj, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    containers = spec.get("containers") or []
    if not containers:
        errs.append(FieldError(f"{path}.containers", "Required value", "FieldValueRequired"))
    seen: set[str] = set()
    for key in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(key) or []):
            where = f"{path}.{key}[{i}]"
            name = c.get("name", "")
            if not name:
                errs.append(FieldError(f"{where}.name", "Required value", "FieldValueRequired"))
            elif not DNS1123_LABEL.match(name):
                errs.append(FieldError(f"{where}.name", f"Invalid value: {_q(name)}: {LABEL_MSG}"))
            elif name in seen:
                errs.append(FieldError(f"{where}.name", f"Duplicate value: {_q(name)}",
                                       "FieldValueDuplicate"))
            seen.add(name)
            if not c.get("image"):
                errs.append(FieldError(f"{where}.image", "Required value", "FieldValueRequired"))
            for j, env in enumerate(c.get("env") or []):
                if "value" in env and "valueFrom" in env:
                    errs.append(FieldError(f"{where}.env[{j}].valueFrom", "Invalid value: \"\": "
                                           "may not be specified when `value` is not empty"))
    policy = spec.get("restartPolicy")
    if policy not in ("Always", "OnFailure", "Never"):
        errs.append(FieldError(f"{path}.restartPolicy", f"Unsupported value: {_q(policy)}: "
                               'supported values: "Always", "OnFailure", "Never"',
                               "FieldValueNotSupported"))
    return errs


def _pod_immutability(old: Obj, new: Obj) -> list[FieldError]:
    def mutable_stripped(spec: Obj) -> Obj:
        spec = json.loads(json.dumps(spec))
        for key in ("containers", "initContainers"):
            for c in spec.get(key) or []:
                c.pop("image", None)
        for key in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds",
                    "nodeName"):
            spec.pop(key, None)
        return spec

    if mutable_stripped(old.get("spec") or {}) != mutable_stripped(new.get("spec") or {}):
        return [FieldError("spec", "Forbidden: pod updates may not change fields other than "
                           "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                           "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
                           "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it "
                           "to be set to 1 if it was previously negative)",
                           "FieldValueForbidden")]
    return []


def _validate_job(obj: Obj, old: Obj | None) -> list[FieldError]:
    errs: list[FieldError] = []
    spec = obj.get("spec") or {}
    for key in ("parallelism", "completions", "backoffLimit", "activeDeadlineSeconds",
                "ttlSecondsAfterFinished"):
        value = spec.get(key)
        if value is not None and value < (1 if key == "activeDeadlineSeconds" else 0):
            bound = "greater than 0" if key == "activeDeadlineSeconds" \
                else "greater than or equal to 0"
            errs.append(FieldError(f"spec.{key}", f"Invalid value: {value}: must be {bound}"))
    if spec.get("completionMode") not in ("NonIndexed", "Indexed"):
        errs.append(FieldError("spec.completionMode", f"Unsupported value: "
                               f"{_q(spec.get('completionMode'))}: supported values: "
                               '"NonIndexed", "Indexed"', "FieldValueNotSupported"))
    template = spec.get("template") or {}
    pod_spec = template.get("spec") or {}
    errs += validate_pod_spec(pod_spec, "spec.template.spec")
    policy = pod_spec.get("restartPolicy")
    if policy in ("Always",):
        errs.append(FieldError("spec.template.spec.restartPolicy", f"Unsupported value: "
                               f'{_q(policy)}: supported values: "OnFailure", "Never"',
                               "FieldValueNotSupported"))
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        errs.append(FieldError("spec.template.metadata.labels", f"Invalid value: {_q(labels)}: "
                               "`selector` does not match template `labels`"))
    if old is not None:
        old_spec = old.get("spec") or {}
        for key in ("template", "selector", "completions", "completionMode"):
            if old_spec.get(key) != spec.get(key):
                shown = json.dumps(spec.get(key), separators=(",", ":"))
                errs.append(FieldError(f"spec.{key}", f"Invalid value: {shown}: field is "
                                       "immutable"))
    return errs


def _validate_deployment(obj: Obj, old: Obj | None) -> list[FieldError]:
    errs: list[FieldError] = []
    spec = obj.get("spec") or {}
    for key in ("replicas", "minReadySeconds", "revisionHistoryLimit"):
        value = spec.get(key)
        if value is not None and value < 0:
            errs.append(FieldError(f"spec.{key}", f"Invalid value: {value}: must be greater than "
                                   "or equal to 0"))
    selector = spec.get("selector") or {}
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        errs.append(FieldError("spec.selector", f"Invalid value: {_q(selector)}: empty selector "
                               "is invalid for deployment"))
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    match = selector.get("matchLabels") or {}
    if any(labels.get(k) != v for k, v in match.items()) or (
            selector.get("matchExpressions") and not labels):
        errs.append(FieldError("spec.template.metadata.labels", f"Invalid value: {_q(labels)}: "
                               "`selector` does not match template `labels`"))
    pod_spec = template.get("spec") or {}
    errs += validate_pod_spec(pod_spec, "spec.template.spec")
    policy = pod_spec.get("restartPolicy")
    if policy in ("OnFailure", "Never"):
        errs.append(FieldError("spec.template.spec.restartPolicy", f"Unsupported value: "
                               f'{_q(policy)}: supported values: "Always"',
                               "FieldValueNotSupported"))
    strategy = spec.get("strategy") or {}
    kind = strategy.get("type")
    if kind not in ("Recreate", "RollingUpdate"):
        errs.append(FieldError("spec.strategy.type", f"Unsupported value: {_q(kind)}: supported "
                               'values: "Recreate", "RollingUpdate"', "FieldValueNotSupported"))
    elif kind == "Recreate" and strategy.get("rollingUpdate") is not None:
        errs.append(FieldError("spec.strategy.rollingUpdate", "Forbidden: may not be specified "
                               "when strategy `type` is 'Recreate'", "FieldValueForbidden"))
    if old is not None and (old.get("spec") or {}).get("selector") != spec.get("selector"):
        shown = json.dumps(spec.get("selector"), separators=(",", ":"))
        errs.append(FieldError("spec.selector", f"Invalid value: {shown}: field is immutable"))
    return errs


def _validate_service(obj: Obj, old: Obj | None) -> list[FieldError]:
    errs: list[FieldError] = []
    spec = obj.get("spec") or {}
    kind = spec.get("type")
    kinds = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
    if kind not in kinds:
        errs.append(FieldError("spec.type", f"Unsupported value: {_q(kind)}: supported values: "
                               + ", ".join(_q(k) for k in kinds), "FieldValueNotSupported"))
    ports = spec.get("ports") or []
    if kind == "ExternalName":
        if not spec.get("externalName"):
            errs.append(FieldError("spec.externalName", "Required value", "FieldValueRequired"))
    elif not ports and spec.get("clusterIP") != "None":
        errs.append(FieldError("spec.ports", "Required value", "FieldValueRequired"))
    names: set[str] = set()
    for i, port in enumerate(ports):
        where = f"spec.ports[{i}]"
        name = port.get("name", "")
        if len(ports) > 1 and not name:
            errs.append(FieldError(f"{where}.name", "Required value", "FieldValueRequired"))
        elif name and not DNS1123_LABEL.match(name):
            errs.append(FieldError(f"{where}.name", f"Invalid value: {_q(name)}: {LABEL_MSG}"))
        elif name in names:
            errs.append(FieldError(f"{where}.name", f"Duplicate value: {_q(name)}",
                                   "FieldValueDuplicate"))
        names.add(name)
        number = port.get("port")
        if not 1 <= number <= 65535:
            errs.append(FieldError(f"{where}.port", f"Invalid value: {number}: must be between 1 "
                                   "and 65535, inclusive"))
        protocol = port.get("protocol")
        if protocol not in ("TCP", "UDP", "SCTP"):
            errs.append(FieldError(f"{where}.protocol", f"Unsupported value: {_q(protocol)}: "
                                   'supported values: "SCTP", "TCP", "UDP"',
                                   "FieldValueNotSupported"))
        target = port.get("targetPort")
        if isinstance(target, str) and not (IANA_SVC_NAME.match(target)
                                            and re.search("[a-z]", target)):
            errs.append(FieldError(f"{where}.targetPort", f"Invalid value: {_q(target)}: must "
                                   "contain only alpha-numeric characters (a-z, 0-9), and "
                                   "hyphens (-), at most 15 characters, with at least one letter"))
        elif isinstance(target, int) and not 1 <= target <= 65535:
            errs.append(FieldError(f"{where}.targetPort", f"Invalid value: {target}: must be "
                                   "between 1 and 65535, inclusive"))
    if old is not None:
        before = (old.get("spec") or {}).get("clusterIP")
        if before and kind != "ExternalName" and spec.get("clusterIP") != before:
            errs.append(FieldError("spec.clusterIPs[0]", f"Invalid value: "
                                   f"{_q(spec.get('clusterIP'))}: may not change once set"))
    return errs


def _validate_rbac(rt: ResourceType, obj: Obj, old: Obj | None) -> list[FieldError]:
    errs: list[FieldError] = []
    namespaced = rt.namespaced
    if rt.plural in ("roles", "clusterroles"):
        for i, rule in enumerate(obj.get("rules") or []):
            where = f"rules[{i}]"
            if not rule.get("verbs"):
                errs.append(FieldError(f"{where}.verbs", "Required value: verbs must contain at "
                                       "least one value", "FieldValueRequired"))
            urls = rule.get("nonResourceURLs")
            if urls and namespaced:
                errs.append(FieldError(f"{where}.nonResourceURLs", "Invalid value: "
                                       f"{_q(urls)}: namespaced rules cannot apply to "
                                       "non-resource URLs"))
            if urls and (rule.get("apiGroups") or rule.get("resources")
                         or rule.get("resourceNames")):
                errs.append(FieldError(f"{where}.nonResourceURLs", "Invalid value: "
                                       f"{_q(urls)}: rules cannot apply to both regular "
                                       "resources and non-resource URLs"))
            elif not urls:
                if not rule.get("apiGroups"):
                    errs.append(FieldError(f"{where}.apiGroups", "Required value: resource rules "
                                           "must supply at least one api group",
                                           "FieldValueRequired"))
                if not rule.get("resources"):
                    errs.append(FieldError(f"{where}.resources", "Required value: resource rules "
                                           "must supply at least one resource",
                                           "FieldValueRequired"))
        return errs
    ref = obj.get("roleRef") or {}
    kinds = ("Role", "ClusterRole") if namespaced else ("ClusterRole",)
    if ref.get("apiGroup") != RBAC:
        errs.append(FieldError("roleRef.apiGroup", f"Unsupported value: {_q(ref.get('apiGroup'))}"
                               f": supported values: {_q(RBAC)}", "FieldValueNotSupported"))
    if ref.get("kind") not in kinds:
        errs.append(FieldError("roleRef.kind", f"Unsupported value: {_q(ref.get('kind'))}: "
                               "supported values: " + ", ".join(_q(k) for k in kinds),
                               "FieldValueNotSupported"))
    if not ref.get("name"):
        errs.append(FieldError("roleRef.name", "Required value", "FieldValueRequired"))
    for i, subject in enumerate(obj.get("subjects") or []):
        where = f"subjects[{i}]"
        kind, group = subject.get("kind"), subject.get("apiGroup", "")
        if not subject.get("name"):
            errs.append(FieldError(f"{where}.name", "Required value", "FieldValueRequired"))
        if kind == "ServiceAccount":
            if group:
                errs.append(FieldError(f"{where}.apiGroup", f"Unsupported value: {_q(group)}: "
                                       'supported values: ""', "FieldValueNotSupported"))
            if not subject.get("namespace") and not namespaced:
                errs.append(FieldError(f"{where}.namespace", "Required value",
                                       "FieldValueRequired"))
        elif kind in ("User", "Group"):
            if group != RBAC:
                errs.append(FieldError(f"{where}.apiGroup", f"Unsupported value: {_q(group)}: "
                                       f"supported values: {_q(RBAC)}", "FieldValueNotSupported"))
        else:
            errs.append(FieldError(f"{where}.kind", f"Unsupported value: {_q(kind)}: supported "
                                   'values: "ServiceAccount", "User", "Group"',
                                   "FieldValueNotSupported"))
    if old is not None and old.get("roleRef") != obj.get("roleRef"):
        shown = json.dumps(obj.get("roleRef"), separators=(",", ":"))
        errs.append(FieldError("roleRef", f"Invalid value: {shown}: cannot change roleRef"))
    return errs


def _validate_crd(api: Api, obj: Obj, old: Obj | None) -> list[FieldError]:
    errs: list[FieldError] = []
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group") or ""
    plural = names.get("plural") or ""
    if not group:
        errs.append(FieldError("spec.group", "Required value", "FieldValueRequired"))
    elif "." not in group:
        errs.append(FieldError("spec.group", f"Invalid value: {_q(group)}: should be a domain "
                               "with at least one dot"))
    for key in ("plural", "kind"):
        if not names.get(key):
            errs.append(FieldError(f"spec.names.{key}", "Required value", "FieldValueRequired"))
    if plural and not DNS1123_LABEL.match(plural):
        errs.append(FieldError("spec.names.plural", f"Invalid value: {_q(plural)}: {LABEL_MSG}"))
    if obj["metadata"].get("name") != f"{plural}.{group}":
        errs.append(FieldError("metadata.name", f"Invalid value: {_q(obj['metadata'].get('name'))}"
                               ': must be spec.names.plural+"."+spec.group'))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        errs.append(FieldError("spec.scope", f"Unsupported value: {_q(spec.get('scope'))}: "
                               'supported values: "Cluster", "Namespaced"',
                               "FieldValueNotSupported"))
    versions = spec.get("versions") or []
    if not versions:
        errs.append(FieldError("spec.versions", "Invalid value: null: must have exactly one "
                               "version marked as storage version"))
    storage = [v for v in versions if isinstance(v, dict) and v.get("storage")]
    if versions and len(storage) != 1:
        errs.append(FieldError("spec.versions", f"Invalid value: {_q(versions)}: must have "
                               "exactly one version marked as storage version"))
    for i, v in enumerate(versions):
        if not isinstance(v, dict):
            continue
        where = f"spec.versions[{i}]"
        if not v.get("name"):
            errs.append(FieldError(f"{where}.name", "Required value", "FieldValueRequired"))
        openapi = (v.get("schema") or {}).get("openAPIV3Schema")
        if openapi is None:
            errs.append(FieldError(f"{where}.schema.openAPIV3Schema", "Required value: schemas "
                                   "are required", "FieldValueRequired"))
        else:
            errs += schema.structural_errors(openapi, f"{where}.schema.openAPIV3Schema")
        for j, col in enumerate(v.get("additionalPrinterColumns") or []):
            for key in ("name", "type", "jsonPath"):
                if not col.get(key):
                    errs.append(FieldError(f"{where}.additionalPrinterColumns[{j}].{key}",
                                           "Required value", "FieldValueRequired"))
    if old is not None and (old.get("spec") or {}).get("scope") != spec.get("scope"):
        errs.append(FieldError("spec.scope", f"Invalid value: {_q(spec.get('scope'))}: field is "
                               "immutable"))
    if old is None and not errs:
        existing = api.types.get((group, plural))
        if existing is not None and existing.builtin:
            errs.append(FieldError("spec.names.plural", "Invalid value: already served by a "
                                   "built-in resource"))
    return errs


# --- side effects -----------------------------------------------------------------------------

def after_write(api: Api, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
    if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions") \
            and not obj["metadata"].get("deletionTimestamp"):
        api.register_crd(obj)


def after_delete(api: Api, rt: ResourceType, final: Obj) -> None:
    if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
        api.unregister_crd(final)


def grace_period(rt: ResourceType, obj: Obj, requested: int | None) -> int:
    """Pods that may still run processes are deleted gracefully; everything else at once."""
    if rt.key != ("", "pods"):
        return 0
    status = obj.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed") or not (obj.get("spec") or {}).get(
            "nodeName"):
        return 0
    if requested is not None:
        return max(int(requested), 0)
    return int((obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
