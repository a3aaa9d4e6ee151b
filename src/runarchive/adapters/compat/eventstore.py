"""``ArchiveCheckpointer``: the event-sourcing ``Checkpointer`` protocol, archived.

A drop-in for the in-memory / JSONL / SQLite checkpointers of the protocol
runarchive replaces: ``save_event``, ``save_snapshot`` (the latest wins),
``load_latest``, ``list_events(run_id, since_seq)``, ``delete_run`` and
``list_runs``. Every call that writes returns once the record is durable in the
local cache; the bucket gets it with the next flush, and any host can read the
run back.

**Conversion protocol.** The caller keeps its own event and state classes:

* saving accepts an object with ``to_dict()`` (as the original's ``PAEvent`` and
  ``RunState``), a mapping, a dataclass or a pydantic model. An event's dict must
  carry ``run_id`` (str), ``seq`` (int), ``kind`` (str, or an ``Enum`` of str)
  and may carry ``ts``, ``lane_id`` (default ``"main"``) and ``data``; all of it
  must be JSON data. The dict is stored whole.
* loading hands that dict to ``event_type.from_dict`` / ``state_type.from_dict``
  when given (classes, e.g. ``ArchiveCheckpointer(archive, event_type=PAEvent,
  state_type=RunState)``), else returns an :class:`ArchivedEvent` / the dict.

How it is stored (``docs/adapters.md``): one run per ``run_id``
(``metadata.adapter == "eventstore"``); an event is a run event of its ``kind``
on lane ``lane_id`` with the event's dict as data; a snapshot is a checkpoint
named ``snapshot``. The archive's policy keeps the latest snapshot (and the
first and the last 20), and every event.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from enum import Enum
from typing import Any, Protocol

from runarchive.adapters.compat._common import (
    Writers,
    check_owner,
    default_archive,
    held_records,
    peek,
    run_id_for,
)
from runarchive.archive import Archive
from runarchive.errors import InvalidInputError, RunNotFoundError
from runarchive.format.jsonvalue import check_json_value, loads
from runarchive.format.model import Checkpoint, Event, format_ts
from runarchive.logs import log_run
from runarchive.run import Run

__all__ = ["ArchiveCheckpointer", "ArchivedEvent", "FromDict", "as_dict"]

log = logging.getLogger("runarchive.compat.eventstore")

ADAPTER = "eventstore"
SNAPSHOT = "snapshot"


class FromDict(Protocol):
    """A caller's class that the checkpointer can rebuild objects with."""

    def from_dict(self, data: dict[str, Any], /) -> Any:
        """Build an object from what its ``to_dict()`` returned."""
        ...


