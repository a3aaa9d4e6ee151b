"""The documented import path of :mod:`runarchive.adapters.langgraph`."""

from runarchive.adapters.langgraph import ArchiveSaver

__all__ = ["ArchiveSaver"]
