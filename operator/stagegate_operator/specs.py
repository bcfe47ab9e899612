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
from typing import Any, TypeVar

import yaml
from stagegate_core.spec import TrainingJobSpec, spec_fingerprint

from . import children
from .cache import Key
from .kubeapi import KubeApi

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

Version = tuple[Any, Any]  # uid, generation
T = TypeVar("T")

# The steering fields as the manifest and status.runSpec name them.
STEERING_KEYS = frozenset(
    TrainingJobSpec.model_fields[field].serialization_alias or field for field in STEERING
)


@dataclass(frozen=True)
class Validated:
    spec: TrainingJobSpec  # as the TrainingJob gives it now
    fingerprint: str  # spec_fingerprint(spec)


class Specs:
    """Per TrainingJob, by (namespace, name): its last validated spec, and how that departs
    from the spec its run started with; each worked out once per generation."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self._known: dict[Key, tuple[Version, Validated]] = {}
        self._departed: dict[Key, tuple[Version, tuple[str, ...]]] = {}
        self._confirmed: dict[Key, tuple[Version, tuple[str, ...]]] = {}
        self._started: dict[Key, tuple[Any, TrainingJobSpec]] = {}  # by uid: never changes

    def validated(self, body: Mapping[str, Any]) -> Validated:
        """The TrainingJob's spec and fingerprint; raises pydantic's ValidationError."""

        def validate() -> Validated:
            spec = TrainingJobSpec.model_validate(body.get("spec") or {})
            return Validated(spec, spec_fingerprint(spec))

        return _per_generation(self._known, body, validate)

    def departures(
        self,
        body: Mapping[str, Any],
        run_spec: Mapping[str, Any],
        effective: Callable[[], TrainingJobSpec],
    ) -> tuple[str, ...]:
        """`departures(run_spec, effective())`: the run's spec does not change, and
        `effective` only adds the operator's fixed defaults to the spec of this generation."""
        return _per_generation(self._departed, body, lambda: departures(run_spec, effective()))

    def confirmed(
        self,
        body: Mapping[str, Any],
        started: TrainingJobSpec,
        effective: Callable[[], TrainingJobSpec],
    ) -> tuple[str, ...]:
        """The departures of `effective()` from the frozen spec itself, nulls and fields that
        its operator did not know (they read as their defaults) included."""
        return _per_generation(
            self._confirmed,
            body,
            lambda: departures(
                started.model_dump(mode="json", by_alias=True), effective(), nulls=True
            ),
        )

    async def started(self, body: Mapping[str, Any]) -> TrainingJobSpec:
        """The spec the run started with, from its ConfigMap: read once per run, as a refused
        change is refused again on every pass and the ConfigMap is written once."""
        meta = body["metadata"]
        key, uid = (meta["namespace"], meta["name"]), meta.get("uid")
        found = self._started.get(key)
        if found is not None and found[0] == uid:
            return found[1]
        configmap = await self.api.request(
            "GET", KubeApi.path("v1", key[0], "configmaps", children.spec_configmap_name(key[1]))
        )
        spec = frozen(configmap)
        self._started[key] = (uid, spec)
        return spec

    def forget(self, namespace: str, name: str) -> None:
        for known in (self._known, self._departed, self._confirmed, self._started):
            known.pop((namespace, name), None)


def _per_generation(
    known: dict[Key, tuple[Version, T]], body: Mapping[str, Any], work_out: Callable[[], T]
) -> T:
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    version = (meta.get("uid"), meta.get("generation"))
    found = known.get(key)
    if found is not None and None not in version and found[0] == version:
        return found[1]
    value = work_out()
    known[key] = (version, value)
    return value


def departures(
    run_spec: Mapping[str, Any], effective: TrainingJobSpec, *, nulls: bool = False
) -> tuple[str, ...]:
    """The fields, other than the steering ones, in which `effective` (the spec as given now,
    with the operator's defaults) differs from the spec the run started with (`status.runSpec`,
    dumped the same way: without nulls unless `nulls`), by their manifest names. The
    fingerprint alone would miss fields that do not change results (gates, mode, artifacts),
    which the run's Jobs read from the frozen spec all the same."""
    now = effective.model_dump(mode="json", by_alias=True, exclude_none=not nulls)
    fields = (now.keys() | run_spec.keys()) - STEERING_KEYS
    return tuple(sorted(f for f in fields if now.get(f) != run_spec.get(f)))


def frozen(configmap: Mapping[str, Any]) -> TrainingJobSpec:
    """The spec the run started with, from its ConfigMap (see children.spec_configmap)."""
    manifest = yaml.safe_load(configmap["data"][children.MANIFEST_KEY])
    return TrainingJobSpec.model_validate(manifest["spec"])


def steered(started: TrainingJobSpec, now: TrainingJobSpec) -> TrainingJobSpec:
    """The spec a run started with, with the steering fields as they are now."""
    return started.model_copy(update={f: getattr(now, f) for f in STEERING})
