"""Resumable run checkpoints: the ``CheckpointStore`` semantics, archived.

The Python form of the Go ``CheckpointStore`` runarchive replaces. A
:class:`RunCheckpoint` is one snapshot of a run's resumable progress (who started
it and with what prompt, the messages so far, the iteration, the active phase).
:class:`ArchiveRunStore` keeps them: ``save``, ``load``, ``delete``,
``list_interrupted``. A :class:`RunHandle` is what an agent loop holds: throttled
``save``, and ``complete`` / ``fail`` that make the run no longer a recovery
candidate. A handle built with no store (``None``) does nothing, so the
checkpointing can be switched off.

One difference on purpose: the original deleted a run's checkpoint at
complete/fail; here the run is marked completed/failed and its history stays in
the archive (``load(..., include_finished=True)`` reads it). ``delete`` still
removes a run entirely.

How it is stored (``docs/adapters.md``): one run per run id
(``metadata.adapter == "runstore"``, plus the ``RunCheckpointMeta`` fields); each
save is a checkpoint named ``run-checkpoint`` whose state is
``RunCheckpoint.to_dict()``. The archive's policy keeps the latest one (and the
first and the last 20).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

from runarchive.adapters.compat._common import (
    Writers,
    check_owner,
    default_archive,
    held_records,
    peek,
    run_id_for,
)
from runarchive.archive import Archive
from runarchive.errors import InvalidInputError, RunNotFoundError, RunStateError
from runarchive.format.codec import index_key
from runarchive.format.jsonvalue import check_json_value, loads
from runarchive.format.model import Checkpoint, utcnow
from runarchive.logs import log_run

__all__ = ["ArchiveRunStore", "RunCheckpoint", "RunCheckpointMeta", "RunHandle"]

log = logging.getLogger("runarchive.compat.runstore")

ADAPTER = "runstore"
NAME = "run-checkpoint"


@dataclasses.dataclass(frozen=True)
class RunCheckpointMeta:
    """What is needed to resume a run from scratch: who started it, how, where."""

    run_id: str
    agent_id: str = ""
    agent_name: str = ""
    caller_id: str = ""
    channel_id: str = ""
    guild_id: str = ""
    prompt: str = ""
    model_tier: str = ""
    parent_run_id: str = ""


@dataclasses.dataclass(frozen=True)
class RunCheckpoint:
    """One persisted snapshot of a run's resumable progress."""

    meta: RunCheckpointMeta
    messages: list[Any] = dataclasses.field(default_factory=list)  # the conversation so far
    iteration: int = 0  # completed agent-loop iterations
    active_phase: str = ""  # current phase of a multi-phase agent; "" otherwise
    updated_at: datetime = dataclasses.field(default_factory=utcnow)

    def to_dict(self) -> dict[str, Any]:
        """JSON data (``updated_at`` as ISO 8601 text); ``StateNotSerializableError`` if
        a message is not JSON data (pydantic models and dataclasses are converted)."""
        value = check_json_value(
            {
                "meta": dataclasses.asdict(self.meta),
                "messages": self.messages,
                "iteration": self.iteration,
                "active_phase": self.active_phase,
                "updated_at": self.updated_at.isoformat(),
            },
            "run checkpoint",
        )
        assert isinstance(value, dict)
        return value

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunCheckpoint:
        """Rebuild from :meth:`to_dict`'s shape."""
        return cls(
            meta=RunCheckpointMeta(**data["meta"]),
            messages=list(data.get("messages", [])),
            iteration=int(data.get("iteration", 0)),
            active_phase=str(data.get("active_phase", "")),
            updated_at=datetime.fromisoformat(data["updated_at"]),
        )


def _check(cp: object) -> RunCheckpoint:
    if not isinstance(cp, RunCheckpoint):
        raise InvalidInputError(f"expected a RunCheckpoint, not {type(cp).__name__}")
    if isinstance(cp.iteration, bool) or not isinstance(cp.iteration, int):
        raise InvalidInputError(f"iteration must be an int, not {cp.iteration!r}")
    if not isinstance(cp.active_phase, str):
        raise InvalidInputError(f"active_phase must be a str, not {cp.active_phase!r}")
    return cp


