"""S3 store: any S3-compatible bucket (AWS, SeaweedFS, MinIO, Ceph, R2) through boto3.

Credentials come from boto3's standard chain (environment, profile, SSO, IMDS);
they are never logged or put in messages. Errors go through
:data:`runarchive.errors.S3_ERROR_TABLE`; botocore retries transient failures
(``standard`` or ``adaptive`` mode) before we see them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import boto3
import botocore.config
import botocore.exceptions

from runarchive.errors import (
    AccessDeniedError,
    BucketNotFoundError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
    StoreUnavailableError,
    store_error_for,
)
from runarchive.store.base import (
    Capabilities,
    GetResult,
    IfMatch,
    ObjectMeta,
    PutMode,
    Store,
    check_key,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's floor for every part but the last


@dataclass(frozen=True)
class S3Settings:
    """How to reach the bucket. ``None`` means boto3's own default/chain."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    retry_mode: Literal["standard", "adaptive"] = "standard"
    max_attempts: int = 5
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    request_checksum_calculation: Literal["when_supported", "when_required"] = "when_supported"
    response_checksum_validation: Literal["when_supported", "when_required"] = "when_supported"
    multipart_threshold: int = 64 * 1024 * 1024
    multipart_part_size: int = 16 * 1024 * 1024
    max_pool_connections: int = 16


_UNAVAILABLE = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ProxyConnectionError,
    botocore.exceptions.HTTPClientError,
)


