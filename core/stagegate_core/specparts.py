"""The sections of a TrainingJob's spec (data, stages, label, features, model, gates, costs,
approval, resources, artifacts): each a model with its defaults, validators and CRD descriptions.

`spec.py` puts them together into `TrainingJobSpec`; the CRD is generated from the whole.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from . import featureset, timeframes

StageName = Literal["quick", "full"]
STAGES: tuple[StageName, ...] = ("quick", "full")
TIMEFRAME_SPELLINGS = tuple(timeframes.MINUTES) + tuple(
    timeframes.to_ccxt(t) for t in timeframes.MINUTES
)


class CamelModel(BaseModel):
    """The base of every spec model."""

    # camelCase in YAML, snake_case in Python; unknown fields are errors, as with
    # `kubectl apply --validate=strict` against the generated CRD.
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


def _once_each(what: str, names: list[str]) -> None:
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{what} named twice: {', '.join(twice)}")


class ContextSpec(CamelModel):
    """Another symbol as an input: its return and volatility features join the main symbol's,
    each bar entering only once it has closed."""

    symbol: str = Field(pattern=r"^[A-Z0-9]+/[A-Z0-9]+$", description="e.g. ETH/USDT")
    source: Literal["bundled", "ccxt", "s3", "file"] | None = Field(
        None, description="Default: the main data's source (and exchange)."
    )
    uri: str | None = Field(None, description="Parquet or CSV for source s3 or file.")

    @model_validator(mode="after")
    def _uri_matches_source(self) -> ContextSpec:
        if self.source in ("s3", "file") and not self.uri:
            raise ValueError(f"uri is required when source is {self.source!r}")
        return self


class DataSpec(CamelModel):
    """Where the candles come from."""

    source: Literal["bundled", "ccxt", "s3", "file"] = Field(
        "bundled", description="bundled: the real BTC/USDT slice shipped with Stagegate."
    )
    exchange: str = Field("binance", min_length=1, description="ccxt exchange id.")
    uri: str | None = Field(None, description="Parquet or CSV for source s3 or file.")
    start: datetime | None = Field(None, description="First bar to use (UTC).")
    end: datetime | None = Field(
        None, description="Last bar to use (UTC); default: the last bar when the run starts."
    )
    context: list[ContextSpec] = Field(
        default_factory=list, description="Other symbols whose features the model also sees."
    )
    ohlc_tolerance: float = Field(
        1e-9,
        ge=0,
        le=1e-3,
        description="Relative tolerance of the OHLC consistency checks (high >= open, close, "
        "low; low <= open, close): bars off by less are rounding noise, clamped and counted.",
    )

    @model_validator(mode="after")
    def _uri_matches_source(self) -> DataSpec:
        if self.source in ("s3", "file") and not self.uri:
            raise ValueError(f"uri is required when source is {self.source!r}")
        if self.start and self.end and self.start >= self.end:
            raise ValueError("start must be before end")
        _once_each("context symbols", [c.symbol for c in self.context])
        return self


class StageSpec(CamelModel):
    """One walk-forward stage. Defaults differ per stage (see QuickStageSpec, FullStageSpec)."""

    lookback_days: Annotated[int, Field(gt=0)] | None = Field(
        None, description="Use only the last N days of data; unset: all data."
    )
    train_window: Literal["fixed", "expanding"] = "expanding"
    min_train_days: int = Field(
        120, gt=0, description="Training days per fold (fixed) or for the first fold (expanding)."
    )
    test_period_days: int = Field(21, gt=0, description="Length of each out-of-sample period.")
    step_days: Annotated[int, Field(gt=0)] | None = Field(
        None, description="Days between consecutive test periods; default: testPeriodDays."
    )
    max_folds: Annotated[int, Field(gt=0)] | None = Field(
        None, description="Keep only the most recent N folds; unset: every fold that fits."
    )
    purge_bars: Annotated[int, Field(ge=0)] | None = Field(
        None,
        description="Bars dropped between training and test; default and minimum: "
        "label.horizonBars + 1 (less lets training labels see the test period).",
    )
    allow_leaky_purge: bool = Field(
        False,
        description="Accept a purgeBars below label.horizonBars + 1; the status and the model "
        "card then carry a warning.",
    )


class QuickStageSpec(StageSpec):
    lookback_days: Annotated[int, Field(gt=0)] | None = 365
    train_window: Literal["fixed", "expanding"] = "fixed"
    min_train_days: int = Field(180, gt=0)
    test_period_days: int = Field(60, gt=0)
    max_folds: Annotated[int, Field(gt=0)] | None = 5


class FullStageSpec(StageSpec):
    pass


class StagesSpec(CamelModel):
    quick: QuickStageSpec = Field(default_factory=QuickStageSpec)
    full: FullStageSpec = Field(default_factory=FullStageSpec)

    def get(self, stage: StageName) -> StageSpec:
        return self.quick if stage == "quick" else self.full


class LabelSpec(CamelModel):
    """Long entry at the next bar's open; what counts as a win is `kind`."""

    barriers: Literal["volatility", "fixed"] = Field(
        "volatility", description="volatility: multiples of ATR; fixed: fractions of the entry."
    )
    kind: Literal["barriers", "horizon"] = Field(
        "barriers",
        description="barriers: 1 when take-profit comes before stop-loss within horizonBars; "
        "horizon: the sign of the return from the entry to the close horizonBars later, rows "
        "inside ±deadBand dropped. Trading metrics simulate the barrier trade either way.",
    )
    take_profit: float = Field(2.0, gt=0)
    stop_loss: float = Field(1.0, gt=0)
    horizon_bars: int = Field(48, gt=0, le=10_000)
    atr_bars: int = Field(14, gt=1, le=1_000)
    dead_band: float = Field(
        0.0, ge=0, lt=1, description="horizon labels: returns within ± this fraction are dropped."
    )


