"""Artifacts store: one small API over a local folder and an S3 bucket (MinIO in a cluster).

Keys are relative POSIX paths (`quick/folds/00/metrics.json`). Writes are atomic: a local write
goes to a temporary file in the target folder and is renamed over the key; an S3 write is a
single PUT. Every failure a user can cause (bad URI, missing bucket or credentials, unreachable
endpoint, unwritable folder) raises `StoreError` with a one-line message that never contains
credentials.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

T = TypeVar("T")


class StoreError(ValueError):
    """A one-line, user-facing artifacts store failure."""


class ArtifactNotFoundError(StoreError):
    """The key does not exist in the store."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff: waits base, 2*base, 4*base ... (capped) between tries."""

    tries: int = 4
    base_delay: float = 0.25
    max_delay: float = 8.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the failed try number `attempt` (0-based)."""
        return float(min(self.max_delay, self.base_delay * (2**attempt)))


def _clean_key(key: str) -> str:
    """Normalise a key and refuse ones that would escape the store root."""
    if not isinstance(key, str) or not key.strip("/"):
        raise StoreError(f"invalid artifact key {key!r}: must be a non-empty relative path")
    parts = [p for p in key.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise StoreError(f"invalid artifact key {key!r}: '..' is not allowed")
    return "/".join(parts)


def _clean_prefix(prefix: str) -> str:
    """Like `_clean_key` but the empty prefix (the whole store) is allowed; keeps a final '/'."""
    if not prefix:
        return ""
    trailing = prefix.endswith("/")
    cleaned = _clean_key(prefix)
    return cleaned + "/" if trailing else cleaned


def dumps_json(obj: Any) -> bytes:
    """Byte-stable JSON: sorted keys, indent 2, trailing newline, UTF-8."""
    return (json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


class ArtifactStore(ABC):
    """A key/value store of bytes rooted at a URI."""

    @property
    @abstractmethod
    def root_uri(self) -> str:
        """The URI of the store root, e.g. `s3://bucket/prefix` or `file:///abs/path`."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """Raise `ArtifactNotFoundError` when the key is absent."""

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Atomic: readers see either the old content or the new one, never a partial file."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys (relative to this store) starting with `prefix`."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with `prefix`; return how many were deleted."""

    @abstractmethod
    def child(self, prefix: str) -> ArtifactStore:
        """A store rooted at `<root>/<prefix>`."""

    def uri(self, key: str) -> str:
        return f"{self.root_uri.rstrip('/')}/{_clean_key(key)}"

    def local_path(self, key: str) -> Path | None:
        """The file backing `key` when the store is local, else None."""
        return None

    def read_json(self, key: str) -> Any:
        data = self.read_bytes(key)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise StoreError(f"{self.uri(key)} is not valid JSON: {exc}") from None

    def write_json(self, key: str, obj: Any) -> None:
        self.write_bytes(key, dumps_json(obj))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root_uri!r})"


# --------------------------------------------------------------------------- local folder


_TMP_PREFIX = ".tmp-"


class LocalStore(ArtifactStore):
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def root_uri(self) -> str:
        return self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_clean_key(key).split("/"))

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"artifact not found: {path}") from None
        except IsADirectoryError:
            raise StoreError(f"artifact {path} is a folder, not a file") from None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        folder = path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create folder {folder}: {exc.strerror or exc}") from None
        # The temporary file lives in the target folder so os.replace is a same-filesystem
        # rename, which POSIX guarantees atomic: no reader ever sees a half-written artifact.
        try:
            fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=folder)
        except OSError as exc:
            raise StoreError(f"cannot write to folder {folder}: {exc.strerror or exc}") from None
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def list(self, prefix: str = "") -> list[str]:
        prefix = _clean_prefix(prefix)
        # Walk only the deepest folder the prefix names, then filter by string prefix so the
        # semantics match S3 (`folds/0` matches `folds/00/...` and `folds/01/...`).
        base_rel = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.root.joinpath(*base_rel.split("/")) if base_rel else self.root
        if not base.is_dir():
            return []
        keys = []
        for dirpath, _dirs, files in os.walk(base):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in files:
                if name.startswith(_TMP_PREFIX):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for key in keys:
            self._path(key).unlink(missing_ok=True)
        # Remove folders left empty under the prefix so a deleted run leaves no skeleton.
        folder_rel = _clean_prefix(prefix).rstrip("/")
        if folder_rel:
            folder = self._path(folder_rel)
            if folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
                shutil.rmtree(folder, ignore_errors=True)
        return len(keys)

    def child(self, prefix: str) -> LocalStore:
        return LocalStore(self._path(prefix))


