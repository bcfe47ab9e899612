"""Builders for the objects a TrainingJob owns: its spec ConfigMap and its step Jobs. Pure.

Names are deterministic (`<tj>-<stage>-fold-<NN>`), so a create that answers 409 AlreadyExists
means the child is there already and is adopted, and a restarted operator finds its children.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from stagegate_core.approval import APPROVAL_ENV
from stagegate_core.keys import LABEL_FOLD, LABEL_STAGE, LABEL_STEP, LABEL_TJ
from stagegate_core.results import RESULT_FILE_ENV
from stagegate_core.spec import API_GROUP, API_VERSION, KIND, TrainingJobSpec
from stagegate_core.specparts import StageName

from .defaults import BUILTIN_IMAGE

GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"  # the TrainingJob's apiVersion
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
MANIFEST_KEY = "trainingjob.yaml"
MANIFEST_ENV = "STAGEGATE_MANIFEST"
TERMINATION_LOG = "/dev/termination-log"
# Finished Jobs stay a day for `kubectl logs`; the status keeps their results after that.
TTL_SECONDS = 86_400
TRAINER_GID = 10001  # Dockerfile.trainer's group (USER 10001:10001)


def spec_configmap_name(tj: str) -> str:
    return f"{tj}-spec"


def prepare_job_name(tj: str) -> str:
    return f"{tj}-prepare"


def fold_job_name(tj: str, stage: str, fold: int) -> str:
    return f"{tj}-{stage}-fold-{fold:02d}"


def summary_job_name(tj: str, stage: str) -> str:
    return f"{tj}-{stage}-summary"


def final_job_name(tj: str) -> str:
    return f"{tj}-final"


def step_names(tj: str) -> dict[str, Any]:
    """The names of one TrainingJob's step Jobs, as observe.observe takes them."""
    return {
        "prepare": prepare_job_name(tj),
        "fold": lambda stage, n: fold_job_name(tj, stage, n),
        "final": final_job_name(tj),
        "summary": lambda stage: summary_job_name(tj, stage),
    }


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": GROUP_VERSION,
        "kind": KIND,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def spec_configmap(
    name: str, namespace: str, uid: str, spec: TrainingJobSpec, labels: dict[str, str]
) -> dict[str, Any]:
    """The spec the run executes, frozen at its start and handed to every step's pod."""
    manifest = {
        "apiVersion": GROUP_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        # Nulls kept: a field whose null means "off" or "no limit" (gates.minTrades,
        # stages.quick.maxFolds) would otherwise come back as its non-null default in the pods.
        "spec": spec.model_dump(mode="json", by_alias=True),
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": spec_configmap_name(name),
            "namespace": namespace,
            "labels": {LABEL_TJ: name, **labels},
            "ownerReferences": [owner_reference(name, uid)],
        },
        "data": {MANIFEST_KEY: yaml.safe_dump(manifest, sort_keys=True)},
    }


def _resources(spec: TrainingJobSpec, stage: StageName) -> dict[str, Any]:
    wanted = spec.resources.quick if stage == "quick" else spec.resources.full
    out: dict[str, Any] = {}
    for kind in ("requests", "limits"):
        values = getattr(wanted, kind).model_dump(exclude_none=True)
        if values:
            out[kind] = values
    return out


def _threads(spec: TrainingJobSpec, stage: StageName) -> str:
    """LightGBM threads = the CPUs the pod asked for (at least one), never the node's count."""
    wanted = spec.resources.quick if stage == "quick" else spec.resources.full
    cpu = wanted.limits.cpu or wanted.requests.cpu or "1"
    cores = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    return str(max(1, int(cores)))


def _env(name: str, spec: TrainingJobSpec, approval: str | None) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {
            "name": MANIFEST_ENV,
            "valueFrom": {
                "configMapKeyRef": {"name": spec_configmap_name(name), "key": MANIFEST_KEY}
            },
        },
        {"name": RESULT_FILE_ENV, "value": TERMINATION_LOG},
    ]
    if approval is not None:
        env.append({"name": APPROVAL_ENV, "value": approval})
    secret = spec.artifacts.secret_ref
    if secret is not None:
        # Credentials reach the pod from the Secret only: never the spec, status or events.
        for key, optional in (
            ("AWS_ACCESS_KEY_ID", False),
            ("AWS_SECRET_ACCESS_KEY", False),
            ("AWS_ENDPOINT_URL", True),
            ("AWS_DEFAULT_REGION", True),
        ):
            env.append(
                {
                    "name": key,
                    "valueFrom": {
                        "secretKeyRef": {"name": secret.name, "key": key, "optional": optional}
                    },
                }
            )
    return env


