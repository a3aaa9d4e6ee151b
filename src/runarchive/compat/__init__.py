"""Drop-in replacements for the checkpoint APIs runarchive was started from.

Each adapter keeps the API and semantics of the checkpointer it replaces and
stores through an :class:`~runarchive.Archive`, so its data survives the process
and can be read (and continued) on another host:

* :mod:`runarchive.compat.manager` — ``CheckpointManager``: named checkpoints of
  one agent session with the first / latest-per-name / last-20 compression.
* :mod:`runarchive.compat.eventstore` — ``ArchiveCheckpointer``: the event-sourcing
  ``Checkpointer`` protocol (events + latest snapshot per run).
* :mod:`runarchive.compat.runstore` — ``ArchiveRunStore`` and ``RunHandle``: resumable
  run checkpoints with throttled saves and interrupted-run discovery.

See ``docs/adapters.md`` for how each maps onto runs, records and the manifest.
"""