@dataclasses.dataclass(frozen=True)
class ArchivedEvent:
    """An event as the protocol describes it, when no ``event_type`` is given."""

    run_id: str
    seq: int
    ts: float | str | None
    kind: str
    data: Any = None
    lane_id: str = "main"

    def to_dict(self) -> dict[str, Any]:
        """The stored shape."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchivedEvent:
        """Rebuild from the stored shape; extra keys are ignored."""
        return cls(
            run_id=data["run_id"],
            seq=data["seq"],
            ts=data.get("ts"),
            kind=data["kind"],
            data=data.get("data"),
            lane_id=data.get("lane_id", "main"),
        )


def as_dict(obj: object, what: str) -> dict[str, Any]:
    """``obj`` as JSON data in a dict, through ``to_dict()`` when it has one."""
    to_dict = getattr(obj, "to_dict", None)
    raw = to_dict() if callable(to_dict) else obj
    if isinstance(raw, Mapping):
        raw = {k: v.value if isinstance(v, Enum) else v for k, v in raw.items()}
    value = check_json_value(raw, what)
    if not isinstance(value, dict):
        raise InvalidInputError(
            f"{what} must be an object with to_dict(), a mapping, a dataclass or a pydantic "
            f"model; got {type(obj).__name__}"
        )
    return value


class ArchiveCheckpointer:
    """The ``Checkpointer`` protocol on an archive; thread-safe.

    ``archive`` defaults to the process-wide default archive. ``agent`` names the
    runs it creates in the manifest (``runarchive runs --agent``).
    """

    def __init__(
        self,
        archive: Archive | None = None,
        *,
        event_type: FromDict | None = None,
        state_type: FromDict | None = None,
        agent: str = "eventstore",
    ) -> None:
        self.archive = archive if archive is not None else default_archive()
        self.event_type = event_type
        self.state_type = state_type
        self.agent = agent
        self._writers = Writers(self.archive, ADAPTER, "run_id", agent)

    def _writer(self, run_id: str) -> Run:
        return self._writers.get(run_id)

    def save_event(self, event: object) -> None:
        """Append an event to its run's log (the run is created on first use).

        Durable in the local cache when this returns. A run another host was
        writing is taken over (see ``Archive.resume``).
        """
        body = as_dict(event, "event")
        run_id, seq, kind = body.get("run_id"), body.get("seq"), body.get("kind")
        if not isinstance(run_id, str) or not run_id:
            raise InvalidInputError(f"event needs a non-empty str run_id, not {run_id!r}")
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise InvalidInputError(f"event needs an int seq, not {seq!r}")
        if not isinstance(kind, str):
            raise InvalidInputError(f"event needs a str kind, not {kind!r}")
        lane = body.setdefault("lane_id", "main")
        if not isinstance(lane, str):
            raise InvalidInputError(f"event lane_id must be a str, not {lane!r}")
        self._writer(run_id).event(kind, body, lane=lane)

    def save_snapshot(self, run_id: str, state: object) -> None:
        """Record the run's full state; ``load_latest`` returns the newest one."""
        body = as_dict(state, "state")
        self._writer(run_id).checkpoint(SNAPSHOT, body)

    def load_latest(self, run_id: str) -> Any:
        """The newest snapshot of ``run_id`` (through ``state_type``), or ``None``.

        From this host's cache, else from the bucket (1 GET for the index + 1 per
        segment). If ``state_type.from_dict`` rejects the newest one, the next
        older snapshot still archived is tried (logged as a warning), as the
        original fell back to its backup.
        """
        key = run_id_for(run_id, "run_id")
        run = peek(self.archive, key)
        if run is not None:
            check_owner(run.metadata, ADAPTER, "run_id", run_id)
            newest = run.latest(SNAPSHOT)
            if newest is None:
                return None
            parsed = self._state(newest, run_id)
            if parsed is not None:
                return parsed
            older = reversed(run.history(name=SNAPSHOT, until=newest.seq - 1))
            return next((p for c in older if (p := self._state(c, run_id)) is not None), None)
        held = held_records(self.archive, key)
        if held is None:
            return None
        meta, _status, records = held
        check_owner(meta, ADAPTER, "run_id", run_id)
        snaps = [r for r in records if isinstance(r, Checkpoint) and r.name == SNAPSHOT]
        return next((p for c in reversed(snaps) if (p := self._state(c, run_id)) is not None), None)

    def _state(self, cp: Checkpoint, run_id: str) -> Any:
        if self.state_type is None:
            return cp.state
        try:
            return self.state_type.from_dict(cp.state)
        except (KeyError, TypeError, ValueError) as exc:
            # The exception's type only: its message may quote the state.
            log_run(
                log,
                logging.WARNING,
                run_id,
                cp.seq,
                "snapshot seq %d does not load (%s); trying an older one",
                cp.seq,
                type(exc).__name__,
            )
            return None

    def list_events(self, run_id: str, since_seq: int = 0) -> list[Any]:
        """The run's events whose own ``seq`` is above ``since_seq``, in append order.

        ``[]`` for an unknown run. From this host's cache (and the bucket for what
        it evicted), else from the bucket.
        """
        key = run_id_for(run_id, "run_id")
        run = peek(self.archive, key)
        if run is not None:
            check_owner(run.metadata, ADAPTER, "run_id", run_id)
            events: list[Event] = run.events()
        else:
            held = held_records(self.archive, key)
            if held is None:
                return []
            check_owner(held[0], ADAPTER, "run_id", run_id)
            events = [r for r in held[2] if isinstance(r, Event)]
        bodies = [
            body
            for ev in events
            if isinstance(body := ev.data, dict) and body.get("seq", 0) > since_seq
        ]
        make = ArchivedEvent.from_dict if self.event_type is None else self.event_type.from_dict
        return [make(body) for body in bodies]

    def delete_run(self, run_id: str) -> None:
        """Delete the run's events and snapshots, here and in the bucket; unknown: no-op."""
        key = run_id_for(run_id, "run_id")
        self._writers.drop(run_id)
        try:
            self.archive.delete_run(key)
        except RunNotFoundError:
            return

    def list_runs(self) -> list[str]:
        """The run ids this adapter recorded in the archive, most recently updated first.

        Unlike the SQLite original (runs with a snapshot only), a run with events
        and no snapshot is listed too. Reads the whole manifest and this
        host's cache; never lists the bucket.
        """
        found: dict[str, str] = {}
        # The adapter's own metadata says which runs are its: open it, KMS included.
        for entry in self.archive.list_runs(agent=self.agent, limit=None, decrypt_metadata=True):
            if entry.metadata.get("adapter") == ADAPTER:
                found[str(entry.metadata.get("run_id"))] = format_ts(entry.updated_at)
        for row in self.archive.cache.runs():
            meta = loads(row.metadata) if row.agent == self.agent else {}
            if meta.get("adapter") == ADAPTER:  # also runs not flushed yet
                name = str(meta.get("run_id"))
                found[name] = max(found.get(name, ""), row.updated_at)
        # Both times are format_ts text, which sorts as the time does.
        return sorted(found, key=lambda r: found[r], reverse=True)
