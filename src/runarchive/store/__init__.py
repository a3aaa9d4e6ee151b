"""Object stores: the contract (:mod:`runarchive.store.base`) and its backends.

Backends: :class:`MemoryStore` (reference), :class:`FileStore` (``file://``,
the embedded default), :class:`S3Store` (any S3-compatible bucket through
boto3). :class:`CountingStore` wraps any of them to count requests and bytes.
"""

from typing import TYPE_CHECKING, Any

from runarchive.store._file import FileStore
from runarchive.store._memory import MemoryStore
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

if TYPE_CHECKING:
    from runarchive.store._s3 import S3Settings, S3Store

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


def __getattr__(name: str) -> Any:
    # S3Store imports boto3 (~0.25 s): loaded when first named, so that file:// and
    # memory stores (and `runarchive --help`) never pay for it.
    if name in ("S3Settings", "S3Store"):
        from runarchive.store import _s3  # noqa: PLC0415

        return getattr(_s3, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
