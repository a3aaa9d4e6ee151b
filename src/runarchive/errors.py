"""The exception tree of runarchive, and the one table mapping S3 error codes onto it.

Every error runarchive raises is a :class:`RunArchiveError`. Messages say what
happened and what to do; they never contain credentials or object bodies.

::

    RunArchiveError
    ├── ConfigError (ValueError)            bad setting; names the setting
    ├── InvalidInputError (ValueError)      bad run id, name, kind, seq...
    │   ├── StateNotSerializableError (TypeError too)  names the offending path
    │   ├── RecordTooLargeError             a record over max_record_bytes
    │   ├── RunExistsError                  the run id (or thread) is taken, here or by another host
    │   └── PageExpiredError                a list_runs page token too old to continue from
    ├── RunStateError                       append to a completed/failed/closed run
    │   ├── FencedError                     another host resumed this run
    │   └── ResumeConflictError             another host won the race to resume it
    ├── RunNotFoundError (KeyError)         unknown run id (cache or bucket)
    ├── CacheError                          local cache unusable (locked, corrupt, disk full)
    ├── BackpressureError                   too much unflushed data: the bucket is behind
    ├── IndexConflictError                  bucket index and cache disagree irreconcilably
    ├── MissingRecordsError                 the bucket lacks acked records no cache holds any more
    ├── ManifestConflictError               a manifest object kept changing under retries
    ├── CorruptObjectError                  checksum/format mismatch; names the object key
    │   └── DecryptionError (EncryptionError too)  ciphertext fails authentication
    ├── EncryptionError                     client-side encryption (docs/encryption.md)
    │   └── KeyUnavailableError             a key is missing, wrong or its provider failed
    ├── FormatVersionError                  object written by a newer format version
    └── StoreError                          anything from the object store
        ├── ObjectNotFoundError (KeyError)
        ├── PreconditionFailedError         If-Match / If-None-Match lost (412, 409)
        ├── BucketNotFoundError
        ├── AccessDeniedError               wrong credentials or missing permission
        ├── ObjectLockedError               a legal hold or retention forbids a delete
        ├── ObjectLockUnsupportedError      the store or bucket cannot lock objects
        ├── StoreUnavailableError           endpoint unreachable, timeouts, 5xx after retries
        └── ConditionalWritesUnsupportedError   the bucket ignores preconditions
"""

from __future__ import annotations


class RunArchiveError(Exception):
    """Base class of every error raised by runarchive."""


class ConfigError(RunArchiveError, ValueError):
    """A configuration setting is invalid; the message names the setting."""


class InvalidInputError(RunArchiveError, ValueError):
    """An argument is invalid (run id, checkpoint name, event kind, seq, time...)."""


class RecordTooLargeError(InvalidInputError):
    """A record's JSON is larger than the ``max_record_bytes`` setting."""


class StateNotSerializableError(InvalidInputError, TypeError):
    """State or event data is not JSON-serialisable; nothing was written.

    ``path`` is where the offending value sits, e.g. ``state["messages"][3]["blob"]``.
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(
            f"{path}: {problem}. runarchive stores JSON only: dicts with str keys, lists, "
            "str, int (64-bit), finite float, bool, None; pydantic models and dataclasses "
            "are converted. Convert the value first; nothing was written."
        )


class RunExistsError(InvalidInputError):
    """The run id is taken: by a run of this host's cache, by a run in the bucket, or by
    another host that claimed it first (a LangGraph thread new to this host included).
    Nothing was recorded; read the run (or thread) again and decide, or pick another id."""


class PageExpiredError(InvalidInputError):
    """A ``list_runs`` page token is too old to continue the listing exactly: list
    again from the first page."""


class RunStateError(RunArchiveError):
    """The run cannot take this operation in its current state (completed, failed, closed)."""


class FencedError(RunStateError):
    """Another host took this run over (a higher epoch); this writer may not write it.

    Nothing this writer wrote after the takeover is visible to readers; its records
    stay in its local cache (see docs/design.md, "Fencing")."""


class ResumeConflictError(RunStateError):
    """Another host resumed the same run at the same moment and won."""


class IndexConflictError(RunArchiveError):
    """The bucket's run index disagrees with this host's cache in a way that cannot be
    merged (the bucket is ahead without a higher epoch, or went backwards)."""


class MissingRecordsError(RunArchiveError):
    """Records this host acknowledged are not in the bucket (an index or a segment PUT
    was answered but not stored), and no cache here holds them any more to re-upload.
    ``seqs`` lists the missing ranges as ``(first, last)`` pairs."""

    def __init__(self, run_id: str, seqs: list[tuple[int, int]], where: str) -> None:
        self.run_id, self.seqs = run_id, seqs
        ranges = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in seqs)
        super().__init__(
            f"run {run_id!r}: the bucket lacks seqs {ranges}, and {where} no longer holds "
            "them. They were acknowledged: look for them in another host's cache "
            "(`runarchive repair` there) or in an export; `runarchive verify` lists the gap."
        )


class ManifestConflictError(RunArchiveError):
    """A manifest shard kept changing under every retry (extreme contention)."""


class RunNotFoundError(RunArchiveError, KeyError):
    """No run with this id exists in the cache or in the bucket."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "run not found"