class S3Store(Store):
    """Objects under ``s3://bucket/prefix``."""

    capabilities = Capabilities(conditional_writes=True, multipart=True, remote=True)

    def __init__(self, settings: S3Settings, *, client: S3Client | None = None) -> None:
        self.settings = settings
        self._prefix = settings.prefix.strip("/")
        if self._prefix:
            self._prefix += "/"
        self._client = client or self._make_client(settings)
        self._local = threading.local()

    @staticmethod
    def _make_client(s: S3Settings) -> S3Client:
        config = botocore.config.Config(
            retries={"mode": s.retry_mode, "max_attempts": s.max_attempts},
            s3={"addressing_style": s.addressing_style},
            connect_timeout=s.connect_timeout,
            read_timeout=s.read_timeout,
            max_pool_connections=s.max_pool_connections,
            request_checksum_calculation=s.request_checksum_calculation,
            response_checksum_validation=s.response_checksum_validation,
        )
        session = boto3.session.Session(profile_name=s.profile, region_name=s.region)
        client: S3Client = session.client("s3", endpoint_url=s.endpoint_url, config=config)
        return client

    @property
    def description(self) -> str:
        # The client's endpoint includes one set by AWS_ENDPOINT_URL_S3 or a profile.
        endpoint = self.settings.endpoint_url or self._client.meta.endpoint_url
        where = f" at {endpoint}" if endpoint else ""
        return f"s3://{self.settings.bucket}/{self._prefix}{where}"

    def _full(self, key: str) -> str:
        return self._prefix + check_key(key)

    def _raise(self, exc: Exception, op: str, key: str | None) -> NoReturn:
        if isinstance(exc, botocore.exceptions.ClientError):
            err: Any = exc.response.get("Error", {})
            meta: Any = exc.response.get("ResponseMetadata", {})
            raise store_error_for(
                str(err.get("Code", "")), meta.get("HTTPStatusCode"), op=op, key=key
            ) from exc
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            raise AccessDeniedError(
                f"{op}: no AWS credentials found; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE, or run on a host with an instance role",
                key=key,
            ) from exc
        if isinstance(exc, _UNAVAILABLE):
            raise StoreUnavailableError(
                f"{op}: cannot reach {self.description} ({type(exc).__name__}); check the "
                "endpoint URL and the network. Appended records stay in the local cache.",
                key=key,
            ) from exc
        if isinstance(exc, botocore.exceptions.BotoCoreError):
            raise StoreError(f"{op}: {exc}", key=key) from exc
        raise exc

    def get(self, key: str) -> GetResult:
        try:
            resp = self._client.get_object(Bucket=self.settings.bucket, Key=self._full(key))
            body = resp["Body"].read()
        except Exception as exc:  # mapped, never swallowed
            self._raise(exc, "GET", key)
        return GetResult(body, resp["ETag"])

    def _head(self, key: str) -> Any:
        """The HEAD response, or ``None`` if the object does not exist."""
        try:
            return self._client.head_object(Bucket=self.settings.bucket, Key=self._full(key))
        except Exception as exc:
            try:
                self._raise(exc, "HEAD", key)
            except ObjectNotFoundError:
                return None

    def head(self, key: str) -> ObjectMeta | None:
        resp = self._head(key)
        return None if resp is None else ObjectMeta(key, resp["ContentLength"], resp["ETag"])

    def lock_reason(self, key: str) -> str | None:
        resp = self._head(key)
        if resp is None:
            return None
        if resp.get("ObjectLockLegalHoldStatus") == "ON":
            return "a legal hold"
        until = resp.get("ObjectLockRetainUntilDate")
        if until is not None and until > datetime.now(UTC):
            return f"{resp.get('ObjectLockMode', 'a')} retention until {until.isoformat()}"
        return None

    def put(self, key: str, body: bytes, *, mode: PutMode = "overwrite") -> str:
        cond: dict[str, Any] = {}
        if mode == "create":
            cond["IfNoneMatch"] = "*"
        elif isinstance(mode, IfMatch):
            cond["IfMatch"] = mode.etag
        if len(body) > self.settings.multipart_threshold:
            return self._put_multipart(key, body, cond)
        try:
            try:
                resp = self._client.put_object(
                    Bucket=self.settings.bucket, Key=self._full(key), Body=body, **cond
                )
            except Exception as exc:
                self._raise(exc, "PUT", key)
        except ObjectNotFoundError as exc:
            # AWS answers If-Match on a missing key with 404 (SeaweedFS: 412); to the
            # contract both mean "the object is not the one you read".
            if "IfMatch" in cond and not isinstance(exc, BucketNotFoundError):
                raise PreconditionFailedError(f"{key!r} does not exist", key=key) from exc
            raise
        return resp["ETag"]

    def _put_multipart(self, key: str, body: bytes, cond: dict[str, Any]) -> str:
        bucket, full = self.settings.bucket, self._full(key)
        part_size = max(self.settings.multipart_part_size, MIN_PART_SIZE)
        try:
            upload_id = self._client.create_multipart_upload(Bucket=bucket, Key=full)["UploadId"]
        except Exception as exc:
            self._raise(exc, "CreateMultipartUpload", key)
        try:
            parts = []
            for number, start in enumerate(range(0, len(body), part_size), start=1):
                resp = self._client.upload_part(
                    Bucket=bucket,
                    Key=full,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body[start : start + part_size],
                )
                parts.append({"ETag": resp["ETag"], "PartNumber": number})
            done = self._client.complete_multipart_upload(
                Bucket=bucket,
                Key=full,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                **cond,
            )
        except Exception as exc:
            try:
                self._client.abort_multipart_upload(Bucket=bucket, Key=full, UploadId=upload_id)
            except Exception as abort_exc:  # the original error matters more; keep both
                exc.add_note(f"aborting the multipart upload also failed: {abort_exc!r}")
            self._raise(exc, "multipart PUT", key)
        return done["ETag"]

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        paginator = self._client.get_paginator("list_objects_v2")
        cut = len(self._prefix)
        try:
            for page in paginator.paginate(
                Bucket=self.settings.bucket, Prefix=self._prefix + prefix
            ):
                for obj in page.get("Contents", []):
                    yield ObjectMeta(obj["Key"][cut:], obj["Size"], obj["ETag"])
        except Exception as exc:
            self._raise(exc, "LIST", prefix or None)

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.settings.bucket, Key=self._full(key))
        except Exception as exc:
            self._raise(exc, "DELETE", key)

    def close(self) -> None:
        self._client.close()
