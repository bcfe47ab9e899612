"""S3 for tests, over real HTTP on 127.0.0.1: moto in server mode (a model of AWS, fast, in
memory) for most tests, and SeaweedFS's S3 gateway (a real object store, tests.support.seaweed)
for the `any_s3_*` fixtures, which run a test once on each."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto S3 server on a free port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweedfs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SeaweedFS S3 server (`weed mini`) of this test worker; yields its endpoint URL."""
    from tests.support.seaweed import SeaweedS3, weed_binary

    server = SeaweedS3(weed_binary(), tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server.endpoint
    finally:
        server.stop()


@pytest.fixture
def s3_env(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point boto3 at the moto server with fake credentials; yields the endpoint URL."""
    return _point_boto3_at(moto_server, monkeypatch)


@pytest.fixture(params=["moto", "seaweedfs"])
def any_s3_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Like s3_env, once on moto and once on SeaweedFS."""
    endpoint: str = request.getfixturevalue(f"{request.param}_server")
    return _point_boto3_at(endpoint, monkeypatch)


@pytest.fixture
def any_s3_bucket(any_s3_env: str) -> str:
    return _new_bucket(any_s3_env)


@pytest.fixture
def seaweedfs_bucket(seaweedfs_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on SeaweedFS, boto3 pointed at it."""
    return _new_bucket(_point_boto3_at(seaweedfs_server, monkeypatch))


def _point_boto3_at(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # Never let a test find a developer's real AWS config or ask an instance metadata service.
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/stagegate-test-credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/stagegate-test-config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return endpoint


@pytest.fixture
def s3_bucket(s3_env: str) -> str:
    """A fresh, uniquely named bucket on the moto server; yields `s3://<bucket>`."""
    return _new_bucket(s3_env)


def _new_bucket(endpoint: str) -> str:
    import boto3

    name = f"stagegate-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return f"s3://{name}"
