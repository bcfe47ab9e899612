"""Sample manifests for the emulator's own tests (a small CRD in Stagegate's style)."""

from __future__ import annotations

import copy
from typing import Any

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.stagegate.io"},
    "spec": {
        "group": "example.stagegate.io",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                  "shortNames": ["wd"], "categories": ["all"]},
        "versions": [{
            "name": "v1",
            "served": True,
            "storage": True,
            "subresources": {"status": {}},
            "additionalPrinterColumns": [
                {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                {"name": "Color", "type": "string", "jsonPath": ".spec.color", "priority": 1},
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            ],
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object",
                        "required": ["size"],
                        "properties": {
                            "size": {"type": "integer", "minimum": 1, "maximum": 100},
                            "color": {"type": "string", "enum": ["red", "green", "blue"],
                                      "default": "red"},
                            "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 10},
                            "tags": {"type": "array", "items": {"type": "string"},
                                     "maxItems": 3},
                            "extra": {"type": "object",
                                      "x-kubernetes-preserve-unknown-fields": True},
                        },
                    },
                    "status": {
                        "type": "object",
                        "properties": {
                            "phase": {"type": "string"},
                            "observedGeneration": {"type": "integer"},
                        },
                    },
                },
            }},
        }],
    },
}


def widget_crd() -> dict[str, Any]:
    return copy.deepcopy(WIDGET_CRD)


def widget(name: str, size: int = 3, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "example.stagegate.io/v1", "kind": "Widget",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"size": size, **spec}}


def job(name: str, script: str, *, backoff_limit: int = 0, restart: str = "Never",
        **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {"spec": {
                "restartPolicy": restart,
                "containers": [{"name": "main", "image": "python:3.11",
                                "command": ["python", "-c", script]}],
            }},
            **spec,
        },
    }
