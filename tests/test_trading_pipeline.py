"""Trading metrics, gates and the report through the real steps, on synthetic series.

A driftless random walk has no edge: it must fail mustBeatBaselines and minExpectedReturn. A
series with a planted *causal* edge (a volume burst at the close of bar t, then an upward
drift) must pass them: the features see the burst, only the future sees the drift.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from stagegate_core import layout
from stagegate_core.crd import build_crd
from stagegate_core.spec import parse_manifest
from stagegate_core.status import expected_r_text
from stagegate_trainer import finalmodel, htmlreport, steps
from stagegate_trainer.charts import MODEL_COLOUR
from stagegate_trainer.htmlreport import PICTURES, REPORT

from tests.support.runs import stagegate

BAR_NS = 15 * 60 * 10**9


def synthetic(seed: int, edge: bool, days: int = 180) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 96 * days
    sigma = 0.004
    r = rng.normal(0, sigma, n)
    volume = rng.lognormal(3, 0.3, n)
    if edge:
        for e in np.flatnonzero(rng.random(n) < 0.006):
            volume[e] *= 12  # the tell, known at the close of bar e
            r[e + 1 : e + 25] += 1.0 * sigma  # what follows it
    close = 100 * np.exp(np.cumsum(r))
    open_ = np.concatenate(([100.0], close[:-1]))
    wiggle = np.abs(rng.normal(0, 0.5, n)) * sigma * close
    return pd.DataFrame(
        {
            "timestamp": pd.date_range("2022-01-01", periods=n, freq="15min", tz="UTC"),
            "open": open_,
            "high": np.maximum(open_, close) + wiggle,
            "low": np.minimum(open_, close) - wiggle,
            "close": close,
            "volume": volume,
        }
    )


def run_quick(folder: Path, edge: bool) -> tuple[steps.Run, dict[str, Any]]:
    folder.mkdir(parents=True, exist_ok=True)
    synthetic(3, edge).to_parquet(folder / "candles.parquet")
    manifest = {
        "apiVersion": "stagegate.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "edge" if edge else "walk"},
        "spec": {
            "symbol": "BTC/USDT",
            "mode": "quick",
            "data": {"source": "file", "uri": str(folder / "candles.parquet")},
            # 7 test periods of 15 days: enough folds for a bound to mean something.
            "stages": {
                "quick": {
                    "lookbackDays": 180,
                    "minTrainDays": 60,
                    "testPeriodDays": 15,
                    "maxFolds": 8,
                },
                "full": {"minTrainDays": 60, "testPeriodDays": 30},
            },
            "model": {"maxRounds": 100, "earlyStoppingRounds": 20},
            "artifacts": {"uri": str(folder / "runs")},
        },
    }
    (folder / "job.yaml").write_text(json.dumps(manifest))
    run = steps.open_run(parse_manifest(manifest))
    steps.claim(run)
    plan = steps.prepare(run)
    for number in range(1, plan["stages"]["quick"]["foldCount"] + 1):
        steps.fold(run, "quick", number, num_threads=1)
    return run, steps.summarise(run, "quick")


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> tuple[steps.Run, dict[str, Any]]:
    return run_quick(tmp_path_factory.mktemp("walk"), edge=False)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> tuple[steps.Run, dict[str, Any]]:
    return run_quick(tmp_path_factory.mktemp("edge"), edge=True)


def verdicts(summary: dict[str, Any]) -> dict[str, str]:
    return {g["gate"]: g["verdict"] for g in summary["gates"]}


BEATS = ("beatsMajority", "beatsAlwaysPositive", "beatsVolatilityTime", "beatsVolatilityTimeR")


@pytest.mark.timeout(300)
def test_a_random_walk_fails_the_baselines_and_expected_return(
    walk: tuple[steps.Run, dict[str, Any]],
) -> None:
    _, summary = walk
    got = verdicts(summary)
    print("random walk:", got, summary["decision"])
    assert summary["folds"] >= 6
    assert not all(got[g] == "pass" for g in BEATS)  # mustBeatBaselines does not pass
    assert got["minExpectedReturn"] != "pass"
    assert summary["decision"]["expectedR"] < 0  # costs, and nothing to pay for them
    assert summary["passed"] is False


@pytest.mark.timeout(300)
def test_a_planted_causal_edge_passes_them(edge: tuple[steps.Run, dict[str, Any]]) -> None:
    _, summary = edge
    got = verdicts(summary)
    print("planted edge:", got, summary["decision"])
    assert all(got[g] == "pass" for g in BEATS), got
    assert got["minExpectedReturn"] == "pass" and got["minTrades"] == "pass"
    decision = summary["decision"]
    assert decision["expectedRLowerBound"] > 0
    assert decision["verdicts"] == got


def test_trades_never_need_bars_after_the_test_period(
    edge: tuple[steps.Run, dict[str, Any]],
) -> None:
    run, _ = edge
    horizon = run.spec.label.horizon_bars
    for number in (1, 2):
        metrics = run.store.read_json(layout.fold_metrics("quick", number))
        frame = pd.read_parquet(run.store.local_path(layout.fold_predictions("quick", number)))
        end = pd.Timestamp(metrics["test"]["end"])
        last_bar = frame["timestamp"] + pd.Timedelta(minutes=15 * horizon)
        assert (frame["tradable"] == (last_bar < end)).all()
        assert frame["tradable"].sum() < len(frame)
        trades = int(((frame["signal"] == 1) & (frame["tradable"] == 1)).sum())
        assert metrics["trading"]["model"]["trades"] == trades
        net = frame.loc[(frame["signal"] == 1) & (frame["tradable"] == 1), "netR"]
        assert metrics["trading"]["model"]["expectedR"] == pytest.approx(net.mean(), abs=1e-6)


def _looks_drawn(screenshot: Path, colour: str = MODEL_COLOUR) -> None:
    """A browser's screenshot shows a chart: many colours, dark ink (axes, text), `colour`."""
    image = Image.open(screenshot).convert("RGB")
    pixels = np.asarray(image).reshape(-1, 3)
    assert image.width >= 400 and image.height >= 300
    # A blank or single-colour canvas has a handful of colours; a chart has axes, text, lines.
    assert len(np.unique(pixels, axis=0)) > 50
    assert (pixels.min(axis=1) < 128).mean() > 0.005  # some dark ink
    assert (pixels.min(axis=1) > 250).mean() > 0.3  # and mostly a white background
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    assert (np.abs(pixels.astype(int) - rgb).sum(axis=1) < 30).sum() > 100


