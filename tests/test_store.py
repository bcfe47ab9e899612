"""Artifacts store: a local folder and S3 (moto server over real HTTP)."""

from __future__ import annotations

import http.client
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from stagegate_trainer.s3store import S3Store
from stagegate_trainer.store import (
    ArtifactNotFoundError,
    ArtifactStore,
    LocalStore,
    RetryPolicy,
    StoreError,
    open_store,
)

from tests.support.s3 import free_port

FAST = RetryPolicy(tries=3, base_delay=0.01, max_delay=0.05)


def _exercise(store: ArtifactStore) -> None:
    """The behaviour every store must share."""
    assert not store.exists("a/b.bin")
    store.write_bytes("a/b.bin", b"\x00\x01payload")
    assert store.exists("a/b.bin")
    assert store.read_bytes("a/b.bin") == b"\x00\x01payload"
    store.write_bytes("a/b.bin", b"second")  # overwrite is idempotent and atomic
    assert store.read_bytes("a/b.bin") == b"second"

    store.write_json("quick/summary.json", {"b": 1, "a": [1.5, "x"], "c": {"z": None, "y": 2}})
    raw = store.read_bytes("quick/summary.json")
    assert raw == (
        b'{\n  "a": [\n    1.5,\n    "x"\n  ],\n  "b": 1,\n  "c": {\n    "y": 2,\n'
        b'    "z": null\n  }\n}\n'
    )
    assert store.read_json("quick/summary.json")["c"] == {"y": 2, "z": None}

    for n in ("00", "01", "10"):
        store.write_bytes(f"quick/folds/{n}/metrics.json", n.encode())
    assert store.list("quick/folds/") == [
        "quick/folds/00/metrics.json",
        "quick/folds/01/metrics.json",
        "quick/folds/10/metrics.json",
    ]
    assert store.list("quick/folds/0") == [
        "quick/folds/00/metrics.json",
        "quick/folds/01/metrics.json",
    ]
    assert store.list("nothing/here") == []
    assert store.list() == sorted(
        ["a/b.bin", "quick/summary.json"]
        + [f"quick/folds/{n}/metrics.json" for n in ("00", "01", "10")]
    )

    child = store.child("quick/folds")
    assert child.read_bytes("01/metrics.json") == b"01"
    assert child.list() == ["00/metrics.json", "01/metrics.json", "10/metrics.json"]
    assert child.uri("00/metrics.json") == store.uri("quick/folds/00/metrics.json")

    with pytest.raises(ArtifactNotFoundError, match=r"missing\.json"):
        store.read_bytes("missing.json")
    with pytest.raises(StoreError, match=r"'\.\.'"):
        store.read_bytes("../escape")

    assert store.delete_prefix("quick/folds/") == 3
    assert store.list("quick/") == ["quick/summary.json"]
    assert not store.exists("quick/folds/00/metrics.json")


# --------------------------------------------------------------------------- local


def test_local_store_behaviour(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "artifacts"))
    assert isinstance(store, LocalStore)
    _exercise(store)
    # Nothing but the artifacts themselves is left on disk (no temporary files).
    files = sorted(
        p.relative_to(tmp_path / "artifacts").as_posix()
        for p in (tmp_path / "artifacts").rglob("*")
        if p.is_file()
    )
    assert files == ["a/b.bin", "quick/summary.json"]
    assert not (tmp_path / "artifacts" / "quick" / "folds").exists()


def test_file_uri_and_plain_path_are_the_same_store(tmp_path: Path) -> None:
    by_uri = open_store(f"file://{tmp_path}/run")
    by_path = open_store(str(tmp_path / "run"))
    by_uri.write_bytes("x/y.txt", b"hi")
    assert by_path.read_bytes("x/y.txt") == b"hi"
    assert by_uri.uri("x/y.txt") == f"file://{tmp_path}/run/x/y.txt"
    assert by_path.local_path("x/y.txt") == tmp_path / "run" / "x" / "y.txt"


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("", "empty artifacts URI"),
        ("gs://bucket/x", "unsupported artifacts URI scheme 'gs'"),
        ("s3:///prefix", "names no bucket"),
        ("file://otherhost/x", "has a host"),
    ],
)
def test_bad_uris_are_rejected(uri: str, match: str) -> None:
    with pytest.raises(StoreError, match=match):
        open_store(uri)


def test_failed_write_keeps_old_content_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(str(tmp_path))
    store.write_bytes("model/model.txt", b"old model")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StoreError, match="No space left on device"):
        store.write_bytes("model/model.txt", b"new model that never lands")
    monkeypatch.undo()
    assert store.read_bytes("model/model.txt") == b"old model"
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["model.txt"]


