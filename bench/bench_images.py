"""Sizes and build times of the two images, built by scripts/build-images with podman.

    .venv/bin/python bench/bench_images.py [--rebuild-base]

1. cold: `scripts/build-images --no-cache`: every layer of both images rebuilt, every wheel
   downloaded again (the pip cache lives in a build cache mount, which `--no-cache` leaves,
   but it held nothing here: the figure includes the downloads). The base image is kept;
   `--rebuild-base` removes the local debootstrap base first, so its build is timed too.
2. cached: `scripts/build-images` again, nothing changed (the second build after the cold one:
   podman reuses no layer that a `--no-cache` build made).
3. sizes: podman's uncompressed image size of each, the base's, and the largest installed
   packages of each image (what dominates).

Targets (issue 10): operator <= 200 MB, trainer <= 700 MB. Nothing is asserted; the last line
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.cluster import podman  # noqa: E402  (the podman settings the agent uses)
from tests.support.images import base_of  # noqa: E402

TARGETS_MB = {"operator": 200, "trainer": 700}
SITE = "/opt/stagegate/lib/python3.11/site-packages"


def sh(*argv: str) -> str:
    out = subprocess.run(argv, env=podman.env(), capture_output=True, text=True, check=True)
    return out.stdout


def build(*flags: str) -> float:
    started = time.monotonic()
    sh(str(REPO / "scripts" / "build-images"), *flags)
    return time.monotonic() - started


def size_mb(image: str) -> float:
    return int(sh("podman", "image", "inspect", "--format", "{{.Size}}", image)) / 1e6


def largest(image: str, count: int = 6) -> list[tuple[str, int]]:
    out = sh("podman", "run", "--rm", "--entrypoint", "sh", image, "-c",
             f"du -sm {SITE}/* | sort -rn | head -{count}")  # fmt: skip
    return [(Path(p).name, int(mb)) for mb, p in (line.split("\t") for line in out.splitlines())]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rebuild-base", action="store_true")
    args = parser.parse_args()
    build()  # so that the base exists and can be named
    base = base_of("localhost/stagegate-trainer:dev")
    if args.rebuild_base and base.startswith("localhost/"):
        sh("podman", "rmi", "--force", base)
    cold = build("--no-cache")
    build()  # layers built with --no-cache are not reused: this build fills the cache
    cached = build()
    figures: dict[str, object] = {
        "cold_build_s": round(cold, 1),
        "cached_build_s": round(cached, 1),
        "base_rebuilt": args.rebuild_base,
        "base": base,
        "base_mb": round(size_mb(base), 1),
    }
    print(f"cold build, both images{' and the base' if args.rebuild_base else ''}: {cold:.1f} s")
    print(f"cached build, both images: {cached:.1f} s")
    print(f"base {base}: {figures['base_mb']} MB")
    for name, target in TARGETS_MB.items():
        image = f"localhost/stagegate-{name}:dev"
        mb = size_mb(image)
        figures[f"{name}_mb"] = round(mb, 1)
        figures[f"{name}_target_mb"] = target
        top = largest(image)
        figures[f"{name}_largest"] = dict(top)
        verdict = "within" if mb <= target else "OVER"
        print(f"{name}: {mb:.0f} MB (target <= {target} MB: {verdict})")
        print("  largest packages (MB): " + ", ".join(f"{n} {m}" for n, m in top))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
