"""The cache's SQLite schema, its versions and the rows it hands out (no I/O here).

This module owns the cache's file name, its table and column names and its DDL.
The schema version is SQLite's ``PRAGMA user_version``; :data:`MIGRATIONS` is the
ordered list of steps from each historic version to the next, applied by
:mod:`runarchive.cache.migrations` when ``Cache`` opens a file (one transaction per
step). Caches written before versions existed (``user_version`` 0) are identified
by their columns (:func:`legacy_version`).

To change the schema: add the column to :data:`TABLES`, append a
:class:`Migration` to :data:`MIGRATIONS` (``SCHEMA_VERSION`` follows), and add the
previous shape to the history test (``tests/cache/test_cache_schema_versions.py``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

CACHE_FILE = "cache.sqlite3"  # in the cache directory, beside its -wal, -shm and lock
META, RUNS, RECORDS = "meta", "runs", "records"

# meta.schema: what runarchive before user_version checked (it refuses a cache whose
# value is above "1"). Raise it in a migration that such older code could not read.
LEGACY_SCHEMA_MARK = "1"

# A record is pending while its seq is above its run's archived_seq: a watermark,
# so a flush marks 256 records archived by updating one row, not 256 large ones.

_RECORDS_DDL = f"""CREATE TABLE IF NOT EXISTS {RECORDS} (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts TEXT NOT NULL,
    type TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    line BLOB NOT NULL
)"""
_RECORDS_INDEXES = (
    f"CREATE UNIQUE INDEX IF NOT EXISTS records_run_seq ON {RECORDS} (run_id, seq)",
    f"CREATE INDEX IF NOT EXISTS records_run_name ON {RECORDS} (run_id, type, name, seq)",
)

# The current schema, as a fresh cache gets it (version SCHEMA_VERSION).
TABLES: tuple[str, ...] = (
    f"CREATE TABLE IF NOT EXISTS {META} (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    f"""CREATE TABLE IF NOT EXISTS {RUNS} (
    run_id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    metadata TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    ended_at TEXT,
    result TEXT,
    error TEXT,
    last_seq INTEGER NOT NULL DEFAULT 0,
    first_checkpoint_seq INTEGER,
    archived_seq INTEGER NOT NULL DEFAULT 0,
    index_etag TEXT,
    index_json TEXT,
    status_archived INTEGER NOT NULL DEFAULT 0,
    evicted_seq INTEGER NOT NULL DEFAULT 0,
    epoch INTEGER NOT NULL DEFAULT 0,
    fenced INTEGER NOT NULL DEFAULT 0,
    manifest_state INTEGER NOT NULL DEFAULT 0,
    policy TEXT,
    writer TEXT NOT NULL DEFAULT '',
    verified_seq INTEGER NOT NULL DEFAULT 0,
    flush_error TEXT,
    flush_error_at TEXT
)""",
    _RECORDS_DDL,
    *_RECORDS_INDEXES,
)

# The last background flush failure of a run (for `runarchive status`); not in RunRow.
FLUSH_ERROR_COLUMNS = ("flush_error", "flush_error_at")


@dataclass(frozen=True)
class Migration:
    """One step of the schema: from version ``to - 1`` to ``to``.

    ``marks`` are ``table.column`` names that only caches at ``to`` or later have:
    how an unversioned cache (written before ``user_version``) is placed.
    """

    to: int
    what: str  # what changed, and the commit that first wrote the new shape
    statements: tuple[str, ...]
    marks: tuple[str, ...]


def _add(column: str, decl: str) -> str:
    return f"ALTER TABLE {RUNS} ADD COLUMN {column} {decl}"


# Version 1 is the first cache (12a344b): records carried a per-row `flushed` flag.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        2,
        "runs.evicted_seq: reads below it may need the bucket (82d61f0)",
        (_add("evicted_seq", "INTEGER NOT NULL DEFAULT 0"),),
        (f"{RUNS}.evicted_seq",),
    ),
    Migration(
        3,
        "records: the archived_seq watermark replaces the flushed flag; size column "
        "(5580e25). Before it, flushed = 0 held exactly for seq > archived_seq.",
        (
            _RECORDS_DDL.replace(f"EXISTS {RECORDS} (", f"EXISTS {RECORDS}_v3 ("),
            f"INSERT INTO {RECORDS}_v3 (id, run_id, seq, ts, type, name, size, line) "
            f"SELECT id, run_id, seq, ts, type, name, length(line), line FROM {RECORDS}",
            f"DROP TABLE {RECORDS}",  # and its index records_pending
            f"ALTER TABLE {RECORDS}_v3 RENAME TO {RECORDS}",
            *_RECORDS_INDEXES,
        ),
        (f"{RECORDS}.size",),
    ),
    Migration(
        4,
        "runs.epoch, fenced, manifest_state: ownership and the manifest (27db759)",
        tuple(_add(c, "INTEGER NOT NULL DEFAULT 0") for c in ("epoch", "fenced", "manifest_state")),
        (f"{RUNS}.epoch", f"{RUNS}.fenced", f"{RUNS}.manifest_state"),
    ),
    Migration(
        5,
        "runs.policy: a run's own compression policy (9f0bf4d)",
        (_add("policy", "TEXT"),),
        (f"{RUNS}.policy",),
    ),
    Migration(
        6,
        "runs.flush_error, flush_error_at: the last background flush failure (94c8ef4)",
        tuple(_add(c, "TEXT") for c in FLUSH_ERROR_COLUMNS),
        tuple(f"{RUNS}.{c}" for c in FLUSH_ERROR_COLUMNS),
    ),
    Migration(
        7,
        "runs.writer: the writer id in the run index (7883711)",
        (_add("writer", "TEXT NOT NULL DEFAULT ''"),),
        (f"{RUNS}.writer",),
    ),
    Migration(
        8,
        "runs.verified_seq: the read-back watermark (394a0c9)",
        (_add("verified_seq", "INTEGER NOT NULL DEFAULT 0"),),
        (f"{RUNS}.verified_seq",),
    ),
)

SCHEMA_VERSION = 1 + len(MIGRATIONS)  # what PRAGMA user_version says of a current cache


def legacy_version(columns: Collection[str], migrations: Sequence[Migration] = ()) -> int:
    """The version of a cache written before ``user_version`` was set, from its
    ``table.column`` names: the last version whose marks, and all earlier ones', it has.

    Older runarchive added every missing column at each open, so such a cache holds a
    prefix of the history; a later column without an earlier one is not a shape any
    runarchive wrote (its migration then fails, and the file is not used).
    """
    version = 1
    for step in migrations or MIGRATIONS:
        if not all(mark in columns for mark in step.marks):
            break
        version = step.to
    return version


@dataclass(frozen=True)
class RunRow:
    """A run as the cache knows it."""

    run_id: str
    agent: str
    metadata: str
    status: str
    created_at: str
    updated_at: str
    ended_at: str | None
    result: str | None
    error: str | None
    last_seq: int
    first_checkpoint_seq: int | None
    archived_seq: int
    index_etag: str | None
    index_json: str | None
    status_archived: int
    evicted_seq: int  # records up to here may have been evicted (they are in the bucket)
    epoch: int  # ownership epoch this host writes with
    fenced: int  # 1 once another host took the run over
    manifest_state: int  # 0 not listed, 1 listed as running, 2 listed as finished
    policy: str | None = None  # the run's own Policy as JSON; None = the archive's
    writer: str = ""  # this host's writer id of the run (RunIndex.writer); "" = legacy
    verified_seq: int = 0  # a read-back found the bucket holding every record up to here


@dataclass(frozen=True)
class RecordInfo:
    """What the flusher needs to decide about a record, without its (large) line."""

    seq: int
    ts: str
    type: str
    name: str
    size: int


@dataclass(frozen=True)
class CachedRecord:
    """One record line with the columns the cache indexes."""

    seq: int
    ts: str
    type: str
    name: str
    line: bytes


RUN_COLS = ", ".join(RunRow.__dataclass_fields__)
REC_COLS = "seq, ts, type, name, line"
INFO_COLS = "seq, ts, type, name, size"