class ArchiveRunStore:
    """Run checkpoints keyed by run id, in an archive; thread-safe.

    ``archive`` defaults to the process-wide default archive; ``agent`` names the
    runs in the manifest.
    """

    def __init__(self, archive: Archive | None = None, *, agent: str = "runstore") -> None:
        self.archive = archive if archive is not None else default_archive()
        self.agent = agent
        self._writers = Writers(self.archive, ADAPTER, "run_id", agent)

    def save(self, cp: RunCheckpoint) -> None:
        """Record ``cp`` (unthrottled); durable in the local cache when this returns.

        The first save of a run id creates its run, with ``cp.meta`` as metadata.
        """
        body = _check(cp).to_dict()
        self._writers.get(cp.meta.run_id, {"meta": body["meta"]}).checkpoint(NAME, body)

    def load(self, run_id: str, *, include_finished: bool = False) -> RunCheckpoint | None:
        """The newest checkpoint of a run, or ``None`` if it has none.

        A completed or failed run is not a recovery candidate: ``None`` unless
        ``include_finished``. From this host's cache, else from the bucket (1 GET
        for the index + 1 per segment).
        """
        key = run_id_for(run_id, "run_id")
        run = peek(self.archive, key)
        if run is not None:
            check_owner(run.metadata, ADAPTER, "run_id", run_id)
            if run.status != "running" and not include_finished:
                return None
            newest = run.latest(NAME)
            return None if newest is None else RunCheckpoint.from_dict(newest.state)
        held = held_records(self.archive, key)
        if held is None:
            return None
        meta, status, records = held
        check_owner(meta, ADAPTER, "run_id", run_id)
        if status != "running" and not include_finished:
            return None
        saved = [r for r in records if isinstance(r, Checkpoint) and r.name == NAME]
        return RunCheckpoint.from_dict(saved[-1].state) if saved else None

    def delete(self, run_id: str) -> None:
        """Remove the run and its history, here and in the bucket; unknown: no-op."""
        self._writers.drop(run_id)
        try:
            self.archive.delete_run(run_id_for(run_id, "run_id"))
        except RunNotFoundError:
            return

    def _exists(self, run_id: str) -> bool:
        key = run_id_for(run_id, "run_id")
        if self.archive.cache.run(key) is not None:
            return True
        return self.archive.store.head(index_key(key)) is not None

    def complete(self, run_id: str, result: Any = None) -> None:
        """Mark the run completed: no longer a recovery candidate, history kept.

        A run with no checkpoint anywhere is left alone (there is nothing to recover).
        """
        if self._exists(run_id):
            self._writers.get(run_id).complete(result)

    def fail(self, run_id: str, error: BaseException | str) -> None:
        """Mark the run failed: no longer a recovery candidate, history kept."""
        if self._exists(run_id):
            self._writers.get(run_id).fail(error)

    def list_interrupted(self, stale_after: timedelta | float = 0.0) -> list[RunCheckpoint]:
        """The newest checkpoint of every run that was in flight and never completed
        nor failed, and whose writer is gone — for a recovery at boot.

        That is: runs the manifest lists as running whose lease expired more than
        ``stale_after`` ago (any host), and runs in this host's cache that a previous
        process left running (listed at once, without waiting for their lease).
        Runs this process is writing are never listed. Cost: ``interrupted()`` (2 LISTs
        and a GET per writer process that stopped renewing),
        plus 1 GET for the index + 1 per segment of each run not in this host's cache.
        """
        live = self.archive.engine.live
        candidates: dict[str, str] = {}  # run id -> caller's run id
        for entry in self.archive.interrupted(stale_after):
            if entry.metadata.get("adapter") == ADAPTER and entry.run_id not in live:
                candidates[entry.run_id] = str(entry.metadata.get("run_id"))
        for row in self.archive.cache.runs():
            if row.status != "running" or row.fenced or row.run_id in live:
                continue
            meta = loads(row.metadata)
            if meta.get("adapter") == ADAPTER:
                candidates[row.run_id] = str(meta.get("run_id"))
        found = [cp for key in candidates.values() if (cp := self.load(key)) is not None]
        return sorted(found, key=lambda cp: cp.updated_at)