@dataclass(frozen=True)
class Owner:
    """The TrainingJob the step Jobs belong to, and how their pods run."""

    name: str
    namespace: str
    uid: str
    spec: TrainingJobSpec
    command: tuple[str, ...] = ("stagegate",)
    service_account: str | None = None


def step_job(
    owner: Owner,
    *,
    stage: StageName,
    job_name: str,
    args: list[str],
    step: str,
    fold: int | None = None,
    approval: str | None = None,
) -> dict[str, Any]:
    spec = owner.spec
    labels = {LABEL_TJ: owner.name, LABEL_STAGE: stage, LABEL_STEP: step}
    if fold is not None:
        labels[LABEL_FOLD] = str(fold)
    if spec.queue_name:
        labels[QUEUE_LABEL] = spec.queue_name
    container: dict[str, Any] = {
        "name": "trainer",
        "image": spec.image or BUILTIN_IMAGE,
        "command": [*owner.command, *args],
        "env": _env(owner.name, spec, approval),
        "terminationMessagePath": TERMINATION_LOG,
        # The root filesystem is read-only; the image points HOME and TMPDIR at /tmp.
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    resources = _resources(spec, stage)
    if resources:
        container["resources"] = resources
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        # What the `restricted` Pod Security level asks of every pod.
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    claim = spec.artifacts.volume_claim
    if claim is not None:
        # The shared artifacts folder: the same ReadWriteMany claim at the same path (the
        # file:// URI's) in every step pod, so each step sees the others' results.
        pod["volumes"].append({"name": "artifacts", "persistentVolumeClaim": {"claimName": claim}})
        container["volumeMounts"].append(
            {"name": "artifacts", "mountPath": spec.artifacts.mount_path()}
        )
        # fsGroup makes the volume group-owned and adds the group to the pod's processes, so
        # the non-root trainer can write it whatever uid its image runs as.
        pod["securityContext"]["fsGroup"] = TRAINER_GID
    if owner.service_account:
        pod["serviceAccountName"] = owner.service_account
    job: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name,
            "namespace": owner.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(owner.name, owner.uid)],
        },
        "spec": {
            "backoffLimit": spec.max_retries,
            "ttlSecondsAfterFinished": TTL_SECONDS,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
    if spec.queue_name:
        # Kueue admits the Job by unsuspending it.
        job["spec"]["suspend"] = True
    return job


MANIFEST_ARG = f"env:{MANIFEST_ENV}"


def prepare_job(owner: Owner) -> dict[str, Any]:
    stage: StageName = owner.spec.stages_to_run()[0]
    return step_job(
        owner, stage=stage, job_name=prepare_job_name(owner.name),
        args=["prepare", MANIFEST_ARG], step="prepare",
    )  # fmt: skip


def fold_job(owner: Owner, stage: StageName, fold: int) -> dict[str, Any]:
    args = ["fold", MANIFEST_ARG, "--stage", stage, "--fold", str(fold)]
    args += ["--threads", _threads(owner.spec, stage)]
    return step_job(
        owner, stage=stage, job_name=fold_job_name(owner.name, stage, fold), args=args,
        step="fold", fold=fold,
    )  # fmt: skip


def summary_job(owner: Owner, stage: StageName) -> dict[str, Any]:
    return step_job(
        owner, stage=stage, job_name=summary_job_name(owner.name, stage),
        args=["summarise", MANIFEST_ARG, "--stage", stage], step="summary",
    )  # fmt: skip


def final_job(owner: Owner, approval: Mapping[str, Any]) -> dict[str, Any]:
    """The final model's Job; `approval` (see stagegate_core.approval) goes to its card."""
    args = ["final", MANIFEST_ARG, "--threads", _threads(owner.spec, "full")]
    return step_job(
        owner, stage="full", job_name=final_job_name(owner.name), args=args, step="final",
        approval=json.dumps(dict(approval), sort_keys=True),
    )  # fmt: skip
