"""S3 store: any S3-compatible bucket (AWS, SeaweedFS, MinIO, Ceph, R2) through boto3.

Credentials come from boto3's standard chain (environment, profile, SSO, IMDS);
they are never logged or put in messages, and neither are object bodies. Errors go
through :data:`runarchive.errors.S3_ERROR_TABLE`; botocore retries transient failures
(``standard`` or ``adaptive`` mode) before we see them.

Encryption at rest: with ``sse`` set, every PUT and CreateMultipartUpload asks for
SSE-S3 (``AES256``) or SSE-KMS (``aws:kms``, with ``sse_kms_key_id`` if given).

Object Lock: with ``object_lock_mode`` / ``object_lock_days`` set, every *immutable*
put (segments) carries ``x-amz-object-lock-mode`` and a retain-until date of now +
days, plus a ``Content-MD5`` (S3 requires an integrity header on such PUTs and
UploadParts; MD5 is the one every S3-compatible server knows, and it is sent even
with ``request_checksum_calculation="when_required"``). The bucket must have been
created with Object Lock enabled (which makes it versioned).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar

import boto3
import botocore.config
import botocore.exceptions

from runarchive.errors import (
    AccessDeniedError,
    BucketNotFoundError,
    ObjectLockedError,
    ObjectLockUnsupportedError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
    StoreUnavailableError,
    store_error_for,
)
from runarchive.faults import fault_point
from runarchive.store.base import (
    Capabilities,
    GetResult,
    IfMatch,
    Level,
    LockMode,
    LockState,
    ObjectMeta,
    PutMode,
    Retention,
    Store,
    check_key,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_R = TypeVar("_R")
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's floor for every part but the last
log = logging.getLogger(__name__)


_Versions = list[Any]  # [{"Key": ..., "VersionId": ...}] for DeleteObjects


def _md5_b64(body: bytes) -> str:
    """The ``Content-MD5`` header value of ``body``."""
    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()


IMMUTABLE_TAG = "runarchive-object=segment"  # URL-encoded tag set of immutable puts


def request_ids(meta: Any) -> dict[str, str | None]:
    """``request_id`` and ``host_id`` of an S3 answer, from botocore's ``ResponseMetadata``.

    The headers come first (``x-amz-request-id``, ``x-amz-id-2``: S3 sends them on every
    answer, a HEAD's 404 included); botocore's ``RequestId`` / ``HostId`` (parsed from an
    XML error body) and ``x-amzn-requestid`` (moto) stand in where a server omits them.
    """
    if not isinstance(meta, dict):
        return {"request_id": None, "host_id": None}
    headers: Any = meta.get("HTTPHeaders") or {}
    request_id = (
        headers.get("x-amz-request-id")
        or meta.get("RequestId")
        or headers.get("x-amzn-requestid")
        or None
    )
    host_id = headers.get("x-amz-id-2") or meta.get("HostId") or None
    return {"request_id": request_id, "host_id": host_id}


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
    object_lock_mode: LockMode | None = None  # retention of immutable puts
    object_lock_days: int | None = None  # required with object_lock_mode
    sse: Literal["AES256", "aws:kms"] | None = None  # encryption at rest of every put
    sse_kms_key_id: str | None = None  # only with sse="aws:kms"; else the bucket's key
    # Tag immutable objects (segments) so a bucket lifecycle rule can select exactly
    # them (S3 lifecycle filters cannot match a middle path component like "/seg/").
    tag_immutable: bool = True

    def __post_init__(self) -> None:
        if (self.object_lock_mode is None) != (self.object_lock_days is None):
            raise ValueError("object_lock_mode and object_lock_days go together")
        if self.object_lock_days is not None and self.object_lock_days < 1:
            raise ValueError("object_lock_days must be at least 1")
        if self.sse_kms_key_id is not None and self.sse != "aws:kms":
            raise ValueError('sse_kms_key_id needs sse="aws:kms"')


_UNAVAILABLE = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ProxyConnectionError,
    botocore.exceptions.HTTPClientError,
    botocore.exceptions.IncompleteReadError,
)
# The connection broke while a GET's body was read: botocore's retries are over by
# then (they cover the request and the headers), so :meth:`S3Store.get` retries.
_CUT_BODY = (
    botocore.exceptions.IncompleteReadError,
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
)


class S3Store(Store):
    """Objects under ``s3://bucket/prefix``."""

    capabilities = Capabilities(
        conditional_writes=True, multipart=True, remote=True, object_lock=True, encryption=True
    )

    def __init__(self, settings: S3Settings, *, client: S3Client | None = None) -> None:
        self.settings = settings
        self._prefix = settings.prefix.strip("/")
        if self._prefix:
            self._prefix += "/"
        self._client = client or self._make_client(settings)
        self._local = threading.local()
        self._retention = (
            None
            if settings.object_lock_mode is None or settings.object_lock_days is None
            else Retention(settings.object_lock_mode, settings.object_lock_days)
        )
        self._sse: dict[str, Any] = {}
        if settings.sse is not None:
            self._sse["ServerSideEncryption"] = settings.sse
        if settings.sse_kms_key_id is not None:
            self._sse["SSEKMSKeyId"] = settings.sse_kms_key_id

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

    def _note_retries(self, meta: Any) -> None:
        """Tell the observer how often botocore retried the request ``meta`` answers."""
        count = meta.get("RetryAttempts") if isinstance(meta, dict) else None
        if count and self.observer is not None:
            self.observer.retries(int(count), "botocore")

    def _ok(self, resp: _R) -> _R:
        """A botocore response, after noting its retries (if an observer listens)."""
        if self.observer is not None:
            self._note_retries(resp.get("ResponseMetadata") if isinstance(resp, dict) else None)
        return resp

    def _raise(self, exc: Exception, op: str, key: str | None) -> NoReturn:
        if isinstance(exc, botocore.exceptions.ClientError):
            err: Any = exc.response.get("Error", {})
            meta: Any = exc.response.get("ResponseMetadata", {})
            self._note_retries(meta)
            raise store_error_for(
                str(err.get("Code", "")),
                meta.get("HTTPStatusCode"),
                op=op,
                key=key,
                **request_ids(meta),
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
        """GetObject. A body cut short (connection reset or timed out mid-read) is
        fetched again, up to ``max_attempts`` GETs in all; then StoreUnavailableError."""
        attempts = max(1, self.settings.max_attempts)
        for attempt in range(1, attempts + 1):
            try:
                resp = self._ok(
                    self._client.get_object(Bucket=self.settings.bucket, Key=self._full(key))
                )
            except Exception as exc:  # mapped, never swallowed
                self._raise(exc, "GET", key)
            try:
                body = resp["Body"].read()
            except _CUT_BODY as exc:
                if attempt < attempts:
                    log.info("GET %s: body cut short (%s); reading again", key, type(exc).__name__)
                    if self.observer is not None:
                        self.observer.retries(1, "body")
                    continue
                self._raise(exc, "GET", key)
            except Exception as exc:
                self._raise(exc, "GET", key)
            return GetResult(body, resp["ETag"])
        raise AssertionError("unreachable")

    def get_if_changed(self, key: str, etag: str) -> GetResult | None:
        """GetObject with ``If-None-Match: etag``: a 304 (no body) means unchanged."""
        try:
            resp = self._ok(
                self._client.get_object(
                    Bucket=self.settings.bucket, Key=self._full(key), IfNoneMatch=etag
                )
            )
        except botocore.exceptions.ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 304 or exc.response.get("Error", {}).get("Code") == "304":
                return None
            self._raise(exc, "GET", key)
        except Exception as exc:  # mapped, never swallowed
            self._raise(exc, "GET", key)
        try:
            body = resp["Body"].read()
        except Exception:  # a body cut short: read it again the plain way
            return self.get(key)
        return GetResult(body, resp["ETag"])

    def _head(self, key: str) -> Any:
        """The HEAD response, or ``None`` if the object does not exist."""
        try:
            return self._ok(
                self._client.head_object(Bucket=self.settings.bucket, Key=self._full(key))
            )
        except Exception as exc:
            try:
                self._raise(exc, "HEAD", key)
            except ObjectNotFoundError:
                return None

    def head(self, key: str) -> ObjectMeta | None:
        resp = self._head(key)
        if resp is None:
            return None
        return ObjectMeta(key, resp["ContentLength"], resp["ETag"], resp.get("LastModified"))

    @property
    def retention(self) -> Retention | None:
        return self._retention

    def lock_state(self, key: str) -> LockState | None:
        resp = self._head(key)
        if resp is None:
            return None
        return LockState(
            mode=resp.get("ObjectLockMode"),
            retain_until=resp.get("ObjectLockRetainUntilDate"),
            legal_hold=resp.get("ObjectLockLegalHoldStatus") == "ON",
        )

    def set_legal_hold(self, key: str, on: bool) -> None:
        """PutObjectLegalHold on the current version of ``key``: one request. Needs
        ``s3:PutObjectLegalHold``; a bucket without Object Lock refuses it."""
        try:
            try:
                self._ok(
                    self._client.put_object_legal_hold(
                        Bucket=self.settings.bucket,
                        Key=self._full(key),
                        LegalHold={"Status": "ON" if on else "OFF"},
                    )
                )
            except Exception as exc:
                self._raise(exc, "PutObjectLegalHold", key)
        except StoreError as exc:
            if exc.code == "InvalidRequest":  # AWS, moto and SeaweedFS: no Object Lock
                raise ObjectLockUnsupportedError(
                    f"cannot place a legal hold on {key!r}: {self.description} does not have "
                    "Object Lock enabled (it can only be set when the bucket is created, "
                    "with --object-lock-enabled-for-bucket)",
                    key=key,
                    code=exc.code,
                    request_id=exc.request_id,
                    host_id=exc.host_id,
                ) from exc
            raise

    def object_lock_enabled(self) -> bool:
        """GetObjectLockConfiguration: one request. Logs a warning if the bucket has a
        default retention rule (it would lock the index and manifest objects too)."""
        try:
            resp = self._ok(self._client.get_object_lock_configuration(Bucket=self.settings.bucket))
        except Exception as exc:
            try:
                self._raise(exc, "GetObjectLockConfiguration", None)
            except ObjectLockUnsupportedError:
                return False
            except AccessDeniedError as denied:
                denied.add_note(
                    "reading it needs the s3:GetBucketObjectLockConfiguration permission"
                )
                raise
            except StoreError as other:
                if other.code in ("NotImplemented", "501"):  # a server without Object Lock
                    return False
                raise
        config: Any = resp.get("ObjectLockConfiguration", {})
        if config.get("Rule", {}).get("DefaultRetention"):
            log.warning(
                "%s has a default Object Lock retention rule: the run indexes and manifest "
                "shards get it too, so their every version is kept until it expires and "
                "delete_run() refuses runs until then; runarchive's object_lock_mode "
                "locks only segments",
                self.description,
            )
        return bool(config.get("ObjectLockEnabled") == "Enabled")

    def _write_args(self, body: bytes | None, immutable: bool) -> dict[str, Any]:
        """Headers of a PUT / CreateMultipartUpload: SSE always, lock on immutable puts.

        ``body`` is the PUT body (for its Content-MD5), ``None`` for a multipart create.
        """
        args = dict(self._sse)
        if immutable and self.settings.tag_immutable:
            args["Tagging"] = IMMUTABLE_TAG
        if immutable and self._retention is not None:
            args["ObjectLockMode"] = self._retention.mode
            args["ObjectLockRetainUntilDate"] = self._retention.until()
            if body is not None:
                args["ContentMD5"] = _md5_b64(body)
        return args

    def put(
        self, key: str, body: bytes, *, mode: PutMode = "overwrite", immutable: bool = False
    ) -> str:
        cond: dict[str, Any] = {}
        if mode == "create":
            cond["IfNoneMatch"] = "*"
        elif isinstance(mode, IfMatch):
            cond["IfMatch"] = mode.etag
        if len(body) > self.settings.multipart_threshold:
            return self._put_multipart(key, body, cond, immutable)
        try:
            try:
                resp = self._ok(
                    self._client.put_object(
                        Bucket=self.settings.bucket,
                        Key=self._full(key),
                        Body=body,
                        **cond,
                        **self._write_args(body, immutable),
                    )
                )
            except Exception as exc:
                self._raise(exc, "PUT", key)
        except ObjectNotFoundError as exc:
            # AWS answers If-Match on a missing key with 404 (SeaweedFS: 412); to the
            # contract both mean "the object is not the one you read".
            if "IfMatch" in cond and not isinstance(exc, BucketNotFoundError):
                raise PreconditionFailedError(
                    f"{key!r} does not exist",
                    key=key,
                    code=exc.code,
                    request_id=exc.request_id,
                    host_id=exc.host_id,
                ) from exc
            raise
        return resp["ETag"]

    def _put_multipart(
        self, key: str, body: bytes, cond: dict[str, Any], immutable: bool = False
    ) -> str:
        bucket, full = self.settings.bucket, self._full(key)
        part_size = max(self.settings.multipart_part_size, MIN_PART_SIZE)
        locked = immutable and self._retention is not None
        try:
            upload_id = self._ok(
                self._client.create_multipart_upload(
                    Bucket=bucket, Key=full, **self._write_args(None, immutable)
                )
            )["UploadId"]
        except Exception as exc:
            self._raise(exc, "CreateMultipartUpload", key)
        try:
            parts = []
            for number, start in enumerate(range(0, len(body), part_size), start=1):
                chunk = body[start : start + part_size]
                integrity: dict[str, Any] = {"ContentMD5": _md5_b64(chunk)} if locked else {}
                resp = self._ok(
                    self._client.upload_part(
                        Bucket=bucket,
                        Key=full,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        **integrity,
                    )
                )
                parts.append({"ETag": resp["ETag"], "PartNumber": number})
                fault_point("multipart.after_part")
            done = self._ok(
                self._client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=full,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                    **cond,
                )
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
                for obj in self._ok(page).get("Contents", []):
                    yield ObjectMeta(
                        obj["Key"][cut:], obj["Size"], obj["ETag"], obj.get("LastModified")
                    )
        except Exception as exc:
            self._raise(exc, "LIST", prefix or None)

    def list_level(self, prefix: str) -> Level:
        paginator = self._client.get_paginator("list_objects_v2")
        cut = len(self._prefix)
        dirs: list[str] = []
        objects: list[ObjectMeta] = []
        try:
            for page in paginator.paginate(
                Bucket=self.settings.bucket, Prefix=self._prefix + prefix, Delimiter="/"
            ):
                body = self._ok(page)
                dirs.extend(p["Prefix"][cut:] for p in body.get("CommonPrefixes", []))
                objects.extend(
                    ObjectMeta(o["Key"][cut:], o["Size"], o["ETag"], o.get("LastModified"))
                    for o in body.get("Contents", [])
                )
        except Exception as exc:
            self._raise(exc, "LIST", prefix or None)
        return dirs, objects

    def delete(self, key: str, *, bypass_governance: bool = False) -> None:
        """Delete ``key``. Cost: one DELETE.

        On a versioned bucket (every Object Lock bucket is one) a plain DELETE only
        adds a delete marker: the object disappears from GET and LIST, its data stays
        as a noncurrent version (until a lifecycle rule expires it), and it always
        succeeds, locked or not. ``bypass_governance=True`` removes the object for
        good: every version and delete marker of the key, deleted by version id with
        ``x-amz-bypass-governance-retention`` (a ``GOVERNANCE`` retention yields if the
        credentials have ``s3:BypassGovernanceRetention``; a legal hold or a
        ``COMPLIANCE`` retention refuses with ``ObjectLockedError``). Cost then: one
        ListObjectVersions plus one DeleteObjects per 1,000 versions (a run index has
        one version per flush).
        """
        if not bypass_governance:
            try:
                self._ok(
                    self._client.delete_object(Bucket=self.settings.bucket, Key=self._full(key))
                )
            except Exception as exc:
                self._raise(exc, "DELETE", key)
            return
        bucket, full = self.settings.bucket, self._full(key)
        paginator = self._client.get_paginator("list_object_versions")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=full):
                self._ok(page)
                versions = [
                    {"Key": full, "VersionId": v["VersionId"]}
                    for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
                    if v["Key"] == full
                ]
                if versions:
                    self._delete_versions(key, versions)
        except StoreError:
            raise
        except Exception as exc:
            self._raise(exc, "DELETE (bypassing governance)", key)

    def _delete_versions(self, key: str, versions: _Versions) -> None:
        """One DeleteObjects of at most 1,000 versions, bypassing governance."""
        resp = self._ok(
            self._client.delete_objects(
                Bucket=self.settings.bucket,
                Delete={"Objects": versions, "Quiet": True},
                BypassGovernanceRetention=True,
            )
        )
        errors: Any = resp.get("Errors", [])
        if not errors:
            return
        first = errors[0]
        code = str(first.get("Code", ""))
        # DeleteObjects answers 200 with per-key errors: the ids are of that answer.
        ids = request_ids(resp.get("ResponseMetadata"))
        if code == "AccessDenied":
            raise ObjectLockedError(
                f"DELETE of {len(errors)} version(s) of {key!r} was refused: a legal hold or "
                "a COMPLIANCE retention, or the credentials lack "
                "s3:BypassGovernanceRetention / s3:DeleteObjectVersion",
                key=key,
                code=code,
                **ids,
            )
        raise store_error_for(code, None, op="DELETE (bypassing governance)", key=key, **ids)

    def close(self) -> None:
        self._client.close()
