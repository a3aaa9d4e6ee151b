"""The documented import path of :mod:`runarchive.adapters.compat.manager`."""

from runarchive.adapters.compat.manager import Checkpoint, CheckpointManager, compress

__all__ = ["Checkpoint", "CheckpointManager", "compress"]
