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
from typing import Any
from urllib.parse import unquote, urlsplit


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


def clean_key(key: str) -> str:
    """Normalise a key and refuse ones that would escape the store root."""
    if not isinstance(key, str) or not key.strip("/"):
        raise StoreError(f"invalid artifact key {key!r}: must be a non-empty relative path")
    parts = [p for p in key.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise StoreError(f"invalid artifact key {key!r}: '..' is not allowed")
    return "/".join(parts)


def clean_prefix(prefix: str) -> str:
    """Like `clean_key` but the empty prefix (the whole store) is allowed; keeps a final '/'."""
    if not prefix:
        return ""
    trailing = prefix.endswith("/")
    cleaned = clean_key(prefix)
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
        return f"{self.root_uri.rstrip('/')}/{clean_key(key)}"

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
        return self.root.joinpath(*clean_key(key).split("/"))

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
        prefix = clean_prefix(prefix)
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
        folder_rel = clean_prefix(prefix).rstrip("/")
        if folder_rel:
            folder = self._path(folder_rel)
            if folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
                shutil.rmtree(folder, ignore_errors=True)
        return len(keys)

    def child(self, prefix: str) -> LocalStore:
        return LocalStore(self._path(prefix))


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
        from .s3store import S3Connection, S3Store  # boto3 only where S3 is used

        policy = retry or RetryPolicy()
        return S3Store(S3Connection(bucket, policy, sleep), unquote(parts.path))
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
    "StoreError",
    "dumps_json",
    "open_store",
    "split_uri",
]
