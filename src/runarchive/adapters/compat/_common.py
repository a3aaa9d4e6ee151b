"""What the adapters share: run ids for foreign keys, the default archive, writers."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from runarchive.archive import Archive
from runarchive.errors import InvalidInputError, RunNotFoundError, RunStateError
from runarchive.format.model import Checkpoint, Event, validate_run_id
from runarchive.policy import Policy
from runarchive.run import Run

_default: list[Archive] = []  # at most one: the process-wide default archive
_default_lock = threading.Lock()


def default_archive() -> Archive:
    """The archive adapters use when none is given: ``Archive.open()`` once per process.

    It follows ``RUNARCHIVE_*`` (``RUNARCHIVE_URL`` unset: the embedded default
    ``./.runarchive``) and is flushed and closed at interpreter exit.
    """
    with _default_lock:
        if not _default or _default[0].closed:
            _default[:] = [Archive.open()]
        return _default[0]


def run_id_for(key: str, what: str) -> str:
    """The run id that stores ``key`` (a session, run or thread id of the caller).

    A key that is a valid run id is used as is, so the bucket and ``runarchive``
    commands show the caller's own ids; any other string maps to ``k-`` and 32
    hex digits of its SHA-256 (the key itself is kept in the run's metadata).
    """
    if not isinstance(key, str) or not key:
        raise InvalidInputError(f"{what} must be a non-empty str, not {key!r}")
    try:
        return validate_run_id(key)
    except InvalidInputError:
        return "k-" + hashlib.sha256(key.encode()).hexdigest()[:32]


def check_owner(metadata: dict[str, Any], adapter: str, key_field: str, key: str) -> None:
    """Refuse a run that another adapter (or another key with the same hash) wrote."""
    if metadata.get("adapter") != adapter or metadata.get(key_field) != key:
        raise InvalidInputError(
            f"run for {key_field} {key!r} exists but was not written by the {adapter} adapter "
            f"for that {key_field} (its metadata: adapter={metadata.get('adapter')!r}); "
            "use another id or another archive"
        )


def writer_for(
    archive: Archive,
    run_id: str,
    *,
    agent: str,
    metadata: dict[str, Any],
    policy: Policy | None = None,
) -> Run | None:
    """A writer for the run: this host's, else taken over from the bucket, else new.

    Returns ``None`` when the run exists but has ended (completed or failed): it
    can be read, not continued. Taking a run over from the bucket fences its
    previous owner (see ``Archive.resume``). Cost for a new run: 1 GET + 1 HEAD.
    """
    if archive.cache.run(run_id) is not None:
        run = archive.run(run_id)
        return run if run.status == "running" else None
    try:
        return archive.resume(run_id)
    except RunNotFoundError:
        pass
    except RunStateError:
        return None
    return archive.start_run(agent, run_id, metadata, policy=policy)


def peek(archive: Archive, run_id: str) -> Run | None:
    """A read-only view of a run this host's cache holds, without taking it over.

    Unlike ``archive.run()`` it does not make this process renew the run's lease,
    so a run left by a dead process still looks interrupted.
    """
    if archive.cache.run(run_id) is None:
        return None
    return Run(archive._path, run_id)  # not registered: no lease renewal


def held_records(archive: Archive, run_id: str) -> tuple[dict[str, Any], str, list[Any]] | None:
    """(metadata, status, records) of a run, from this host's cache or else the bucket.

    ``None`` if neither has it. Reading from the bucket costs 1 GET for the index
    + 1 per segment.
    """
    run = peek(archive, run_id)
    if run is not None:
        records: list[Checkpoint | Event] = run.records()
        return run.metadata, run.status, records
    try:
        restored = archive.restore(run_id)
    except RunNotFoundError:
        return None
    return restored.index.metadata, restored.index.status, list(restored.records)


class Writers:
    """The writers an adapter holds, one per caller key, opened on first use."""

    def __init__(self, archive: Archive, adapter: str, key_field: str, agent: str) -> None:
        self.archive, self.adapter, self.key_field, self.agent = archive, adapter, key_field, agent
        self._runs: dict[str, Run] = {}
        self._lock = threading.Lock()

    def get(self, key: str, metadata: dict[str, Any] | None = None) -> Run:
        """The writer of ``key``'s run: this host's, else taken over, else a new run.

        ``RunStateError`` if the run has ended; ``InvalidInputError`` if the run id
        belongs to something else.
        """
        with self._lock:
            run = self._runs.get(key)
            if run is None or run.status != "running":
                meta = {**(metadata or {}), "adapter": self.adapter, self.key_field: key}
                found = writer_for(
                    self.archive,
                    run_id_for(key, self.key_field),
                    agent=self.agent,
                    metadata=meta,
                )
                if found is None:
                    raise RunStateError(
                        f"run of {self.key_field} {key!r} has ended (completed or failed) "
                        "in the archive; it can be read, not written"
                    )
                check_owner(found.metadata, self.adapter, self.key_field, key)
                run = self._runs[key] = found
            return run

    def drop(self, key: str) -> None:
        """Forget the writer of ``key`` (its run was deleted)."""
        with self._lock:
            self._runs.pop(key, None)
