"""A real Prometheus server (the Debian `prometheus` package's binary) for tests.

Fixture ``prometheus`` -> factory ``start(targets, rule_files=()) -> Prometheus``: starts
``prometheus`` on a free 127.0.0.1 port with a temporary storage dir, scraping each
``job -> "host:port"`` target every second, and stops it at teardown. :class:`Prometheus` has
``url``, ``query(expr)`` (instant query; raises on a PromQL error), ``query_range(expr, seconds)``,
``label_values(label, match)`` and ``wait_for_targets()``.

Prometheus is one of the real parts the tests use (DESIGN §7): without ``$PROMETHEUS`` or
``prometheus`` on PATH the fixture fails, naming the install command
(``apt-get install -y --no-install-recommends prometheus``; Debian 12 ships 2.42).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.procs import free_port


def prometheus_binary() -> str | None:
    return os.environ.get("PROMETHEUS") or shutil.which("prometheus")


def promtool_binary() -> str | None:
    return os.environ.get("PROMTOOL") or shutil.which("promtool")


class PromQLError(AssertionError):
    pass


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, params: Mapping[str, str]) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 400/422: a parse or evaluation error
            body = json.loads(exc.read() or b"{}")
            raise PromQLError(f"{params}: {body.get('errorType')}: {body.get('error')}") from None
        if body.get("status") != "success":
            raise PromQLError(f"{params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", {"query": expr})
        result: Any = data["result"]
        return result if data["resultType"] in ("vector", "matrix") else [{"value": result}]

    def query_range(self, expr: str, seconds: float, step: float = 1) -> list[dict[str, Any]]:
        now = time.time()
        data = self.api(
            "query_range",
            {"query": expr, "start": str(now - seconds), "end": str(now), "step": str(step)},
        )
        return data["result"]

    def label_values(self, label: str, match: str) -> list[str]:
        return self.api(f"label/{label}/values", {"match[]": match})

    def rules(self) -> list[dict[str, Any]]:
        groups = self.api("rules", {})["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def targets(self) -> list[dict[str, Any]]:
        return self.api("targets", {})["activeTargets"]

    def wait_for_targets(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            targets = self.targets()
            if targets and all(t["health"] == "up" for t in targets):
                return
            time.sleep(0.2)
        raise AssertionError(f"targets not up: {self.targets()}\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[..., Prometheus]]:
    binary = prometheus_binary()
    if binary is None:
        pytest.fail("no prometheus binary: apt-get install -y --no-install-recommends prometheus")
    started: list[Prometheus] = []

    def start(targets: Mapping[str, str], rule_files: Sequence[Path] = ()) -> Prometheus:
        root = tmp_path / f"prometheus-{len(started)}"
        (root / "data").mkdir(parents=True)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]}
                for job, target in targets.items()
            ],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = root / "prometheus.log"
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        server = Prometheus(f"http://127.0.0.1:{port}", process, log)
        started.append(server)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return server
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("prometheus not ready:\n" + log.read_text())

    try:
        yield start
    finally:
        for server in started:
            server.stop()
