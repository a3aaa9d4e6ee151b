"""The documented import path of :mod:`runarchive.adapters.compat.eventstore`."""

from runarchive.adapters.compat.eventstore import (
    ArchiveCheckpointer,
    ArchivedEvent,
    FromDict,
    as_dict,
)

__all__ = ["ArchiveCheckpointer", "ArchivedEvent", "FromDict", "as_dict"]