class FeatureWindowsSpec(CamelModel):
    """Window lengths, in bars, of the groups that have one column per window."""

    returns: list[Annotated[int, Field(ge=1, le=10_000)]] = Field(
        default_factory=lambda: list(featureset.RETURN_LAGS), min_length=1
    )
    volatility: list[Annotated[int, Field(ge=2, le=10_000)]] = Field(
        default_factory=lambda: list(featureset.VOL_WINDOWS), min_length=1
    )
    volume: list[Annotated[int, Field(ge=2, le=10_000)]] = Field(
        default_factory=lambda: list(featureset.VOLUME_WINDOWS), min_length=1
    )
    range: list[Annotated[int, Field(ge=1, le=10_000)]] = Field(
        default_factory=lambda: list(featureset.RANGE_WINDOWS), min_length=1
    )
    trend: list[Annotated[int, Field(ge=2, le=10_000)]] = Field(
        default_factory=lambda: list(featureset.EMA_SPANS), min_length=1
    )


class CustomFeatureSpec(CamelModel):
    """A feature from an installed package: entry point `name` of group `stagegate.features`."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$", description="Entry point name.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the feature's function."
    )


class FeatureGuardSpec(CamelModel):
    """The look-ahead guard and quality checks `prepare` runs on every feature."""

    cuts: int = Field(3, ge=1, le=50, description="Random cut points of the causality check.")
    warmup_bars: int = Field(
        1000, ge=0, le=100_000, description="Leading bars the NaN and constant checks skip."
    )
    max_nan_fraction: float = Field(
        0.05, ge=0, le=1, description="Most NaN a feature may have after the warm-up."
    )


class FeaturesSpec(CamelModel):
    """What the model sees: built-in groups, their windows, and custom features."""

    groups: list[Literal[featureset.GROUPS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(featureset.GROUPS)
    )
    windows: FeatureWindowsSpec = Field(default_factory=FeatureWindowsSpec)
    custom: list[CustomFeatureSpec] = Field(default_factory=list)
    guard: FeatureGuardSpec = Field(default_factory=FeatureGuardSpec)

    def builtin_names(self) -> tuple[str, ...]:
        windows = self.windows.model_dump()
        return featureset.feature_names(self.groups, windows)

    @model_validator(mode="after")
    def _something_to_learn_from(self) -> FeaturesSpec:
        if not self.groups and not self.custom:
            raise ValueError("choose at least one feature group or custom feature")
        _once_each("custom features", [c.name for c in self.custom])
        return self


class ThresholdSpec(CamelModel):
    """How the probability cut that turns a score into a trade is chosen, on training rows only.

    Every objective is evaluated on the purged inner validation rows (the tail of the training
    window), never on the test fold.
    """

    objective: Literal["f1", "expectedReturn", "precisionAtRecall", "fixed"] = Field(
        "expectedReturn",
        description="f1: maximise F1; expectedReturn: maximise the mean net R per trade with at "
        "least minTrades trades; precisionAtRecall: highest precision with recall >= recall; "
        "fixed: the cut `value`.",
    )
    value: float = Field(0.5, ge=0, le=1, description="The cut for objective fixed.")
    recall: float = Field(
        0.3, gt=0, le=1, description="Minimum recall for objective precisionAtRecall."
    )
    min_trades: int = Field(
        50, ge=1, description="Fewest validation trades a cut may give (expectedReturn)."
    )


class ModelSpec(CamelModel):
    """LightGBM parameters Stagegate exposes; each maps to one LightGBM parameter."""

    seed: int = Field(42, ge=0)
    num_leaves: int = Field(31, ge=2, le=131_072)
    learning_rate: float = Field(0.05, gt=0, le=1)
    max_rounds: int = Field(500, ge=1, le=100_000, description="num_boost_round ceiling.")
    early_stopping_rounds: int = Field(
        50,
        ge=1,
        description="Patience: rounds without improvement of earlyStoppingMetric on the inner "
        "validation rows before the search stops.",
    )
    min_rounds: int = Field(
        50,
        ge=1,
        description="The chosen number of rounds is never below this (capped at maxRounds): a "
        "noisy validation tail must not pick a model of one or two trees.",
    )
    early_stopping_metric: Literal["binary_logloss", "auc", "average_precision"] = Field(
        "auc",
        description="Metric on the inner validation rows that chooses the number of rounds "
        "(defaults measured with bench/bench_early_stopping.py).",
    )
    refit: Literal["final", "all", "none"] = Field(
        "final",
        description="Refit on the whole training window with the chosen rounds scaled by "
        "rows(window) / rows(inner split): final: the final model only; all: every fold too; "
        "none: never (models trained on the inner rows only).",
    )
    min_data_in_leaf: int = Field(100, ge=1)
    feature_fraction: float = Field(0.8, gt=0, le=1)
    bagging_fraction: float = Field(0.8, gt=0, le=1)
    bagging_freq: int = Field(1, ge=0)
    lambda_l2: float = Field(1.0, ge=0)
    max_depth: int = Field(-1, ge=-1)
    validation_fraction: float = Field(
        0.2,
        gt=0,
        lt=0.5,
        description="Tail of each training window used for early stopping and the threshold.",
    )
    threshold: ThresholdSpec = Field(default_factory=ThresholdSpec)


class GatesSpec(CamelModel):
    """What the quick stage must show before the full stage may run (stage means)."""

    min_accuracy: float = Field(0.60, ge=0, le=1)
    min_recall: float = Field(0.35, ge=0, le=1)
    min_roc_auc: float = Field(0.61, ge=0, le=1)
    min_f1: float = Field(0.45, ge=0, le=1)
    must_beat_baselines: bool = Field(
        True,
        description="Per fold, paired, with a one-sided lower confidence bound of the "
        "difference above zero: accuracy must beat the majority class, net expected R per "
        "trade must beat trading every bar (always positive), ROC AUC and net expected R must "
        "beat the volatility/time-of-day model.",
    )
    min_expected_return: float | None = Field(
        0.0,
        description="Lower confidence bound of the mean per-fold net expected return per "
        "trade, in R, must reach this; null: no gate (a client-side kubectl apply drops a "
        "null: use kubectl create or apply --server-side).",
    )
    min_trades: Annotated[int, Field(ge=0)] | None = Field(
        100,
        description="Out-of-sample trades over the stage's folds; null: no gate (a "
        "client-side kubectl apply drops a null: use kubectl create or apply --server-side); "
        "0 always passes.",
    )
    confidence: float = Field(
        0.9, gt=0.5, lt=1, description="Confidence of the one-sided t bounds over folds."
    )


class CostsSpec(CamelModel):
    """Trading costs charged on every trade's entry and exit (defaults: Binance spot taker)."""

    fee_bps: float = Field(10.0, ge=0, le=1000, description="Fee per side, basis points.")
    slippage_bps: float = Field(
        2.0, ge=0, le=1000, description="Slippage per side against the modelled price, bps."
    )


