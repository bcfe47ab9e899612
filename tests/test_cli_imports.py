"""The command line stays light: with only `stagegate[cli]` installed (the Kubernetes client and
rich) `stagegate --help` and every cluster command work, and a local command says it needs
`stagegate[trainer]`; the trainer image, which has no Kubernetes client, runs its steps through
the same entry point."""

from __future__ import annotations

import json
import os
import pkgutil
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import stagegate_cli

from tests.support.imports import loaded_by
from tests.support.procs import free_port
from tests.support.runs import write_manifest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = (
    "numpy", "pandas", "pyarrow", "lightgbm", "sklearn", "matplotlib", "ccxt", "boto3",
    "kopf", "stagegate_operator",
    # The trainer image has no Kubernetes client (client.py imports it when a command connects),
    # the operator image neither it nor rich (render.py imports it when it draws).
    "kubernetes", "rich",
)  # fmt: skip
# What `stagegate[cli]` alone leaves out (scipy: LightGBM's; botocore: boto3's).
NOT_INSTALLED = (
    "numpy", "pandas", "pyarrow", "lightgbm", "sklearn", "scipy", "matplotlib", "ccxt", "boto3",
    "botocore",
)  # fmt: skip
CLUSTER_COMMANDS = ("submit", "approve", "reject", "status", "watch", "logs", "cancel")


def cli_modules() -> list[str]:
    return sorted(f"stagegate_cli.{m.name}" for m in pkgutil.iter_modules(stagegate_cli.__path__))


def test_importing_every_cli_module_loads_nothing_heavy() -> None:
    assert {"stagegate_cli.main", "stagegate_cli.client", "stagegate_cli.render"} <= set(
        cli_modules()
    )
    assert loaded_by(cli_modules(), FORBIDDEN) == []


def without_trainer(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`stagegate ARGS` in an interpreter where the trainer's packages cannot be imported."""
    code = (
        "import sys\n"
        f"for name in {NOT_INSTALLED!r}:\n"
        "    sys.modules[name] = None  # `import name` now fails as if it were not installed\n"
        "from stagegate_cli.main import main\n"
        "sys.argv = ['stagegate', *sys.argv[1:]]\n"
        "main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_help_lists_every_command_without_the_trainer(tmp_path: Path) -> None:
    result = without_trainer("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line}
    assert set(CLUSTER_COMMANDS) <= listed
    assert {"run", "plan", "prepare", "fold", "final", "summarise", "report", "crd"} <= listed


def test_cluster_commands_fail_clearly_without_the_trainer(tmp_path: Path) -> None:
    missing = tmp_path / "missing.kubeconfig"
    for command in CLUSTER_COMMANDS:
        args = [] if command in ("status", "submit") else ["some-job"]
        if command == "submit":
            args = ["BTC/USDT", "M15"]
        result = without_trainer(command, *args, "--kubeconfig", str(missing), cwd=tmp_path)
        one_line_error(result, f"kubeconfig {missing} does not exist")
    # A kubeconfig whose API server nobody listens on.
    port = free_port()
    kubeconfig = tmp_path / "unreachable.kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    result = without_trainer("status", "--kubeconfig", str(kubeconfig), cwd=tmp_path)
    one_line_error(result, "cannot reach the Kubernetes API", f"127.0.0.1:{port}")
    # A dry run needs neither a cluster nor the trainer.
    dry = without_trainer("submit", "BTC/USDT", "M15", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0 and "name: btc-usdt-m15" in dry.stdout, dry.stderr


def test_local_commands_say_they_need_the_trainer(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "small.yaml")
    for args in (["run", str(manifest)], ["plan", str(manifest)], ["fold", str(manifest),
                 "--stage", "quick", "--fold", "1"]):  # fmt: skip
        result = without_trainer(*args, cwd=tmp_path)
        one_line_error(result, f"stagegate {args[0]} needs stagegate[trainer]")
    assert not (tmp_path / "stagegate-runs").exists()


def test_the_cli_extra_is_the_kubernetes_client_and_rich() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {
        re.split(r"[<>=!~\[;\s]", r, maxsplit=1)[0] for r in project["optional-dependencies"]["cli"]
    }
    assert names == {"kubernetes", "rich"}
    assert project["scripts"]["stagegate"] == "stagegate_cli.main:main"
    assert project["scripts"]["kubectl-stagegate"] == "stagegate_cli.main:main"


@pytest.mark.slow
def test_pip_install_stagegate_cli_gives_the_commands_without_the_numeric_stack(
    tmp_path: Path,
) -> None:
    """The real install a user makes: the wheel with the `cli` extra into a fresh venv."""
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    env = {**os.environ, "PIP_CONSTRAINT": str(REPO / "constraints.txt")}
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
                   check=True, env=env, timeout=300)  # fmt: skip
    (wheel,) = wheels.glob("stagegate-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    into = [*pip, "--python", str(venv / "bin" / "python")]
    requirement = f"stagegate[cli] @ {wheel.as_uri()}"
    subprocess.run([*into, "install", "-q", requirement], check=True, env=env, timeout=600)
    installed = subprocess.run(
        [*into, "list", "--format", "json"], capture_output=True, text=True, check=True
    )
    names = {p["name"].lower() for p in json.loads(installed.stdout)}
    assert {"kubernetes", "rich", "pydantic"} <= names
    assert not names & set(NOT_INSTALLED), sorted(names & set(NOT_INSTALLED))

    def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(venv / "bin" / script), *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    helped = run("kubectl-stagegate", "--help")
    assert helped.returncode == 0 and "approve" in helped.stdout, helped.stderr
    missing = tmp_path / "missing.kubeconfig"
    one_line_error(run("stagegate", "status", "--kubeconfig", str(missing)), "does not exist")
    manifest = write_manifest(tmp_path / "small.yaml")
    one_line_error(run("stagegate", "run", str(manifest)), "needs stagegate[trainer]")