class RunHandle:
    """The checkpointing of one run as an agent loop uses it; thread-safe.

    ``save`` is throttled: the first save is written at once, a save less than
    ``throttle`` seconds after the last write is held and coalesced with later ones,
    and the held one is written when the window ends (by a timer), or at
    ``complete``, ``fail`` or ``close`` — the last state is never dropped. What a
    crash loses is at most the held save of one window. ``throttle=0`` writes every
    save. ``store=None`` makes every method a no-op. ``now`` stamps ``updated_at``.
    A failure of a timed write is raised by the next call.
    """

    def __init__(
        self,
        store: ArchiveRunStore | None,
        meta: RunCheckpointMeta,
        throttle: float = 5.0,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        if not isinstance(meta, RunCheckpointMeta):
            raise InvalidInputError(f"meta must be a RunCheckpointMeta, not {type(meta).__name__}")
        run_id_for(meta.run_id, "run_id")  # validates it
        if isinstance(throttle, bool) or not isinstance(throttle, int | float) or throttle < 0:
            raise InvalidInputError(f"throttle must be seconds >= 0, not {throttle!r}")
        self.store, self.meta, self.throttle, self.now = store, meta, float(throttle), now
        self.writes = 0  # checkpoints actually written, for tests and reports
        self._lock = threading.Lock()
        self._pending: RunCheckpoint | None = None
        self._last_write: float | None = None
        self._timer: threading.Timer | None = None
        self._error: BaseException | None = None
        self._ended: str | None = None

    def save(self, messages: list[Any], iteration: int, active_phase: str = "") -> None:
        """Checkpoint the run's progress (throttled, see the class)."""
        if self.store is None:
            return
        cp = RunCheckpoint(self.meta, list(messages), iteration, active_phase, self.now())
        _check(cp).to_dict()  # bad input fails here, in the caller, not in the timer
        with self._lock:
            self._raise_error()
            if self._ended is not None:
                raise RunStateError(
                    f"run {self.meta.run_id!r} has ended ({self._ended}); start a new run"
                )
            since = None if self._last_write is None else time.monotonic() - self._last_write
            if since is None or since >= self.throttle:
                self._pending = None
                self._write(cp)
                return
            self._pending = cp
            if self._timer is None:
                self._timer = threading.Timer(self.throttle - since, self._window_ended)
                self._timer.daemon = True
                self._timer.start()

    def _write(self, cp: RunCheckpoint) -> None:
        assert self.store is not None
        self.store.save(cp)
        self._last_write = time.monotonic()
        self.writes += 1

    def _window_ended(self) -> None:
        with self._lock:
            self._timer = None
            if self._pending is None:
                return
            cp, self._pending = self._pending, None
            try:
                self._write(cp)
            except Exception as exc:  # kept for the caller's next call: never silent
                log_run(
                    log,
                    logging.ERROR,
                    self.meta.run_id,
                    None,
                    "writing the held checkpoint failed",
                    exc_info=True,
                )
                self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc

    def _settle(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._raise_error()
        if self._pending is not None:
            cp, self._pending = self._pending, None
            self._write(cp)

    def complete(self, result: Any = None) -> None:
        """Write the held save, then mark the run completed (no longer a candidate)."""
        if self.store is None:
            return
        with self._lock:
            self._settle()
            self.store.complete(self.meta.run_id, result)
            self._ended = "completed"

    def fail(self, error: BaseException | str) -> None:
        """Write the held save, then mark the run failed (no longer a candidate)."""
        if self.store is None:
            return
        with self._lock:
            self._settle()
            self.store.fail(self.meta.run_id, error)
            self._ended = "failed"

    def close(self) -> None:
        """Write the held save; the run stays running (resumable if never completed)."""
        if self.store is None:
            return
        with self._lock:
            self._settle()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
