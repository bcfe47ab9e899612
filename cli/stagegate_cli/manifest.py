"""The TrainingJob `stagegate submit` creates: from SYMBOL TIMEFRAME and the old scripts' window
options, or from a manifest file, validated by the spec model before anything is sent."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import click
from stagegate_core.spec import API_GROUP, API_VERSION, KIND, load_manifest, parse_manifest
from stagegate_core.specparts import STAGES

from .errors import Refused


def default_name(symbol: str, timeframe: str) -> str:
    """`BTC/USDT`, `M15` -> `btc-usdt-m15` (a valid DNS-1123 name)."""
    raw = f"{symbol}-{timeframe}".lower()
    return re.sub(r"[^a-z0-9]+", "-", raw).strip("-")[:63]


def _stage_overrides(options: Mapping[str, Any]) -> dict[str, Any]:
    fields = {
        "testPeriodDays": options.get("test_period_days"),
        "minTrainDays": options.get("min_train_days"),
        "lookbackDays": options.get("lookback_days"),
        "maxFolds": options.get("max_folds"),
    }
    expanding = options.get("expanding")
    if expanding is not None:
        fields["trainWindow"] = "expanding" if expanding else "fixed"
    return {k: v for k, v in fields.items() if v is not None}


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    if value is None:
        return
    *parents, leaf = path.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def build_manifest(
    symbol: str | None,
    timeframe: str | None,
    from_file: str | None,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """The TrainingJob to create, validated by the spec model (SpecError on bad options)."""
    if from_file:
        doc = load_manifest(from_file).model_dump(mode="json", by_alias=True, exclude_unset=True)
    elif symbol:
        doc = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "metadata": {}, "spec": {}}
    else:
        raise click.UsageError("give SYMBOL [TIMEFRAME], or -f MANIFEST")
    spec = doc.setdefault("spec", {})
    _set(spec, "symbol", symbol.upper() if symbol else None)
    _set(spec, "timeframe", timeframe)
    for path, key in (
        ("mode", "mode"),
        ("approval.policy", "approval"),
        ("data.source", "data_source"),
        ("data.uri", "data_uri"),
        ("data.start", "start"),
        ("data.end", "end"),
        ("artifacts.uri", "artifacts"),
        ("artifacts.secretRef.name", "artifacts_secret"),
        ("image", "image"),
        ("parallelism", "parallelism"),
        ("queueName", "queue"),
    ):
        _set(spec, path, options.get(key))
    # The old API call's window fields apply to the stages this run will execute.
    stage_fields = _stage_overrides(options)
    if stage_fields:
        mode = spec.get("mode", "sequential")
        stages = [options["stage"]] if options.get("stage") else _mode_stages(mode)
        for stage in stages:
            spec.setdefault("stages", {}).setdefault(stage, {}).update(stage_fields)
    metadata = doc.setdefault("metadata", {})
    name = options.get("name") or metadata.get("name")
    if not name:
        name = default_name(spec.get("symbol", ""), spec.get("timeframe", "M15"))
    if options.get("unique"):
        name = f"{name[:47]}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    metadata["name"] = name
    source = from_file or "options"
    checked = parse_manifest(doc, source)
    return checked.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _mode_stages(mode: str) -> list[str]:
    return {"quick": ["quick"], "full": ["full"]}.get(mode, list(STAGES))


def place(manifest: dict[str, Any], namespace: str | None) -> None:
    """Put the manifest in the target namespace; refuse a contradiction, as kubectl does."""
    written = manifest["metadata"].get("namespace")
    if namespace and written and written != namespace:
        raise Refused(
            f"the manifest's namespace {written!r} does not match --namespace {namespace!r}"
        )
    if namespace or written:
        manifest["metadata"]["namespace"] = namespace or written
