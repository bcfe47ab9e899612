"""The operator's settings, from its command line."""

from __future__ import annotations

from dataclasses import dataclass, field

from .defaults import TrainerDefaults


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: list[str] = field(default_factory=list)  # empty: every namespace
    kubeconfig: str | None = None
    metrics_port: int = 8000
    health_port: int = 8080
    # Where the metrics and health servers listen (all interfaces by default).
    bind_address: str = "0.0.0.0"
    resync_seconds: float = 10.0
    verbose: bool = False
    # The command the step pods run; the trainer image puts `stagegate` on PATH.
    trainer_command: tuple[str, ...] = ("stagegate",)
    # Leader election: None runs standalone (one replica); else the Lease's namespace and name.
    lease: tuple[str, str] | None = None
    identity: str = ""
    # From the environment the Helm chart sets (STAGEGATE_TRAINER_IMAGE, ...).
    defaults: TrainerDefaults = field(default_factory=TrainerDefaults)
