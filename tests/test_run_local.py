"""`stagegate run` end to end on real bundled candles, with real worker processes."""

from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.support.runs import BIN, stagegate

pytestmark = pytest.mark.timeout(300)

# The small spec keeps the original gates (ROC AUC >= 0.61 ...), which an honest model on
# 15-minute candles fails: a run that completes with them failed exits 5, not 0.
GATES_FAILED = 5


def run_dir(root: Path, name: str = "small") -> Path:
    return root / "default" / name / "local"


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("metrics.json")}


def test_sequential_run_with_approval_trains_everything(
    tmp_path: Path, manifest_factory: Callable[..., Path]
) -> None:
    runs = tmp_path / "runs"
    result = stagegate(
        "run",
        str(manifest_factory()),
        "--approve",
        "yes",
        "--output",
        "json",
        "--artifacts",
        str(runs),
        cwd=tmp_path,
    )
    assert result.returncode == GATES_FAILED, result.stderr
    status = json.loads(result.stdout)  # nothing but the status on stdout
    assert status["phase"] == "Succeeded"
    assert status["progress"] == "4/4"
    assert status["approval"]["decision"] == "approved"
    quick, full = status["stages"]["quick"], status["stages"]["full"]
    assert [f["state"] for f in quick["folds"]] == ["Succeeded"] * 2
    assert len(full["folds"]) == 4
    for stage in (quick, full):
        names = {g["gate"] for g in stage["gates"]}
        assert {
            "minAccuracy",
            "minRecall",
            "minRocAuc",
            "minF1",
            "beatsMajority",
            "beatsAlwaysPositive",
            "beatsVolatilityTime",
            "beatsVolatilityTimeR",
            "minExpectedReturn",
            "minTrades",
        } == names
        assert set(stage["baselines"]) == {"majority", "alwaysPositive", "volatilityTime"}
    folder = run_dir(runs)
    for rel in [
        "data/ohlcv.parquet",
        "data/dataset.parquet",
        "plan.json",
        "quick/summary.json",
        "full/summary.json",
        "model/model.txt",
        "model/model_card.json",
        "quick/folds/01/predictions.parquet",
        "full/folds/04/model.txt",
    ]:
        assert (folder / rel).is_file(), rel
    card = json.loads((folder / "model/model_card.json").read_text())
    assert card["symbol"] == "BTC/USDT" and card["data"]["hash"]
    assert set(card["stages"]) == {"quick", "full"} and card["features"]
    # Locally the OS user approved, through the --approve flag.
    assert (card["approvedBy"], card["approval"]["via"]) == (getpass.getuser(), "flag")
    assert status["approvedBy"] == getpass.getuser() and status["approvedAt"]
    assert status["artifacts"]["model"].endswith("model/model.txt")
    # The human output went to stderr, fold lines in the old system's format among it.
    assert "Fold 1/2: accuracy=" in result.stderr and "Average: accuracy=" in result.stderr


def test_without_a_terminal_the_run_stops_at_the_gate_and_resumes(
    tmp_path: Path, manifest_factory: Callable[..., Path]
) -> None:
    runs = tmp_path / "runs"
    path = str(manifest_factory())
    first = stagegate("run", path, "--artifacts", str(runs), "--output", "json", cwd=tmp_path)
    assert first.returncode == 3, first.stderr
    status = json.loads(first.stdout)
    assert status["phase"] == "AwaitingApproval"
    assert not (run_dir(runs) / "full").exists()
    before = mtimes(run_dir(runs))
    assert len(before) == 2

    second = stagegate("run", path, "--artifacts", str(runs), "--approve", "yes", cwd=tmp_path)
    assert second.returncode == GATES_FAILED, second.stderr
    after = mtimes(run_dir(runs))
    assert {k: after[k] for k in before} == before  # quick folds were not recomputed
    assert len(after) == 6


def test_auto_policy_rejects_when_gates_fail(
    tmp_path: Path, manifest_factory: Callable[..., Path]
) -> None:
    # An honest model on 15-minute candles does not reach a 0.99 ROC AUC.
    path = manifest_factory(gates={"minRocAuc": 0.99})
    result = stagegate(
        "run",
        str(path),
        "--approve",
        "auto",
        "--output",
        "json",
        "--artifacts",
        str(tmp_path / "runs"),
        cwd=tmp_path,
    )
    assert result.returncode == 4, result.stderr
    status = json.loads(result.stdout)
    assert status["phase"] == "Rejected"
    assert "failed its gates" in status["message"]
    gate = next(g for g in status["stages"]["quick"]["gates"] if g["gate"] == "minRocAuc")
    assert gate["passed"] is False and gate["threshold"] == 0.99