SVG = "{http://www.w3.org/2000/svg}"
# What each picture must say (title, axes, legend) and whether it draws in the model's colour.
PICTURE_TEXT = {
    "equity_stitched.svg": (
        ["Out-of-sample equity, folds stitched in time order", "cumulative net R", "model",
         "vol/time baseline", "always positive (every bar a trade)"], True),
    "equity_folds.svg": (
        ["Out-of-sample equity per fold (model trades, net of costs)",
         "days since the fold's test period began", "fold 1"], False),
    "roc.svg": (
        ["ROC, all test rows pooled", "false positive rate", "true positive rate",
         "majority / always positive"], True),
    "calibration.svg": (
        ["Calibration (equal-count bins)", "mean predicted probability", "model",
         "perfectly calibrated"], True),
    "importance.svg": (
        ["Feature importance (gain), top 20", "mean total gain per fold model"], True),
    "probabilities.svg": (
        ["Distribution of predicted probabilities by outcome", "stop or horizon first (0)",
         "take-profit first (1)", "fold thresholds"], False),
}  # fmt: skip


def test_report_html_and_svgs_are_written_with_content(
    edge: tuple[steps.Run, dict[str, Any]],
) -> None:
    run, _ = edge
    keys = run.store.list(layout.report_dir("quick") + "/")
    names = sorted(Path(k).name for k in keys)
    assert names == sorted([REPORT, *PICTURES]) and sorted(PICTURES) == sorted(PICTURE_TEXT)
    stored = {}
    for name, (wanted, model_colour) in PICTURE_TEXT.items():
        svg = stored[name] = run.store.read_bytes(f"{layout.report_dir('quick')}/{name}")
        root = ET.fromstring(svg)
        assert root.tag == f"{SVG}svg" and root.attrib["viewBox"].startswith("0 0 ")
        shown = " | ".join(t.text or "" for t in root.iter(f"{SVG}text"))
        assert all(text in shown for text in wanted), (name, shown)
        assert (MODEL_COLOUR.encode() in svg) == model_colour, name
        assert root.find(f"{SVG}polyline") is not None or root.find(f"{SVG}path") is not None
    assert "(mean fold AUC 0." in " ".join(ET.fromstring(stored["roc.svg"]).itertext())
    page = run.store.read_bytes(layout.stage_report("quick")).decode()
    # Self-contained: every picture is embedded as it was stored, with its alt text; nothing
    # is fetched (no http(s) address, no src or href but data: URIs).
    embedded = re.findall(r'<img alt="([^"]*)" src="data:image/svg\+xml;base64,([^"]+)">', page)
    assert sorted(base64.b64decode(data) for _, data in embedded) == sorted(stored.values())
    assert sorted(alt for alt, _ in embedded) == sorted(PICTURES.values())
    assert "http://" not in page and "https://" not in page
    assert all(v.startswith("data:") for v in re.findall(r'(?:src|href)="([^"]*)"', page))
    for text in ("Decision", "minExpectedReturn", "beatsVolatilityTimeR", "lower bound", "top 5%"):
        assert text in page


