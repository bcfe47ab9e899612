"""The artifacts store on S3 (MinIO in a cluster): one boto3 client per bucket, bounded retries
of throttling and server errors, and one-line errors that name the bucket and endpoint but
never a credential. `store.open_store` opens it for an `s3://` URI.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from .store import (
    ArtifactNotFoundError,
    ArtifactStore,
    RetryPolicy,
    StoreError,
    clean_key,
    clean_prefix,
)

T = TypeVar("T")

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


class S3Connection:
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
    def __init__(self, conn: S3Connection, prefix: str) -> None:
        self._conn = conn
        self.bucket = conn.bucket
        self.prefix = prefix.strip("/")

    @property
    def root_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _full(self, key: str) -> str:
        key = clean_key(key)
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
        rel = clean_prefix(prefix)
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
