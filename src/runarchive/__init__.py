"""runarchive: an archival checkpointer for long-running AI agents.

Checkpoints and events are durable in a local SQLite cache when the call
returns, then flushed as zstd segments to an S3-compatible bucket (or a local
directory laid out like one), from which any host can restore a run.

Public names are imported on first use (PEP 562), so ``import runarchive`` and
``runarchive --help`` do not load boto3, pydantic models, zstandard or cryptography.
"""

from __future__ import annotations

import importlib

from runarchive._version import __version__ as __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from typing import Any

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

_LAZY: dict[str, str] = {
    "Archive": "runarchive.archive",
    "ArchiveConfig": "runarchive.config",
    "KeyProvider": "runarchive.crypto.providers",
    "KmsKeyProvider": "runarchive.crypto.providers",
    "LocalKeyProvider": "runarchive.crypto.providers",
    "RunEntry": "runarchive.engine.manifest.core",
    "RunList": "runarchive.engine.manifest.core",
    "RestoredRun": "runarchive.engine.restore",
    "AccessDeniedError": "runarchive.errors",
    "BackpressureError": "runarchive.errors",
    "BucketNotFoundError": "runarchive.errors",
    "CacheError": "runarchive.errors",
    "ConditionalWritesUnsupportedError": "runarchive.errors",
    "ConfigError": "runarchive.errors",
    "CorruptObjectError": "runarchive.errors",
    "DecryptionError": "runarchive.errors",
    "EncryptionError": "runarchive.errors",
    "FencedError": "runarchive.errors",
    "FormatVersionError": "runarchive.errors",
    "IndexConflictError": "runarchive.errors",
    "InvalidInputError": "runarchive.errors",
    "KeyUnavailableError": "runarchive.errors",
    "ManifestConflictError": "runarchive.errors",
    "MissingRecordsError": "runarchive.errors",
    "ObjectLockUnsupportedError": "runarchive.errors",
    "ObjectLockedError": "runarchive.errors",
    "ObjectNotFoundError": "runarchive.errors",
    "PageExpiredError": "runarchive.errors",
    "PreconditionFailedError": "runarchive.errors",
    "RecordTooLargeError": "runarchive.errors",
    "ResumeConflictError": "runarchive.errors",
    "RunArchiveError": "runarchive.errors",
    "RunExistsError": "runarchive.errors",
    "RunNotFoundError": "runarchive.errors",
    "RunStateError": "runarchive.errors",
    "StateNotSerializableError": "runarchive.errors",
    "StoreError": "runarchive.errors",
    "StoreUnavailableError": "runarchive.errors",
    "Checkpoint": "runarchive.format.model",
    "Event": "runarchive.format.model",
    "FORMAT_VERSION": "runarchive.format.model",
    "RunIndex": "runarchive.format.model",
    "SegmentRef": "runarchive.format.model",
    "Policy": "runarchive.policy",
    "Reader": "runarchive.reader",
    "Run": "runarchive.run",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'runarchive' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
