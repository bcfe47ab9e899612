"""The typed status: every field a driver writes is declared (the API server prunes the rest),
a status reads back exactly as written, and the real API server keeps all of it."""

from __future__ import annotations

import copy
import types
from typing import Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel, ValidationError
from stagegate_cli.common import status_of
from stagegate_cli.errors import Refused
from stagegate_core.statusmodel import TrainingJobStatus
from stagegate_operator.mergepatch import pruned

from tests.support.kube import KubeApi
from tests.support.operator import install_crd
from tests.support.runs import small_spec

STAT = {"mean": 0.61, "std": 0.04}
PERIOD = {"start": "2023-06-01T00:00:00Z", "end": "2023-07-01T00:00:00Z", "rows": 2880}
CONDITION = {
    "type": "Complete",
    "status": "False",
    "reason": "InProgress",
    "message": "",
    "lastTransitionTime": "2023-08-01T00:00:00Z",
}
# A status with every field of the model set (the test below keeps it so).
FULL: dict[str, Any] = {
    "phase": "Full",
    "stage": "full",
    "progress": "1/4",
    "message": "full stage: 1/4 folds",
    "summary": {
        "stage": "quick",
        "accuracy": "63.8%",
        "recall": "45.0%",
        "rocAuc": "61.2%",
        "expectedR": "+0.12R (≥-0.03)",
    },
    "stages": {
        "quick": {
            "plan": {
                "foldCount": 1,
                "dataStart": "2023-06-01T00:00:00Z",
                "dataEnd": "2023-08-01T00:00:00Z",
                "purgeBars": 49,
                "trainWindow": "expanding",
            },
            "folds": [
                {
                    "fold": 1,
                    "state": "Succeeded",
                    "attempts": 2,
                    "train": {**PERIOD, "positiveRate": 0.31},
                    "test": {**PERIOD, "positiveRate": 0.3},
                    "metrics": {"accuracy": 0.64, "rocAuc": None},
                    "bestIteration": 85,
                },
            ],
            "startedAt": "2023-08-01T00:00:00Z",
            "finishedAt": "2023-08-01T00:10:00Z",
            "summary": {"accuracy": STAT, "rocAuc": {"mean": None, "std": None}},
            "baselines": {"majority": {"accuracy": STAT}},
            "gates": [
                {
                    "gate": "minAccuracy",
                    "metric": "accuracy",
                    "threshold": 0.6,
                    "value": 0.64,
                    "passed": True,
                    "verdict": "pass",
                }
            ],
            "passed": True,
            "decision": {"expectedR": 0.12, "trades": 40, "verdicts": {"minTrades": "pass"}},
        },
        "full": {
            "plan": {"foldCount": 4},
            "folds": [{"fold": 1, "state": "Retrying", "attempts": 1, "error": "OOMKilled"}],
        },
    },
    "startedAt": "2023-08-01T00:00:00Z",
    "finishedAt": None,
    "phaseSince": "2023-08-01T00:11:00Z",
    "elapsedSeconds": 660.5,
    "etaSeconds": 1200.0,
    "artifacts": {"run": "s3://models/runs/ns/btc/uid/"},
    "conditions": [CONDITION],
    "warnings": ["purge of 10 bars is shorter than the label horizon"],
    "data": {"summary": "70,075 M15 bars", "hash": "cbf9", "labelledRows": 70000},
    "approval": {
        "decision": "rejected",
        "by": "carol",
        "via": "annotation",
        "at": "2023-08-01T00:11:00Z",
        "gate": "full",
        "reason": "AUC within noise",
    },
    "approvedBy": "alice",
    "approvedAt": "2023-08-01T00:11:00Z",
    "rejectedBy": "carol",
    "rejectedAt": "2023-08-01T00:11:00Z",
    "rejectionReason": "AUC within noise",
    "observedGeneration": 2,
    "refusedGeneration": 3,
    "specFingerprint": "sha256:abc",
    "runSpec": {"symbol": "BTC/USDT", "stages": {"quick": {"maxFolds": 1}}},
    "prepared": {"step": "prepare", "stages": {"quick": {"foldCount": 1}}},
    "carriedFailures": {"btc-full-fold-0001": 1},
    "reportedFailures": {"btc-full-fold-0001": 1},
}


