"""The core stays light: the operator image, the CLI and every step import it, so nothing in it
may pull the numeric stack, the Kubernetes client or the other Stagegate packages."""

from __future__ import annotations

import pkgutil

import stagegate_core

from tests.support.imports import loaded_by

FORBIDDEN = (
    "numpy", "pandas", "pyarrow", "lightgbm", "sklearn", "matplotlib", "ccxt", "boto3",
    "kubernetes", "kopf", "aiohttp", "rich", "prometheus_client",
    "stagegate_trainer", "stagegate_operator", "stagegate_cli",
)  # fmt: skip


def core_modules() -> list[str]:
    return sorted(f"stagegate_core.{m.name}" for m in pkgutil.iter_modules(stagegate_core.__path__))


def test_the_core_has_the_modules_every_part_shares() -> None:
    names = {m.rsplit(".", 1)[1] for m in core_modules()}
    assert {"spec", "crd", "plan", "stagemachine", "status", "keys"} <= names


def test_importing_the_whole_core_loads_nothing_heavy() -> None:
    assert loaded_by(core_modules(), FORBIDDEN) == []