def test_a_report_rendered_again_replaces_an_older_ones_pictures(
    edge: tuple[steps.Run, dict[str, Any]],
) -> None:
    run, summary = edge
    folder = layout.report_dir("quick")
    before = {k: run.store.read_bytes(k) for k in run.store.list(f"{folder}/")}
    run.store.write_bytes(f"{folder}/equity_stitched.png", b"\x89PNG from an older version")
    steps.write_report(run, "quick", summary)
    after = {k: run.store.read_bytes(k) for k in run.store.list(f"{folder}/")}
    assert after == before  # the same report, byte for byte, and the PNG is gone


def test_model_card_links_the_report_and_the_cli_prints_it(
    edge: tuple[steps.Run, dict[str, Any]], tmp_path: Path
) -> None:
    run, _ = edge
    card = finalmodel.final(run, num_threads=1)
    assert card["reports"] == {"quick": run.store.uri(layout.stage_report("quick"))}
    manifest = run.store.local_path(layout.RUN_RECORD)
    assert manifest is not None
    job = manifest.parents[4] / "job.yaml"  # <folder>/runs/default/edge/local/run.json
    by_manifest = stagegate("report", str(job), cwd=tmp_path)
    assert by_manifest.returncode == 0, by_manifest.stderr
    path = Path(by_manifest.stdout.strip())
    assert path == run.store.local_path(layout.stage_report("quick")) and path.is_file()
    by_name = stagegate(
        "report", "edge", "--artifacts", str(manifest.parents[3]), "--to", "out", cwd=tmp_path
    )
    assert by_name.returncode == 0, by_name.stderr
    assert Path(by_name.stdout.strip()) == Path("out/report.html")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([REPORT, *PICTURES])
    missing = stagegate("report", "nope", "--artifacts", str(manifest.parents[3]), cwd=tmp_path)
    assert missing.returncode == 2 and "no run of this TrainingJob" in missing.stderr


def test_status_shows_the_decision_and_the_crd_prints_it(
    edge: tuple[steps.Run, dict[str, Any]],
) -> None:
    _, summary = edge
    decision = summary["decision"]
    text = expected_r_text(decision)
    assert text == f"{decision['expectedR']:+.2f}R (≥{decision['expectedRLowerBound']:+.2f})"
    columns = build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    assert {"name": "EXP R", "type": "string", "jsonPath": ".status.summary.expectedR"} in columns


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _screenshot(page: Path, shot: Path, size: tuple[int, int]) -> None:
    subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--screenshot={shot}",
            f"--window-size={size[0]},{size[1]}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=90,
        check=True,
        cwd=shot.parent,
    )
    assert Image.open(shot).size == size


needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (scripts/install-system-deps)"
)


@needs_chromium
@pytest.mark.timeout(120)
def test_report_renders_in_a_headless_browser(
    edge: tuple[steps.Run, dict[str, Any]], tmp_path: Path
) -> None:
    run, _ = edge
    page = run.store.local_path(layout.stage_report("quick"))
    assert page is not None
    _screenshot(page, tmp_path / "out.png", (1200, 2400))
    _looks_drawn(tmp_path / "out.png")  # the embedded equity curve is on screen


@needs_chromium
@pytest.mark.timeout(120)
def test_a_stored_chart_renders_on_its_own_in_a_headless_browser(
    edge: tuple[steps.Run, dict[str, Any]], tmp_path: Path
) -> None:
    run, _ = edge
    chart = run.store.local_path(f"{layout.report_dir('quick')}/equity_stitched.svg")
    assert chart is not None
    root = ET.fromstring(chart.read_bytes())
    size = (int(root.attrib["width"]), int(root.attrib["height"]))
    _screenshot(chart, tmp_path / "chart.png", size)
    _looks_drawn(tmp_path / "chart.png")


def test_feature_gains_come_from_the_fold_and_older_folds_still_have_them(
    edge: tuple[steps.Run, dict[str, Any]],
) -> None:
    """The report reads each fold's importance.json (no LightGBM in the runner); a fold written
    before that file existed gets the same gains from its model."""
    run, _ = edge
    key = layout.fold_importance("quick", 1)
    written = run.store.read_json(key)
    path = run.store.local_path(key)
    assert path is not None and written and all(v >= 0 for v in written.values())
    saved = path.read_bytes()
    path.unlink()
    try:
        from_model = htmlreport._gains(run, "quick", 1)
    finally:
        path.write_bytes(saved)
    assert sorted(from_model) == sorted(written)
    assert from_model == pytest.approx(written, rel=1e-6)
