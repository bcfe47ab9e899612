"""Where each artifact of a run lives (DESIGN §5), relative to the run's root.

    <artifacts.uri>/<namespace>/<trainingjob>/<uid>/
      run.json  data/ohlcv.parquet  data/dataset.parquet  data/report.json  plan.json
      <stage>/folds/NN/{metrics.json, predictions.parquet, model.txt}  <stage>/summary.json
      <stage>/report/{report.html, *.svg}
      model/{model.txt, model_card.json}

Pure string functions: the operator uses them too.
"""

from __future__ import annotations

RUN_RECORD = "run.json"
OHLCV = "data/ohlcv.parquet"
DATA_REPORT = "data/report.json"


def context_ohlcv(symbol: str) -> str:
    """The snapshot of a context symbol's bars (`spec.data.context`)."""
    return f"data/context/{symbol.replace('/', '_')}.parquet"


DATASET = "data/dataset.parquet"
PLAN = "plan.json"
FINAL_MODEL = "model/model.txt"
MODEL_CARD = "model/model_card.json"
LOCAL_UID = "local"


def run_prefix(namespace: str, name: str, uid: str | None) -> str:
    # A local run has no Kubernetes uid; "local" keeps reruns of one manifest in one folder.
    return f"{namespace}/{name}/{uid or LOCAL_UID}"


def fold_dir(stage: str, fold: int) -> str:
    return f"{stage}/folds/{fold:02d}"


def fold_metrics(stage: str, fold: int) -> str:
    return f"{fold_dir(stage, fold)}/metrics.json"


def fold_predictions(stage: str, fold: int) -> str:
    return f"{fold_dir(stage, fold)}/predictions.parquet"


def fold_model(stage: str, fold: int) -> str:
    return f"{fold_dir(stage, fold)}/model.txt"


def fold_importance(stage: str, fold: int) -> str:
    return f"{fold_dir(stage, fold)}/importance.json"


def stage_summary(stage: str) -> str:
    return f"{stage}/summary.json"


def report_dir(stage: str) -> str:
    # report.html and the SVGs it embeds, side by side.
    return f"{stage}/report"


def stage_report(stage: str) -> str:
    return f"{report_dir(stage)}/report.html"
