"""Read an OHLCV table (parquet or CSV) from `file://`, a plain path, or `s3://`."""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pandas as pd

from stagegate_trainer.data.errors import DataError
from stagegate_trainer.store import ArtifactNotFoundError, StoreError, open_store, split_uri

_PARQUET_MAGIC = b"PAR1"


def _local_path(uri: str) -> Path:
    if uri.startswith("file:"):
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise DataError(f"data URI {uri!r} has a host; use file:///absolute/path")
        return Path(unquote(parts.path))
    return Path(uri).expanduser()


def read_bytes(uri: str) -> bytes:
    """The raw bytes behind a data URI, with one-line errors for the usual mistakes."""
    if not uri or not uri.strip():
        raise DataError("empty data URI: use s3://bucket/key, file:///path or a path")
    uri = uri.strip()
    if uri.startswith("s3://"):
        try:
            root, key = split_uri(uri)
            return open_store(root).read_bytes(key)
        except ArtifactNotFoundError:
            raise DataError(f"data file not found: {uri}") from None
        except StoreError as exc:
            raise DataError(f"cannot read {uri}: {exc}") from None
    if "://" in uri and not uri.startswith("file:"):
        scheme = uri.split("://", 1)[0]
        raise DataError(f"unsupported data URI scheme {scheme!r} in {uri!r}: use s3://, file://")
    path = _local_path(uri)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"data path is a folder, not a file: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read data file {path}: {exc.strerror or exc}") from None


def parse_table(data: bytes, *, origin: str) -> pd.DataFrame:
    """Parquet (recognised by its magic bytes or a .parquet/.pq name) or CSV."""
    if not data:
        raise DataError(f"{origin}: file is empty (0 bytes)")
    name = origin.lower()
    is_parquet = data[:4] == _PARQUET_MAGIC or name.endswith((".parquet", ".pq"))
    if is_parquet:
        try:
            return pd.read_parquet(io.BytesIO(data))
        except Exception as exc:  # pyarrow raises several unrelated types for a damaged file
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise DataError(f"{origin}: not a readable parquet file ({reason})") from None
    if name.endswith((".csv", ".csv.gz", ".txt")) or b"," in data[:4096]:
        try:
            compression = "gzip" if name.endswith(".gz") else None
            return pd.read_csv(io.BytesIO(data), compression=compression)
        except (ValueError, UnicodeDecodeError, OSError) as exc:
            reason = str(exc).strip().splitlines()[0][:200]
            raise DataError(f"{origin}: not a readable CSV file ({reason})") from None
    raise DataError(f"{origin}: unknown format; expected a .parquet or .csv file")


def read_table(uri: str) -> pd.DataFrame:
    """Read a table from a URI; the frame still needs `validate_ohlcv`."""
    return parse_table(read_bytes(uri), origin=uri.strip())
