"""Object stores: the contract (:mod:`runarchive.store.base`) and its backends.

Backends: :class:`MemoryStore` (reference), :class:`FileStore` (``file://``,
the embedded default), :class:`S3Store` (any S3-compatible bucket through
boto3). :class:`CountingStore` wraps any of them to count requests and bytes.
"""

from runarchive.store._file import FileStore
from runarchive.store._memory import MemoryStore
from runarchive.store._s3 import S3Settings, S3Store
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
    StoreObserver,
    check_key,
    probe_conditional_writes,
)
from runarchive.store.counting import CountingStore

__all__ = [
    "Capabilities",
    "CountingStore",
    "FileStore",
    "GetResult",
    "IfMatch",
    "Level",
    "LockMode",
    "LockState",
    "MemoryStore",
    "ObjectMeta",
    "PutMode",
    "Retention",
    "S3Settings",
    "S3Store",
    "Store",
    "StoreObserver",
    "check_key",
    "probe_conditional_writes",
]
