"""Malformed TrainingJobs are refused by the real API server (the generated CRD schema and its
CEL rules) and by `stagegate` (the spec model), each time with a message naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from stagegate_core.spec import SpecError, parse_manifest

from tests.support.kube import KubeApi
from tests.support.operator import install_crd
from tests.support.runs import small_spec

pytestmark = pytest.mark.slow


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        doc = doc.setdefault(key, {})
    doc[last] = value


# (what to set in the manifest, a word the error must contain)
CASES: list[tuple[str, Any, str]] = [
    ("spec.symbol", 42, "symbol"),
    ("spec.symbol", "", "symbol"),
    ("spec.timeframe", "M7", "timeframe"),
    ("spec.timeframe", 15, "timeframe"),
    ("spec.mode", "fast", "mode"),
    ("spec.mode", ["quick"], "mode"),
    ("spec.sybmol", "BTC/USDT", "sybmol"),
    ("spec.extra", {"a": 1}, "extra"),
    ("spec.data.source", "ftp", "source"),
    ("spec.data.start", "yesterday", "start"),
    ("spec.data.unknown", 1, "unknown"),
    ("spec.stages.quick.testPeriodDays", 0, "testPeriodDays"),
    ("spec.stages.quick.testPeriodDays", -5, "testPeriodDays"),
    ("spec.stages.quick.testPeriodDays", "ten", "testPeriodDays"),
    ("spec.stages.quick.lookbackDays", 0, "lookbackDays"),
    ("spec.stages.quick.minTrainDays", -1, "minTrainDays"),
    ("spec.stages.quick.trainWindow", "rolling", "trainWindow"),
    ("spec.stages.quick.maxFolds", 0, "maxFolds"),
    ("spec.stages.full.stepDays", -3, "stepDays"),
    ("spec.stages.full.purgeBars", -1, "purgeBars"),
    ("spec.stages.slow", {}, "slow"),
    ("spec.label.horizonBars", 0, "horizonBars"),
    ("spec.label.barriers", "magic", "barriers"),
    ("spec.label.takeProfit", -1, "takeProfit"),
    ("spec.label.stopLoss", "x", "stopLoss"),
    ("spec.model.learningRate", 0, "learningRate"),
    ("spec.model.learningRate", 5, "learningRate"),
    ("spec.model.numLeaves", 1, "numLeaves"),
    ("spec.model.maxRounds", 0, "maxRounds"),
    ("spec.model.seed", "lucky", "seed"),
    ("spec.model.boosting", "xgboost", "boosting"),
    ("spec.gates.minAccuracy", 1.5, "minAccuracy"),
    ("spec.gates.minRecall", -0.1, "minRecall"),
    ("spec.gates.mustBeatBaselines", "maybe", "mustBeatBaselines"),
    ("spec.approval.policy", "yolo", "policy"),
    ("spec.parallelism", 0, "parallelism"),
    ("spec.parallelism", "four", "parallelism"),
    ("spec.maxRetries", -1, "maxRetries"),
    ("spec.suspend", "no way", "suspend"),
    ("spec.artifacts.uri", 7, "uri"),
    ("spec.artifacts.secretRef", "creds", "secretRef"),
    ("spec.resources.quick.requests.cpu", ["1"], "cpu"),
    ("spec.costs.feeBps", -1, "feeBps"),
    ("spec.queueName", 12, "queueName"),
]
IDS = [f"{path}={value!r}"[:60] for path, value, _ in CASES]


def manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "stagegate.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": small_spec(),
    }


@pytest.fixture(scope="module")
def kube(kube_api_module: KubeApi) -> Iterator[KubeApi]:
    install_crd(kube_api_module)
    yield kube_api_module


@pytest.mark.parametrize(("path", "value", "word"), CASES, ids=IDS)
def test_refused_by_the_api_server_and_by_stagegate(
    kube: KubeApi, path: str, value: Any, word: str
) -> None:
    doc = manifest(f"bad-{abs(hash((path, repr(value)))) % 10**8}")
    _set(doc, path, value)
    out = kube.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(doc), check=False
    )
    assert out.returncode != 0, out.stdout
    assert word in out.stderr, out.stderr
    with pytest.raises(SpecError) as refused:
        parse_manifest(doc)
    assert word in str(refused.value)
    assert "\n" not in str(refused.value).strip() or word in str(refused.value).splitlines()[0]


@pytest.mark.parametrize(
    ("name", "word"),
    [
        ("x" * 63, "47"),
        ("Upper-Case", "metadata.name"),
        ("under_score", "metadata.name"),
    ],
)
def test_names_the_children_could_not_carry_are_refused(
    kube: KubeApi, name: str, word: str
) -> None:
    out = kube.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(manifest(name)), check=False
    )
    assert out.returncode != 0 and word in out.stderr, out.stderr


def test_a_valid_manifest_passes_both(kube: KubeApi) -> None:
    doc = manifest("fine")
    kube.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(doc))
    parse_manifest(doc)


def test_an_empty_and_a_huge_manifest_are_refused(kube: KubeApi) -> None:
    empty = {
        "apiVersion": "stagegate.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "empty"},
    }
    out = kube.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(empty), check=False
    )
    assert out.returncode != 0 and "spec" in out.stderr, out.stderr
    with pytest.raises(SpecError, match="spec"):
        parse_manifest(empty)
    huge = manifest("huge")
    huge["spec"]["symbol"] = "B" * 4_000_000
    out = kube.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(huge), check=False
    )
    assert out.returncode != 0, out.stdout
    with pytest.raises(SpecError, match="symbol"):
        parse_manifest(huge)
