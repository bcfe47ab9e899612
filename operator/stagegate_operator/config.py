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
    resync_seconds: float = 10.0
    watch_timeout: int = 60
    verbose: bool = False
    # The command the step pods run; the trainer image puts `stagegate` on PATH.
    trainer_command: tuple[str, ...] = ("stagegate",)
    # From the environment the Helm chart sets (STAGEGATE_TRAINER_IMAGE, ...).
    defaults: TrainerDefaults = field(default_factory=TrainerDefaults)
