"""SeaweedFS as a real S3 server for tests: `weed mini` (master, volume, filer and S3 gateway
in one process) on loopback, built from the Go module proxy by scripts/build-seaweedfs.

Unlike moto it is not a model of AWS, and it keeps its data on disk, so it can be stopped and
started again (the fault campaign's "S3 server down"). After a restart on an existing folder
it refuses writes for ~15 s while its master warms up; a client's PUT then blocks, as it would
against a real store recovering.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-seaweedfs"
ACCESS_KEY = SECRET_KEY = "testing"  # the same fake credentials as the moto tests


def weed_binary() -> Path:
    """Build (once, cached) and return the `weed` binary."""
    out = subprocess.run(
        [str(BUILD_SCRIPT)], check=True, capture_output=True, text=True, timeout=3600
    )
    return Path(out.stdout.strip().splitlines()[-1])


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_pair(taken: set[int]) -> int:
    """A port p with p and p + 10000 free: SeaweedFS puts each service's gRPC at +10000.
    Both stay below the ephemeral range (32768 up), where an outgoing connection of another
    test could take one between this check and weed binding it."""
    for _ in range(1000):
        port = random.randint(10000, 22000)
        if {port, port + 10000} & taken:
            continue
        if _free(port) and _free(port + 10000):
            taken.update({port, port + 10000})
            return port
    raise RuntimeError("no free port pair for SeaweedFS")


class SeaweedS3:
    """One `weed mini` whose data lives in `folder`; start() and stop() may repeat."""

    def __init__(self, binary: Path, folder: Path) -> None:
        self.binary, self.folder = binary, folder
        taken: set[int] = set()
        self.ports = {
            name: _port_pair(taken) for name in ("master", "volume", "filer", "s3", "admin")
        }
        self.port = self.ports["s3"]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def command(self) -> list[str]:
        config = self.folder / "s3.json"
        return [
            str(self.binary),
            "mini",
            f"-dir={self.folder / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={self.ports['master']}",
            f"-volume.port={self.ports['volume']}",
            f"-filer.port={self.ports['filer']}",
            f"-s3.port={self.port}",
            f"-s3.config={config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            f"-admin.port={self.ports['admin']}",
            "-admin.port.legacy=0",
            "-master.telemetry=false",
            # One volume slot per bucket, none preallocated: many buckets cost no disk.
            "-master.volumeSizeLimitMB=64",
            "-volume.max=200",
        ]

    def start(self, timeout: float = 90) -> None:
        (self.folder / "data").mkdir(parents=True, exist_ok=True)
        identity = {
            "name": "tests",
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        }
        (self.folder / "s3.json").write_text(json.dumps({"identities": [identity]}))
        self.starts += 1
        log = open(self.folder / f"weed-{self.starts}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/status", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"weed mini not ready in {timeout:.0f} s:\n{self.log()}")

    def stop(self, timeout: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def log(self) -> str:
        path = self.folder / f"weed-{self.starts}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(
                s3={"addressing_style": "path"}, read_timeout=60, retries={"max_attempts": 2}
            ),
        )