class CacheError(RunArchiveError):
    """The local cache cannot be used (locked by another process, corrupt, disk full)."""


class BackpressureError(RunArchiveError):
    """The local cache holds ``cache_max_unflushed_bytes`` of records the bucket does
    not have yet (it is unreachable or slower than the agent); nothing was written.

    ``unflushed`` and ``limit`` are in bytes; ``size`` is the refused record's.
    """

    def __init__(self, unflushed: int, size: int, limit: int, cache_dir: object) -> None:
        self.unflushed, self.size, self.limit = unflushed, size, limit
        super().__init__(
            f"{unflushed:,} bytes of records in the cache {cache_dir} are not in the bucket "
            f"yet; this {size:,}-byte record would pass cache_max_unflushed_bytes "
            f"({limit:,}; RUNARCHIVE_CACHE_MAX_UNFLUSHED_BYTES). Nothing was written. The "
            "bucket is unreachable or slower than the agent: see archive.flush_errors or "
            "`runarchive status`; appends succeed again once the flusher has caught up. "
            "Retry later, or raise the limit if the disk can hold more."
        )


class CorruptObjectError(RunArchiveError):
    """An archived object failed its checksum or could not be decoded."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.detail = problem  # what is wrong, without the advice (verify reports it)
        super().__init__(
            f"object {key!r} is corrupt: {problem}. Do not delete it; run `runarchive show` "
            "on the run and restore from a replica or an export if you have one."
        )


class NamedObjectMissingError(CorruptObjectError):
    """A segment or page the run index names is not in the bucket. Corruption, unless
    the index changed since it was read: live compaction retires what it merged, and
    its writer (or ``gc``) deletes that after the grace period; a reader then re-reads
    the index once (docs/format.md §12.4)."""


class EncryptionError(RunArchiveError):
    """Client-side encryption failed (``docs/encryption.md``). Messages name key ids,
    never key material."""


class KeyUnavailableError(EncryptionError):
    """A key needed to encrypt or decrypt is not configured, is the wrong key for its
    id, or its provider (AWS KMS) refused; ``key_id`` names it (``local:<id>``,
    ``kms:<key>``)."""

    def __init__(self, key_id: str, message: str) -> None:
        self.key_id = key_id
        super().__init__(message)


class DecryptionError(EncryptionError, CorruptObjectError):
    """An encrypted object's ciphertext failed AES-GCM authentication: it was altered
    after it was written (or its data key was swapped). Names the object and key."""

    def __init__(self, key: str, problem: str, key_id: str) -> None:
        self.key_id = key_id
        CorruptObjectError.__init__(self, key, problem)


class FormatVersionError(RunArchiveError):
    """An object was written by a newer runarchive format version than this one reads."""


class StoreError(RunArchiveError):
    """An object-store operation failed. ``key`` is the object concerned, if any.

    ``code`` is the S3 error code (or HTTP status) when the store answered. For an
    answer from an S3 server, ``request_id`` (``x-amz-request-id``) and ``host_id``
    (``x-amz-id-2``) identify the request for the provider's support; ``str()`` ends
    with them. All three are ``None`` when there was no answer (connection refused,
    timeout) or the store is not S3.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        code: str | None = None,
        request_id: str | None = None,
        host_id: str | None = None,
    ) -> None:
        self.key = key
        self.code = code
        self.request_id = request_id or None
        self.host_id = host_id or None
        ids = [f"request id {self.request_id}"] if self.request_id else []
        if self.host_id:
            ids.append(f"host id {self.host_id}")
        # In the message itself, so every way of printing the error (str, logging,
        # a traceback, the CLI) shows what support asks for.
        super().__init__(f"{message} [S3 {', '.join(ids)}]" if ids else message)