def test_mode_quick_ends_after_the_quick_stage(
    tmp_path: Path, manifest_factory: Callable[..., Path]
) -> None:
    runs = tmp_path / "runs"
    result = stagegate(
        "run",
        str(manifest_factory()),
        "--mode",
        "quick",
        "--output",
        "json",
        "--artifacts",
        str(runs),
        cwd=tmp_path,
    )
    assert result.returncode == GATES_FAILED, result.stderr
    assert json.loads(result.stdout)["phase"] == "Succeeded"
    assert not (run_dir(runs) / "full").exists() and not (run_dir(runs) / "model").exists()


def test_a_folder_holding_another_spec_is_refused(
    tmp_path: Path, manifest_factory: Callable[..., Path]
) -> None:
    runs = tmp_path / "runs"
    first = stagegate(
        "run", str(manifest_factory()), "--mode", "quick", "--artifacts", str(runs), cwd=tmp_path
    )
    assert first.returncode == GATES_FAILED, first.stderr
    other = manifest_factory(model={"seed": 7})
    refused = stagegate("run", str(other), "--artifacts", str(runs), cwd=tmp_path)
    assert refused.returncode == 2
    assert "holds a run of a different spec" in refused.stderr and "--fresh" in refused.stderr
    # Other features only: the folder's dataset and folds are not this spec's either.
    fewer = manifest_factory(features={"groups": ["returns", "volatility"]})
    refused = stagegate("run", str(fewer), "--artifacts", str(runs), cwd=tmp_path)
    assert refused.returncode == 2 and "holds a run of a different spec" in refused.stderr
    fresh = stagegate(
        "run", str(other), "--mode", "quick", "--fresh", "--artifacts", str(runs), cwd=tmp_path
    )
    assert fresh.returncode == GATES_FAILED, fresh.stderr


def test_a_crashing_fold_is_retried_then_fails_the_stage(
    tmp_path: Path, manifest_factory: Callable[..., Path]
) -> None:
    runs = tmp_path / "runs"
    path = str(manifest_factory(maxRetries=1))
    prepared = stagegate("prepare", path, "--artifacts", str(runs), cwd=tmp_path)
    assert prepared.returncode == 0, prepared.stderr
    # Damage fold 2's plan: an empty training window makes that fold crash every time.
    plan_path = run_dir(runs) / "plan.json"
    plan = json.loads(plan_path.read_text())
    plan["stages"]["quick"]["folds"][1]["trainIndex"] = [0, 0]
    plan_path.write_text(json.dumps(plan))

    result = stagegate(
        "run", path, "--approve", "yes", "--output", "json", "--artifacts", str(runs), cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr
    status = json.loads(result.stdout)
    assert status["phase"] == "Failed"
    assert "fold 2 failed after 2 attempts" in status["message"]
    assert "training window too short" in status["message"]
    assert result.stderr.count("fold 2 of the quick stage failed") == 2
    fold2 = status["stages"]["quick"]["folds"][1]
    assert fold2["state"] == "Retrying" and "training window too short" in fold2["error"]
    # Fold 1 may have been stopped with the stage; if its metrics exist, so does the rest.
    fold1 = run_dir(runs) / "quick/folds/01"
    if (fold1 / "metrics.json").exists():
        assert (fold1 / "predictions.parquet").is_file() and (fold1 / "model.txt").is_file()
    assert not (run_dir(runs) / "quick/folds/02/metrics.json").exists()
    assert not (run_dir(runs) / "quick/summary.json").exists()


def _interruptible() -> None:
    # As from a terminal: a test run started in the background (`cmd &` in a script) ignores
    # SIGINT, children inherit that, and Python keeps an ignored SIGINT ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "stagegate"), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "COLUMNS": "200"},
        preexec_fn=_interruptible,
    )


