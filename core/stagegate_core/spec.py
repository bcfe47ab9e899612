"""The TrainingJob spec: the single source of truth for the manifest, its defaults and the CRD.

Everything a user can write under `spec:` is declared once: its sections in `specparts.py`,
their whole here. The CRD's openAPIV3Schema is
generated from these models (see `crd.py`); the CLI parses manifests through `load_manifest` /
`parse_manifest` (for the local runner it hands them to, and in every step pod, which reads the
operator's ConfigMap), and the operator validates a TrainingJob's `spec` with the same
`TrainingJobSpec`, so a field means the same everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from . import timeframes
from .specparts import (
    STAGES,
    TIMEFRAME_SPELLINGS,
    ApprovalSpec,
    ArtifactsSpec,
    CamelModel,
    CostsSpec,
    DataSpec,
    FeaturesSpec,
    GatesSpec,
    LabelSpec,
    ModelSpec,
    StageName,
    StageResources,
    StagesSpec,
)

API_GROUP = "stagegate.io"
API_VERSION = "v1alpha1"
KIND = "TrainingJob"
PLURAL = "trainingjobs"
SINGULAR = "trainingjob"
SHORT_NAMES = ("tj",)


class SpecError(ValueError):
    """A manifest that cannot run; the message names the field path and the reason."""


class TrainingJobSpec(CamelModel):
    symbol: str = Field(pattern=r"^[A-Z0-9]+/[A-Z0-9]+$", description="e.g. BTC/USDT")
    timeframe: Literal[TIMEFRAME_SPELLINGS] = "M15"  # type: ignore[valid-type]
    mode: Literal["sequential", "quick", "full"] = Field(
        "sequential", description="sequential: quick, approval gate, then full."
    )
    data: DataSpec = Field(default_factory=DataSpec)
    stages: StagesSpec = Field(default_factory=StagesSpec)
    label: LabelSpec = Field(default_factory=LabelSpec)
    features: FeaturesSpec = Field(default_factory=FeaturesSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    gates: GatesSpec = Field(default_factory=GatesSpec)
    costs: CostsSpec = Field(default_factory=CostsSpec)
    approval: ApprovalSpec = Field(default_factory=ApprovalSpec)
    parallelism: int = Field(4, ge=1, le=256, description="Fold Jobs running at once.")
    max_retries: int = Field(2, ge=0, le=20, description="Retries of a failed fold.")
    resources: StageResources = Field(default_factory=StageResources)
    image: str | None = Field(
        None,
        min_length=1,
        description="Trainer image; default: the operator's (Helm trainer.image).",
    )
    queue_name: str | None = Field(None, description="Kueue LocalQueue for the Jobs.")
    pending_timeout_seconds: int = Field(
        900,
        ge=10,
        le=7 * 24 * 3600,
        description="Cluster only: a step pod the scheduler cannot place for this long ends "
        "the run Failed (its wait is shown in the status and an Event meanwhile).",
    )
    suspend: bool = False
    artifacts: ArtifactsSpec = Field(default_factory=ArtifactsSpec)

    @property
    def canonical_timeframe(self) -> str:
        return timeframes.canonical(self.timeframe)

    def purge_bars(self, stage: StageName) -> int:
        configured = self.stages.get(stage).purge_bars
        return self.min_purge_bars if configured is None else configured

    @property
    def min_purge_bars(self) -> int:
        # Entry is the next bar's open, so the label looks horizon + 1 bars past its row.
        return self.label.horizon_bars + 1

    def leaky_purge_warnings(self) -> list[str]:
        """One line per stage whose purge lets training labels overlap its test period."""
        return [
            f"spec.stages.{stage}.purgeBars {self.purge_bars(stage)} is below "
            f"label.horizonBars + 1 = {self.min_purge_bars} (allowLeakyPurge): training labels "
            "can see the test period, so its metrics are optimistic"
            for stage in STAGES
            if self.purge_bars(stage) < self.min_purge_bars
        ]

    @model_validator(mode="after")
    def _purge_covers_the_label(self) -> TrainingJobSpec:
        errors = [
            InitErrorDetails(
                type=PydanticCustomError(
                    "leaky_purge",
                    "must be at least {minimum} (label.horizonBars + 1), or training labels "
                    "overlap the test period; set allowLeakyPurge: true to accept the leak",
                    {"minimum": self.min_purge_bars},
                ),
                loc=("stages", stage, "purgeBars"),
                input=self.stages.get(stage).purge_bars,
            )
            for stage in STAGES
            if self.purge_bars(stage) < self.min_purge_bars
            and not self.stages.get(stage).allow_leaky_purge
        ]
        if errors:
            # Raised with the field's own location, so the message names spec.stages.X.purgeBars.
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    @model_validator(mode="after")
    def _context_is_another_symbol(self) -> TrainingJobSpec:
        if any(c.symbol == self.symbol for c in self.data.context):
            raise ValueError(f"data.context: {self.symbol} is the main symbol already")
        return self

    def stages_to_run(self) -> tuple[StageName, ...]:
        return {"sequential": STAGES, "quick": ("quick",), "full": ("full",)}[self.mode]


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    namespace: str = "default"
    uid: str | None = None


class TrainingJobManifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: Metadata
    spec: TrainingJobSpec

    @field_validator("api_version")
    @classmethod
    def _api_version(cls, value: str) -> str:
        expected = f"{API_GROUP}/{API_VERSION}"
        if value != expected:
            raise ValueError(f"must be {expected}")
        return value

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value != KIND:
            raise ValueError(f"must be {KIND}")
        return value


def _location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item.startswith(("function-", "constrained-")) or item in ("literal", "str"):
            continue  # pydantic's internal union branch names mean nothing to a user
        else:
            parts.append(("." if parts else "") + item)
    return "".join(parts) or "(document)"


def _reason(error: Any) -> str:
    kind, msg, ctx = error["type"], error["msg"], error.get("ctx") or {}
    friendly = {
        "greater_than": "must be greater than {gt}",
        "greater_than_equal": "must be at least {ge}",
        "less_than": "must be less than {lt}",
        "less_than_equal": "must be at most {le}",
        "extra_forbidden": "unknown field",
        "missing": "required field is missing",
        "literal_error": "must be one of {expected}",
        "string_pattern_mismatch": "does not match {pattern}",
    }
    if kind in friendly:
        return friendly[kind].format(**ctx)
    return str(msg).removeprefix("Value error, ")


def format_validation_error(exc: ValidationError, source: str = "") -> str:
    """One line per problem: `spec.stages.quick.testPeriodDays: must be greater than 0`."""
    lines = [f"{_location(tuple(e['loc']))}: {_reason(e)}" for e in exc.errors()]
    prefix = f"{source}: " if source else ""
    return prefix + "; ".join(lines)


def parse_manifest(document: Any, source: str = "manifest") -> TrainingJobManifest:
    if not isinstance(document, dict):
        raise SpecError(f"{source}: expected a TrainingJob mapping, got {type(document).__name__}")
    try:
        return TrainingJobManifest.model_validate(document)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, source)) from None


def load_manifest(path: str | Path) -> TrainingJobManifest:
    """Read one TrainingJob from a YAML file (the first TrainingJob if there are several).

    `env:NAME` reads the YAML from the environment variable NAME instead: that is how the
    operator hands the spec to its Job pods (from a ConfigMap it owns), with no volume to mount.
    """
    file = Path(path)
    if str(path).startswith("env:"):
        variable = str(path)[4:]
        if variable not in os.environ:
            raise SpecError(f"{path}: environment variable {variable} is not set")
        text = os.environ[variable]
    else:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError(f"{file}: cannot read: {exc.strerror or exc}") from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{file}: malformed YAML{where}: {problem}") from None
    if not documents:
        raise SpecError(f"{file}: the file holds no document")
    for document in documents:
        if isinstance(document, dict) and document.get("kind") == KIND:
            return parse_manifest(document, str(file))
    return parse_manifest(documents[0], str(file))


def spec_fingerprint(spec: TrainingJobSpec) -> str:
    """A hash of what determines results, so a run folder never mixes two specs.

    Scheduling fields (parallelism, resources, image, queue, suspend, approval, artifacts,
    mode) change how a run is executed, not what it computes, so they are left out; so are the
    gates, which judge the folds' results without changing them (a rerun judges the same folds
    by the new gates).
    """
    import hashlib
    import json

    relevant = spec.model_dump(
        mode="json",
        by_alias=True,
        # costs change every fold's trading metrics, so a run folder holds one cost model.
        # features: the dataset and every fold's model; a folder prepared with other features
        # would otherwise be reused as if it held this spec's results.
        include={"symbol", "timeframe", "data", "stages", "label", "features", "model", "costs"},
    )
    relevant["timeframe"] = spec.canonical_timeframe
    blob = json.dumps(relevant, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
