"""A TrainingJob's spec as a pass uses it: validated and fingerprinted once per generation, and
the spec the run executes (the one frozen in its ConfigMap at the start, steered by the fields
that may change mid-run).

A pass runs on every event of a TrainingJob's Jobs, and validating the spec each time showed in
the operator's CPU at scale. The API server bumps `metadata.generation` on every spec change, so
(uid, generation) names one spec exactly; the uid tells a TrainingJob deleted and created again
under the same name, whose generation starts over.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from stagegate_core.spec import TrainingJobSpec, spec_fingerprint

from . import children

# Fields a user may change while a run goes on: they steer it without changing its results.
STEERING = (
    "suspend",
    "parallelism",
    "approval",
    "max_retries",
    "resources",
    "image",
    "queue_name",
    "pending_timeout_seconds",
)


@dataclass(frozen=True)
class Validated:
    spec: TrainingJobSpec  # as the TrainingJob gives it now
    fingerprint: str  # spec_fingerprint(spec)


class Specs:
    """The last validated spec of each TrainingJob, by (namespace, name)."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], tuple[tuple[Any, Any], Validated]] = {}

    def validated(self, body: Mapping[str, Any]) -> Validated:
        """The TrainingJob's spec and fingerprint; raises pydantic's ValidationError."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        version = (meta.get("uid"), meta.get("generation"))
        known = self._known.get(key)
        if known is not None and None not in version and known[0] == version:
            return known[1]
        spec = TrainingJobSpec.model_validate(body.get("spec") or {})
        validated = Validated(spec, spec_fingerprint(spec))
        self._known[key] = (version, validated)
        return validated

    def forget(self, namespace: str, name: str) -> None:
        self._known.pop((namespace, name), None)


def frozen(configmap: Mapping[str, Any]) -> TrainingJobSpec:
    """The spec the run started with, from its ConfigMap (see children.spec_configmap)."""
    manifest = yaml.safe_load(configmap["data"][children.MANIFEST_KEY])
    return TrainingJobSpec.model_validate(manifest["spec"])


def steered(started: TrainingJobSpec, now: TrainingJobSpec) -> TrainingJobSpec:
    """The spec a run started with, with the steering fields as they are now."""
    return started.model_copy(update={f: getattr(now, f) for f in STEERING})