def _training_worker(parent: int, timeout: float = 120) -> psutil.Process:
    """A worker of `parent` (a child of its fork server) that is training: it has used more CPU
    time than the fork server's start-up imports take (~2 s). Cumulative CPU time, unlike a CPU
    percentage, does not depend on how busy the machine is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(parent).children(recursive=True):
            try:
                times = child.cpu_times()
                if times.user + times.system > 4.0:
                    return child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.1)
    raise AssertionError("no worker started training")


# Slow folds to interrupt; the final model is not refit (model.refit none), so the resumed run's
# final step costs one fit, as before the refit existed.
SLOW_MODEL = {"maxRounds": 400, "earlyStoppingRounds": 400, "learningRate": 0.01, "refit": "none"}
# About 10 s of CPU a fold: long enough to be caught mid-fold on a loaded machine.
SLOWER_MODEL = {
    "maxRounds": 4000,
    "earlyStoppingRounds": 4000,
    "learningRate": 0.001,
    "numLeaves": 63,
    "minDataInLeaf": 20,
}


def test_a_killed_worker_is_retried_and_nothing_half_written_counts(
    tmp_path: Path, manifest_factory: Callable[..., Path]
) -> None:
    runs = tmp_path / "runs"
    path = str(manifest_factory(model=SLOWER_MODEL))
    process = _start(
        ["run", path, "--mode", "quick", "--output", "json", "--artifacts", str(runs)], tmp_path
    )
    victim = _training_worker(process.pid)
    victim.kill()
    out, err = process.communicate(timeout=240)
    assert process.returncode == GATES_FAILED, err
    assert "worker process killed by SIGKILL" in err
    status = json.loads(out)
    assert status["phase"] == "Succeeded"
    assert sorted(f["attempts"] for f in status["stages"]["quick"]["folds"]) == [1, 2]
    assert len(mtimes(run_dir(runs))) == 2


def test_ctrl_c_cancels_cleanly_and_a_rerun_resumes(
    tmp_path: Path, manifest_factory: Callable[..., Path]
) -> None:
    runs = tmp_path / "runs"
    path = str(manifest_factory(model=SLOW_MODEL))
    common = ["run", path, "--mode", "full"]
    args = [
        *common,
        "--workers",
        "1",
        "--approve",
        "yes",
        "--output",
        "json",
        "--artifacts",
        str(runs),
    ]
    process = _start(args, tmp_path)
    deadline = time.monotonic() + 120
    while not mtimes(run_dir(runs)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert mtimes(run_dir(runs)), "no fold finished"
    workers = psutil.Process(process.pid).children(recursive=True)  # fork server included
    os.killpg(process.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGUSR1)  # its stacks to stderr (faulthandler), then end it
        time.sleep(1)
        process.kill()
        _, err = process.communicate()
        raise AssertionError(f"Ctrl-C did not end the run within 60 s:\n{err[-6000:]}") from None
    assert process.returncode == 130, err
    status = json.loads(out)
    assert status["phase"] == "Cancelled"
    assert "Traceback" not in err
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, [w.cmdline() for w in alive]
    kept = mtimes(run_dir(runs))
    assert 1 <= len(kept) < 4

    # The rerun may use both cores: one worker above only made the Ctrl-C land mid-stage.
    resumed = stagegate(*common, "--workers", "2", *args[len(common) + 2 :], cwd=tmp_path)
    assert resumed.returncode == GATES_FAILED, resumed.stderr
    after = mtimes(run_dir(runs))
    assert {k: after[k] for k in kept} == kept and len(after) == 4


def test_on_a_terminal_the_gate_asks(tmp_path: Path, manifest_factory: Callable[..., Path]) -> None:
    """Without --approve, a terminal gets the quick-stage tables and a question."""
    import pty

    runs = tmp_path / "runs"
    main, secondary = pty.openpty()
    process = subprocess.Popen(
        [str(BIN / "stagegate"), "run", str(manifest_factory()), "--artifacts", str(runs)],
        cwd=tmp_path,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        close_fds=True,
        env={**os.environ, "COLUMNS": "160"},
    )
    os.close(secondary)
    seen = b""
    deadline = time.monotonic() + 120
    while b"Proceed to the full stage?" not in seen and time.monotonic() < deadline:
        try:
            seen += os.read(main, 65536)
        except OSError:
            break
    assert b"Proceed to the full stage?" in seen, seen.decode(errors="replace")[-2000:]
    assert b"quick stage gates" in seen
    os.write(main, b"n\n")
    try:
        while process.poll() is None:
            seen += os.read(main, 65536)
    except OSError:
        pass
    assert process.wait(60) == 4  # answered no: Rejected
    os.close(main)
    status = json.loads((run_dir(runs) / "status.json").read_text())
    assert status["phase"] == "Rejected"
    assert status["approval"] == {
        "decision": "rejected",
        "by": getpass.getuser(),
        "via": "prompt",
        "at": status["approval"]["at"],
        "gate": "full",
    }
    assert status["rejectedBy"] == getpass.getuser()
    # The data block reads as the operator's does (one model builds both).
    assert set(status["data"]) == {"summary", "hash", "labelledRows"}
    assert status["data"]["labelledRows"] > 0
    assert not (run_dir(runs) / "full").exists()
