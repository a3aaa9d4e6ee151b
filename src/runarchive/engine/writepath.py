"""The write side of one open archive, and the narrow interface a writer uses.

An open :class:`~runarchive.archive.Archive` builds one :class:`WritePath` over its
cache, flush engine and background flusher. It creates runs (claiming a chosen id)
and checks that a run is still this host's; every :class:`~runarchive.run.Run`
appends, ends, flushes and reads its own records through it, and the takeover code
works on it, so that none of them needs the ``Archive``. The open/closed state and
the append counters have their one owner here.
"""

from __future__ import annotations

import threading
from typing import Any

from runarchive import telemetry
from runarchive.cache.core import Cache, CachedRecord, RunRow
from runarchive.config import ArchiveConfig
from runarchive.crypto.keyring import Keyring
from runarchive.engine.flush import FlushEngine
from runarchive.engine.flusher import Flusher
from runarchive.engine.restore import execute_restore, plan_restore
from runarchive.errors import (
    BackpressureError,
    FencedError,
    RunExistsError,
    RunNotFoundError,
    RunStateError,
)
from runarchive.format.indexpages import expand
from runarchive.format.jsonvalue import dumps, loads
from runarchive.format.model import (
    Checkpoint,
    Event,
    RunIndex,
    format_ts,
    new_run_id,
    new_writer_id,
    utcnow,
    validate_run_id,
)
from runarchive.policy import Policy
from runarchive.store import Store


