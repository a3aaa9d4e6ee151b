"""What this host's cache has not shipped to the bucket yet: ``Archive.status()`` and
``runarchive status``.

The cache is read through a second, **read-only** SQLite connection
(``file:...?mode=ro``) without the cache directory's lock, so the command works beside
a running agent: in WAL mode a reader never blocks the writer nor waits for it. Cost:
one query that reads the pending records' ``size`` and ``ts`` columns (through the
``(run_id, seq)`` index), never their bodies; no request to the bucket.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from runarchive.cache.migrations import refuse_newer, schema_version
from runarchive.cache.schema import CACHE_FILE, FLUSH_ERROR_COLUMNS, META, RECORDS, RUNS
from runarchive.errors import CacheError


@dataclass(frozen=True)
class RunBacklog:
    """One run of the cache and what of it the bucket does not have yet."""

    run_id: str
    agent: str
    status: str  # running, completed, failed
    last_seq: int  # newest record appended
    archived_seq: int  # the bucket's index covers seqs up to here
    unflushed_records: int
    unflushed_bytes: int  # record JSON, uncompressed
    oldest_unflushed_at: datetime | None
    oldest_unflushed_age: float | None  # seconds, at the time of the query
    status_archived: bool  # the bucket's index shows the run's status
    fenced: bool  # another host took the run over; its backlog stays here
    last_flush_error: str | None  # the last background flush failure, until one succeeds
    last_flush_error_at: datetime | None

    @property
    def stranded(self) -> tuple[int, int] | None:
        """The seqs a fenced writer acknowledged that the bucket lacks (first, last):
        held only here until ``runarchive fork`` archives them as a new run."""
        if self.fenced and self.last_seq > self.archived_seq:
            return (self.archived_seq + 1, self.last_seq)
        return None


@dataclass(frozen=True)
class CacheStatus:
    """The backlog of one cache directory, per run and in total."""

    cache_dir: str
    archive_url: str | None
    max_unflushed_bytes: int | None  # the backpressure limit, if known
    runs: tuple[RunBacklog, ...]

    @property
    def unflushed_records(self) -> int:
        return sum(r.unflushed_records for r in self.runs)

    @property
    def unflushed_bytes(self) -> int:
        return sum(r.unflushed_bytes for r in self.runs if not r.fenced)

    @property
    def oldest_unflushed_age(self) -> float | None:
        ages = [r.oldest_unflushed_age for r in self.runs if r.oldest_unflushed_age is not None]
        return max(ages) if ages else None

    @property
    def failing(self) -> list[str]:
        """Ids of the runs whose last flush failed."""
        return [r.run_id for r in self.runs if r.last_flush_error]

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``runarchive status --json`` (docs/cli.md)."""
        runs = []
        for r in self.runs:
            doc = asdict(r)
            for k in ("oldest_unflushed_at", "last_flush_error_at"):
                doc[k] = doc[k].isoformat() if doc[k] else None
            doc["stranded_seqs"] = list(r.stranded) if r.stranded else None
            runs.append(doc)
        return {
            "cache_dir": self.cache_dir,
            "archive_url": self.archive_url,
            "max_unflushed_bytes": self.max_unflushed_bytes,
            "totals": {
                "runs": len(self.runs),
                "unflushed_records": self.unflushed_records,
                "unflushed_bytes": self.unflushed_bytes,
                "oldest_unflushed_age": self.oldest_unflushed_age,
                "failing_runs": len(self.failing),
            },
            "runs": runs,
        }


def _connect(cache_dir: str | Path) -> tuple[sqlite3.Connection, Path]:
    """A read-only connection to the cache in ``cache_dir`` (no lock taken)."""
    directory = Path(cache_dir).absolute()
    path = directory / CACHE_FILE
    if not path.is_file():
        raise CacheError(
            f"no runarchive cache at {directory}; give the agent's cache directory "
            "(--cache-dir or RUNARCHIVE_CACHE_DIR)"
        )
    try:
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=10.0)
        conn.execute("PRAGMA busy_timeout=10000")
    except sqlite3.Error as exc:
        raise CacheError(f"cannot open the cache {path} read-only: {exc}") from exc
    return conn, path


def held_records(cache_dir: str | Path, run_id: str, first: int, last: int) -> int:
    """How many of the seqs ``first..last`` of ``run_id`` the cache in ``cache_dir``
    holds (read-only, beside a running writer; 0 when there is no cache there)."""
    try:
        conn, path = _connect(cache_dir)
    except CacheError:
        return 0
    try:
        row = conn.execute(
            f"SELECT COUNT(*) FROM {RECORDS} WHERE run_id = ? AND seq BETWEEN ? AND ?",
            (run_id, first, last),
        ).fetchone()
    except sqlite3.Error as exc:
        raise CacheError(f"reading the cache {path} failed: {exc}") from exc
    finally:
        conn.close()
    return int(row[0])


def _ts(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def read_status(
    cache_dir: str | Path,
    *,
    max_unflushed_bytes: int | None = None,
    errors: dict[str, tuple[str, datetime]] | None = None,
    now: datetime | None = None,
) -> CacheStatus:
    """The backlog of the cache in ``cache_dir``, read-only, beside any writer.

    ``errors`` (run id -> (message, time)) overrides the persisted last flush errors
    with fresher ones (the live flusher's). Raises ``CacheError`` if there is no
    readable cache there.
    """
    now = now or datetime.now(UTC)
    conn, path = _connect(cache_dir)
    directory = path.parent
    try:
        # Read-only, so never migrated here: an older runarchive's agent may be
        # writing a cache without the flush error columns.
        refuse_newer(schema_version(conn), path)
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({RUNS})")}
        err_cols = (
            ", ".join(f"u.{c}" for c in FLUSH_ERROR_COLUMNS)
            if set(FLUSH_ERROR_COLUMNS) <= have
            else "NULL, NULL"
        )
        url_row = conn.execute(f"SELECT value FROM {META} WHERE key = 'archive_url'").fetchone()
        rows = conn.execute(
            "SELECT u.run_id, u.agent, u.status, u.last_seq, u.archived_seq, "
            f"u.status_archived, u.fenced, {err_cols}, "
            "COUNT(r.seq), COALESCE(SUM(r.size), 0), MIN(r.ts) "
            f"FROM {RUNS} u LEFT JOIN {RECORDS} r "
            "ON r.run_id = u.run_id AND r.seq > u.archived_seq "
            "GROUP BY u.run_id ORDER BY u.created_at, u.run_id"
        ).fetchall()
    except sqlite3.Error as exc:
        raise CacheError(f"reading the cache {path} failed: {exc}") from exc
    finally:
        conn.close()
    runs = []
    for row in rows:
        run_id, agent, status, last, archived, st_arch, fenced, err, err_at, n, size, oldest = row
        error, error_at = err, _ts(err_at)
        if errors and run_id in errors:
            error, error_at = errors[run_id]
        oldest_at = _ts(oldest)
        runs.append(
            RunBacklog(
                run_id=run_id,
                agent=agent,
                status=status,
                last_seq=last,
                archived_seq=archived,
                unflushed_records=n,
                unflushed_bytes=size,
                oldest_unflushed_at=oldest_at,
                oldest_unflushed_age=(now - oldest_at).total_seconds() if oldest_at else None,
                status_archived=bool(st_arch),
                fenced=bool(fenced),
                last_flush_error=error,
                last_flush_error_at=error_at,
            )
        )
    return CacheStatus(
        cache_dir=str(directory),
        archive_url=url_row[0] if url_row else None,
        max_unflushed_bytes=max_unflushed_bytes,
        runs=tuple(runs),
    )
