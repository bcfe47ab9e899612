"""The final step: the production model trained on the latest window, written with its model
card (what it was trained on, how its rounds and threshold were chosen, the stages' evidence,
who approved it). Idempotent like every step: an existing model card is the result.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from typing import Any

from stagegate_core import layout, timeframes
from stagegate_core.spec import spec_fingerprint

from . import __version__
from .steps import Run, load_dataset


def final(
    run: Run, *, num_threads: int, approval: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Train the production model on the latest window and write it with its model card.

    The window is the full stage's training length ending at the last labelled bar. Rounds and
    threshold are chosen on the same inner early-stopping split and purge as every fold; then
    (unless `model.refit: none`) the model is refit on every row of the window, so the most
    recent months, the validation tail, are learnt from too.
    """
    import numpy as np
    from stagegate_core.plan import NS_PER_DAY, iso

    from .dataset import LABEL, model_columns, timestamps_ns
    from .fold import fit
    from .trading import OUTCOME_R, RISK_FRACTION, context_for, net_r

    if run.store.exists(layout.MODEL_CARD):
        card: dict[str, Any] = run.store.read_json(layout.MODEL_CARD)
        return card
    spec = run.spec
    dataset = load_dataset(run)
    ts = timestamps_ns(dataset)
    full = spec.stages.full
    bar_ns = timeframes.bar_ns(spec.canonical_timeframe)
    start_ns = int(ts[0])
    if full.train_window == "fixed":
        start_ns = max(start_ns, int(ts[-1]) + bar_ns - full.min_train_days * NS_PER_DAY)
    first = int(np.searchsorted(ts, start_ns))
    window = dataset.iloc[first:]
    names = model_columns(spec.features, dataset.columns)
    model = fit(
        window[names].to_numpy(dtype=np.float32),
        window[LABEL].to_numpy(dtype=np.float64),
        ts[first:],
        spec=spec.model,
        purge_ns=spec.purge_bars("full") * bar_ns,
        num_threads=num_threads,
        feature_names=names,
        r_net=net_r(
            window[OUTCOME_R].to_numpy(dtype=np.float64),
            window[RISK_FRACTION].to_numpy(dtype=np.float64),
            context_for(spec).cost_fraction,
        ),
        refit=spec.model.refit != "none",
    )
    plan = run.store.read_json(layout.PLAN)
    summaries = {
        stage: run.store.read_json(layout.stage_summary(stage))
        for stage in spec.stages_to_run()
        if run.store.exists(layout.stage_summary(stage))
    }
    card = {
        "name": run.name,
        "namespace": run.manifest.metadata.namespace,
        "symbol": spec.symbol,
        "timeframe": spec.canonical_timeframe,
        "spec": spec.model_dump(mode="json", by_alias=True),
        "specFingerprint": spec_fingerprint(spec),
        "data": {
            "hash": plan.get("dataHash"),
            "summary": plan.get("dataSummary"),
            "trainStart": iso(int(ts[first])),
            "trainEnd": iso(int(ts[-1]) + bar_ns),  # exclusive: the last row's bar end
            "trainLastRow": iso(int(ts[-1])),
            "trainRows": len(window),
        },
        # Rows the model was trained on, its rounds and how they were chosen.
        "training": {
            **model.describe(spec.model.early_stopping_metric),
            "minRounds": spec.model.min_rounds,
            "patience": spec.model.early_stopping_rounds,
            "thresholdChosenOn": "the inner split's validation rows, scored by the model "
            "trained on the inner rows",
        },
        "warnings": spec.leaky_purge_warnings(),
        "features": names,
        "parameters": {
            "lightgbm": {
                k: v
                for k, v in json.loads(json.dumps(_params(spec.model))).items()
                if k != "num_threads"
            },
            "bestIteration": model.best_iteration,
            "threshold": round(model.threshold, 6),
        },
        "label": spec.label.model_dump(mode="json", by_alias=True),
        "stages": summaries,
        # Each stage's report.html (equity curves, ROC, calibration, the gates).
        "reports": {
            stage: run.store.uri(layout.stage_report(stage))
            for stage in summaries
            if run.store.exists(layout.stage_report(stage))
        },
        # Who let this model be trained, how and when (stagegate_core.approval).
        "approvedBy": (approval or {}).get("by", ""),
        "approvedAt": (approval or {}).get("at", ""),
        "approval": dict(approval or {}),
        "package": {"stagegate": __version__, "python": platform.python_version()},
    }
    run.store.write_bytes(
        layout.FINAL_MODEL,
        model.booster.model_to_string(num_iteration=model.rounds).encode(),
    )
    run.store.write_json(layout.MODEL_CARD, card)
    return card


def _params(model_spec: Any) -> dict[str, Any]:
    from .fold import lightgbm_params

    return lightgbm_params(model_spec, num_threads=1)