class WritePath:
    """This host's cache, flush engine and flusher of one open archive, as a writer
    sees them. Thread-safe (each part is)."""

    def __init__(
        self,
        config: ArchiveConfig,
        store: Store,
        keyring: Keyring,
        cache: Cache,
        engine: FlushEngine,
        flusher: Flusher,
    ) -> None:
        self.config, self.store, self.keyring = config, store, keyring
        self.cache, self.engine, self.flusher = cache, engine, flusher
        self.closed = False
        self.appended_records = 0  # this process's appends, for reports
        self.appended_bytes = 0
        self._lock = threading.Lock()

    def check_open(self) -> None:
        """Raise ``RunStateError`` once the archive is closed."""
        if self.closed:
            raise RunStateError("this archive is closed; open it again")

    def check_writable(self, run_id: str) -> None:
        """Raise unless this host may still append to ``run_id`` (open, not fenced)."""
        self.check_open()
        why = self.engine.fenced.get(run_id)
        if why is not None:
            raise FencedError(
                f"run {run_id!r} was {why}; this host records nothing more in it "
                "(archive.resume() takes it back, archive.fork() archives what this "
                "host holds that the bucket lacks)"
            )

    def create(
        self, agent: str, run_id: str | None, meta: dict[str, Any], policy: Policy | None
    ) -> str:
        """Record a new run in the cache and return its id (``run_id``, else a
        generated one). A chosen id is claimed in the bucket first (1 create-only PUT):
        ``RunExistsError`` if the cache or the bucket has it. Arguments are checked by
        the caller (``Archive.start_run``)."""
        writer = new_writer_id()
        now = utcnow()
        policy_json = policy.model_dump_json() if policy is not None else None
        claim: tuple[str, str] | None = None
        if run_id is None:
            run_id = new_run_id()
        else:
            validate_run_id(run_id)
            if self.cache.run(run_id) is not None:
                raise RunExistsError(
                    f"run {run_id!r} already exists in this host's cache "
                    f"{self.cache.directory}; choose another run_id or use "
                    "archive.run(run_id) to continue it"
                )
            # A chosen id may be chosen by another host too: claim it in the bucket
            # before acknowledging anything, so that exactly one of them writes it.
            claim = self.engine.claim(
                run_id,
                RunIndex(
                    run_id=run_id,
                    agent=agent,
                    metadata=meta,
                    created_at=now,
                    updated_at=now,
                    policy=loads(policy_json) if policy_json else None,
                    epoch=1,
                    writer=writer,
                    owner_host=self.config.host_id,
                    owner_pid=self.engine.pid,
                ),
            )
        self.cache.create_run(
            run_id,
            agent,
            dumps(meta).decode(),
            format_ts(now),
            policy_json,
            writer=writer,
            claim=claim,
        )
        # The index is first written by the first flush (at most flush_age later),
        # not here: that saves one request per run.
        self.engine.mark_synced(run_id)
        return run_id

    def check_owned(self, run_id: str) -> None:
        """Raise unless this host's cache holds ``run_id`` and this host still owns it
        (the first check in a process asks the bucket: 1 conditional GET)."""
        row = self.cache.run(run_id)
        if row is None:
            raise RunNotFoundError(
                f"run {run_id!r} is not in this host's cache {self.cache.directory}; "
                "use archive.restore(run_id) to read it from the bucket"
            )
        if run_id not in self.engine.live and not self.engine.revalidate(run_id):
            row = self.cache.run(run_id) or row
            stranded = row.last_seq - row.archived_seq
            raise FencedError(
                f"run {run_id!r} is owned by another host now (this host's copy is at epoch "
                f"{row.epoch}): read it with archive.restore(), take it back with "
                "archive.resume()"
                + (
                    f"; this host's {stranded} records the bucket lacks are kept: "
                    f"archive.fork({run_id!r}) archives them as a new run"
                    if stranded
                    else ""
                )
            )

    def append(self, run_id: str, seq: int, ts: str, rtype: str, name: str, line: bytes) -> None:
        """Make one record durable in the cache (``BackpressureError`` when the cache
        holds ``cache_max_unflushed_bytes`` the bucket lacks). The caller serialises
        a run's appends and calls :meth:`appended` after releasing its lock."""
        try:
            self.cache.append(
                run_id,
                seq,
                ts,
                rtype,
                name,
                line,
                self.config.cache_max_unflushed_bytes,  # positional: spied on
            )
        except BackpressureError as exc:
            if (err := self.flusher.errors.get(run_id)) is not None:
                exc.add_note(f"last flush error of run {run_id}: {err.error}")
            raise

    def appended(self, run_id: str, seq: int, rtype: str, name: str, size: int) -> None:
        """Count an append and tell the flusher (its triggers), outside the run's lock."""
        with self._lock:
            self.appended_records += 1
            self.appended_bytes += size
        self.flusher.note_append(run_id, seq, rtype, name, size)
        telemetry.count_append(rtype)

    def end(
        self, run_id: str, status: str, now: str, result: str | None, error: str | None
    ) -> None:
        """Record the end of a run in the cache (the next flush archives it)."""
        self.cache.end_run(run_id, status, now, result, error)

    def flush(self, run_id: str) -> None:
        """Flush one run now, in this thread; raise on failure."""
        self.check_open()
        self.flusher.flushed(run_id, self.engine.flush_run(run_id))

    def flush_all(self) -> None:
        """Flush every run with pending records now, in this thread; raise on failure."""
        self.check_open()
        for run_id in self.cache.runs_needing_flush():
            self.flusher.flushed(run_id, self.engine.flush_run(run_id))

    def request(self, run_id: str) -> None:
        """Ask the background flusher to flush ``run_id`` if it has pending records."""
        if run_id in self.cache.runs_needing_flush():
            self.flusher.request(run_id)

    def close(self) -> list[Exception]:
        """Stop the flusher, flush what is pending and read back what this host archived
        since its last read-back (``read_back``); return the failures, every run tried.
        The cache and the store stay open: the caller closes them."""
        self.closed = True
        self.flusher.stop()
        errors: list[Exception] = []
        for run_id in self.cache.runs_needing_flush():
            try:
                self.engine.flush_run(run_id)
            except Exception as exc:  # try every run; the caller reports them all
                errors.append(exc)
        if self.config.read_back:  # what this host archived is really in the bucket
            for row in self.cache.runs():
                if row.archived_seq > row.verified_seq:
                    try:
                        self.engine.verify_stored(row.run_id)
                    except Exception as exc:
                        errors.append(exc)
        return errors

    # -- a run's own reads ---------------------------------------------------------

    def row(self, run_id: str) -> RunRow | None:
        """The cache's row of ``run_id``."""
        return self.cache.run(run_id)

    def cached(
        self,
        run_id: str,
        *,
        name: str | None = None,
        rtype: str | None = None,
        min_seq: int | None = None,
        max_seq: int | None = None,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> list[CachedRecord]:
        """The run's records the cache holds, filtered (see ``Cache.records``)."""
        return self.cache.records(
            run_id,
            name=name,
            rtype=rtype,
            min_seq=min_seq,
            max_seq=max_seq,
            newest_first=newest_first,
            limit=limit,
        )

    def archived(self, run_id: str, lo: int, hi: int) -> list[Checkpoint | Event]:
        """The run's records ``lo..hi`` read back from the bucket, by the index this
        host last wrote (for the part the cache evicted): 1 GET per segment touched."""
        row = self.cache.run(run_id)
        if row is None or row.index_json is None or lo > row.archived_seq:
            return []
        index = expand(self.store, RunIndex.model_validate_json(row.index_json))
        plan = plan_restore(index, seq=hi, min_seq=lo, run_id=run_id)
        return execute_restore(plan, self.store, workers=self.config.restore_workers)
