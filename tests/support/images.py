"""The real images: `scripts/build-images` puts them in podman's local store, and tests run
them with podman (the same settings as the node agent's podman runtime)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.cluster import podman

REPO = Path(__file__).resolve().parents[2]
OPERATOR, TRAINER = "localhost/stagegate-operator:dev", "localhost/stagegate-trainer:dev"
# The trainer image plus the example custom features (examples/features/Dockerfile).
TRAINER_EXAMPLES = "localhost/stagegate-trainer-examples:dev"
# The chart's values that make it run these two images (never pulled).
CHART_IMAGES = ("--set", "image.repository=localhost/stagegate-operator", "--set", "image.tag=dev",
                "--set", "image.pullPolicy=Never", "--set", f"trainer.image={TRAINER}")  # fmt: skip


def run(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`podman ARGS...`; asserts success unless check=False."""
    out = subprocess.run(["podman", *args], env=podman.env(), capture_output=True, text=True,
                         timeout=timeout)  # fmt: skip
    if check:
        assert out.returncode == 0, (args, out.stdout[-2000:], out.stderr[-2000:])
    return out


def python(image: str, code: str, *args: str) -> object:
    """Run `code` with the image's interpreter; it prints one JSON value."""
    return json.loads(run("run", "--rm", "--entrypoint", "python", image, "-c", code, *args).stdout)


@pytest.fixture(scope="session")
def images() -> None:
    """Both images, built if missing or stale (scripts/test built them already: then this is
    a cache hit of a few seconds)."""
    built = subprocess.run([str(REPO / "scripts" / "build-images")], capture_output=True,
                           text=True, timeout=1800)  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    names = ["stagegate-operator:dev", "stagegate-trainer:dev", "stagegate-trainer-examples:dev"]
    assert built.stdout.split() == names


def base_of(image: str) -> str:
    """The image's base, from its OCI label (the Dockerfiles prefix Docker Hub's name)."""
    label = '{{index .Config.Labels "org.opencontainers.image.base.name"}}'
    found = run("image", "inspect", "--format", label, image).stdout
    return found.strip().removeprefix("docker.io/library/")
