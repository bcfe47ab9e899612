"""Cluster-wide defaults for the trainer pods, set by the Helm chart as environment variables.

A TrainingJob's own spec wins. Because the CRD fills in spec defaults on the API server, "not
set" means: no image, no queue, a local (scheme-less) artifacts folder, which no pod can share,
and resources left at the spec model's built-in values.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from stagegate_core import __version__
from stagegate_core.spec import TrainingJobSpec
from stagegate_core.specparts import StageResources

BUILTIN_IMAGE = f"ghcr.io/stagegate/trainer:{__version__}"


class DefaultsError(ValueError):
    pass


@dataclass(frozen=True)
class TrainerDefaults:
    image: str = BUILTIN_IMAGE
    resources: StageResources | None = None
    artifacts_uri: str | None = None
    artifacts_secret: str | None = None
    queue_name: str | None = None
    service_account: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> TrainerDefaults:
        env = dict(os.environ if env is None else env)

        def get(name: str) -> str | None:
            return env.get(name) or None

        resources = None
        if get("STAGEGATE_TRAINER_RESOURCES"):
            try:
                resources = StageResources.model_validate(
                    json.loads(env["STAGEGATE_TRAINER_RESOURCES"])
                )
            except ValueError as exc:
                raise DefaultsError(f"STAGEGATE_TRAINER_RESOURCES: {exc}") from None
        return cls(
            image=get("STAGEGATE_TRAINER_IMAGE") or BUILTIN_IMAGE,
            resources=resources,
            artifacts_uri=get("STAGEGATE_ARTIFACTS_URI"),
            artifacts_secret=get("STAGEGATE_ARTIFACTS_SECRET"),
            queue_name=get("STAGEGATE_QUEUE_NAME"),
            service_account=get("STAGEGATE_TRAINER_SERVICE_ACCOUNT"),
        )

    def apply(self, spec: TrainingJobSpec) -> TrainingJobSpec:
        update: dict[str, Any] = {}
        if spec.image is None:
            update["image"] = self.image
        if spec.queue_name is None and self.queue_name:
            update["queue_name"] = self.queue_name
        if self.resources is not None and spec.resources == StageResources():
            update["resources"] = self.resources
        if "://" not in spec.artifacts.uri and self.artifacts_uri:
            secret = spec.artifacts.secret_ref
            if secret is None and self.artifacts_secret:
                secret = {"name": self.artifacts_secret}  # type: ignore[assignment]
            update["artifacts"] = spec.artifacts.model_validate(
                {"uri": self.artifacts_uri, "secretRef": secret}
            )
        return spec.model_copy(update=update) if update else spec
