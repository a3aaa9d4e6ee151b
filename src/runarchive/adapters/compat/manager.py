"""``CheckpointManager``: the session checkpoint manager API, kept in an archive.

A drop-in for the in-memory ``CheckpointManager`` runarchive replaces: change the
import, pass ``archive=`` (or let it use the default archive), and every method
keeps its signature, return type and semantics, including the compression rule
(once more than ``compress_after`` checkpoints are held, keep the first, the
latest of each name among the middle, and the last 20).

What changes is durability: each ``create`` is durable in the local cache when
it returns and reaches the bucket with the next flush, so a manager built for
the same ``session_id`` in a new process, or on another host, sees the same
checkpoints.

How it is stored (``docs/adapters.md``): a session is one run (id = the session
id when it is a valid run id, ``metadata.adapter == "manager"``); each checkpoint
is a run checkpoint whose state is ``data`` and whose metadata holds the
manager's ``id`` and the caller's ``metadata``; ``clear()`` and a change of
``compress_after`` are events. The run archives every checkpoint
(``Policy(keep_all=True)``): the compression only bounds what the manager holds
in memory, as in the original, and a reopened manager replays it to rebuild the
same view.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from runarchive.adapters.compat._common import (
    check_owner,
    default_archive,
    held_records,
    run_id_for,
    writer_for,
)
from runarchive.archive import Archive
from runarchive.errors import InvalidInputError, RunStateError
from runarchive.format.jsonvalue import check_json_value
from runarchive.format.model import Checkpoint as Record
from runarchive.format.model import Event, validate_name
from runarchive.logs import log_run
from runarchive.policy import Policy
from runarchive.run import Run

__all__ = ["Checkpoint", "CheckpointManager", "compress"]

log = logging.getLogger("runarchive.compat.manager")

ADAPTER = "manager"
KEEP_RECENT = 20  # the original's fixed "last 20", independent of compress_after
CLEAR_EVENT = "manager.clear"
CONFIG_EVENT = "manager.config"


@dataclass
class Checkpoint:
    """A recovery checkpoint, as the original manager hands them out."""

    id: str
    name: str
    timestamp: datetime
    data: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The export shape: ``timestamp`` as ISO 8601 text."""
        return {
            "id": self.id,
            "name": self.name,
            "timestamp": self.timestamp.isoformat(),
            "data": self.data,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        """Parse the export shape; ``metadata`` may be absent."""
        return cls(
            id=data["id"],
            name=data["name"],
            timestamp=datetime.fromisoformat(data["timestamp"]),
            data=data["data"],
            metadata=data.get("metadata", {}),
        )


def _aware(ts: datetime) -> datetime:
    # Exports from the original carry UTC offsets; a naive time is taken as UTC so
    # that ordering against this manager's (aware) timestamps cannot fail.
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def compress(checkpoints: list[Checkpoint], compress_after: int) -> list[Checkpoint]:
    """The original's compression rule, pure: what stays once ``compress_after`` is exceeded.

    Keeps the first checkpoint, the last 20, and of the ones in between the latest
    (by timestamp) of each name; the result is in timestamp order.
    """
    if len(checkpoints) <= compress_after:
        return checkpoints
    first, recent, middle = checkpoints[0], checkpoints[-KEEP_RECENT:], checkpoints[1:-KEEP_RECENT]
    by_name: dict[str, Checkpoint] = {}
    for cp in middle:
        held = by_name.get(cp.name)
        if held is None or cp.timestamp > held.timestamp:
            by_name[cp.name] = cp
    kept = [first, *by_name.values(), *recent]
    kept.sort(key=lambda cp: cp.timestamp)
    return kept


class CheckpointManager:
    """Named checkpoints of one agent session, archived.

    ``max_checkpoints`` is kept as an attribute, as in the original, which never
    enforced it. ``archive`` defaults to the process-wide default archive
    (``RUNARCHIVE_URL`` or ``./.runarchive``). Building a manager for a session
    that another live process owns takes it over (that process is fenced, see
    ``Archive.resume``); for a session that has ended (``complete()``), the
    manager is read-only. Cost at construction: a new session 2 requests; an
    existing one restores its run (1 GET + 1 per segment) unless this host's cache
    holds it.
    """

    def __init__(
        self,
        session_id: str,
        max_checkpoints: int = 100,
        compress_after: int = 50,
        *,
        archive: Archive | None = None,
        agent: str = "checkpoint-manager",
    ) -> None:
        for what, value in (
            ("max_checkpoints", max_checkpoints),
            ("compress_after", compress_after),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{what} must be an int >= 1, not {value!r}")
        self.session_id = session_id
        self.max_checkpoints = max_checkpoints
        self.compress_after = compress_after
        self.archive = archive if archive is not None else default_archive()
        self.run_id = run_id_for(session_id, "session_id")
        self._checkpoints: list[Checkpoint] = []
        self._checkpoint_count = 0
        self._on_checkpoint: Callable[[Checkpoint], None] | None = None
        self._lock = threading.RLock()
        metadata = {"adapter": ADAPTER, "session_id": session_id, "compress_after": compress_after}
        self.run: Run | None = writer_for(
            self.archive,
            self.run_id,
            agent=agent,
            metadata=metadata,
            policy=Policy(keep_all=True),
        )
        self._replay()

    # -- rebuilding the view -----------------------------------------------------

    def _replay(self) -> None:
        held = held_records(self.archive, self.run_id)
        if held is None:  # a new session whose run has no record yet
            return
        meta, _status, records = held
        check_owner(meta, ADAPTER, "session_id", self.session_id)
        recorded_after = int(meta.get("compress_after", self.compress_after))
        for rec in records:
            recorded_after = self._apply(rec, recorded_after)
        if recorded_after != self.compress_after and self.run is not None:
            # Later replays must switch rule where this manager did.
            self.run.event(CONFIG_EVENT, {"compress_after": self.compress_after})

    def _apply(self, rec: Record | Event, compress_after: int) -> int:
        if isinstance(rec, Event):
            if rec.kind == CLEAR_EVENT:
                self._checkpoints.clear()
            elif rec.kind == CONFIG_EVENT and isinstance(rec.data, dict):
                compress_after = int(rec.data["compress_after"])
            return compress_after
        info = rec.metadata
        stamp = info.get("timestamp")
        cp = Checkpoint(
            id=str(info.get("id", f"{self.session_id}:{rec.seq}")),
            name=rec.name,
            timestamp=_aware(datetime.fromisoformat(stamp)) if stamp else rec.ts,
            data=rec.state,
            metadata=info.get("metadata", {}),
        )
        self._checkpoints.append(cp)
        if info.get("imported"):
            self._checkpoint_count = max(self._checkpoint_count, len(self._checkpoints))
        else:
            self._checkpoint_count += 1
            self._checkpoints = compress(self._checkpoints, compress_after)
        return compress_after

    def _writer(self) -> Run:
        if self.run is None or self.run.status != "running":
            raise RunStateError(
                f"session {self.session_id!r} has ended (its run {self.run_id!r} is "
                "completed or failed): it can be read, not changed; use a new session_id"
            )
        return self.run

    # -- the original API ----------------------------------------------------------

    def create(
        self, name: str, data: dict[str, Any], metadata: dict[str, Any] | None = None
    ) -> Checkpoint:
        """Create a checkpoint, durable in the local cache when this returns.

        ``data`` and ``metadata`` must be JSON data (``StateNotSerializableError``
        otherwise, and nothing is recorded). The callback, if set, runs after it.
        """
        with self._lock:
            run = self._writer()
            cp_id = f"{self.session_id}:{self._checkpoint_count + 1}"
            rec = run.checkpoint(name, data, {"id": cp_id, "metadata": metadata or {}})
            self._checkpoint_count += 1
            checkpoint = Checkpoint(
                id=cp_id,
                name=name,
                timestamp=rec.ts,
                data=rec.state,
                metadata=rec.metadata["metadata"],
            )
            self._checkpoints.append(checkpoint)
            before = len(self._checkpoints)
            self._checkpoints = compress(self._checkpoints, self.compress_after)
            if len(self._checkpoints) != before:
                log_run(
                    log,
                    logging.DEBUG,
                    self.run_id,
                    rec.seq,
                    "session %s: compressed checkpoints from %d to %d",
                    self.session_id,
                    before,
                    len(self._checkpoints),
                )
        if self._on_checkpoint is not None:
            self._on_checkpoint(checkpoint)
        log_run(
            log,
            logging.DEBUG,
            self.run_id,
            rec.seq,
            "session %s: checkpoint %s",
            self.session_id,
            cp_id,
        )
        return checkpoint

    def get(self, checkpoint_id: str) -> Checkpoint | None:
        """The held checkpoint with this id, or ``None``."""
        with self._lock:
            return next((cp for cp in self._checkpoints if cp.id == checkpoint_id), None)

    def get_by_name(self, name: str) -> list[Checkpoint]:
        """Held checkpoints named ``name``, newest first."""
        with self._lock:
            return [cp for cp in reversed(self._checkpoints) if cp.name == name]

    def get_latest(self, name: str | None = None) -> Checkpoint | None:
        """The newest held checkpoint (named ``name``, if given), or ``None``."""
        with self._lock:
            if not self._checkpoints:
                return None
            if name:
                matching = self.get_by_name(name)
                return matching[0] if matching else None
            return self._checkpoints[-1]

    def get_all(self) -> list[Checkpoint]:
        """Every held checkpoint, oldest first (a copy of the list)."""
        with self._lock:
            return list(self._checkpoints)

    def get_since(self, timestamp: datetime) -> list[Checkpoint]:
        """Held checkpoints strictly after ``timestamp`` (timezone-aware)."""
        with self._lock:
            return [cp for cp in self._checkpoints if cp.timestamp > timestamp]

    def get_between(self, start: datetime, end: datetime) -> list[Checkpoint]:
        """Held checkpoints with ``start <= timestamp <= end``."""
        with self._lock:
            return [cp for cp in self._checkpoints if start <= cp.timestamp <= end]

    def rollback_to(self, checkpoint_id: str) -> dict[str, Any] | None:
        """The data of a held checkpoint for the caller to recover from, or ``None``.

        Like the original it changes nothing: the caller decides what to do with it.
        """
        checkpoint = self.get(checkpoint_id)
        if checkpoint is None:
            return None
        log_run(
            log,
            logging.INFO,
            self.run_id,
            None,
            "session %s: rollback to checkpoint %s",
            self.session_id,
            checkpoint_id,
        )
        return checkpoint.data

    def clear(self) -> int:
        """Forget every held checkpoint; returns how many. Ids keep counting up.

        The archive keeps them (the run's history is append-only): a reopened
        manager starts empty, ``runarchive show`` still lists them.
        """
        with self._lock:
            run = self._writer()
            count = len(self._checkpoints)
            run.event(CLEAR_EVENT, {"cleared": count})
            self._checkpoints.clear()
        log_run(
            log,
            logging.INFO,
            self.run_id,
            None,
            "session %s: cleared %d checkpoints",
            self.session_id,
            count,
        )
        return count

    def get_summary(self) -> dict[str, Any]:
        """Counts per name, the first and last checkpoint, and the time between them."""
        with self._lock:
            if not self._checkpoints:
                return {
                    "total_count": 0,
                    "unique_names": 0,
                    "names": {},
                    "first_checkpoint": None,
                    "last_checkpoint": None,
                    "duration_seconds": 0,
                }
            names: dict[str, int] = {}
            for cp in self._checkpoints:
                names[cp.name] = names.get(cp.name, 0) + 1
            first, last = self._checkpoints[0], self._checkpoints[-1]
            return {
                "total_count": len(self._checkpoints),
                "unique_names": len(names),
                "names": names,
                "first_checkpoint": first.to_dict(),
                "last_checkpoint": last.to_dict(),
                "duration_seconds": (last.timestamp - first.timestamp).total_seconds(),
            }

    def on_checkpoint(self, callback: Callable[[Checkpoint], None]) -> None:
        """Call ``callback`` with each checkpoint ``create`` makes (not imported ones)."""
        self._on_checkpoint = callback

    def export(self) -> str:
        """The held checkpoints as a JSON array of ``to_dict()`` objects (indent 2)."""
        with self._lock:
            return json.dumps([cp.to_dict() for cp in self._checkpoints], indent=2)

    def import_checkpoints(self, json_data: str) -> int:
        """Append the checkpoints of an ``export()``; returns how many.

        Every item is checked before anything is recorded: invalid JSON, a missing
        field or non-JSON data raise ``InvalidInputError`` and import nothing.
        Imported checkpoints keep their ids and timestamps; the id counter moves
        up to at least the number held, as in the original.
        """
        try:
            items = json.loads(json_data)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"import_checkpoints needs export() JSON: {exc}") from None
        if not isinstance(items, list):
            raise InvalidInputError("import_checkpoints needs a JSON array, as export() writes")
        parsed: list[Checkpoint] = []
        for i, item in enumerate(items):
            try:
                cp = Checkpoint.from_dict(item)
                cp.timestamp = _aware(cp.timestamp)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise InvalidInputError(
                    f"item {i} of the import is not an exported checkpoint ({exc!r}); "
                    "nothing was imported"
                ) from None
            if not isinstance(cp.data, dict) or not isinstance(cp.metadata, dict):
                raise InvalidInputError(
                    f"item {i} of the import: data and metadata must be objects; "
                    "nothing was imported"
                )
            try:
                validate_name(cp.name, "checkpoint name")
                check_json_value(cp.metadata, f"item {i} metadata")
                check_json_value(cp.data, f"item {i} data")
            except InvalidInputError as exc:
                exc.add_note("nothing was imported")
                raise
            parsed.append(cp)
        with self._lock:
            run = self._writer()
            for cp in parsed:
                run.checkpoint(
                    cp.name,
                    cp.data,
                    {
                        "id": cp.id,
                        "timestamp": cp.timestamp.isoformat(),
                        "metadata": cp.metadata,
                        "imported": True,
                    },
                )
                self._checkpoints.append(cp)
            self._checkpoint_count = max(self._checkpoint_count, len(self._checkpoints))
        return len(parsed)

    def flush(self) -> None:
        """Ship this session's checkpoints to the bucket now (not in the original)."""
        if self.run is not None:
            self.run.flush()

    def __len__(self) -> int:
        return len(self._checkpoints)

    def __iter__(self) -> Iterator[Checkpoint]:
        return iter(self.get_all())
