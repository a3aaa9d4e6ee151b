"""The documented import path of :mod:`runarchive.adapters.compat.runstore`."""

from runarchive.adapters.compat.runstore import (
    ArchiveRunStore,
    RunCheckpoint,
    RunCheckpointMeta,
    RunHandle,
)

__all__ = ["ArchiveRunStore", "RunCheckpoint", "RunCheckpointMeta", "RunHandle"]
