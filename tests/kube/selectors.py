"""Label and field selectors, parsed the way `k8s.io/apimachinery/pkg/labels` does."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, bad_request

Obj = dict[str, Any]


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        raise AssertionError(self.op)


_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside `in (...)` parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(text: str | None) -> list[Requirement]:
    if not text:
        return []
    reqs: list[Requirement] = []
    for part in _split_top(text):
        m = re.fullmatch(r"(\S+)\s+(in|notin)\s+\(([^)]*)\)", part)
        if m:
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append(Requirement(m.group(1), m.group(2), values))
        elif part.startswith("!"):
            reqs.append(Requirement(part[1:].strip(), "!"))
        elif "!=" in part:
            k, v = part.split("!=", 1)
            reqs.append(Requirement(k.strip(), "!=", (v.strip(),)))
        elif "==" in part:
            k, v = part.split("==", 1)
            reqs.append(Requirement(k.strip(), "=", (v.strip(),)))
        elif "=" in part:
            k, v = part.split("=", 1)
            reqs.append(Requirement(k.strip(), "=", (v.strip(),)))
        else:
            reqs.append(Requirement(part, "exists"))
    for r in reqs:
        if not _LABEL_KEY.match(r.key) or any(not _LABEL_VALUE.match(v) for v in r.values):
            raise bad_request(f"unable to parse requirement: invalid label selector {text!r}")
    return reqs


def selector_from_label_selector(sel: dict[str, Any] | None) -> list[Requirement]:
    """A `metav1.LabelSelector` (matchLabels + matchExpressions) as requirements."""
    if not sel:
        return []
    reqs = [Requirement(k, "=", (str(v),)) for k, v in (sel.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in sel.get("matchExpressions") or []:
        values = tuple(expr.get("values") or ())
        reqs.append(Requirement(expr["key"], ops[expr["operator"]], values))
    return reqs


def labels_match(reqs: list[Requirement], obj: Obj) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(labels) for r in reqs)


# Field selectors ------------------------------------------------------------------------------

FieldGetter = Callable[[Obj], str]


def _meta(key: str) -> FieldGetter:
    return lambda o: str((o.get("metadata") or {}).get(key) or "")


def _path(*keys: str) -> FieldGetter:
    def get(o: Obj) -> str:
        cur: Any = o
        for k in keys:
            cur = cur.get(k) if isinstance(cur, dict) else None
        if isinstance(cur, bool):
            return "true" if cur else "false"
        return "" if cur is None else str(cur)

    return get


COMMON_FIELDS: dict[str, FieldGetter] = {
    "metadata.name": _meta("name"),
    "metadata.namespace": _meta("namespace"),
}

# Extra selectable fields of built-in kinds (the ones kubectl and controllers use).
EXTRA_FIELDS: dict[str, dict[str, FieldGetter]] = {
    "events": {
        **{
            f"involvedObject.{k}": _path("involvedObject", k)
            for k in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion",
                      "fieldPath")
        },
        "reason": _path("reason"),
        "reportingComponent": _path("reportingComponent"),
        "source": _path("source", "component"),
        "type": _path("type"),
    },
    "pods": {
        "spec.nodeName": _path("spec", "nodeName"),
        "spec.restartPolicy": _path("spec", "restartPolicy"),
        "spec.schedulerName": _path("spec", "schedulerName"),
        "spec.serviceAccountName": _path("spec", "serviceAccountName"),
        "status.phase": _path("status", "phase"),
        "status.podIP": _path("status", "podIP"),
        "status.nominatedNodeName": _path("status", "nominatedNodeName"),
    },
    "secrets": {"type": _path("type")},
    "namespaces": {"status.phase": _path("status", "phase")},
    "jobs": {"status.successful": _path("status", "succeeded")},
}


@dataclass(frozen=True)
class FieldRequirement:
    getter: FieldGetter
    negate: bool
    value: str

    def matches(self, obj: Obj) -> bool:
        return (self.getter(obj) == self.value) != self.negate


def parse_field_selector(text: str | None, plural: str) -> list[FieldRequirement]:
    if not text:
        return []
    fields = {**COMMON_FIELDS, **EXTRA_FIELDS.get(plural, {})}
    reqs: list[FieldRequirement] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "!=" in part:
            key, value = part.split("!=", 1)
            negate = True
        elif "==" in part:
            key, value = part.split("==", 1)
            negate = False
        elif "=" in part:
            key, value = part.split("=", 1)
            negate = False
        else:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        key = key.strip()
        if key not in fields:
            raise ApiError(400, "BadRequest", f'field label not supported: {key}')
        reqs.append(FieldRequirement(fields[key], negate, value.strip()))
    return reqs


def fields_match(reqs: list[FieldRequirement], obj: Obj) -> bool:
    return all(r.matches(obj) for r in reqs)