# --------------------------------------------------------------------------- S3


# Error codes S3 (and MinIO) use for "slow down"; HTTP 5xx is handled separately.
_THROTTLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
    }
)
_AUTH_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "Forbidden"}
)


class _S3Connection:
    """One boto3 client and the facts learnt about the bucket, shared by parent and children."""

    def __init__(self, bucket: str, retry: RetryPolicy, sleep: Callable[[float], None]) -> None:
        self.bucket = bucket
        self.retry = retry
        self.sleep = sleep
        self.endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        self._client: Any = None
        self._bucket_checked = False

    @property
    def where(self) -> str:
        """The endpoint for messages, without any user:password@ part."""
        if not self.endpoint:
            return "the default AWS S3 endpoint"
        parts = urlsplit(self.endpoint)
        host = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((parts.scheme, host, parts.path, "", ""))

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        session = boto3.session.Session()
        if session.get_credentials() is None:
            raise StoreError(
                f"no S3 credentials for s3://{self.bucket}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            )
        config = Config(
            # Our own loop does the retries so their number and backoff are configurable and
            # the final error can name the endpoint.
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            # MinIO and moto are served from one host name; path-style URLs always work there.
            s3={"addressing_style": "path"} if self.endpoint else {},
        )
        region = session.region_name or "us-east-1"
        return session.client("s3", endpoint_url=self.endpoint, region_name=region, config=config)

    def call(self, what: str, fn: Callable[[Any], T], *, check_bucket: bool = True) -> T:
        """Run `fn(client)` with retries on transient failures; map the rest to StoreError."""
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )

        transient = (
            EndpointConnectionError,
            ConnectTimeoutError,
            ReadTimeoutError,
            ConnectionClosedError,
        )
        if check_bucket and not self._bucket_checked:
            self.check_bucket()
        last: str = ""
        for attempt in range(self.retry.tries):
            try:
                return fn(self.client)
            except (NoCredentialsError, PartialCredentialsError):
                raise StoreError(
                    f"no usable S3 credentials for s3://{self.bucket}: set AWS_ACCESS_KEY_ID "
                    "and AWS_SECRET_ACCESS_KEY"
                ) from None
            except transient as exc:
                last = f"cannot reach S3 endpoint {self.where} ({type(exc).__name__})"
            except ClientError as exc:
                err = exc.response.get("Error", {})
                code = str(err.get("Code", ""))
                status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
                if code == "NoSuchBucket":
                    raise StoreError(
                        f"S3 bucket {self.bucket!r} does not exist at {self.where}"
                    ) from None
                if code in _AUTH_CODES or status == 403:
                    raise StoreError(
                        f"access to s3://{self.bucket} denied at {self.where} ({code or status}):"
                        " check the credentials"
                    ) from None
                if status >= 500 or status == 429 or code in _THROTTLE_CODES:
                    last = f"S3 endpoint {self.where} failed: {code or status}"
                else:
                    raise
            if attempt + 1 < self.retry.tries:
                self.sleep(self.retry.delay(attempt))
        raise StoreError(f"{what} failed after {self.retry.tries} tries: {last}")

    def check_bucket(self) -> None:
        """HEAD the bucket once, because a 404 from HEAD object cannot tell key from bucket."""
        from botocore.exceptions import ClientError

        def head(client: Any) -> None:
            try:
                client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in ("404", "NoSuchBucket", "NotFound"):
                    raise StoreError(
                        f"S3 bucket {self.bucket!r} does not exist at {self.where}"
                    ) from None
                raise

        self.call(f"checking bucket s3://{self.bucket}", head, check_bucket=False)
        self._bucket_checked = True


