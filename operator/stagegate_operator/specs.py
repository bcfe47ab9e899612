"""A TrainingJob's spec as a pass uses it: validated and fingerprinted once per generation, and
the spec the run executes (the one frozen in its ConfigMap at the start, steered by the fields
that may change mid-run).

A pass runs on every event of a TrainingJob's Jobs, and validating the spec each time showed in
the operator's CPU at scale. The API server bumps `metadata.generation` on every spec change, so
(uid, generation) names one spec exactly; the uid tells a TrainingJob deleted and created again
under the same name, whose generation starts over.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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

# The same, as the manifest and status.runSpec name them.
STEERING_KEYS = frozenset(
    TrainingJobSpec.model_fields[field].serialization_alias or field for field in STEERING
)


@dataclass(frozen=True)
class Validated:
    spec: TrainingJobSpec  # as the TrainingJob gives it now
    fingerprint: str  # spec_fingerprint(spec)


class Specs:
    """The last validated spec of each TrainingJob, by (namespace, name)."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], tuple[tuple[Any, Any], Validated]] = {}
        self._departed: dict[tuple[str, str], tuple[tuple[Any, Any], tuple[str, ...]]] = {}

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

    def departures(
        self,
        body: Mapping[str, Any],
        run_spec: Mapping[str, Any],
        effective: Callable[[], TrainingJobSpec],
    ) -> tuple[str, ...]:
        """`departures(run_spec, effective())`, worked out once per generation (the run's spec
        does not change, and `effective` only adds the operator's fixed defaults)."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        version = (meta.get("uid"), meta.get("generation"))
        known = self._departed.get(key)
        if known is not None and None not in version and known[0] == version:
            return known[1]
        found = departures(run_spec, effective())
        self._departed[key] = (version, found)
        return found

    def forget(self, namespace: str, name: str) -> None:
        self._known.pop((namespace, name), None)
        self._departed.pop((namespace, name), None)


def departures(run_spec: Mapping[str, Any], effective: TrainingJobSpec) -> tuple[str, ...]:
    """The fields, other than the steering ones, in which `effective` (the spec as given now,
    with the operator's defaults) differs from the spec the run started with (`status.runSpec`,
    dumped the same way), by their manifest names. The fingerprint alone would miss fields that
    do not change results (gates, mode, artifacts), which the run's Jobs read from the frozen
    spec all the same."""
    now = effective.model_dump(mode="json", by_alias=True, exclude_none=True)
    fields = (now.keys() | run_spec.keys()) - STEERING_KEYS
    return tuple(sorted(f for f in fields if now.get(f) != run_spec.get(f)))


def frozen(configmap: Mapping[str, Any]) -> TrainingJobSpec:
    """The spec the run started with, from its ConfigMap (see children.spec_configmap)."""
    manifest = yaml.safe_load(configmap["data"][children.MANIFEST_KEY])
    return TrainingJobSpec.model_validate(manifest["spec"])


def steered(started: TrainingJobSpec, now: TrainingJobSpec) -> TrainingJobSpec:
    """The spec a run started with, with the steering fields as they are now."""
    return started.model_copy(update={f: getattr(now, f) for f in STEERING})