class ApprovalSpec(CamelModel):
    policy: Literal["manual", "auto"] = Field(
        "manual", description="auto: proceed when every gate passes, reject otherwise."
    )


class ResourceList(CamelModel):
    # Kubernetes quantities, passed through as written ("4Gi", "500m").
    cpu: str | None = None
    memory: str | None = None


class ResourceRequirements(CamelModel):
    requests: ResourceList = Field(default_factory=ResourceList)
    limits: ResourceList = Field(default_factory=ResourceList)


def _quick_resources() -> ResourceRequirements:
    # The replaced system sized quick workers at 4-8 GB and full workers at 8-16 GB.
    return ResourceRequirements(
        requests=ResourceList(cpu="1", memory="4Gi"), limits=ResourceList(memory="8Gi")
    )


def _full_resources() -> ResourceRequirements:
    return ResourceRequirements(
        requests=ResourceList(cpu="2", memory="8Gi"), limits=ResourceList(memory="16Gi")
    )


class StageResources(CamelModel):
    quick: ResourceRequirements = Field(default_factory=_quick_resources)
    full: ResourceRequirements = Field(default_factory=_full_resources)


class SecretRef(CamelModel):
    name: str = Field(min_length=1)


class ArtifactsSpec(CamelModel):
    uri: str = Field(
        "stagegate-runs",
        description="s3://bucket/prefix, file:///path or a local folder; "
        "each run goes under <namespace>/<name>/<uid>.",
    )
    secret_ref: SecretRef | None = Field(
        None, description="Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL."
    )
    volume_claim: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        max_length=253,
        description="A ReadWriteMany PersistentVolumeClaim mounted in every step pod at the "
        "path of uri, which must then be file:///path.",
    )

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, uri: str) -> str:
        if "://" in uri and not uri.startswith(("s3://", "file://")):
            raise ValueError("must start with s3:// or file://")
        return uri

    @model_validator(mode="after")
    def _claim_needs_a_mount_path(self) -> ArtifactsSpec:
        # The claim is mounted at the URI's path, so the URI must be an absolute file:// path
        # (and not the root or /tmp, which the pod already uses).
        if self.volume_claim is not None and not (
            self.uri.startswith("file:///") and self.mount_path() not in ("/", "/tmp")
        ):
            raise ValueError(
                "uri must be file:///<absolute path> when volumeClaim is set: the claim is "
                f"mounted at that path in every step pod (got {self.uri!r})"
            )
        return self

    def mount_path(self) -> str:
        """Where a file:// URI points inside the pods ('/' normalised away at the end)."""
        return "/" + self.uri.removeprefix("file://").strip("/")
