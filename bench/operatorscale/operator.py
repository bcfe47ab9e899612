"""The operator under test: installed as its image has it, unless the bench is given another."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_VENV = ROOT / ".cache" / "venv-operator"


def operator_install() -> Path:
    """stagegate-operator as the operator image installs it: the core and the operator extra."""
    binary = OPERATOR_VENV / "bin" / "stagegate-operator"
    pyproject = ROOT / "pyproject.toml"
    if not binary.exists() or binary.stat().st_mtime < pyproject.stat().st_mtime:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(OPERATOR_VENV)], check=True)
        subprocess.run([str(OPERATOR_VENV / "bin" / "pip"), "install", "--quiet", "-e",
                        f"{ROOT}[operator]"], check=True)  # fmt: skip
    return binary


def client_state(binary: Path) -> str:
    python = binary.parent / "python"
    if not python.exists():
        return "unknown"
    found = subprocess.run([str(python), "-c", "import kubernetes"], capture_output=True)
    return "installed: kopf imports it" if found.returncode == 0 else "absent, as in the image"
