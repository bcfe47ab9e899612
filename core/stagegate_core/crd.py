"""Generate the TrainingJob CustomResourceDefinition from the spec model.

`stagegate crd > crds/trainingjob.yaml` writes it; a test fails when the committed file differs.
The walk is ours, not pydantic's JSON schema, because Kubernetes wants a *structural* schema:
no $ref, no anyOf for optionals, and defaults on every level so nested defaulting works.
"""

from __future__ import annotations

import types
import typing
from datetime import datetime
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .naming import LIMIT_MESSAGE, MAX_NAME_LENGTH
from .spec import API_GROUP, API_VERSION, KIND, PLURAL, SHORT_NAMES, SINGULAR, TrainingJobSpec
from .specparts import ArtifactsSpec
from .statusmodel import TrainingJobStatus

# CEL rules (x-kubernetes-validations) for what a schema keyword cannot say, checked by the API
# server at apply. The pydantic validators say the same for `stagegate run`.
_RULES: dict[type[BaseModel], list[dict[str, str]]] = {
    ArtifactsSpec: [
        {
            "rule": "!has(self.volumeClaim) || self.uri.startsWith('file:///')",
            "message": "uri must be file:///<absolute path> when volumeClaim is set: the claim "
            "is mounted at that path in every step pod",
        }
    ],
}
# Every child Job name (<name>-quick-fold-NNNN the longest) must fit in 63 characters.
_NAME_RULE = {"rule": f"size(self.metadata.name) <= {MAX_NAME_LENGTH}", "message": LIMIT_MESSAGE}

_PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Symbol", "type": "string", "jsonPath": ".spec.symbol"},
    {"name": "Timeframe", "type": "string", "jsonPath": ".spec.timeframe"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
    {"name": "Accuracy", "type": "string", "jsonPath": ".status.summary.accuracy"},
    {"name": "Recall", "type": "string", "jsonPath": ".status.summary.recall"},
    {"name": "AUC", "type": "string", "jsonPath": ".status.summary.rocAuc"},
    {"name": "EXP R", "type": "string", "jsonPath": ".status.summary.expectedR"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Approved By", "type": "string", "jsonPath": ".status.approvedBy", "priority": 1},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
]


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _constraints(metadata: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, annotated_types.Gt):
            out["minimum"], out["exclusiveMinimum"] = item.gt, True
        elif isinstance(item, annotated_types.Ge):
            out["minimum"] = item.ge
        elif isinstance(item, annotated_types.Lt):
            out["maximum"], out["exclusiveMaximum"] = item.lt, True
        elif isinstance(item, annotated_types.Le):
            out["maximum"] = item.le
        elif isinstance(item, annotated_types.MinLen):
            out["minLength"] = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            out["maxLength"] = item.max_length
        elif isinstance(item, FieldInfo):
            out.update(_constraints(list(item.metadata)))
        pattern = getattr(item, "pattern", None)
        if isinstance(pattern, str):
            out["pattern"] = pattern
    return out


def _type_schema(annotation: Any) -> dict[str, Any]:
    annotation, optional = _strip_optional(annotation)
    if optional:  # e.g. a metric with no value, inside a map
        return {**_type_schema(annotation), "nullable": True}
    if get_origin(annotation) is typing.Annotated:
        base, *extra = get_args(annotation)
        return {**_type_schema(base), **_constraints(extra)}
    if get_origin(annotation) is Literal:
        values = list(get_args(annotation))
        return {"type": "string", "enum": values}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return model_schema(annotation)
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return {"type": "integer"}
    if annotation is float:
        return {"type": "number"}
    if annotation is str:
        return {"type": "string"}
    if annotation is datetime:
        return {"type": "string", "format": "date-time"}
    if get_origin(annotation) in (list, tuple):
        return {"type": "array", "items": _type_schema(get_args(annotation)[0])}
    if get_origin(annotation) is dict and get_args(annotation)[1] is Any:
        # Free-form parameters (a custom feature's): any JSON object, kept as written.
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if get_origin(annotation) is dict:
        return {"type": "object", "additionalProperties": _type_schema(get_args(annotation)[1])}
    raise TypeError(f"no CRD schema for {annotation!r}")


def _field_schema(field: FieldInfo) -> dict[str, Any]:
    inner, optional = _strip_optional(field.annotation)
    schema = _type_schema(inner)  # `nullable` comes last, after the description
    constraints = _constraints(list(field.metadata))
    if schema["type"] == "array":  # a length of a list counts items, not characters
        for length, items in (("minLength", "minItems"), ("maxLength", "maxItems")):
            if length in constraints:
                constraints[items] = constraints.pop(length)
    schema.update(constraints)
    if field.description:
        schema["description"] = field.description
    if optional:
        schema["nullable"] = True
    if field.default_factory is not None:
        default = field.default_factory()  # type: ignore[call-arg]
        if isinstance(default, BaseModel):
            default = default.model_dump(mode="json", by_alias=True, exclude_none=True)
        schema["default"] = default
    elif field.default is not None and not field.is_required():
        schema["default"] = field.default
    return schema


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        properties[key] = _field_schema(field)
        if field.is_required():
            required.append(key)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if model in _RULES:
        schema["x-kubernetes-validations"] = _RULES[model]
    return schema


def _status_schema() -> dict[str, Any]:
    """The status's schema from its model, open-ended where the model is (gate records, the
    frozen spec), with neither defaults nor required fields: only Stagegate writes the status,
    the model checks it, and a write the API server refused would leave a run unrecorded."""
    schema = model_schema(TrainingJobStatus)

    def loosen(node: Any) -> None:
        if isinstance(node, dict):
            node.pop("required", None)
            node.pop("default", None)
            for value in node.values():
                loosen(value)
        elif isinstance(node, list):
            for value in node:
                loosen(value)

    loosen(schema)
    return schema


def build_crd() -> dict[str, Any]:
    spec_schema = model_schema(TrainingJobSpec)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["stagegate"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A two-stage walk-forward training of one model.",
                            "required": ["spec"],
                            "x-kubernetes-validations": [_NAME_RULE],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": _status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crd() -> str:
    header = "# Generated by `stagegate crd` from core/stagegate_core/spec.py. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)
