"""A stand-in for the `stagegate` trainer command that finishes at once (for operator benches).

    python -S bench/stub_trainer.py prepare|fold|summarise|final env:STAGEGATE_MANIFEST \
        [--stage quick|full] [--fold N] [--threads N] [...]

It takes the argv the operator's step Jobs pass to `stagegate`, reads the manifest (YAML text in
the environment variable named by `env:VAR`, or a file path) only for its name and each stage's
`maxFolds`, and writes a result of the same shape as core/stagegate_core/results.py to
$STAGEGATE_RESULT_FILE (the pod's termination message). Nothing is trained and nothing is
stored. Fold counts: `spec.stages.<stage>.maxFolds` when set, else quick 5 and full 45. Every
gate passes, so a manual-approval run stops at AwaitingApproval and an approved one succeeds.

Standard library only and no site import needed (`python -S`), so a pod costs one bare
interpreter start (~15 ms) instead of the real trainer's pandas/LightGBM imports.
"""

from __future__ import annotations

import json
import os
import sys

DEFAULT_FOLDS = {"quick": 5, "full": 45}
# The metric names from the one place that defines them (a module with no imports of its own,
# so the bare interpreter stays bare).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "core"))
from stagegate_core.metricnames import BASELINES, METRICS  # noqa: E402

MODEL = {
    "accuracy": 0.71,
    "precision": 0.62,
    "recall": 0.55,
    "f1": 0.58,
    "rocAuc": 0.74,
    "brier": 0.19,
    "hitRateTp1": 0.62,
    "positiveRate": 0.33,
    "predictedPositiveRate": 0.3,
}
BASELINE = {m: round(v * 0.6, 6) for m, v in MODEL.items()}
DAY = 86_400


def _scalar(text: str) -> object:
    text = text.strip().strip("'\"")
    try:
        return int(text)
    except ValueError:
        return text


def parse_yaml_mapping(text: str) -> dict[str, object]:
    """Nested `key: value` mappings by indentation (enough for the frozen manifest; lists and
    flow style are skipped)."""
    root: dict[str, object] = {}
    stack: list[tuple[int, dict[str, object]]] = [(-1, root)]
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-", "---")) or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip(" "))
        while stack and indent <= stack[-1][0]:
            stack.pop()
        key, _, value = stripped.partition(":")
        parent = stack[-1][1]
        if value.strip():
            parent[key.strip()] = _scalar(value)
        else:
            child: dict[str, object] = {}
            parent[key.strip()] = child
            stack.append((indent, child))
    return root


def load_manifest(arg: str) -> dict[str, object]:
    if arg.startswith("env:"):
        text = os.environ.get(arg[4:], "")
    else:
        try:
            with open(arg, encoding="utf-8") as handle:
                text = handle.read()
        except OSError:
            text = ""
    return parse_yaml_mapping(text)


def _get(doc: dict[str, object], *path: str) -> object:
    node: object = doc
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def fold_count(manifest: dict[str, object], stage: str) -> int:
    value = _get(manifest, "spec", "stages", stage, "maxFolds")
    return value if isinstance(value, int) and value > 0 else DEFAULT_FOLDS[stage]


def _iso(seconds: int) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _block(values: dict[str, float]) -> dict[str, dict[str, float]]:
    return {m: {"mean": values[m], "std": 0.01} for m in METRICS}


def result(step: str, argv: list[str], manifest: dict[str, object]) -> dict[str, object]:
    name = str(_get(manifest, "metadata", "name") or "stub")
    namespace = str(_get(manifest, "metadata", "namespace") or "default")
    uid = str(_get(manifest, "metadata", "uid") or "0")
    run = f"stub://runs/{namespace}/{name}/{uid}"
    end = 1_735_689_600  # 2025-01-01
    if step == "prepare":
        stages = {}
        for stage in ("quick", "full"):
            stages[stage] = {
                "foldCount": fold_count(manifest, stage),
                "dataStart": _iso(end - (365 if stage == "quick" else 2000) * DAY),
                "dataEnd": _iso(end),
                "purgeBars": 49,
                "trainWindow": "fixed" if stage == "quick" else "expanding",
            }
        return {
            "step": "prepare",
            "bars": 200_000,
            "labelledRows": 199_000,
            "dataHash": "stub",
            "dataSummary": "stub data (bench/stub_trainer.py)",
            "stages": stages,
        }
    stage = _option(argv, "--stage") or "full"
    if step == "fold":
        number = int(_option(argv, "--fold") or 1)
        total = fold_count(manifest, stage)
        test_start = end - (total - number + 1) * 21 * DAY
        return {
            "step": "fold",
            "stage": stage,
            "fold": number,
            "folds": total,
            "train": {
                "start": _iso(test_start - 400 * DAY),
                "end": _iso(test_start - DAY),
                "rows": 38_000,
            },
            "test": {"start": _iso(test_start), "end": _iso(test_start + 21 * DAY), "rows": 2_016},
            "model": dict(MODEL),
            "baselines": {
                "volatilityTime": {"rocAuc": BASELINE["rocAuc"]},
                "alwaysPositive": {"f1": BASELINE["f1"]},
            },
        }
    if step in ("summarise", "summary"):
        gates = [
            {"gate": g, "metric": m, "value": MODEL[m], "threshold": t, "passed": True}
            for g, m, t in (
                ("minAccuracy", "accuracy", 0.6),
                ("minRecall", "recall", 0.35),
                ("minRocAuc", "rocAuc", 0.61),
                ("minF1", "f1", 0.45),
            )
        ]
        return {
            "step": "summary",
            "stage": stage,
            "folds": fold_count(manifest, stage),
            "passed": True,
            "model": _block(MODEL),
            "baselines": {b: _block(BASELINE) for b in BASELINES},
            "gates": gates,
        }
    if step == "final":
        return {
            "step": "final",
            "model": f"{run}/model/model.txt",
            "modelCard": f"{run}/model/model_card.json",
        }
    raise SystemExit(f"error: unknown step {step!r}")


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    step = argv[0]
    manifest = load_manifest(argv[1]) if len(argv) > 1 else {}
    out = result(step, argv[1:], manifest)
    text = json.dumps(out, separators=(",", ":"), sort_keys=True)
    path = os.environ.get("STAGEGATE_RESULT_FILE")
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    print(f"stub {step}: {len(text)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
