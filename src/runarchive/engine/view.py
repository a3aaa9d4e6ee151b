"""A run read from the bucket without taking it over: :class:`RunView`.

A host that does not own a run (another host started it, resumed it, or took it over
since this host last wrote it) must neither serve its own stale copy nor take the run
over just to read it. It reads through a view: the bucket's index and records, kept
fresh by a conditional GET of the index (``If-None-Match`` its ETag: 1 request, no body
when nothing changed) and, when the run grew, GETs of the new segments only.
"""

from __future__ import annotations

import threading
from typing import Any, NoReturn, Protocol

from runarchive.config import ArchiveConfig
from runarchive.crypto.keyring import Keyring
from runarchive.crypto.required import check_required
from runarchive.crypto.sealing import open_index
from runarchive.engine.ownership import extends
from runarchive.engine.restore import execute_restore, plan_restore
from runarchive.errors import ObjectNotFoundError, RunNotFoundError, RunStateError
from runarchive.format.codec import index_key
from runarchive.format.indexpages import load_index
from runarchive.format.model import Checkpoint, Event, RunIndex
from runarchive.store import Store


class Source(Protocol):
    """What a view reads through: a bucket, its keys and settings (a ``Reader`` or an
    ``Archive`` is one)."""

    @property
    def store(self) -> Store: ...
    @property
    def keyring(self) -> Keyring: ...
    @property
    def config(self) -> ArchiveConfig: ...


class RunView:
    """A read-only copy of a run as the bucket holds it (no ownership, no cache).

    Built by :meth:`load` (1 GET of the index + 1 per segment); :meth:`refresh` brings
    it up to date (1 conditional GET; GETs of new segments only if the run grew, all of
    them if it was compacted). Thread-safe.
    """

    def __init__(self, source: Source, run_id: str) -> None:
        self.run_id = run_id
        self._store, self._keyring, self._config = source.store, source.keyring, source.config
        self.index: RunIndex | None = None
        self.etag: str | None = None
        self.metadata: dict[str, Any] = {}
        self._records: dict[int, Checkpoint | Event] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, source: Source, run_id: str) -> RunView:
        """The run as the bucket has it now; ``RunNotFoundError`` if it has none."""
        view = cls(source, run_id)
        view.refresh()
        return view

    def refresh(self) -> bool:
        """Bring the view up to date; ``True`` if the run changed since the last look."""
        with self._lock:
            key = index_key(self.run_id)
            store = self._store
            try:
                if self.etag is None:
                    got = store.get(key)
                else:
                    changed = store.get_if_changed(key, self.etag)
                    if changed is None:
                        return False
                    got = changed
            except ObjectNotFoundError:
                raise RunNotFoundError(
                    f"no run {self.run_id!r} in {store.description} (it was deleted, or "
                    "never flushed)"
                ) from None
            index = load_index(store, got.body, key)
            check_required(index, self._config.encryption_required)
            opened = open_index(index, self._keyring, key)
            prior = self.index
            grew = prior is not None and extends(index, prior)
            plan = plan_restore(
                index,
                min_seq=prior.last_seq + 1 if grew and prior else None,
                run_id=self.run_id,
            )
            records = execute_restore(
                plan,
                store,
                workers=self._config.restore_workers,
                keyring=self._keyring,
            )
            if not grew:
                self._records = {}
            self._records.update((r.seq, r) for r in records)
            self.index, self.etag, self.metadata = index, got.etag, dict(opened.metadata)
            return True

    @property
    def epoch(self) -> int:
        """The ownership epoch of the index last read."""
        return self.index.epoch if self.index is not None else 0

    @property
    def last_seq(self) -> int:
        """The highest seq the bucket holds."""
        return self.index.last_seq if self.index is not None else 0

    def get(self, seq: int) -> Checkpoint | Event | None:
        """The record with this seq, if the bucket holds it (the policy may drop
        checkpoints)."""
        with self._lock:
            return self._records.get(seq)

    def records(self) -> list[Checkpoint | Event]:
        """Every record the bucket holds, oldest first."""
        with self._lock:
            return [self._records[s] for s in sorted(self._records)]

    def _read_only(self) -> NoReturn:
        raise RunStateError(
            f"run {self.run_id!r} is read here without being owned; take it over "
            "(archive.resume) before writing"
        )

    def checkpoint(self, name: str, state: Any, metadata: dict[str, Any] | None = None) -> Any:
        """Refused: a view never writes."""
        self._read_only()

    def event(self, kind: str, data: Any = None, lane: str = "main") -> Any:
        """Refused: a view never writes."""
        self._read_only()