class S3Store(ArtifactStore):
    def __init__(self, conn: _S3Connection, prefix: str) -> None:
        self._conn = conn
        self.bucket = conn.bucket
        self.prefix = prefix.strip("/")

    @property
    def root_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _full(self, key: str) -> str:
        key = _clean_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        full = self._full(key)

        def head(client: Any) -> bool:
            try:
                client.head_object(Bucket=self.bucket, Key=full)
                return True
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey"):
                    return False
                raise

        return self._conn.call(f"checking {self.uri(key)}", head)

    def read_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        full = self._full(key)

        def get(client: Any) -> bytes:
            try:
                body: bytes = client.get_object(Bucket=self.bucket, Key=full)["Body"].read()
                return body
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey"):
                    raise ArtifactNotFoundError(f"artifact not found: {self.uri(key)}") from None
                raise

        return self._conn.call(f"reading {self.uri(key)}", get)

    def write_bytes(self, key: str, data: bytes) -> None:
        full = self._full(key)
        # A single PUT is atomic in S3: the object appears whole or not at all.
        self._conn.call(
            f"writing {self.uri(key)}",
            lambda c: c.put_object(Bucket=self.bucket, Key=full, Body=bytes(data)),
        )

    def _list_full(self, prefix: str) -> list[str]:
        rel = _clean_prefix(prefix)
        full = f"{self.prefix}/{rel}" if self.prefix else rel
        if self.prefix and not rel:
            full = self.prefix + "/"

        def run(client: Any) -> list[str]:
            keys: list[str] = []
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full
            ):
                keys.extend(obj["Key"] for obj in page.get("Contents", []))
            return keys

        return self._conn.call(f"listing {self.root_uri}/{rel}", run)

    def list(self, prefix: str = "") -> list[str]:
        cut = len(self.prefix) + 1 if self.prefix else 0
        return sorted(k[cut:] for k in self._list_full(prefix))

    def delete_prefix(self, prefix: str) -> int:
        keys = self._list_full(prefix)
        # DeleteObjects takes at most 1000 keys a request.
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]

            def delete(client: Any, objects: list[dict[str, str]] = batch) -> Any:
                return client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
                )

            self._conn.call(f"deleting under {self.root_uri}/{prefix}", delete)
        return len(keys)

    def child(self, prefix: str) -> S3Store:
        return S3Store(self._conn, self._full(prefix))


# --------------------------------------------------------------------------- opening


def open_store(
    uri: str,
    *,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ArtifactStore:
    """Open `s3://bucket/prefix`, `file:///abs/path` or a plain local path.

    Nothing is created or contacted here; the first read or write does that, so opening a
    store is cheap and never fails for lack of network.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise StoreError("empty artifacts URI: use s3://bucket/prefix, file:///path or a path")
    uri = uri.strip()
    if uri.startswith("s3://"):
        parts = urlsplit(uri)
        bucket = parts.netloc
        if not bucket:
            raise StoreError(f"artifacts URI {uri!r} names no bucket: use s3://bucket/prefix")
        policy = retry or RetryPolicy()
        return S3Store(_S3Connection(bucket, policy, sleep), unquote(parts.path))
    if uri.startswith("file:"):
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise StoreError(
                f"artifacts URI {uri!r} has a host; use file:///absolute/path for a local folder"
            )
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise StoreError(f"artifacts URI {uri!r} is not absolute: use file:///absolute/path")
        return LocalStore(Path(path))
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        raise StoreError(
            f"unsupported artifacts URI scheme {scheme!r} in {uri!r}: "
            "use s3://bucket/prefix, file:///path or a local path"
        )
    return LocalStore(Path(uri).expanduser().resolve())


def split_uri(uri: str) -> tuple[str, str]:
    """Split an object URI into (store root, key): `s3://b/p/x.pq` -> (`s3://b/p`, `x.pq`)."""
    parent, _, name = uri.rstrip("/").rpartition("/")
    if not name or parent in ("s3:/", "s3:", "file:/", "file:"):
        raise StoreError(f"URI {uri!r} does not name an object")
    return parent, name


__all__ = [
    "ArtifactNotFoundError",
    "ArtifactStore",
    "LocalStore",
    "RetryPolicy",
    "S3Store",
    "StoreError",
    "dumps_json",
    "open_store",
    "split_uri",
]
