"""The CRD is generated from the spec model, and the committed file is exactly that output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from stagegate_core.crd import build_crd, render_crd

REPO = Path(__file__).resolve().parents[1]


def test_committed_crd_is_generated_from_the_model() -> None:
    committed = (REPO / "crds" / "trainingjob.yaml").read_text()
    assert committed == render_crd(), "regenerate with: stagegate crd > crds/trainingjob.yaml"


def _version() -> dict[str, Any]:
    return build_crd()["spec"]["versions"][0]


def test_names_scope_and_status_subresource() -> None:
    crd = build_crd()
    assert crd["metadata"]["name"] == "trainingjobs.stagegate.io"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "TrainingJob",
        "trainingjobs",
        ["tj"],
    )
    assert crd["spec"]["scope"] == "Namespaced"
    assert _version()["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    columns = [c["name"] for c in _version()["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == [
        "Symbol",
        "Timeframe",
        "Phase",
        "Progress",
        "Accuracy",
        "Recall",
        "AUC",
        "EXP R",
        "Age",
    ]


def test_schema_types_enums_minimums_defaults() -> None:
    spec = _version()["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["symbol"]
    props = spec["properties"]
    assert props["mode"]["enum"] == ["sequential", "quick", "full"]
    assert props["mode"]["default"] == "sequential"
    assert "15m" in props["timeframe"]["enum"] and "M15" in props["timeframe"]["enum"]
    quick = props["stages"]["properties"]["quick"]["properties"]
    assert quick["testPeriodDays"] == {
        "type": "integer",
        "minimum": 0,
        "exclusiveMinimum": True,
        "default": 60,
    }
    assert quick["lookbackDays"]["default"] == 365
    assert props["stages"]["properties"]["full"]["properties"]["testPeriodDays"]["default"] == 21
    # Nested objects default to their own defaults, so a bare spec is fully defaulted.
    assert props["gates"]["default"]["minRocAuc"] == 0.61
    assert props["stages"]["default"]["quick"]["minTrainDays"] == 180
    assert props["parallelism"]["minimum"] == 1
    assert props["model"]["properties"]["learningRate"]["maximum"] == 1


def test_schema_is_structural() -> None:
    """Kubernetes rejects $ref, anyOf-for-null and untyped properties in a structural schema."""

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            assert "$ref" not in node and "anyOf" not in node, path
            if "properties" in node:
                for key, child in node["properties"].items():
                    assert "type" in child, f"{path}.{key} has no type"
                    walk(child, f"{path}.{key}")

    walk(_version()["schema"]["openAPIV3Schema"], "")
    yaml.safe_load(render_crd())  # and the rendering is valid YAML


def test_cel_rules_refuse_long_names_and_a_claim_without_a_file_uri() -> None:
    """The rules the API server checks at apply (their behaviour is tested against a real one)."""
    from stagegate_core.naming import DNS_LABEL_MAX, LONGEST_SUFFIX, MAX_NAME_LENGTH

    schema = _version()["schema"]["openAPIV3Schema"]
    (name_rule,) = schema["x-kubernetes-validations"]
    assert name_rule["rule"] == f"size(self.metadata.name) <= {MAX_NAME_LENGTH}"
    assert MAX_NAME_LENGTH + len(LONGEST_SUFFIX) == DNS_LABEL_MAX == 63
    assert "at most 47 characters" in name_rule["message"]
    assert "at most 63 characters in a Job name" in name_rule["message"]
    artifacts = schema["properties"]["spec"]["properties"]["artifacts"]
    (claim_rule,) = artifacts["x-kubernetes-validations"]
    assert claim_rule["rule"] == "!has(self.volumeClaim) || self.uri.startsWith('file:///')"
    assert artifacts["properties"]["volumeClaim"]["type"] == "string"
