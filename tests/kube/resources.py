"""Resource types: the built-in kinds Stagegate touches and CustomResourceDefinitions.

Built-in kinds: Namespace, Event, ConfigMap, Secret, ServiceAccount, Node, Pod, Service (v1);
Deployment (apps/v1; stored only: no controller rolls it out or runs its pods); Job (batch/v1);
Role, RoleBinding, ClusterRole, ClusterRoleBinding (rbac.authorization.k8s.io/v1; stored, not
enforced: every client may do everything); CustomResourceDefinition (apiextensions.k8s.io/v1).

Built-in kinds get hand-written structural schemas, deep enough that `fieldValidation=Strict`
rejects a misspelt field in a Job's pod template as a real server would; rarely used subtrees
(probes, affinity, security contexts) preserve unknown fields instead of being modelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Schema = dict[str, Any]

# Schema builders keep the built-in definitions short.
S: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
B: Schema = {"type": "boolean"}
ANY: Schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
INT_OR_STR: Schema = {"x-kubernetes-int-or-string": True}
STR_MAP: Schema = {"type": "object", "additionalProperties": S}


def obj(props: dict[str, Schema], *, required: tuple[str, ...] = ()) -> Schema:
    schema: Schema = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    return schema


def arr(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def strs() -> Schema:
    return arr(S)


OWNER_REF = obj(
    {"apiVersion": S, "kind": S, "name": S, "uid": S, "controller": B, "blockOwnerDeletion": B},
    required=("apiVersion", "kind", "name", "uid"),
)

OBJECT_META = obj({
    "name": S, "generateName": S, "namespace": S, "selfLink": S, "uid": S,
    "resourceVersion": S, "generation": INT,
    "creationTimestamp": {"type": "string", "nullable": True},
    "deletionTimestamp": S, "deletionGracePeriodSeconds": INT, "labels": STR_MAP,
    "annotations": STR_MAP, "ownerReferences": arr(OWNER_REF), "finalizers": strs(),
    "managedFields": arr(ANY),
})

KEY_REF = obj({"name": S, "key": S, "optional": B}, required=("key",))
ENV_VAR = obj({
    "name": S, "value": S,
    "valueFrom": obj({
        "secretKeyRef": KEY_REF, "configMapKeyRef": KEY_REF,
        "fieldRef": obj({"apiVersion": S, "fieldPath": S}, required=("fieldPath",)),
        "resourceFieldRef": obj({"containerName": S, "resource": S, "divisor": INT_OR_STR},
                                required=("resource",)),
        "fileKeyRef": ANY,
    }),
}, required=("name",))
ENV_FROM = obj({
    "prefix": S,
    "configMapRef": obj({"name": S, "optional": B}),
    "secretRef": obj({"name": S, "optional": B}),
})
CONTAINER = obj({
    "name": S, "image": S, "command": strs(), "args": strs(), "workingDir": S,
    "ports": arr(obj({"name": S, "containerPort": INT, "hostPort": INT, "hostIP": S,
                      "protocol": S},
                     required=("containerPort",))),
    "env": arr(ENV_VAR), "envFrom": arr(ENV_FROM),
    "resources": obj({"limits": {"type": "object", "additionalProperties": INT_OR_STR},
                      "requests": {"type": "object", "additionalProperties": INT_OR_STR},
                      "claims": arr(ANY)}),
    "resizePolicy": arr(ANY), "restartPolicy": S, "restartPolicyRules": arr(ANY),
    "volumeMounts": arr(obj({"name": S, "mountPath": S, "subPath": S, "subPathExpr": S,
                             "readOnly": B, "recursiveReadOnly": S, "mountPropagation": S},
                            required=("name", "mountPath"))),
    "volumeDevices": arr(ANY), "livenessProbe": ANY, "readinessProbe": ANY, "startupProbe": ANY,
    "lifecycle": ANY, "terminationMessagePath": S, "terminationMessagePolicy": S,
    "imagePullPolicy": S, "securityContext": ANY, "stdin": B, "stdinOnce": B, "tty": B,
}, required=("name",))
POD_SPEC = obj({
    "volumes": arr(obj({"name": S}, required=("name",)) | {"x-kubernetes-preserve-unknown-fields":
                                                            True}),
    "initContainers": arr(CONTAINER), "containers": arr(CONTAINER),
    "ephemeralContainers": arr(ANY), "restartPolicy": S, "terminationGracePeriodSeconds": INT,
    "activeDeadlineSeconds": INT, "dnsPolicy": S, "nodeSelector": STR_MAP,
    "serviceAccountName": S, "serviceAccount": S, "automountServiceAccountToken": B,
    "nodeName": S, "hostNetwork": B, "hostPID": B, "hostIPC": B, "shareProcessNamespace": B,
    "securityContext": ANY, "imagePullSecrets": arr(obj({"name": S})), "hostname": S,
    "subdomain": S, "affinity": ANY, "schedulerName": S, "tolerations": arr(ANY),
    "hostAliases": arr(ANY), "priorityClassName": S, "priority": INT, "dnsConfig": ANY,
    "readinessGates": arr(ANY), "runtimeClassName": S, "enableServiceLinks": B,
    "preemptionPolicy": S, "overhead": ANY, "topologySpreadConstraints": arr(ANY),
    "setHostnameAsFQDN": B, "os": ANY, "hostUsers": B, "schedulingGates": arr(ANY),
    "resourceClaims": arr(ANY), "resources": ANY, "hostnameOverride": S,
}, required=("containers",))
POD_TEMPLATE = obj({"metadata": OBJECT_META, "spec": POD_SPEC})
LABEL_SELECTOR = obj({
    "matchLabels": STR_MAP,
    "matchExpressions": arr(obj({"key": S, "operator": S, "values": strs()},
                                required=("key", "operator"))),
})
JOB_SPEC = obj({
    "parallelism": INT, "completions": INT, "activeDeadlineSeconds": INT, "podFailurePolicy": ANY,
    "successPolicy": ANY, "backoffLimit": INT, "backoffLimitPerIndex": INT, "maxFailedIndexes": INT,
    "selector": LABEL_SELECTOR, "manualSelector": B, "template": POD_TEMPLATE,
    "ttlSecondsAfterFinished": INT, "completionMode": S, "suspend": B, "podReplacementPolicy": S,
    "managedBy": S,
}, required=("template",))
DEPLOYMENT_SPEC = obj({
    "replicas": INT, "selector": LABEL_SELECTOR, "template": POD_TEMPLATE,
    "strategy": obj({"type": S, "rollingUpdate": obj({"maxUnavailable": INT_OR_STR,
                                                      "maxSurge": INT_OR_STR})}),
    "minReadySeconds": INT, "revisionHistoryLimit": INT, "paused": B,
    "progressDeadlineSeconds": INT,
}, required=("selector", "template"))
SERVICE_PORT = obj({"name": S, "protocol": S, "appProtocol": S, "port": INT,
                    "targetPort": INT_OR_STR, "nodePort": INT}, required=("port",))
SERVICE_SPEC = obj({
    "ports": arr(SERVICE_PORT), "selector": STR_MAP, "clusterIP": S, "clusterIPs": strs(),
    "type": S, "externalIPs": strs(), "sessionAffinity": S, "loadBalancerIP": S,
    "loadBalancerSourceRanges": strs(), "externalName": S, "externalTrafficPolicy": S,
    "healthCheckNodePort": INT, "publishNotReadyAddresses": B, "sessionAffinityConfig": ANY,
    "ipFamilies": strs(), "ipFamilyPolicy": S, "allocateLoadBalancerNodePorts": B,
    "loadBalancerClass": S, "internalTrafficPolicy": S, "trafficDistribution": S,
})
POLICY_RULE = obj({"verbs": strs(), "apiGroups": strs(), "resources": strs(),
                   "resourceNames": strs(), "nonResourceURLs": strs()}, required=("verbs",))
ROLE_REF = obj({"apiGroup": S, "kind": S, "name": S}, required=("apiGroup", "kind", "name"))
SUBJECT = obj({"kind": S, "apiGroup": S, "name": S, "namespace": S}, required=("kind", "name"))
AGGREGATION_RULE = obj({"clusterRoleSelectors": arr(LABEL_SELECTOR)})


def root(props: dict[str, Schema], **extra: Any) -> Schema:
    schema = obj({"apiVersion": S, "kind": S, "metadata": OBJECT_META, **props})
    schema.update(extra)
    return schema


BUILTIN_SCHEMAS: dict[str, Schema] = {
    "namespaces": root({"spec": obj({"finalizers": strs()}), "status": ANY}),
    "configmaps": root({"data": STR_MAP, "binaryData": STR_MAP, "immutable": B}),
    "secrets": root({"data": STR_MAP, "stringData": STR_MAP, "type": S, "immutable": B}),
    "events": root({
        "involvedObject": obj({"kind": S, "namespace": S, "name": S, "uid": S, "apiVersion": S,
                               "resourceVersion": S, "fieldPath": S}),
        "reason": S, "message": S, "source": obj({"component": S, "host": S}),
        "firstTimestamp": {"type": "string", "nullable": True},
        "lastTimestamp": {"type": "string", "nullable": True}, "count": INT, "type": S,
        "eventTime": {"type": "string", "nullable": True}, "series": ANY, "action": S,
        "related": ANY, "reportingComponent": S, "reportingInstance": S,
    }),
    "pods": root({"spec": POD_SPEC, "status": ANY}),
    "jobs": root({"spec": JOB_SPEC, "status": ANY}),
    "nodes": root({"spec": ANY, "status": ANY}),
    "serviceaccounts": root({"secrets": arr(ANY), "imagePullSecrets": arr(ANY),
                             "automountServiceAccountToken": B}),
    "customresourcedefinitions": root({"spec": ANY, "status": ANY}),
    "deployments": root({"spec": DEPLOYMENT_SPEC, "status": ANY}, required=["spec"]),
    "services": root({"spec": SERVICE_SPEC, "status": ANY}),
    "roles": root({"rules": arr(POLICY_RULE)}),
    "clusterroles": root({"rules": arr(POLICY_RULE), "aggregationRule": AGGREGATION_RULE}),
    "rolebindings": root({"subjects": arr(SUBJECT), "roleRef": ROLE_REF},
                         required=["roleRef"]),
    "clusterrolebindings": root({"subjects": arr(SUBJECT), "roleRef": ROLE_REF},
                                required=["roleRef"]),
}


@dataclass
class Column:
    """A Table column: `name`, `type` (string/integer/number/boolean/date), `priority`."""

    name: str
    type: str = "string"
    json_path: str | None = None
    priority: int = 0
    description: str = ""
    format: str = ""

    def definition(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "format": self.format,
                "description": self.description, "priority": self.priority}


@dataclass
class VersionInfo:
    name: str
    schema: Schema | None
    status_subresource: bool = False
    scale_subresource: dict[str, Any] | None = None
    columns: list[Column] = field(default_factory=list)
    served: bool = True
    storage: bool = False


@dataclass
class ResourceType:
    group: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    versions: dict[str, VersionInfo]
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    builtin: bool = True
    subresources: tuple[str, ...] = ()
    # Custom resources need a resourceVersion on PUT; most built-in kinds do not.
    unconditional_update: bool = True
    tracks_generation: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    @property
    def storage_version(self) -> str:
        for v in self.versions.values():
            if v.storage:
                return v.name
        return next(iter(self.versions))

    def version(self, name: str) -> VersionInfo:
        return self.versions[name]

    def has_status(self, version: str) -> bool:
        return self.versions[version].status_subresource

    def verbs(self) -> list[str]:
        return ["create", "delete", "deletecollection", "get", "list", "patch", "update",
                "watch"]


def _builtin(group: str, version: str, plural: str, kind: str, *, namespaced: bool = True,
             short: tuple[str, ...] = (), status: bool = False, subresources: tuple[str, ...] = (),
             generation: bool = False, categories: tuple[str, ...] = ()) -> ResourceType:
    return ResourceType(
        group=group, plural=plural, singular=kind.lower(), kind=kind, namespaced=namespaced,
        versions={version: VersionInfo(version, BUILTIN_SCHEMAS.get(plural), status,
                                       storage=True)},
        short_names=list(short), categories=list(categories), builtin=True,
        subresources=subresources + (("status",) if status else ()),
        tracks_generation=generation,
    )


RBAC = "rbac.authorization.k8s.io"


def builtin_types() -> list[ResourceType]:
    return [
        _builtin("", "v1", "namespaces", "Namespace", namespaced=False, short=("ns",),
                 status=True, subresources=("finalize",)),
        _builtin("", "v1", "events", "Event", short=("ev",)),
        _builtin("", "v1", "configmaps", "ConfigMap", short=("cm",)),
        _builtin("", "v1", "secrets", "Secret"),
        _builtin("", "v1", "serviceaccounts", "ServiceAccount", short=("sa",)),
        _builtin("", "v1", "nodes", "Node", namespaced=False, short=("no",), status=True),
        _builtin("", "v1", "pods", "Pod", short=("po",), status=True, subresources=("log",),
                 generation=True, categories=("all",)),
        _builtin("", "v1", "services", "Service", short=("svc",), status=True,
                 categories=("all",)),
        # No Deployment controller: Deployments are stored (and garbage-collected), not rolled
        # out; nothing creates ReplicaSets or pods for them.
        _builtin("apps", "v1", "deployments", "Deployment", short=("deploy",), status=True,
                 generation=True, categories=("all",)),
        _builtin("batch", "v1", "jobs", "Job", status=True, generation=True,
                 categories=("all",)),
        _builtin(RBAC, "v1", "roles", "Role"),
        _builtin(RBAC, "v1", "rolebindings", "RoleBinding"),
        _builtin(RBAC, "v1", "clusterroles", "ClusterRole", namespaced=False),
        _builtin(RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
        _builtin("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                 "CustomResourceDefinition", namespaced=False, short=("crd", "crds"),
                 status=True, generation=True),
    ]


def crd_to_type(crd: dict[str, Any]) -> ResourceType:
    """Build the served resource type of an (already validated) CRD."""
    spec = crd["spec"]
    names = spec["names"]
    versions: dict[str, VersionInfo] = {}
    for v in spec["versions"]:
        columns = [
            Column(c["name"], c.get("type", "string"), c["jsonPath"], c.get("priority", 0),
                   c.get("description", ""), c.get("format", ""))
            for c in v.get("additionalPrinterColumns") or []
        ]
        if "additionalPrinterColumns" not in v:
            columns = [Column("Age", "date", ".metadata.creationTimestamp")]
        sub = v.get("subresources") or {}
        schema = (v.get("schema") or {}).get("openAPIV3Schema")
        versions[v["name"]] = VersionInfo(
            v["name"], schema, "status" in sub, sub.get("scale"), columns,
            served=v.get("served", True), storage=v.get("storage", False),
        )
    return ResourceType(
        group=spec["group"], plural=names["plural"],
        singular=names.get("singular") or names["kind"].lower(), kind=names["kind"],
        namespaced=spec["scope"] == "Namespaced", versions=versions,
        short_names=list(names.get("shortNames") or []),
        categories=list(names.get("categories") or []), builtin=False,
        subresources=("status",) if any(v.status_subresource for v in versions.values()) else (),
        unconditional_update=False, tracks_generation=True,
    )
