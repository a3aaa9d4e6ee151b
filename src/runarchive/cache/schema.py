"""The cache's SQLite schema and the rows it hands out (no I/O here).

``cache.Cache`` creates and migrates the schema; the flusher, readers and
``runarchive status`` consume the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

# A record is pending while its seq is above its run's archived_seq: a watermark,
# so a flush marks 256 records archived by updating one row, not 256 large ones.

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
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
    verified_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts TEXT NOT NULL,
    type TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    line BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS records_run_seq ON records (run_id, seq);
CREATE INDEX IF NOT EXISTS records_run_name ON records (run_id, type, name, seq);
"""


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
