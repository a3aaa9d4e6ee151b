"""The local write-through cache: one SQLite database in WAL mode per cache directory.

Why SQLite (see ``docs/design.md``): an append is one transaction whose commit
fsyncs the WAL (``synchronous=FULL``), so a record is durable when
``checkpoint()`` returns and a crash at any instant leaves either the whole
record or none of it; reads by run, seq, name and time are indexed; and it is in
the standard library.

One process owns a cache directory at a time (an ``flock`` on ``<dir>/lock``).
Each thread gets its own connection; SQLite serialises writers.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from runarchive.cache import wal as cache_wal
from runarchive.cache.health import (
    FILE_MODE,
    QUICK_CHECK_MAX_BYTES,
    CorruptCache,
    check_file,
    is_corruption,
    move_aside,
    private_directory,
    private_file,
    tighten_existing,
    write_error,
)
from runarchive.cache.migrations import prepare
from runarchive.cache.schema import (
    CACHE_FILE,
    INFO_COLS,
    LEGACY_SCHEMA_MARK,
    REC_COLS,
    RUN_COLS,
    CachedRecord,
    RecordInfo,
    RunRow,
)
from runarchive.cache.wal import WalKeeper
from runarchive.errors import BackpressureError, CacheError

__all__ = ["Cache", "CachedRecord", "RecordInfo", "RunRow"]

log = logging.getLogger("runarchive.cache")

_EVICT_BATCH = 32


class _ThreadConnection:
    """One thread's connection, closed when the thread ends (CPython frees a thread's
    ``threading.local`` values then): agents whose threads come and go must not keep
    one SQLite connection (2 file descriptors, ~130 KB) per thread that ever appended."""

    def __init__(
        self, conn: sqlite3.Connection, conns: set[sqlite3.Connection], lock: threading.RLock
    ) -> None:
        self.conn, self._conns, self._lock = conn, conns, lock

    def __del__(self) -> None:
        with self._lock:
            self._conns.discard(self.conn)
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()


class Cache(WalKeeper):
    """SQLite-backed durable log of every run this host writes.

    A damaged ``cache.sqlite3`` (not a SQLite file, truncated, failing
    ``PRAGMA quick_check``) is moved aside at open, never deleted, and a fresh cache
    is created: :attr:`recovered_from` then names the moved file and
    :attr:`recovery_message` says what was lost (docs/design.md, "Corrupt cache").
    """

    def __init__(self, directory: str | os.PathLike[str], archive_url: str) -> None:
        self.directory = Path(directory).absolute()
        self.path = self.directory / CACHE_FILE
        self.recovered_from: Path | None = None  # where a corrupt cache was moved to
        self.recovery_message: str | None = None
        private_directory(self.directory)
        self._lock_file = self._take_lock()
        try:  # files an older runarchive (or a wider umask) left readable by others
            tighten_existing(sorted(self.directory.glob(self.path.name + "*")))
        except BaseException:
            self._lock_file.close()
            raise
        self._local = threading.local()
        self._conns: set[sqlite3.Connection] = set()
        self._conns_lock = threading.RLock()  # also taken by _ThreadConnection.__del__
        self._write_lock = threading.Lock()
        self._closed = False
        self._wal_path = self.path.with_name(self.path.name + "-wal")
        self._checkpoint_lock = threading.Lock()  # one checkpointer at a time
        self._keeper_cond = threading.Condition()
        self._keeper: threading.Thread | None = None  # started by the first large WAL
        self._keeper_due = False
        self._wal_stuck = False  # the last reset failed (a reader kept the WAL)
        try:
            try:
                self._open_database()
            except CorruptCache as exc:
                self._close_connections()
                self.recovered_from, self.recovery_message = move_aside(self.path, str(exc))
                self._open_database()
            self._check_meta(archive_url)
        except (sqlite3.DatabaseError, CorruptCache) as exc:
            self.close()
            raise CacheError(
                f"the cache database {self.path} is unusable ({exc}); nothing was moved. "
                "Check the disk and the file's permissions, or give this process another "
                "cache_dir and restore the runs you need from the bucket with "
                "`runarchive restore`."
            ) from exc
        except BaseException:
            self.close()
            raise

    def _open_database(self) -> None:
        """Check the file, then create or migrate the schema (``cache/migrations.py``).
        ``CorruptCache`` if damaged; ``CacheError`` if a newer runarchive wrote it."""
        # The umask is never changed (it is per process, and other threads may be
        # creating files meanwhile). Instead the database file is created 0600 before
        # SQLite opens it: SQLite creates its -wal and -shm with the database file's
        # mode and fchmods them to exactly that, whatever the umask (os_unix.c,
        # robust_open), so they are 0600 too.
        private_file(self.path)
        size = check_file(self.path)
        try:
            db = self._conn()
            if 0 < size <= QUICK_CHECK_MAX_BYTES:
                rows = db.execute("PRAGMA quick_check(5)").fetchall()
                if rows != [("ok",)]:
                    raise CorruptCache("PRAGMA quick_check: " + "; ".join(r[0] for r in rows))
            prepare(db, self.path)
            db.execute("SELECT key, value FROM meta").fetchall()
        except sqlite3.DatabaseError as exc:
            if is_corruption(exc):
                raise CorruptCache(str(exc)) from exc
            raise

    def _close_connections(self) -> None:
        with self._conns_lock:
            for conn in self._conns:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._conns.clear()
        self._local = threading.local()

    def _take_lock(self) -> IO[str]:
        path = self.directory / "lock"
        private_file(path)
        fh = open(  # noqa: SIM115 - held for the cache's life
            path, "a+", opener=lambda p, flags: os.open(p, flags | os.O_CLOEXEC, FILE_MODE)
        )
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "unknown"
            fh.close()
            raise CacheError(
                f"cache directory {self.directory} is in use by another process (pid {owner}); "
                "give each process its own cache_dir (RUNARCHIVE_CACHE_DIR)"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        return fh

    def _check_meta(self, archive_url: str) -> None:
        db = self._conn()
        rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if not rows:
            with self.transaction() as tx:
                tx.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("schema", LEGACY_SCHEMA_MARK), ("archive_url", archive_url)],
                )
            return
        if rows.get("archive_url") != archive_url:
            raise CacheError(
                f"cache directory {self.directory} belongs to archive {rows.get('archive_url')!r}, "
                f"not {archive_url!r}; use a separate cache_dir per archive"
            )

    def _conn(self) -> sqlite3.Connection:
        held: _ThreadConnection | None = getattr(self._local, "conn", None)
        conn = held.conn if held is not None else None
        if conn is None:
            if self._closed:
                raise CacheError(f"cache {self.directory} is closed")
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit
                conn.execute(f"PRAGMA busy_timeout={cache_wal.BUSY_TIMEOUT_MS}")
                conn.execute("PRAGMA wal_autocheckpoint=0")  # see checkpoint_wal()
                # Whichever connection starts the WAL over truncates the file to this.
                conn.execute(f"PRAGMA journal_size_limit={cache_wal.WAL_LIMIT_BYTES}")
            except sqlite3.Error:
                conn.close()
                raise
            with self._conns_lock:
                self._conns.add(conn)
            self._local.conn = _ThreadConnection(conn, self._conns, self._conns_lock)
        return conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction on this thread's connection; commits (and fsyncs) on exit."""
        # Writers of this process queue on a lock rather than on SQLite's busy handler:
        # the handler sleeps between retries, so a thread appending in a tight loop
        # would starve the flusher's commits for seconds.
        with self._write_lock:
            yield from self._transaction()
        self._watch_wal()

    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise write_error(self.path, exc) from exc
        try:
            yield db
        except sqlite3.Error as exc:
            # SQLite may have rolled back already (disk full, I/O error): the error
            # that matters is the one raised here.
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                raise  # callers map it (a run id already taken...)
            raise write_error(self.path, exc) from exc
        except BaseException:
            db.execute("ROLLBACK")
            raise
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):  # the commit error is what we report
                db.execute("ROLLBACK")
            raise write_error(self.path, exc) from exc

    # -- runs -------------------------------------------------------------------

    def create_run(
        self,
        run_id: str,
        agent: str,
        metadata: str,
        now: str,
        policy: str | None = None,
        *,
        writer: str = "",
        claim: tuple[str, str] | None = None,
    ) -> None:
        """Record a new run; ``CacheError`` if the id already exists here. ``claim`` is
        the ``(etag, json)`` of the index that claimed the id in the bucket, if any."""
        etag, index_json = claim if claim is not None else (None, None)
        try:
            with self.transaction() as db:
                db.execute(
                    "INSERT INTO runs (run_id, agent, metadata, status, created_at, updated_at,"
                    " epoch, policy, writer, index_etag, index_json)"
                    " VALUES (?, ?, ?, 'running', ?, ?, 1, ?, ?, ?, ?)",
                    (run_id, agent, metadata, now, now, policy, writer, etag, index_json),
                )
        except sqlite3.IntegrityError:
            raise CacheError(f"run {run_id!r} already exists in the cache") from None

    def import_run(self, row: RunRow, records: list[tuple[int, str, str, str, bytes]]) -> None:
        """Install a run taken over from the bucket: its row and its (archived) records."""
        cols = list(RunRow.__dataclass_fields__)
        try:
            with self.transaction() as db:
                db.execute(
                    f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [getattr(row, c) for c in cols],
                )
                db.executemany(
                    "INSERT INTO records (run_id, seq, ts, type, name, size, line) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(row.run_id, s, ts, t, n, len(line), line) for s, ts, t, n, line in records],
                )
        except sqlite3.IntegrityError:
            raise CacheError(
                f"run {row.run_id!r} is already in this host's cache {self.directory}; "
                "use archive.run() to continue it, or move the cache aside"
            ) from None

    def delete_run(self, run_id: str) -> None:
        """Remove a run and its records from this cache."""
        with self.transaction() as db:
            db.execute("DELETE FROM records WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
            self._unflushed = None

    def run(self, run_id: str) -> RunRow | None:
        """The cached run, or ``None``."""
        row = (
            self._conn()
            .execute(f"SELECT {RUN_COLS} FROM runs WHERE run_id = ?", (run_id,))
            .fetchone()
        )
        return RunRow(*row) if row else None

    def runs(self) -> list[RunRow]:
        """Every cached run, oldest first."""
        rows = self._conn().execute(f"SELECT {RUN_COLS} FROM runs ORDER BY created_at, run_id")
        return [RunRow(*r) for r in rows]

    def runs_needing_flush(self) -> list[str]:
        """Runs with pending records, or whose status the bucket does not show yet."""
        rows = self._conn().execute(
            "SELECT run_id FROM runs WHERE fenced = 0 AND (status_archived = 0 "
            "OR last_seq > archived_seq "
            "OR manifest_state < CASE WHEN status = 'running' THEN 1 ELSE 2 END)"
        )
        return [r[0] for r in rows]

    def set_run_fields(self, run_id: str, **fields: int | str | None) -> None:
        """Update columns of a run row (manifest_state, fenced, epoch...)."""
        allowed = set(RunRow.__dataclass_fields__) - {"run_id"}
        if not fields or not set(fields) <= allowed:
            raise ValueError(f"unknown run columns {sorted(set(fields) - allowed)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self.transaction() as db:
            db.execute(
                f"UPDATE runs SET {assignments} WHERE run_id = ?", (*fields.values(), run_id)
            )

    def end_run(
        self, run_id: str, status: str, now: str, result: str | None, error: str | None
    ) -> None:
        """Mark a run completed or failed; the next flush carries it to the bucket."""
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET status = ?, updated_at = ?, ended_at = ?, result = ?, "
                "error = ?, status_archived = 0 WHERE run_id = ?",
                (status, now, now, result, error, run_id),
            )

    # -- records ----------------------------------------------------------------

    def append(
        self,
        run_id: str,
        seq: int,
        ts: str,
        rtype: str,
        name: str,
        line: bytes,
        max_unflushed: int | None = None,
    ) -> None:
        """Durably append one record (one fsynced transaction).

        With ``max_unflushed``, raise :class:`BackpressureError` instead (writing
        nothing) when the unflushed records would exceed that many bytes
        (:meth:`unflushed_bytes`).
        """
        try:
            with self.transaction() as db:
                if max_unflushed is not None:
                    self._reserve_unflushed(db, len(line), max_unflushed)
                self._insert(db, run_id, seq, ts, rtype, name, line)
        except BaseException:
            self._unflushed = None  # recounted at the next append
            raise

    def _insert(
        self,
        db: sqlite3.Connection,
        run_id: str,
        seq: int,
        ts: str,
        rtype: str,
        name: str,
        line: bytes,
    ) -> None:
        db.execute(
            "INSERT INTO records (run_id, seq, ts, type, name, size, line) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (run_id, seq, ts, rtype, name, len(line), line),
        )
        if rtype == "checkpoint":
            db.execute(
                "UPDATE runs SET last_seq = ?, updated_at = ?, first_checkpoint_seq = "
                "COALESCE(first_checkpoint_seq, ?) WHERE run_id = ?",
                (seq, ts, seq, run_id),
            )
        else:
            db.execute(
                "UPDATE runs SET last_seq = ?, updated_at = ? WHERE run_id = ?",
                (seq, ts, run_id),
            )

    def pending(self, run_id: str, limit: int, max_seq: int) -> list[RecordInfo]:
        """The oldest ``limit`` unarchived records of a run up to ``max_seq``, in seq order."""
        rows = self._conn().execute(
            f"SELECT {INFO_COLS} FROM records WHERE run_id = ?1 AND seq > "
            "(SELECT archived_seq FROM runs WHERE run_id = ?1) AND seq <= ?2 "
            "ORDER BY seq LIMIT ?3",
            (run_id, max_seq, limit),
        )
        return [RecordInfo(*r) for r in rows]

    def infos(self, run_id: str, first: int, last: int) -> list[RecordInfo]:
        """The records of ``first <= seq <= last`` this cache still holds, archived or
        not, in seq order (a repair re-encodes a segment the bucket lost from them)."""
        rows = self._conn().execute(
            f"SELECT {INFO_COLS} FROM records WHERE run_id = ? AND seq BETWEEN ? AND ? "
            "ORDER BY seq",
            (run_id, first, last),
        )
        return [RecordInfo(*r) for r in rows]

    def lines(self, run_id: str, seqs: list[int]) -> list[bytes]:
        """The record lines of ``seqs`` (ascending, all present), in that order."""
        if not seqs:
            return []
        rows = self._conn().execute(
            "SELECT seq, line FROM records WHERE run_id = ? AND seq BETWEEN ? AND ? ORDER BY seq",
            (run_id, seqs[0], seqs[-1]),
        )
        wanted = set(seqs)
        return [line for seq, line in rows if seq in wanted]

    def records(
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
        """Cached records of a run, filtered; seq order unless ``newest_first``."""
        where, args = ["run_id = ?"], [run_id]
        for clause, value in (
            ("name = ?", name),
            ("type = ?", rtype),
            ("seq >= ?", min_seq),
            ("seq <= ?", max_seq),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)  # type: ignore[arg-type]
        sql = (
            f"SELECT {REC_COLS} FROM records WHERE {' AND '.join(where)} "
            f"ORDER BY seq {'DESC' if newest_first else 'ASC'}"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [CachedRecord(*r) for r in self._conn().execute(sql, args)]

    def mark_archived(
        self,
        run_id: str,
        archived_seq: int,
        index_etag: str,
        index_json: str,
        index_status: str | None,
    ) -> None:
        """The bucket's index covers seqs up to ``archived_seq``: record it in one commit.

        ``index_status`` is the status the index carries; the run's status counts as
        archived only if it still equals it (``end_run`` may have run meanwhile).
        ``None`` leaves that flag alone.
        """
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET archived_seq = MAX(archived_seq, ?), index_etag = ?, "
                "index_json = ?, status_archived = CASE WHEN ? IS NULL THEN status_archived "
                "ELSE status = ? END, flush_error = NULL, flush_error_at = NULL "
                "WHERE run_id = ?",
                (archived_seq, index_etag, index_json, index_status, index_status, run_id),
            )
            # The watermark moved: recount here, in the flusher, so the next append
            # does not pay for the SUM (one indexed query over the pending records).
            self._unflushed = None
            self._count_unflushed(db)

    def evict(self, run_id: str, keep_records: int, keep_checkpoints: int = 20) -> int:
        """Delete archived records older than the newest ``keep_records``, always keeping
        the newest ``keep_checkpoints`` checkpoints, the run's first checkpoint and the
        latest checkpoint of each name. Returns how many were deleted."""
        db = self._conn()
        victims = [
            row[0]
            for row in db.execute(
                "SELECT id FROM records WHERE run_id = ?1 "
                "AND seq <= (SELECT MIN(archived_seq, last_seq - ?2) FROM runs "
                "WHERE run_id = ?1) "
                "AND seq != COALESCE((SELECT first_checkpoint_seq FROM runs "
                "WHERE run_id = ?1), 0) "
                "AND seq NOT IN (SELECT MAX(seq) FROM records WHERE run_id = ?1 "
                "AND type = 'checkpoint' GROUP BY name) "
                "AND seq NOT IN (SELECT seq FROM records WHERE run_id = ?1 "
                "AND type = 'checkpoint' ORDER BY seq DESC LIMIT ?3)",
                (run_id, keep_records, keep_checkpoints),
            )
        ]
        if not victims:
            return 0
        # Readers learn first that these seqs may be gone (they then ask the bucket).
        with self.transaction() as tx:
            tx.execute(
                "UPDATE runs SET evicted_seq = MAX(evicted_seq, MIN(archived_seq, last_seq - ?)) "
                "WHERE run_id = ?",
                (keep_records, run_id),
            )
        # Freeing a large record walks its overflow pages; small transactions let
        # appends (which queue on the same write lock) slip in between.
        for start in range(0, len(victims), _EVICT_BATCH):
            batch = victims[start : start + _EVICT_BATCH]
            with self.transaction() as tx:
                tx.execute(f"DELETE FROM records WHERE id IN ({','.join('?' * len(batch))})", batch)
        return len(victims)

    def close(self) -> None:
        """Close every connection and release the directory lock."""
        with self._keeper_cond:
            self._closed = True
            self._keeper_cond.notify()
        if self._keeper is not None and self._keeper is not threading.current_thread():
            self._keeper.join()
        self._close_connections()
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()

    # -- backpressure and status (docs/design.md, "Faults and backpressure") ------

    _unflushed: int | None = None  # bytes of unflushed records; None = count again

    def unflushed_bytes(self) -> int:
        """Bytes of record JSON not yet in the bucket, over the runs not fenced.

        Cost: a running counter; after each flush one indexed SUM over the pending
        records (their ``size`` column only).
        """
        with self._write_lock:
            return self._count_unflushed(self._conn())

    @property
    def unflushed_bytes_known(self) -> int | None:
        """The running count of :meth:`unflushed_bytes` as it stands, ``None`` when it
        must be recounted (no I/O, no lock: for the telemetry gauges)."""
        return self._unflushed

    def _count_unflushed(self, db: sqlite3.Connection) -> int:
        if self._unflushed is None:
            row = db.execute(
                "SELECT COALESCE(SUM(r.size), 0) FROM runs u JOIN records r "
                "ON r.run_id = u.run_id AND r.seq > u.archived_seq WHERE u.fenced = 0"
            ).fetchone()
            self._unflushed = int(row[0])
        return self._unflushed

    def _reserve_unflushed(self, db: sqlite3.Connection, size: int, limit: int) -> None:
        """Count ``size`` more unflushed bytes, or raise BackpressureError past ``limit``.
        Called under the write lock, inside the append's transaction."""
        unflushed = self._count_unflushed(db)
        if unflushed + size > limit:
            raise BackpressureError(unflushed, size, limit, self.directory)
        self._unflushed = unflushed + size

    def note_flush_error(self, run_id: str, error: str, at: str) -> None:
        """Keep a run's last background flush failure (for ``runarchive status`` in
        another process); the next index write clears it. One small commit."""
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET flush_error = ?, flush_error_at = ? WHERE run_id = ?",
                (error[:2000], at, run_id),
            )