class ObjectNotFoundError(StoreError, KeyError):
    """The object does not exist."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "object not found"


class PreconditionFailedError(StoreError):
    """A conditional write lost: the object exists (create) or changed (If-Match)."""


class BucketNotFoundError(StoreError):
    """The bucket does not exist."""


class AccessDeniedError(StoreError):
    """The credentials are wrong or lack a permission."""


class ObjectLockedError(StoreError):
    """An object lock (legal hold or retention) forbids deleting an object."""


class ObjectLockUnsupportedError(StoreError):
    """The store cannot lock objects: a ``file://`` archive, or a bucket created
    without S3 Object Lock (which can only be enabled on a versioned bucket)."""


class StoreUnavailableError(StoreError):
    """The store could not be reached or kept failing after retries."""


class ConditionalWritesUnsupportedError(StoreError):
    """The bucket accepted a write that its precondition should have refused."""


# One table: S3 error code (or HTTP status as a string) -> our type and advice.
# Codes come from the S3 API reference; numeric entries catch servers that send
# only a status (SeaweedFS answers If-Match on a missing key with a bare 412).
S3_ERROR_TABLE: dict[str, tuple[type[StoreError], str]] = {
    "NoSuchKey": (ObjectNotFoundError, "the object does not exist"),
    "NotFound": (ObjectNotFoundError, "the object does not exist"),
    "404": (ObjectNotFoundError, "the object does not exist"),
    "PreconditionFailed": (PreconditionFailedError, "a conditional write lost a race"),
    "412": (PreconditionFailedError, "a conditional write lost a race"),
    "ConditionalRequestConflict": (
        PreconditionFailedError,
        "a concurrent conditional write is in progress",
    ),
    "409": (PreconditionFailedError, "a concurrent conditional write is in progress"),
    "NoSuchBucket": (
        BucketNotFoundError,
        "the bucket does not exist: create it, or check the URL and region",
    ),
    "AccessDenied": (
        AccessDeniedError,
        "access denied: check the credentials and the bucket policy",
    ),
    "403": (AccessDeniedError, "access denied: check the credentials and the bucket policy"),
    "InvalidAccessKeyId": (
        AccessDeniedError,
        "the access key id is unknown to this endpoint: check AWS_ACCESS_KEY_ID / the profile",
    ),
    "SignatureDoesNotMatch": (
        AccessDeniedError,
        "the request signature does not match: check the secret key",
    ),
    "ExpiredToken": (AccessDeniedError, "the session token expired: refresh credentials"),
    "InvalidToken": (AccessDeniedError, "the session token is invalid: refresh credentials"),
    "ObjectLockConfigurationNotFoundError": (
        ObjectLockUnsupportedError,
        "the bucket does not have Object Lock enabled: create it with Object Lock "
        "(create-bucket --object-lock-enabled-for-bucket) or unset object_lock_mode",
    ),
    "SlowDown": (StoreUnavailableError, "the store asks to slow down and retries ran out"),
    "503": (StoreUnavailableError, "the store is unavailable and retries ran out"),
    "InternalError": (StoreUnavailableError, "the store had an internal error; retries ran out"),
    "500": (StoreUnavailableError, "the store had an internal error; retries ran out"),
    "ServiceUnavailable": (StoreUnavailableError, "the store is unavailable; retries ran out"),
    "RequestTimeout": (StoreUnavailableError, "the request timed out; retries ran out"),
}


def store_error_for(
    code: str,
    status: int | None,
    *,
    op: str,
    key: str | None,
    request_id: str | None = None,
    host_id: str | None = None,
) -> StoreError:
    """Build our exception for an S3 error ``code`` / HTTP ``status`` from operation ``op``.

    ``request_id`` / ``host_id`` are the answer's ``x-amz-request-id`` / ``x-amz-id-2``.
    """
    entry = S3_ERROR_TABLE.get(code) or (
        S3_ERROR_TABLE.get(str(status)) if status is not None else None
    )
    where = f" on {key!r}" if key else ""
    ids = {"key": key, "code": code, "request_id": request_id, "host_id": host_id}
    if entry is None:
        return StoreError(f"{op}{where} failed with S3 error {code or status}", **ids)
    cls, advice = entry
    return cls(f"{op}{where}: {advice} (S3 {code or status})", **ids)