def _unset(annotation: Any, values: list[Any], path: str) -> list[str]:
    """Fields of the type `annotation` that none of `values` holds, at any depth."""
    if get_origin(annotation) in (Union, types.UnionType):
        (annotation,) = [a for a in get_args(annotation) if a is not type(None)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        out = []
        for name, field in annotation.model_fields.items():
            present = [v[name] for v in values if name in v]
            if not present:
                out.append(f"{path}.{name}")
            inner = [v for v in present if v is not None]
            out += _unset(field.annotation, inner, f"{path}.{name}")
        return out
    if get_origin(annotation) is list:
        return _unset(get_args(annotation)[0], [x for v in values for x in v], f"{path}[]")
    if get_origin(annotation) is dict:
        items = [x for v in values for x in v.values()]
        return _unset(get_args(annotation)[1], items, f"{path}{{}}")
    return []


def test_the_example_sets_every_field_of_the_model() -> None:
    assert _unset(TrainingJobStatus, [FULL], "status") == []


def test_a_status_reads_back_exactly_as_written() -> None:
    assert TrainingJobStatus.parse(copy.deepcopy(FULL)).to_dict() == FULL


def test_fields_a_writer_left_out_stay_out_and_a_none_it_set_stays() -> None:
    status = TrainingJobStatus(phase="Pending", stage=None)
    assert status.to_dict() == {"phase": "Pending", "stage": None}
    assert TrainingJobStatus.parse(None).to_dict() == {}


def test_reading_ignores_a_field_a_newer_writer_added() -> None:
    read = TrainingJobStatus.parse({"phase": "Full", "somethingNew": 1})
    assert read.phase == "Full" and "somethingNew" not in read.to_dict()


@pytest.mark.parametrize(
    ("field", "value"),
    [("phase", "Done"), ("elapsedSeconds", "soon"), ("conditions", [{"type": "Complete"}])],
)
def test_a_malformed_status_is_refused_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValidationError, match=field):
        TrainingJobStatus.parse({**FULL, field: value})


@pytest.mark.slow
def test_the_api_server_keeps_every_field_and_refuses_a_wrong_one(kube_api: KubeApi) -> None:
    install_crd(kube_api)
    path = f"/apis/stagegate.io/v1alpha1/namespaces/{kube_api.namespace}/trainingjobs"
    body = {
        "apiVersion": "stagegate.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "typed"},
        "spec": {**small_spec(), "suspend": True},
    }
    kube_api.create(path, body)
    kube_api.patch(f"{path}/typed/status", {"status": FULL})
    # A merge patch's null deletes: the operator leaves out what is None, and so does this.
    assert kube_api.get(f"{path}/typed")["status"] == pruned(FULL)
    # The schema is closed: what the model does not declare, the API server drops.
    kube_api.patch(f"{path}/typed/status", {"status": {"undeclared": 1}})
    assert "undeclared" not in kube_api.get(f"{path}/typed")["status"]
    wrong = copy.deepcopy(FULL)
    wrong["stages"]["full"]["folds"][0]["state"] = "Lost"
    status, out = kube_api.request(
        "PATCH",
        f"{path}/typed/status",
        {"status": wrong},
        content_type="application/merge-patch+json",
    )
    assert status == 422, out
    assert "stages.full.folds[0].state" in str(out)


def test_the_cli_names_the_field_of_a_status_it_cannot_read() -> None:
    tj = {"metadata": {"name": "btc"}, "status": {"stages": {"quick": {"folds": []}}}}
    with pytest.raises(Refused) as caught:
        status_of(tj)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("trainingjobs.stagegate.io/btc has a status this stagegate cannot")
    assert message.endswith("status: stages.quick.plan: required field is missing")