def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    """A reader polling while a writer rewrites a large artifact sees only whole versions."""
    store = open_store(str(tmp_path))
    blobs = [bytes([65 + i]) * (4 << 20) for i in range(2)]  # 4 MiB of 'A', then of 'B'
    store.write_bytes("data/ohlcv.parquet", blobs[0])
    seen: list[bytes] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            data = store.read_bytes("data/ohlcv.parquet")
            if data not in blobs:
                seen.append(data[:16] + b"..." + str(len(data)).encode())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(12):
            store.write_bytes("data/ohlcv.parquet", blobs[i % 2])
    finally:
        done.set()
        thread.join()
    assert seen == []


def test_unwritable_folder_is_named(tmp_path: Path) -> None:
    # A regular file where a folder should be: fails even for root, unlike a chmod.
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    store = open_store(str(blocker / "tj"))
    with pytest.raises(StoreError) as info:
        store.write_json("plan.json", {})
    message = str(info.value)
    assert "cannot create folder" in message and str(blocker / "tj") in message
    assert "\n" not in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_read_only_folder_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(StoreError, match=f"cannot write to folder {folder}"):
            open_store(str(folder)).write_bytes("x.bin", b"1")
    finally:
        folder.chmod(0o700)


# --------------------------------------------------------------------------- S3


def test_s3_store_behaviour(any_s3_bucket: str) -> None:
    store = open_store(f"{any_s3_bucket}/runs/default/tj", retry=FAST)
    assert isinstance(store, S3Store)
    assert store.uri("plan.json") == f"{any_s3_bucket}/runs/default/tj/plan.json"
    _exercise(store)
    # The prefix really is a prefix in the bucket: a store at the root sees the full keys.
    root = open_store(any_s3_bucket)
    assert root.list() == ["runs/default/tj/a/b.bin", "runs/default/tj/quick/summary.json"]


def test_s3_missing_bucket(any_s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store("s3://no-such-bucket-stagegate/x", retry=FAST)
    with pytest.raises(StoreError) as info:
        store.write_bytes("a.json", b"{}")
    message = str(info.value)
    assert "no-such-bucket-stagegate" in message and "does not exist" in message
    assert any_s3_env in message
    assert "testing" not in message  # the secret never reaches a message


def test_s3_wrong_secret_is_denied_and_not_shown(
    seaweedfs_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a server that checks signatures can show this (moto accepts any secret)."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value-1234")
    store = open_store(f"{seaweedfs_bucket}/x", retry=FAST)
    with pytest.raises(StoreError) as info:
        store.write_bytes("a.json", b"{}")
    message = str(info.value)
    assert "denied" in message and "check the credentials" in message and "403" in message
    assert "very-secret-value-1234" not in message


def test_s3_missing_credentials(any_s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = open_store(f"{any_s3_bucket}/p", retry=FAST)
    with pytest.raises(StoreError, match=r"no S3 credentials.*AWS_ACCESS_KEY_ID"):
        store.read_bytes("x")


def test_s3_unreachable_endpoint_retries_then_names_it(
    s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    sleeps: list[float] = []
    store = open_store("s3://bucket/p", retry=RetryPolicy(3, 0.01, 1.0), sleep=sleeps.append)
    with pytest.raises(StoreError) as info:
        store.write_bytes("x", b"1")
    message = str(info.value)
    assert f"cannot reach S3 endpoint {endpoint}" in message
    assert "after 3 tries" in message
    assert sleeps == [0.01, 0.02]  # exponential backoff between the three tries


class _FlakyProxy:
    """Answers the first `failures` requests with S3's 503 SlowDown, then forwards to moto."""

    def __init__(self, upstream: str, failures: int) -> None:
        self.failures = failures
        self.requests = 0
        host, port = upstream.removeprefix("http://").split(":")
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                proxy.requests += 1
                length = int(self.headers.get("Content-Length", 0) or 0)
                body = self.rfile.read(length) if length else None
                if proxy.failures > 0:
                    proxy.failures -= 1
                    payload = (
                        b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
                        b"<Message>Please reduce your request rate.</Message></Error>"
                    )
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _handle

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def flaky_proxy(s3_env: str) -> Iterator[_FlakyProxy]:
    proxy = _FlakyProxy(s3_env, failures=0)
    yield proxy
    proxy.httpd.shutdown()
    proxy.httpd.server_close()


def test_s3_retries_throttling_and_5xx(
    s3_bucket: str, flaky_proxy: _FlakyProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", flaky_proxy.url)
    sleeps: list[float] = []
    store = open_store(s3_bucket, retry=RetryPolicy(4, 0.01, 1.0), sleep=sleeps.append)
    store.write_bytes("warm.txt", b"ok")  # HEAD bucket + PUT, no faults
    assert flaky_proxy.requests == 2

    flaky_proxy.failures = 2
    store.write_bytes("plan.json", b"{}")
    assert flaky_proxy.requests == 2 + 3  # two 503 SlowDown, then the PUT that lands
    assert sleeps == [0.01, 0.02]
    assert store.read_bytes("plan.json") == b"{}"

    flaky_proxy.failures = 10
    with pytest.raises(StoreError, match=r"after 4 tries.*SlowDown"):
        store.read_bytes("plan.json")
