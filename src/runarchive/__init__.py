"""runarchive: an archival checkpointer for long-running AI agents.

Checkpoints and events are durable in a local SQLite cache when the call
returns, then flushed as zstd segments to an S3-compatible bucket (or a local
directory laid out like one), from which any host can restore a run.
"""

from runarchive.archive import Archive, Reader, Run
from runarchive.config import ArchiveConfig
from runarchive.errors import (
    AccessDeniedError,
    BucketNotFoundError,
    CacheError,
    ConditionalWritesUnsupportedError,
    ConfigError,
    CorruptObjectError,
    FormatVersionError,
    InvalidInputError,
    ObjectNotFoundError,
    PreconditionFailedError,
    RunArchiveError,
    RunNotFoundError,
    RunStateError,
    StateNotSerializableError,
    StoreError,
    StoreUnavailableError,
)
from runarchive.model import FORMAT_VERSION, Checkpoint, Event, RunIndex, SegmentRef
from runarchive.policy import Policy
from runarchive.restore import RestoredRun

__version__ = "0.1.0"

__all__ = [
    "FORMAT_VERSION",
    "AccessDeniedError",
    "Archive",
    "ArchiveConfig",
    "BucketNotFoundError",
    "CacheError",
    "Checkpoint",
    "ConditionalWritesUnsupportedError",
    "ConfigError",
    "CorruptObjectError",
    "Event",
    "FormatVersionError",
    "InvalidInputError",
    "ObjectNotFoundError",
    "Policy",
    "PreconditionFailedError",
    "Reader",
    "RestoredRun",
    "Run",
    "RunArchiveError",
    "RunIndex",
    "RunNotFoundError",
    "RunStateError",
    "SegmentRef",
    "StateNotSerializableError",
    "StoreError",
    "StoreUnavailableError",
]
