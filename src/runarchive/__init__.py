"""runarchive: an archival checkpointer for long-running AI agents.

Checkpoints and events are durable in a local SQLite cache when the call
returns, then flushed as zstd segments to an S3-compatible bucket (or a local
directory laid out like one), from which any host can restore a run.
"""

from runarchive.archive import Archive
from runarchive.config import ArchiveConfig
from runarchive.crypto.providers import KeyProvider, KmsKeyProvider, LocalKeyProvider
from runarchive.engine.manifest.core import RunEntry, RunList
from runarchive.engine.restore import RestoredRun
from runarchive.errors import (
    AccessDeniedError,
    BackpressureError,
    BucketNotFoundError,
    CacheError,
    ConditionalWritesUnsupportedError,
    ConfigError,
    CorruptObjectError,
    DecryptionError,
    EncryptionError,
    FencedError,
    FormatVersionError,
    IndexConflictError,
    InvalidInputError,
    KeyUnavailableError,
    ManifestConflictError,
    MissingRecordsError,
    ObjectLockedError,
    ObjectLockUnsupportedError,
    ObjectNotFoundError,
    PageExpiredError,
    PreconditionFailedError,
    RecordTooLargeError,
    ResumeConflictError,
    RunArchiveError,
    RunExistsError,
    RunNotFoundError,
    RunStateError,
    StateNotSerializableError,
    StoreError,
    StoreUnavailableError,
)
from runarchive.format.model import FORMAT_VERSION, Checkpoint, Event, RunIndex, SegmentRef
from runarchive.policy import Policy
from runarchive.reader import Reader
from runarchive.run import Run

__version__ = "0.1.0"

__all__ = [
    "FORMAT_VERSION",
    "AccessDeniedError",
    "Archive",
    "ArchiveConfig",
    "BackpressureError",
    "BucketNotFoundError",
    "CacheError",
    "Checkpoint",
    "ConditionalWritesUnsupportedError",
    "ConfigError",
    "CorruptObjectError",
    "DecryptionError",
    "EncryptionError",
    "Event",
    "FencedError",
    "FormatVersionError",
    "IndexConflictError",
    "InvalidInputError",
    "KeyProvider",
    "KeyUnavailableError",
    "KmsKeyProvider",
    "LocalKeyProvider",
    "ManifestConflictError",
    "MissingRecordsError",
    "ObjectLockUnsupportedError",
    "ObjectLockedError",
    "ObjectNotFoundError",
    "PageExpiredError",
    "Policy",
    "PreconditionFailedError",
    "Reader",
    "RecordTooLargeError",
    "RestoredRun",
    "ResumeConflictError",
    "Run",
    "RunArchiveError",
    "RunEntry",
    "RunExistsError",
    "RunIndex",
    "RunList",
    "RunNotFoundError",
    "RunStateError",
    "SegmentRef",
    "StateNotSerializableError",
    "StoreError",
    "StoreUnavailableError",
]
